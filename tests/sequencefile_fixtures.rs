//! Interoperability: the reader against SequenceFiles written by Hadoop
//! itself and by the Go sequins test suite (see the fixtures README).

mod common;

use std::path::{Path, PathBuf};

use common::{fixtures_dir, hex};
use sequinsfs::format::FormatErrorKind;
use sequinsfs::format::sequencefile::Reader;

fn seqfiles(dir: &Path) -> Vec<PathBuf> {
    common::data::fixture_seqfiles(dir)
}

/// Every Hadoop-written file decodes to exactly what Hadoop's reader
/// returned: classes, compression type, codec class, metadata (compared as
/// Hadoop's `Metadata.toString()`) and every serialized key and value.
#[test]
fn every_hadoop_fixture_matches_its_expected_json() {
    let Some(dir) = fixtures_dir() else { return };
    let files = seqfiles(&dir);
    assert!(files.len() >= 34, "only {} fixtures found", files.len());
    for path in files {
        let expected_path = PathBuf::from(format!("{}.expected.json", path.display()));
        let expected: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&expected_path).unwrap()).unwrap();
        let mut reader = Reader::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let header = reader.header().clone();
        let name = path.display();
        assert_eq!(header.key_class, expected["key_class"], "{name}");
        assert_eq!(header.value_class, expected["value_class"], "{name}");
        assert_eq!(
            header.compression.to_string(),
            expected["compression_type"],
            "{name}"
        );
        assert_eq!(
            header.codec.as_deref(),
            expected["codec"].as_str(),
            "{name}"
        );
        assert_eq!(
            header.metadata_to_hadoop_string(),
            expected["metadata"],
            "{name}"
        );
        let mut records = Vec::new();
        while let Some((k, v)) = reader.next_raw().unwrap_or_else(|e| panic!("{e}")) {
            records.push(serde_json::json!([hex(k), hex(v)]));
        }
        assert_eq!(
            serde_json::Value::Array(records),
            expected["records"],
            "{name}"
        );
        // The whole file was consumed.
        assert_eq!(reader.position(), std::fs::metadata(&path).unwrap().len());
    }
}

/// The aircompressor zstd file decodes to the records its README describes.
#[test]
fn airlift_zstd_file_decodes_to_its_50_records() {
    let Some(dir) = fixtures_dir() else { return };
    let path = dir.join("seqfile/text_text__block__airlift_zstd.seq");
    let mut reader = Reader::open(&path).unwrap();
    assert_eq!(
        reader.header().codec.as_deref(),
        Some("io.airlift.compress.zstd.ZstdCodec")
    );
    let mut n = 0;
    while let Some((key, value)) = reader.next_unwrapped().unwrap() {
        assert_eq!(key, format!("key-{n:03}").as_bytes());
        assert_eq!(value, format!("value {n} ").repeat(5).as_bytes());
        n += 1;
    }
    assert_eq!(n, 50);
}

/// sequins' own test database: 64 BytesWritable records over five files,
/// keys containing `/`.
#[test]
fn sequins_baby_names_decode_to_64_records() {
    let Some(dir) = fixtures_dir() else { return };
    let version = dir.join("sequins/healthy/baby-names/1");
    let mut records = Vec::new();
    for part in 0..5 {
        let path = version.join(format!("part-{part:05}"));
        let mut reader = Reader::open(&path).unwrap();
        while let Some((k, v)) = reader.next_unwrapped().unwrap() {
            records.push((
                String::from_utf8(k.to_vec()).unwrap(),
                String::from_utf8(v.to_vec()).unwrap(),
            ));
        }
    }
    assert_eq!(records.len(), 64);
    assert!(records.contains(&("1881/boy".into(), "John".into())));
    assert!(records.contains(&("1898/girl".into(), "Mary".into())));
    assert!(records.iter().all(|(k, _)| k.len() == 8 || k.len() == 9));
}

/// The text file sequins uses as a broken database is refused at byte 0.
#[test]
fn sequins_baby_names_bad_fails_with_bad_magic() {
    let Some(dir) = fixtures_dir() else { return };
    let path = dir.join("sequins/partially_healthy/baby-names-bad/1/part-00000");
    let err = Reader::open(&path)
        .err()
        .expect("a text file must not parse");
    assert!(
        matches!(err.kind, FormatErrorKind::BadMagic { .. }),
        "{err}"
    );
    assert_eq!(err.offset, 0);
    let message = err.to_string();
    assert!(message.contains("part-00000") && message.contains("not a SequenceFile"));
}
