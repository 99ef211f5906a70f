//! `sequinsfs pack`, through the built binary: the packed version loads as
//! Sparkey input and serves every record bit-exact; spills do not change
//! the output; duplicates, bad inputs and the output directory's rules.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::cli::sequinsfs;
use common::data::{SeqfileOptions, read_seqfile_pairs, write_seqfile};
use common::engine::TestEngine;
use sequinsfs::format::sparkey::{self, framed};
use sequinsfs::store::manifest::{InputKind, Manifest};

/// Runs `sequinsfs pack args...`: (exit code, stderr).
fn pack(args: &[&str]) -> (i32, String) {
    pack_with_stdin(args, None)
}

fn pack_with_stdin(args: &[&str], stdin: Option<&[u8]>) -> (i32, String) {
    use std::io::Write;
    let mut cmd = sequinsfs();
    cmd.arg("pack").args(args);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut pipe = child.stdin.take().unwrap();
    if let Some(data) = stdin {
        pipe.write_all(data).unwrap();
    }
    drop(pipe);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    (out.status.code().unwrap_or(-1), stderr)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The packed files of a version directory, sorted by name.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Reads every partition's table back with the format reader, checking the
/// layout sequins requires: one pair per partition, keys sorted and in
/// their partition. Returns every (key, value).
fn read_packed(dir: &Path, partitions: u32) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut want: Vec<String> = (0..partitions)
        .flat_map(|p| [format!("part-{p:05}.spi.sz"), format!("part-{p:05}.spl")])
        .collect();
    want.sort();
    assert_eq!(names(dir), want);
    let scratch = tempfile::tempdir().unwrap();
    let mut all = BTreeMap::new();
    for p in 0..partitions {
        let log = dir.join(format!("part-{p:05}.spl"));
        let index = scratch.path().join(format!("part-{p:05}.spi"));
        framed::decode_file(&dir.join(format!("part-{p:05}.spi.sz")), &index).unwrap();
        let reader = sparkey::Reader::open(&log, &index).unwrap();
        assert_eq!(
            reader.log_header().compression,
            sparkey::CompressionType::Snappy
        );
        let mut previous: Option<Vec<u8>> = None;
        for entry in reader.iter_live() {
            let (k, v) = entry.unwrap();
            assert_eq!(sequinsfs::partition::partition(&k, partitions), p);
            if let Some(prev) = &previous {
                assert!(prev.as_slice() < &k[..], "keys not sorted in partition {p}");
            }
            // The index finds what the log holds.
            assert_eq!(reader.get(&k).unwrap().as_deref(), Some(&v[..]));
            previous = Some(k.to_vec());
            all.insert(k.to_vec(), v.to_vec());
        }
    }
    all
}

/// Starts an engine over a root holding `version_dir`'s files as db/1
/// (adding `_SUCCESS`) and checks every key of `want` is served bit-exact
/// from Sparkey input.
fn serve_and_check(packed: &Path, want: &BTreeMap<Vec<u8>, Vec<u8>>, partitions: u32) {
    let engine = TestEngine::start(
        |root| {
            let dir = root.join("db").join("1");
            common::data::copy_dir(packed, &dir);
            std::fs::write(dir.join("_SUCCESS"), b"").unwrap();
        },
        Duration::ZERO,
    );
    let version = engine.engine().catalog().current("db").expect("db loaded");
    let store = engine.source.parent().unwrap().join("store");
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(store.join("data/db/1/manifest.json")).unwrap())
            .unwrap();
    // Loaded as the producer's Sparkey tables, not rebuilt from records.
    assert_eq!(manifest.input, InputKind::Sparkey);
    assert_eq!(manifest.num_partitions, partitions);
    assert_eq!(version.num_partitions(), partitions);
    assert_eq!(manifest.num_keys, want.len() as u64);
    for (k, v) in want {
        let got = version.get(k).unwrap();
        assert_eq!(got.as_deref(), Some(&v[..]), "key {k:?}");
    }
    assert_eq!(version.get(b"\x01no such key").unwrap(), None);
}

/// `n` records in a scrambled order, values of varied length.
fn tsv_records(n: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let k = (i * 7_919) % n;
            (
                format!("key-{k:08}").into_bytes(),
                format!("value {k} {}", "x".repeat((k % 50) as usize)).into_bytes(),
            )
        })
        .collect()
}

