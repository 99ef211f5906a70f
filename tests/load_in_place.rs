//! Uncompressed SequenceFiles served in place: the version directory holds
//! the downloaded files and the key index, no Sparkey tables; every key
//! reads back bit-exact through `LocalVersion`, the engine and a mount;
//! compressed inputs keep the Sparkey path; damaged files and offsets are
//! errors naming the file and offset.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::data::{SeqfileOptions, copy_dir, write_seqfile, write_seqfile_version_with};
use common::engine::TestEngine;
use common::{TestMount, can_mount, walk_keys};
use sequinsfs::catalog::VersionData;
use sequinsfs::format::sequencefile::{Compression, Reader, Writer, WriterOptions, write_text};
use sequinsfs::store::LocalVersion;
use sequinsfs::store::manifest::{BlockKind, InputKind, Manifest};

type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Three files: BytesWritable, BytesWritable, Text. Keys repeat within a
/// file and across files; values include empty and large ones.
fn dataset() -> Vec<Pairs> {
    let mut files: Vec<Pairs> = vec![Vec::new(), Vec::new(), Vec::new()];
    for i in 0..3000u32 {
        let value = match i % 7 {
            0 => Vec::new(),
            1 => vec![(i % 251) as u8; 70_000],
            _ => format!("value-{i}-{}", "x".repeat((i % 50) as usize)).into_bytes(),
        };
        files[(i % 3) as usize].push((format!("key/{i:05}").into_bytes(), value));
    }
    // Overwritten within a file, and across files (the later file wins).
    files[1].push((b"dup/within".to_vec(), b"first".to_vec()));
    files[1].push((b"dup/within".to_vec(), b"second".to_vec()));
    files[0].push((b"dup/across".to_vec(), b"from file 0".to_vec()));
    files[2].push((b"dup/across".to_vec(), b"from file 2".to_vec()));
    files
}

fn expected(files: &[Pairs]) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut map = BTreeMap::new();
    for file in files {
        for (k, v) in file {
            map.insert(k.clone(), v.clone());
        }
    }
    map
}

/// Writes the dataset as `db/1`: files 0 and 1 BytesWritable (with
/// `options`), file 2 Text, uncompressed.
fn write_version(root: &Path, files: &[Pairs], options: &SeqfileOptions) {
    write_seqfile_version_with(root, "db", "1", &files[..2], options);
    let out = std::fs::File::create(root.join("db/1/part-00002")).unwrap();
    let mut writer = Writer::new(std::io::BufWriter::new(out), WriterOptions::text()).unwrap();
    for (k, v) in &files[2] {
        writer.append_text(k, v).unwrap();
    }
    std::io::Write::flush(&mut writer.finish().unwrap()).unwrap();
}

