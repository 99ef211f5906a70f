//! Tables written by `LogWriter` read back through `Reader`, for every
//! compression, empty to a million entries, and against an in-memory model
//! over random puts and deletes.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;
use sequinsfs::format::sparkey::{
    Compression, EntryKind, HashSize, LogWriter, Reader, ValueLocation, write_index,
    write_index_with,
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
        common::mutate::cases(96)
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

/// A value of `len` bytes that compresses somewhat (so blocks decode to
/// more than they take) but not to nothing.
fn patterned(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|i| {
            if i % 7 == 0 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
            }
            (x >> (i % 7 * 8)) as u8 & 0x3f
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        common::mutate::cases(48)
    ))]

    /// Every put's position, turned into an address with the finished log's
    /// `entry_block_bits`, is what `locate` finds for the live keys and what
    /// iteration reports; `read_value` of any range of a live value is that
    /// range of what `get` returns, and agrees with `value_len_at`.
    #[test]
    fn positions_locations_and_value_ranges_agree(
        ops in prop::collection::vec(op(), 1..80),
        big in prop::collection::vec((0u8..4, 0usize..3000), 0..4),
        compression in compression(),
        block_size in 16u32..100,
        ranges in prop::collection::vec((any::<prop::sample::Index>(), 0usize..400), 1..12),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("t.spl");
        let index = dir.path().join("t.spi");
        let mut writer = LogWriter::create(&log, compression, block_size).unwrap();
        // Some values many blocks long, so entries spill.
        let mut ops = ops;
        for (i, (key, len)) in big.into_iter().enumerate() {
            let at = i * 7 % (ops.len() + 1);
            ops.insert(at, Op::Put(vec![key], patterned(i as u64, len)));
        }
        // Per key, the position of its last put (None after a delete); and
        // every entry's position in log order.
        let mut positions = BTreeMap::new();
        let mut in_order = Vec::new();
        for op in &ops {
            let (key, position) = match op {
                Op::Put(k, v) => (k, writer.put(k, v).unwrap()),
                Op::Delete(k) => (k, writer.delete(k).unwrap()),
            };
            positions.insert(key.clone(), matches!(op, Op::Put(..)).then_some(position));
            in_order.push(position);
        }
        let (log_header, index_header) = writer.finish_with_index(&index).unwrap();
        let bits = log_header.entry_block_bits();
        prop_assert_eq!(index_header.entry_block_bits, bits);
        let reader = Reader::open(&log, &index).unwrap();
        let (map, _) = model(&ops);
        for (key, position) in &positions {
            let located = reader.locate(key).unwrap();
            let Some(position) = position else {
                prop_assert_eq!(located, None);
                continue;
            };
            let address = position.address(bits).unwrap();
            let value = &map[key];
            prop_assert_eq!(
                located,
                Some(ValueLocation { address, len: value.len() as u64 })
            );
            prop_assert_eq!(reader.value_len_at(address).unwrap(), value.len() as u64);
            let mut scratch = Vec::new();
            let whole = reader.read_value(address, 0, usize::MAX, &mut scratch).unwrap();
            prop_assert_eq!(whole, &value[..]);
            let got = reader.get(key).unwrap();
            prop_assert_eq!(got.as_deref(), Some(&value[..]));
        }
        let from_log: Vec<u64> = reader.iter_log().map(|e| e.unwrap().address).collect();
        let written: Vec<u64> = in_order.iter().map(|p| p.address(bits).unwrap()).collect();
        prop_assert_eq!(from_log, written);
        for entry in reader.iter_live_entries() {
            let entry = entry.unwrap();
            let located = reader.locate(&entry.key).unwrap().unwrap();
            prop_assert_eq!(entry.address, located.address);
        }
        // Random ranges of random live values, including past the end.
        let keys: Vec<&Vec<u8>> = map.keys().collect();
        if !keys.is_empty() {
            let mut scratch = Vec::new();
            let mut longest = 0;
            for (which, len) in &ranges {
                let key = keys[which.index(keys.len())];
                let value = &map[key];
                let address = reader.locate(key).unwrap().unwrap().address;
                let offset = (which.index(value.len() + 2)) as u64;
                let got = reader.read_value(address, offset, *len, &mut scratch).unwrap();
                let start = (offset as usize).min(value.len());
                let end = (start + len).min(value.len());
                prop_assert_eq!(got, &value[start..end], "offset {} len {}", offset, len);
                // The scratch holds at most the range and one block (plus
                // the snappy decoder's slack).
                longest = longest.max(end - start);
                prop_assert!(scratch.capacity() <= longest + block_size as usize + 64);
            }
        }
    }
}

/// A large value read in chunks, forwards, backwards and from several
/// threads at once, for every compression and a few block sizes.
#[test]
fn large_values_read_in_chunks() {
    let value = patterned(42, 1_500_000);
    for compression in COMPRESSIONS {
        for block_size in [64, 4096, 65_536] {
            let dir = tempfile::tempdir().unwrap();
            let log = dir.path().join("t.spl");
            let index = dir.path().join("t.spi");
            let mut writer = LogWriter::create(&log, compression, block_size).unwrap();
            writer.put(b"before", b"a small value").unwrap();
            let position = writer.put(b"big", &value).unwrap();
            writer.put(b"after", b"another").unwrap();
            let (header, _) = writer.finish_with_index(&index).unwrap();
            let reader = Reader::open(&log, &index).unwrap();
            let what = format!("{compression:?} block {block_size}");
            let address = position.address(header.entry_block_bits()).unwrap();
            assert_eq!(
                reader.locate(b"big").unwrap(),
                Some(ValueLocation {
                    address,
                    len: value.len() as u64
                }),
                "{what}"
            );
            const CHUNK: usize = 128 * 1024;
            let mut scratch = Vec::new();
            let mut joined = Vec::new();
            let mut offset = 0u64;
            loop {
                let chunk = reader
                    .read_value(address, offset, CHUNK, &mut scratch)
                    .unwrap();
                if chunk.is_empty() {
                    break;
                }
                joined.extend_from_slice(chunk);
                offset += chunk.len() as u64;
            }
            assert!(joined == value, "{what}: forwards");
            for start in (0..value.len()).step_by(CHUNK).rev() {
                let chunk = reader
                    .read_value(address, start as u64, 1000, &mut scratch)
                    .unwrap();
                assert_eq!(chunk, &value[start..start + 1000], "{what}: at {start}");
            }
            std::thread::scope(|scope| {
                for t in 0..3 {
                    let (reader, value) = (&reader, &value);
                    scope.spawn(move || {
                        let mut scratch = Vec::new();
                        for start in (t * 5000..value.len()).step_by(3 * 33_333) {
                            let got = reader
                                .read_value(address, start as u64, 33_333, &mut scratch)
                                .unwrap();
                            let end = (start + 33_333).min(value.len());
                            assert_eq!(got, &value[start..end]);
                        }
                    });
                }
            });
            assert_eq!(
                reader.get(b"after").unwrap().as_deref(),
                Some(&b"another"[..])
            );
        }
    }
}
