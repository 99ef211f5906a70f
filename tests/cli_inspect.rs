//! `sequinsfs inspect` on SequenceFiles, through the built binary.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use sequinsfs::format::sequencefile::{Codec, Compression, Writer, WriterOptions};

fn inspect(args: &[&str], files: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sequinsfs"))
        .arg("inspect")
        .args(args)
        .args(files)
        .output()
        .unwrap()
}

/// A BLOCK/snappy file with awkward keys: a control byte, a newline, a
/// non-UTF-8 byte.
fn sample(dir: &Path) -> std::path::PathBuf {
    let mut options = WriterOptions::bytes_writable().compressed(Compression::Block, Codec::Snappy);
    options.metadata = vec![(b"owner".to_vec(), b"data team".to_vec())];
    options.sync = Some([0xab; 16]);
    let mut writer = Writer::new(Vec::new(), options).unwrap();
    writer.append_bytes_writable(b"1881/boy", b"John").unwrap();
    writer
        .append_bytes_writable(b"a\x00b\n\xff", b"caf\xc3\xa9")
        .unwrap();
    writer.append_bytes_writable(b"third", b"3").unwrap();
    let path = dir.join("sample.seq");
    std::fs::write(&path, writer.finish().unwrap()).unwrap();
    path
}

#[test]
fn text_output_shows_header_count_and_escaped_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = sample(dir.path());
    let out = inspect(&["--records", "2"], &[&path]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for line in [
        "format:      SequenceFile version 6",
        "key class:   org.apache.hadoop.io.BytesWritable",
        "compression: BLOCK",
        "codec:       org.apache.hadoop.io.compress.SnappyCodec",
        "owner = data team",
        "sync marker: abababababababababababababababab",
        "records:     3",
        "[0] 1881/boy => John",
        "[1] a\\x00b\\x0a\\xff => caf\u{e9}",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    assert!(!text.contains("[2]"));
}

/// `--get` scans a SequenceFile; keys are spelled as mount names.
#[test]
fn get_finds_a_key_in_a_sequencefile() {
    let dir = tempfile::tempdir().unwrap();
    let path = sample(dir.path());
    let out = inspect(&["--get", "1881/boy"], &[&path]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("get 1881/boy: John\n"), "{text}");
    let out = inspect(&["--get", "a%00b%0A%FF", "--json"], &[&path]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["get"]["found"], true);
    assert_eq!(doc["get"]["value"], "caf\u{e9}");
    let out = inspect(&["--get", "nope"], &[&path]);
    assert!(out.status.success());
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains("get nope: not found")
    );
}

#[test]
fn json_output_is_one_document_per_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = sample(dir.path());
    let out = inspect(&["--json", "--records", "1"], &[&path, &path]);
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(docs.len(), 2);
    let doc = &docs[0];
    assert_eq!(doc["compression"], "BLOCK");
    assert_eq!(doc["records"], 3);
    assert_eq!(doc["codec"], "org.apache.hadoop.io.compress.SnappyCodec");
    assert_eq!(doc["first_records"][0]["key"], "1881/boy");
    assert_eq!(doc["metadata"][0]["value"], "data team");
}

#[test]
fn bad_file_is_a_one_line_error_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let good = sample(dir.path());
    let bad = dir.path().join("notes.txt");
    std::fs::write(&bad, "This is not a SequenceFile\n").unwrap();
    let truncated = dir.path().join("cut.seq");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() - 10]).unwrap();
    for (path, phrase) in [
        (&bad, "byte 0: not a SequenceFile"),
        (&truncated, "truncated"),
    ] {
        let out = inspect(&[], &[path]);
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(&path.display().to_string()), "{stderr}");
        assert!(stderr.contains(phrase), "{stderr}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn hadoop_fixture_and_sequins_database_inspect() {
    let Some(fixtures) = common::fixtures_dir() else {
        return;
    };
    let part = fixtures.join("sequins/healthy/baby-names/1/part-00000");
    let out = inspect(&["--records", "1"], &[&part]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("[0] 1881/boy => John"), "{text}");
    let bad = fixtures.join("sequins/partially_healthy/baby-names-bad/1/part-00000");
    let out = inspect(&[], &[&bad]);
    assert_eq!(out.status.code(), Some(1));
    let lz4 = fixtures.join("seqfile/int_long__record__lz4.seq");
    let out = inspect(&["--json"], &[&lz4]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["compression"], "RECORD");
    assert_eq!(doc["metadata"][0]["key"], "dataset");
}