fn version_dir(loaded: &TestEngine) -> PathBuf {
    loaded.source.parent().unwrap().join("store/data/db/1")
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Reads a whole value through the data layer.
fn read(v: &LocalVersion, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let Some(at) = v.locate(key).map_err(|e| error_text(&e))? else {
        return Ok(None);
    };
    let mut scratch = Vec::new();
    let bytes = v
        .read_value(&at, 0, at.len as usize, &mut scratch)
        .map_err(|e| error_text(&e))?;
    Ok(Some(bytes.map(<[u8]>::to_vec).unwrap_or(scratch)))
}

fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[test]
fn uncompressed_sequencefiles_are_served_in_place_bit_exact() {
    let files = dataset();
    let expected = expected(&files);
    let loaded = TestEngine::start(
        |root| write_version(root, &files, &SeqfileOptions::none()),
        Duration::ZERO,
    );
    let dir = version_dir(&loaded);
    assert_eq!(
        names(&dir),
        [
            "file-00000.seq",
            "file-00001.seq",
            "file-00002.seq",
            "keys.idx",
            "manifest.json"
        ]
    );
    // The files are kept exactly as downloaded.
    for i in 0..3 {
        assert_eq!(
            std::fs::read(dir.join(format!("file-{i:05}.seq"))).unwrap(),
            std::fs::read(loaded.source.join(format!("db/1/part-{i:05}"))).unwrap()
        );
    }
    let manifest = Manifest::read(&dir).unwrap();
    assert_eq!(manifest.input, InputKind::SequenceFile);
    assert_eq!(manifest.num_keys, expected.len() as u64);
    assert_eq!(manifest.num_records, 3004);
    let kinds: Vec<_> = manifest
        .blocks
        .iter()
        .map(|b| (b.kind, b.entries))
        .collect();
    assert_eq!(
        kinds,
        [
            (BlockKind::SequenceFile, 1001),
            (BlockKind::SequenceFile, 1002),
            (BlockKind::SequenceFile, 1001)
        ]
    );
    let sources: Vec<_> = manifest
        .blocks
        .iter()
        .map(|b| b.source_file.clone())
        .collect();
    assert_eq!(
        sources,
        [
            Some("part-00000".into()),
            Some("part-00001".into()),
            Some("part-00002".into())
        ]
    );

    // Through the data layer: by key, by ordinal, and keys that are absent.
    let v = LocalVersion::open(&dir).unwrap();
    assert_eq!(v.key_count(), expected.len() as u64);
    for (ordinal, (k, want)) in expected.iter().enumerate() {
        assert_eq!(read(&v, k).unwrap().as_ref(), Some(want), "{k:?}");
        assert_eq!(v.key_at(ordinal as u64).unwrap(), &k[..]);
        let at = v.locate_ordinal(ordinal as u64).unwrap();
        assert_eq!(at.len, want.len() as u64);
        let mut scratch = Vec::new();
        // A range inside the value, as the mount reads it.
        let part = v.read_value(&at, 3, 10, &mut scratch).unwrap().unwrap();
        let start = want.len().min(3);
        assert_eq!(part, &want[start..want.len().min(13)]);
    }
    assert_eq!(read(&v, b"key/").unwrap(), None);
    assert_eq!(read(&v, b"zzz").unwrap(), None);
    assert_eq!(read(&v, b"").unwrap(), None);
    assert_eq!(
        read(&v, b"dup/across").unwrap().as_deref(),
        Some(&b"from file 2"[..])
    );
    assert_eq!(
        read(&v, b"dup/within").unwrap().as_deref(),
        Some(&b"second"[..])
    );

    // Through the engine's catalog.
    let current = loaded.engine().catalog().current("db").unwrap();
    for (k, want) in &expected {
        assert_eq!(current.get(k).unwrap().as_deref(), Some(&want[..]), "{k:?}");
    }
    drop(current);

    // Through a real mount.
    if can_mount() {
        let mount = TestMount::new(Arc::clone(loaded.engine().catalog()));
        let listed = walk_keys(&mount.path().join("db"));
        let got: BTreeMap<Vec<u8>, Vec<u8>> = listed
            .into_iter()
            .map(|(k, path)| (k, std::fs::read(path).unwrap()))
            .collect();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "the mount serves other bytes");
        mount.unmount();
    }
}

