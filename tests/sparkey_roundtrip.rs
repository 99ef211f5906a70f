//! Tables written by `LogWriter` read back through `Reader`, for every
//! compression, empty to a million entries, and against an in-memory model
//! over random puts and deletes.

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;
use sequinsfs::format::sparkey::{
    Compression, EntryKind, HashSize, LogWriter, Reader, write_index, write_index_with,
};

const COMPRESSIONS: [Compression; 3] = [
    Compression::None,
    Compression::Snappy,
    Compression::Zstd { level: 3 },
];

fn key_of(i: u64) -> Vec<u8> {
    format!("key-{i:012}").into_bytes()
}

fn value_of(i: u64, len: usize) -> Vec<u8> {
    let mut value = format!("{i:x}:").into_bytes();
    value.resize(len, b'a' + (i % 26) as u8);
    value
}

fn write_table(
    dir: &Path,
    compression: Compression,
    block_size: u32,
    n: u64,
    value_len: usize,
) -> Reader {
    let log = dir.join("t.spl");
    let index = dir.join("t.spi");
    let mut writer = LogWriter::create(&log, compression, block_size).unwrap();
    for i in 0..n {
        writer.put(&key_of(i), &value_of(i, value_len)).unwrap();
    }
    let (log_header, index_header) = writer.finish_with_index(&index).unwrap();
    assert_eq!(log_header.num_puts, n);
    assert_eq!(index_header.num_entries, n);
    Reader::open(&log, &index).unwrap()
}

#[test]
fn empty_and_single_entry_tables_round_trip_for_every_compression() {
    for compression in COMPRESSIONS {
        let dir = tempfile::tempdir().unwrap();
        let empty = write_table(dir.path(), compression, 4096, 0, 0);
        assert_eq!(empty.num_entries(), 0);
        assert_eq!(empty.index_header().hash_capacity, 1);
        assert_eq!(empty.get(b"").unwrap(), None);
        assert_eq!(empty.iter_live().count(), 0);
        assert_eq!(empty.iter_log().count(), 0);

        let one = write_table(dir.path(), compression, 4096, 1, 10);
        assert_eq!(
            one.get(&key_of(0)).unwrap().as_deref(),
            Some(&value_of(0, 10)[..])
        );
        assert_eq!(one.get(&key_of(1)).unwrap(), None);
        assert_eq!(one.iter_live().count(), 1);
    }
}

#[test]
fn million_entry_tables_round_trip_for_every_compression() {
    const N: u64 = 1_000_000;
    for compression in COMPRESSIONS {
        let dir = tempfile::tempdir().unwrap();
        let reader = write_table(dir.path(), compression, 4096, N, 8);
        assert_eq!(reader.index_header().hash_size, HashSize::Bits32);
        assert_eq!(reader.index_header().hash_capacity, 1_300_001);
        // Every 97th key, plus the last, and misses next to them.
        for i in (0..N).step_by(97).chain([N - 1]) {
            let got = reader.get(&key_of(i)).unwrap();
            assert_eq!(
                got.as_deref(),
                Some(&value_of(i, 8)[..]),
                "{compression:?} {i}"
            );
            assert_eq!(reader.get(&key_of(i + N)).unwrap(), None);
        }
        let mut count = 0u64;
        for (i, entry) in reader.iter_live().enumerate() {
            let (key, _) = entry.unwrap();
            assert_eq!(key.as_ref(), key_of(i as u64));
            count += 1;
        }
        assert_eq!(count, N);
    }
}

#[test]
fn spilling_values_and_tiny_blocks_round_trip() {
    for compression in [Compression::Snappy, Compression::Zstd { level: 1 }] {
        for block_size in [16, 17, 64, 4096] {
            let dir = tempfile::tempdir().unwrap();
            let log = dir.path().join("t.spl");
            let index = dir.path().join("t.spi");
            let mut writer = LogWriter::create(&log, compression, block_size).unwrap();
            let big: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
            writer.put(b"small", b"v").unwrap();
            writer.put(b"big", &big).unwrap();
            writer.put(b"", b"empty key").unwrap();
            writer.put(b"empty value", b"").unwrap();
            writer.put(&big[..5000], b"long key").unwrap();
            writer.finish_with_index(&index).unwrap();
            let reader = Reader::open(&log, &index).unwrap();
            let what = format!("{compression:?} block {block_size}");
            assert_eq!(
                reader.get(b"small").unwrap().as_deref(),
                Some(&b"v"[..]),
                "{what}"
            );
            assert_eq!(
                reader.get(b"big").unwrap().as_deref(),
                Some(&big[..]),
                "{what}"
            );
            assert_eq!(reader.get(b"").unwrap().as_deref(), Some(&b"empty key"[..]));
            assert_eq!(
                reader.get(b"empty value").unwrap().as_deref(),
                Some(&b""[..])
            );
            assert_eq!(
                reader.get(&big[..5000]).unwrap().as_deref(),
                Some(&b"long key"[..])
            );
            assert_eq!(
                reader.get_with(b"big", |v| v.len()).unwrap(),
                Some(big.len())
            );
            assert_eq!(reader.iter_live().count(), 5);
        }
    }
}