fn write_tsv(path: &Path, records: &[(Vec<u8>, Vec<u8>)]) {
    let mut out = Vec::new();
    for (k, v) in records {
        out.extend_from_slice(k);
        out.push(b'\t');
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    std::fs::write(path, out).unwrap();
}

#[test]
fn tsv_round_trip_loads_as_sparkey_and_serves_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let records = tsv_records(200_000);
    let input = dir.path().join("in.tsv");
    write_tsv(&input, &records);
    let out = dir.path().join("root/db/1");
    let (code, stderr) = pack(&[s(&input), "--out", s(&out), "--partitions", "7"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("pack: done: 200000 records"), "{stderr}");
    // Nothing but the version: no temporary directories left beside it.
    assert_eq!(names(&dir.path().join("root/db")), vec!["1"]);
    let want: BTreeMap<_, _> = records.into_iter().collect();
    assert_eq!(read_packed(&out, 7), want);
    serve_and_check(&out, &want, 7);
}

#[test]
fn jsonl_base64_round_trip_with_binary_keys_and_empty_values() {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let dir = tempfile::tempdir().unwrap();
    let mut want = BTreeMap::new();
    let mut lines = String::new();
    for i in 0..5_000u32 {
        let key: Vec<u8> = [0x00, 0xff, b'/', b'\n']
            .into_iter()
            .chain(i.to_be_bytes())
            .collect();
        let value: Vec<u8> = if i % 3 == 0 {
            Vec::new()
        } else {
            (0..i % 300).map(|j| (j * 31 + i) as u8).collect()
        };
        lines.push_str(&format!(
            "{{\"key\": \"{}\", \"value\": \"{}\"}}\n",
            b64.encode(&key),
            b64.encode(&value)
        ));
        want.insert(key, value);
    }
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, lines).unwrap();
    let out = dir.path().join("v");
    let (code, stderr) = pack(&[s(&input), "--base64", "--out", s(&out), "--partitions", "4"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(read_packed(&out, 4), want);
    serve_and_check(&out, &want, 4);
}

#[test]
fn fixture_sequencefiles_serve_what_the_reader_yields() {
    let Some(fixtures) = common::fixtures_dir() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let files = common::data::fixture_seqfiles(&fixtures);
    for file in &files {
        let mut want = BTreeMap::new();
        for (k, v) in read_seqfile_pairs(file) {
            want.insert(k, v);
        }
        let out = dir.path().join(file.file_stem().unwrap());
        // Detected by its magic whatever the name; last wins as the loader.
        let (code, stderr) = pack(&[
            s(file),
            "--out",
            s(&out),
            "--partitions",
            "3",
            "--last-wins",
        ]);
        assert_eq!(code, 0, "{}: {stderr}", file.display());
        assert_eq!(read_packed(&out, 3), want, "{}", file.display());
    }
    // One of them all the way through the engine.
    let file = fixtures.join("seqfile/text_text__block__snappy.seq");
    let want: BTreeMap<_, _> = read_seqfile_pairs(&file).into_iter().collect();
    serve_and_check(&dir.path().join("text_text__block__snappy"), &want, 3);
}

#[test]
fn tiny_memory_limit_spills_and_gives_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let records = tsv_records(30_000);
    let input = dir.path().join("in.tsv");
    write_tsv(&input, &records);
    let big = dir.path().join("big");
    let small = dir.path().join("small");
    let (code, stderr) = pack(&[s(&input), "--out", s(&big), "--partitions", "5"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains(" 0 spills"), "{stderr}");
    let tmp = dir.path().join("spill-here");
    std::fs::create_dir(&tmp).unwrap();
    let (code, stderr) = pack(&[
        s(&input),
        "--out",
        s(&small),
        "--partitions",
        "5",
        "--memory-limit",
        "32KiB",
        "--tmp-dir",
        s(&tmp),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let spills: usize = stderr
        .split(" spills")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no spill count in {stderr}"));
    assert!(spills > 20, "{stderr}");
    // Spill files are cleaned up.
    assert!(names(&tmp).is_empty());
    assert_eq!(names(&big), names(&small));
    for name in names(&big) {
        assert!(
            std::fs::read(big.join(&name)).unwrap() == std::fs::read(small.join(&name)).unwrap(),
            "{name} differs"
        );
    }
}

#[test]
fn duplicate_keys_fail_by_default_and_last_wins_keeps_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.tsv");
    let b = dir.path().join("b.tsv");
    std::fs::write(&a, "x\t1\ndup\tfirst\ny\t2\n").unwrap();
    std::fs::write(&b, "dup\tsecond\nz\t3\ndup\tthird\n").unwrap();
    let out = dir.path().join("v");
    let (code, stderr) = pack(&[s(&a), s(&b), "--out", s(&out), "--partitions", "2"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("duplicate key \"dup\""), "{stderr}");
    assert!(stderr.contains("a.tsv record 2"), "{stderr}");
    assert!(stderr.contains("b.tsv record 1"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!out.exists());
    assert!(names(dir.path()).iter().all(|n| !n.starts_with('.')));

    let (code, stderr) = pack(&[
        s(&a),
        s(&b),
        "--out",
        s(&out),
        "--partitions",
        "2",
        "--last-wins",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let got = read_packed(&out, 2);
    assert_eq!(got.get(&b"dup"[..]).map(Vec::as_slice), Some(&b"third"[..]));
    assert_eq!(got.len(), 4);
}

#[test]
fn bad_inputs_are_one_clear_line_naming_file_and_place() {
    let dir = tempfile::tempdir().unwrap();
    let seq = dir.path().join("data.seq");
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..1000u32)
        .map(|i| (format!("k{i}").into_bytes(), vec![b'v'; 100]))
        .collect();
    write_seqfile(&seq, &pairs, &SeqfileOptions::none());
    let bytes = std::fs::read(&seq).unwrap();
    std::fs::write(&seq, &bytes[..bytes.len() / 2]).unwrap();
    let no_tab = dir.path().join("no-tab.tsv");
    std::fs::write(&no_tab, "a\tb\nlonely\n").unwrap();
    let bad_json = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad_json,
        "{\"key\":\"a\",\"value\":\"b\"}\n{\"key\":\"a\"\n",
    )
    .unwrap();
    let bad_b64 = dir.path().join("b64.jsonl");
    std::fs::write(&bad_b64, "{\"key\":\"YQ==\",\"value\":\"not base64!\"}\n").unwrap();
    let cases: [(&Path, &[&str], &str); 4] = [
        (&seq, &[], "data.seq: byte "),
        (&no_tab, &[], "no-tab.tsv: line 2: no tab"),
        (&bad_json, &[], "bad.jsonl: line 2: bad JSON record"),
        (
            &bad_b64,
            &["--base64"],
            "b64.jsonl: line 1: value is not base64",
        ),
    ];
    for (input, extra, want) in cases {
        let out = dir.path().join("out");
        let mut args = vec![s(input), "--out", s(&out), "--partitions", "2"];
        args.extend_from_slice(extra);
        let (code, stderr) = pack(&args);
        assert_eq!(code, 1, "{stderr}");
        assert!(stderr.contains(want), "want {want:?} in {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(!out.exists());
    }
    assert!(names(dir.path()).iter().all(|n| !n.starts_with('.')));
}

#[test]
fn output_directory_rules_directory_inputs_and_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    std::fs::write(inputs.join("part-0.tsv"), "a\t1\n").unwrap();
    std::fs::write(
        inputs.join("part-1.jsonl"),
        "{\"key\":\"b\",\"value\":\"2\"}\n",
    )
    .unwrap();
    // Skipped: Hadoop's markers and checksums.
    std::fs::write(inputs.join("_SUCCESS"), "").unwrap();
    std::fs::write(inputs.join(".part-0.crc"), "junk without tab").unwrap();
    let out = dir.path().join("v");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("old"), "").unwrap();
    let (code, stderr) = pack(&[s(&inputs), "--out", s(&out), "--partitions", "1"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("not empty; pass --force"), "{stderr}");
    let (code, stderr) = pack(&[
        s(&inputs),
        "-",
        "--out",
        s(&out),
        "--partitions",
        "1",
        "--force",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let (code, stderr) = pack_with_stdin(
        &[
            s(&inputs),
            "-",
            "--out",
            s(&out),
            "--partitions",
            "1",
            "--force",
        ],
        Some(b"c\t3\r\n"),
    );
    assert_eq!(code, 0, "{stderr}");
    let got = read_packed(&out, 1);
    let want: BTreeMap<Vec<u8>, Vec<u8>> = [("a", "1"), ("b", "2"), ("c", "3")]
        .into_iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
    assert_eq!(got, want);
    assert!(names(dir.path()).iter().all(|n| !n.starts_with('.')));
}

#[test]
fn every_partition_gets_a_table_and_inspect_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.tsv");
    std::fs::write(&input, "only\tone\n").unwrap();
    let out = dir.path().join("v");
    let (code, stderr) = pack(&[s(&input), "--out", s(&out), "--partitions", "4", "-q"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    assert_eq!(read_packed(&out, 4).len(), 1);
    let p = sequinsfs::partition::partition(b"only", 4);
    for q in 0..4 {
        let log = out.join(format!("part-{q:05}.spl"));
        let res = sequinsfs()
            .args(["inspect", "--get", "only", s(&log)])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&res.stdout);
        assert!(
            res.status.success(),
            "{}",
            String::from_utf8_lossy(&res.stderr)
        );
        if q == p {
            assert!(text.contains("get only: one"), "{text}");
        } else {
            assert!(text.contains("get only: not found"), "{text}");
        }
    }
}