/// A version with a compressed file, with storage compression, or with
/// `[storage] in_place = false` keeps Sparkey tables.
#[test]
fn compressed_inputs_keep_sparkey_tables() {
    let files = dataset();
    let expected = expected(&files);
    for case in ["compressed input", "snappy storage", "in_place off"] {
        let options = if case == "compressed input" {
            SeqfileOptions::snappy_block()
        } else {
            SeqfileOptions::none()
        };
        let loaded = TestEngine::start_with(
            |root| write_version(root, &files, &options),
            Duration::ZERO,
            |config| match case {
                "snappy storage" => {
                    config.storage.compression = sequinsfs::config::StorageCompression::Snappy
                }
                "in_place off" => config.storage.in_place = false,
                _ => {}
            },
        );
        let dir = version_dir(&loaded);
        let names = names(&dir);
        assert!(
            names.contains(&"part-00000-000.spl".to_string()),
            "{case}: {names:?}"
        );
        assert!(!names.iter().any(|n| n.ends_with(".seq")), "{names:?}");
        let manifest = Manifest::read(&dir).unwrap();
        assert!(manifest.blocks.iter().all(|b| b.kind == BlockKind::Sparkey));
        let v = LocalVersion::open(&dir).unwrap();
        for (k, want) in &expected {
            let got = read(&v, k).unwrap();
            if k == b"dup/across" {
                // Files are read in parallel: either file's record may be
                // written last.
                let got = got.unwrap();
                assert!(got == b"from file 0" || got == b"from file 2", "{got:?}");
            } else {
                assert_eq!(got.as_ref(), Some(want), "{k:?}");
            }
        }
    }
}

/// A copy of a version served in place, to damage.
fn loaded_copy(dir: &Path) -> (TestEngine, BTreeMap<Vec<u8>, Vec<u8>>, PathBuf) {
    let files = dataset();
    let expected = expected(&files);
    let loaded = TestEngine::start(
        |root| write_version(root, &files, &SeqfileOptions::none()),
        Duration::ZERO,
    );
    let copy = dir.join("copy");
    copy_dir(&version_dir(&loaded), &copy);
    (loaded, expected, copy)
}

#[test]
fn damaged_files_and_offsets_are_errors_naming_file_and_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let (_loaded, expected, copy) = loaded_copy(tmp.path());
    let first = expected.keys().next().unwrap().clone();
    let seq0 = copy.join("file-00000.seq");
    let keys = copy.join("keys.idx");
    let good_keys = std::fs::read(&keys).unwrap();
    let n = expected.len();
    // keys.idx: header, N+1 offsets, N lengths, then N addresses, N tables.
    let addresses_at = 32 + 8 * (n + 1) + 8 * n;
    let tables_at = addresses_at + 8 * n;

    // A truncated file: values past its end are errors naming the file and
    // the value's offset; values before it still read.
    let full = std::fs::read(&seq0).unwrap();
    std::fs::write(&seq0, &full[..full.len() / 2]).unwrap();
    let v = LocalVersion::open(&copy).unwrap();
    let (mut ok, mut failed) = (0, 0);
    for (k, want) in &expected {
        match read(&v, k) {
            Ok(got) => {
                assert_eq!(got.as_ref(), Some(want));
                ok += 1;
            }
            Err(e) => {
                assert!(e.contains("file-00000.seq: byte "), "{e}");
                assert!(e.contains("runs past the end"), "{e}");
                failed += 1;
            }
        }
    }
    assert!(ok > 0 && failed > 0, "{ok} read, {failed} failed");
    drop(v);
    std::fs::write(&seq0, &full).unwrap();

    // A bad address (overflowing) and a bad table in the key index.
    let mut bad = good_keys.clone();
    bad[addresses_at..addresses_at + 8].copy_from_slice(&(u64::MAX - 2).to_le_bytes());
    std::fs::write(&keys, &bad).unwrap();
    let v = LocalVersion::open(&copy).unwrap();
    let e = read(&v, &first).unwrap_err();
    assert!(
        e.contains(&format!("byte {}: value of", u64::MAX - 2)) && e.contains(".seq"),
        "{e}"
    );
    drop(v);
    let mut bad = good_keys.clone();
    bad[tables_at..tables_at + 4].copy_from_slice(&99u32.to_le_bytes());
    std::fs::write(&keys, &bad).unwrap();
    let v = LocalVersion::open(&copy).unwrap();
    let e = read(&v, &first).unwrap_err();
    assert!(e.contains("table 99 of 3"), "{e}");
    drop(v);
    std::fs::write(&keys, &good_keys).unwrap();

    // A file that is no SequenceFile, or an empty one, is refused at open.
    let mut bad = full.clone();
    bad[0] = b'X';
    std::fs::write(&seq0, &bad).unwrap();
    let e = LocalVersion::open(&copy).err().unwrap().to_string();
    assert!(e.contains("file-00000.seq: byte 0"), "{e}");
    std::fs::write(&seq0, b"").unwrap();
    let e = LocalVersion::open(&copy).err().unwrap().to_string();
    assert!(e.contains("file-00000.seq: byte 0"), "{e}");
    std::fs::remove_file(&seq0).unwrap();
    let e = LocalVersion::open(&copy).err().unwrap().to_string();
    assert!(
        e.contains("file-00000.seq") && e.contains("cannot open"),
        "{e}"
    );
    std::fs::write(&seq0, &full).unwrap();
    let v = LocalVersion::open(&copy).unwrap();
    assert_eq!(read(&v, &first).unwrap().as_ref(), expected.get(&first));
}