/// An operation of the model test.
#[derive(Debug, Clone)]
enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

fn op() -> impl Strategy<Value = Op> {
    // A small key space so that overwrites and deletes of live keys are
    // common; values now and then larger than the small blocks.
    let key = prop::collection::vec(0u8..4, 0..3);
    let value = prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..12),
        1 => prop::collection::vec(any::<u8>(), 0..200),
    ];
    prop_oneof![
        3 => (key.clone(), value).prop_map(|(k, v)| Op::Put(k, v)),
        1 => key.prop_map(Op::Delete),
    ]
}

fn compression() -> impl Strategy<Value = Compression> {
    prop_oneof![
        Just(Compression::None),
        Just(Compression::Snappy),
        Just(Compression::Zstd { level: 1 }),
    ]
}

/// What libsparkey would return: the live map, and live keys in the log
/// order of their latest put.
type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

fn model(ops: &[Op]) -> (BTreeMap<Vec<u8>, Vec<u8>>, Pairs) {
    let mut map = BTreeMap::new();
    let mut latest = BTreeMap::new();
    for (position, op) in ops.iter().enumerate() {
        match op {
            Op::Put(k, v) => {
                map.insert(k.clone(), v.clone());
                latest.insert(k.clone(), position);
            }
            Op::Delete(k) => {
                map.remove(k);
                latest.remove(k);
            }
        }
    }
    let mut order: Vec<(usize, Vec<u8>)> = latest.into_iter().map(|(k, p)| (p, k)).collect();
    order.sort();
    let live = order
        .into_iter()
        .map(|(_, k)| {
            let v = map[&k].clone();
            (k, v)
        })
        .collect();
    (map, live)
}

fn check_reader(reader: &Reader, ops: &[Op]) -> Result<(), TestCaseError> {
    let (map, live) = model(ops);
    prop_assert_eq!(reader.num_entries(), map.len() as u64);
    for key in (0..4u8)
        .flat_map(|a| (0..4u8).map(move |b| vec![a, b]))
        .chain([vec![], vec![0], vec![1], vec![2], vec![3]])
    {
        let got = reader.get(&key).unwrap().map(|v| v.into_owned());
        prop_assert_eq!(got.as_ref(), map.get(&key), "key {:?}", key);
    }
    let got_live: Pairs = reader
        .iter_live()
        .map(|r| r.map(|(k, v)| (k.into_owned(), v.into_owned())).unwrap())
        .collect();
    prop_assert_eq!(got_live, live);
    let log: Vec<_> = reader.iter_log().map(|e| e.unwrap()).collect();
    prop_assert_eq!(log.len(), ops.len());
    for (entry, op) in log.iter().zip(ops) {
        match op {
            Op::Put(k, v) => {
                prop_assert_eq!(entry.kind, EntryKind::Put);
                prop_assert_eq!(entry.key.as_ref(), k.as_slice());
                prop_assert_eq!(entry.value.as_ref(), v.as_slice());
            }
            Op::Delete(k) => {
                prop_assert_eq!(entry.kind, EntryKind::Delete);
                prop_assert_eq!(entry.key.as_ref(), k.as_slice());
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(96)
    ))]

    /// Writer + reader agree with a BTreeMap over random puts and deletes,
    /// through both index builders and both hash sizes.
    #[test]
    fn reader_matches_model(
        ops in prop::collection::vec(op(), 0..120),
        compression in compression(),
        block_size in 16u32..160,
        force64 in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("t.spl");
        let index = dir.path().join("t.spi");
        let mut writer = LogWriter::create(&log, compression, block_size).unwrap();
        for op in &ops {
            match op {
                Op::Put(k, v) => writer.put(k, v).unwrap(),
                Op::Delete(k) => writer.delete(k).unwrap(),
            };
        }
        let hash_size = force64.then_some(HashSize::Bits64);
        let (_, header) = writer.finish_with_index_using(&index, hash_size).unwrap();
        prop_assert_eq!(header.hash_size, hash_size.unwrap_or(HashSize::Bits32));
        check_reader(&Reader::open(&log, &index).unwrap(), &ops)?;

        // The index built from the log alone gives the same answers.
        let rebuilt = dir.path().join("rebuilt.spi");
        let from_log = write_index_with(&log, &rebuilt, hash_size).unwrap();
        prop_assert_eq!(from_log.num_entries, header.num_entries);
        prop_assert_eq!(from_log.garbage_size, header.garbage_size);
        check_reader(&Reader::open(&log, &rebuilt).unwrap(), &ops)?;
    }
}

#[test]
fn write_index_replaces_an_existing_index() {
    let dir = tempfile::tempdir().unwrap();
    let reader = write_table(dir.path(), Compression::Snappy, 64, 100, 20);
    drop(reader);
    let log = dir.path().join("t.spl");
    let index = dir.path().join("t.spi");
    let header = write_index(&log, &index).unwrap();
    assert_eq!(header.num_entries, 100);
    let reader = Reader::open(&log, &index).unwrap();
    assert_eq!(
        reader.get(&key_of(42)).unwrap().as_deref(),
        Some(&value_of(42, 20)[..])
    );
    // No temporary files are left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}