/// A truncated source file fails the load with the file and offset, and
/// publishes nothing.
#[test]
fn a_truncated_source_file_fails_the_load_and_publishes_nothing() {
    let files = dataset();
    let loaded = TestEngine::start(
        |root| {
            write_version(root, &files, &SeqfileOptions::none());
            let part = root.join("db/1/part-00001");
            let bytes = std::fs::read(&part).unwrap();
            std::fs::write(&part, &bytes[..bytes.len() - 100]).unwrap();
        },
        Duration::ZERO,
    );
    let status = loaded.engine().catalog().database_status("db").unwrap();
    let error = status.versions[0].error_text().unwrap();
    assert!(error.contains("part-00001: byte "), "{error}");
    assert!(!version_dir(&loaded).exists());
}

/// The reader's value offsets, for each way values are wrapped: the bytes
/// at the offset are the value as served.
#[test]
fn value_offsets_point_at_the_served_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let pairs: Pairs = (0..500u32)
        .map(|i| {
            (
                format!("k{i}").into_bytes(),
                vec![i as u8; (i as usize * 37) % 300],
            )
        })
        .collect();
    let bytes_writable = dir.path().join("bytes");
    write_seqfile(&bytes_writable, &pairs, &SeqfileOptions::none());
    let text = dir.path().join("text");
    let verbatim = dir.path().join("verbatim");
    for (path, options) in [
        (&text, WriterOptions::text()),
        (
            &verbatim,
            WriterOptions::new("org.apache.hadoop.io.Text", "com.example.Raw"),
        ),
    ] {
        let out = std::fs::File::create(path).unwrap();
        let mut writer = Writer::new(out, options).unwrap();
        for (k, v) in &pairs {
            if path == &text {
                writer.append_text(k, v).unwrap();
            } else {
                let mut key = Vec::new();
                write_text(k, &mut key);
                writer.append(&key, v).unwrap();
            }
        }
        writer.finish().unwrap();
    }
    for path in [&bytes_writable, &text, &verbatim] {
        let file = std::fs::read(path).unwrap();
        let mut reader = Reader::new(&file[..], "f").unwrap();
        let mut count = 0;
        while let Some((key, value, at)) = reader.next_unwrapped_at().unwrap() {
            let (k, v) = &pairs[count];
            assert_eq!((key, value), (&k[..], &v[..]));
            assert_eq!(&file[at as usize..at as usize + v.len()], &v[..]);
            count += 1;
        }
        assert_eq!(count, pairs.len(), "{}", path.display());
    }

    // Compressed values are not in place.
    let block = dir.path().join("block");
    write_seqfile(&block, &pairs, &SeqfileOptions::snappy_block());
    let file = std::fs::read(&block).unwrap();
    let mut reader = Reader::new(&file[..], "block").unwrap();
    assert_eq!(reader.header().compression, Compression::Block);
    let e = reader.next_unwrapped_at().unwrap_err().to_string();
    assert!(e.contains("not stored in place"), "{e}");
}
