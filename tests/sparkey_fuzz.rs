//! Mutation fuzzing of the Sparkey log and index parsers and the framed
//! snappy decoder: real fixture tables with random structural damage must
//! give `Ok` or `Err`, never a panic or a hang. Reads of values by address
//! are fuzzed over tables written here, whose values spill across many
//! blocks, with damaged logs and hostile addresses.
//!
//! The default case count keeps CI fast; raise it with `PROPTEST_CASES`
//! (for example `PROPTEST_CASES=20000 cargo test --release --test sparkey_fuzz`).

mod common;

use common::mutate;

use std::sync::OnceLock;

use proptest::prelude::*;
use sequinsfs::format::sparkey::{Compression, LogWriter, Reader, framed};

/// A fixture table and some of its keys.
struct Table {
    log: Vec<u8>,
    index: Vec<u8>,
    framed_index: Vec<u8>,
    keys: Vec<Vec<u8>>,
}

fn tables() -> &'static [Table] {
    static TABLES: OnceLock<Vec<Table>> = OnceLock::new();
    TABLES.get_or_init(|| {
        let Some(fixtures) = common::fixtures_dir() else {
            return Vec::new();
        };
        let dir = fixtures.join("sparkey");
        [
            "none_small",
            "snappy_big",
            "zstd_big",
            "ops_snappy_4k",
            "ops_none_hash64",
        ]
        .iter()
        .map(|stem| {
            let read = |ext: &str| std::fs::read(dir.join(format!("{stem}.{ext}"))).unwrap();
            let (log, index) = (read("spl"), read("spi"));
            let reader = Reader::from_bytes("l", log.clone(), "i", index.clone()).unwrap();
            let keys = reader
                .iter_log()
                .take(64)
                .map(|e| e.unwrap().key.into_owned())
                .collect();
            Table {
                framed_index: read("spi.sz"),
                log,
                index,
                keys,
            }
        })
        .collect()
    })
}

/// Drives every read path over a (possibly damaged) table. Iterations are
/// bounded only by the data: each entry consumes at least one byte, so a
/// hang would show up as a test timeout.
fn exercise(log: Vec<u8>, index: Vec<u8>, keys: &[Vec<u8>]) {
    let Ok(reader) = Reader::from_bytes("l.spl", log, "i.spi", index) else {
        return;
    };
    for key in keys {
        let _ = reader.get(key);
        let _ = reader.get_with(key, |v| v.len());
    }
    let _ = reader.get(b"not a key in any fixture");
    let mut scratch = Vec::new();
    for key in keys {
        let Ok(Some(location)) = reader.locate(key) else {
            continue;
        };
        let _ = reader.value_len_at(location.address);
        for (offset, len) in [
            (0, usize::MAX),
            (1, 10),
            (location.len / 2, 4096),
            (location.len, 1),
            (u64::MAX, 1),
        ] {
            if let Ok(bytes) = reader.read_value(location.address, offset, len, &mut scratch) {
                assert!(bytes.len() <= len);
            }
        }
    }
    let live = reader.iter_live().take_while(|r| r.is_ok()).count();
    let all = reader.iter_log().count();
    // Bound sanity: entries take at least one byte each.
    assert!(live <= all.max(1) + reader.log_header().data_end as usize);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: mutate::cases(200),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn damaged_tables_never_panic(
        table in any::<prop::sample::Index>(),
        log_mutations in prop::collection::vec(mutate::binary(mutate::little_endian_patches()), 0..4),
        index_mutations in prop::collection::vec(mutate::binary(mutate::little_endian_patches()), 0..4),
    ) {
        let tables = tables();
        if tables.is_empty() {
            return Ok(());
        }
        let table = &tables[table.index(tables.len())];
        let mut log = table.log.clone();
        let mut index = table.index.clone();
        mutate::apply_all(&mut log, &log_mutations);
        mutate::apply_all(&mut index, &index_mutations);
        exercise(log, index, &table.keys);
    }

    #[test]
    fn damaged_framed_indexes_never_panic(
        table in any::<prop::sample::Index>(),
        mutations in prop::collection::vec(mutate::binary(mutate::little_endian_patches()), 1..4),
    ) {
        let tables = tables();
        if tables.is_empty() {
            return Ok(());
        }
        let table = &tables[table.index(tables.len())];
        let mut framed_index = table.framed_index.clone();
        mutate::apply_all(&mut framed_index, &mutations);
        let mut decoded = Vec::new();
        if framed::decode(&framed_index[..], &mut decoded, "i.spi.sz").is_ok() {
            exercise(table.log.clone(), decoded, &table.keys);
        }
    }
}

/// A written table whose values spill across many small blocks: log and
/// index bytes, the entries' addresses, the log's block size.
struct Spilling {
    log: Vec<u8>,
    index: Vec<u8>,
    addresses: Vec<u64>,
    block_size: usize,
}

fn spilling_tables() -> &'static [Spilling] {
    static TABLES: OnceLock<Vec<Spilling>> = OnceLock::new();
    TABLES.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut tables = Vec::new();
        for compression in [
            Compression::None,
            Compression::Snappy,
            Compression::Zstd { level: 1 },
        ] {
            for block_size in [32u32, 700] {
                let log = dir.path().join("t.spl");
                let index = dir.path().join("t.spi");
                let mut writer = LogWriter::create(&log, compression, block_size).unwrap();
                let mut positions = Vec::new();
                for i in 0..40u32 {
                    let len = [3, 50, 5000][i as usize % 3];
                    let value: Vec<u8> = (0..len).map(|j| (j * 7 + i) as u8 % 61).collect();
                    positions.push(writer.put(format!("k{i}").as_bytes(), &value).unwrap());
                    if i % 9 == 0 {
                        positions.push(writer.delete(format!("k{}", i / 2).as_bytes()).unwrap());
                    }
                }
                let (header, _) = writer.finish_with_index(&index).unwrap();
                let bits = header.entry_block_bits();
                tables.push(Spilling {
                    log: std::fs::read(&log).unwrap(),
                    index: std::fs::read(&index).unwrap(),
                    addresses: positions.iter().map(|p| p.address(bits).unwrap()).collect(),
                    block_size: block_size as usize,
                });
            }
        }
        tables
    })
}

/// An address to try: one of the table's, one near it, or anything.
#[derive(Debug, Clone)]
enum Address {
    Entry(prop::sample::Index),
    Near(prop::sample::Index, i8),
    Shifted(prop::sample::Index, u8),
    Any(u64),
}

fn address() -> impl Strategy<Value = Address> {
    prop_oneof![
        3 => any::<prop::sample::Index>().prop_map(Address::Entry),
        2 => (any::<prop::sample::Index>(), any::<i8>()).prop_map(|(i, d)| Address::Near(i, d)),
        1 => (any::<prop::sample::Index>(), 0u8..64).prop_map(|(i, s)| Address::Shifted(i, s)),
        1 => any::<u64>().prop_map(Address::Any),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: mutate::cases(200),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// `read_value` and `value_len_at` at any address, of a damaged or
    /// intact log, give bytes within the range asked for (and a scratch
    /// buffer within the range plus a block) or an error naming the log,
    /// never a panic.
    #[test]
    fn reads_at_hostile_addresses_never_panic(
        table in any::<prop::sample::Index>(),
        log_mutations in prop::collection::vec(mutate::binary(mutate::little_endian_patches()), 0..3),
        reads in prop::collection::vec((address(), any::<u64>(), 0usize..20_000), 1..8),
    ) {
        let tables = spilling_tables();
        let table = &tables[table.index(tables.len())];
        let mut log = table.log.clone();
        mutate::apply_all(&mut log, &log_mutations);
        let Ok(reader) = Reader::from_bytes("l.spl", log, "i.spi", table.index.clone()) else {
            return Ok(());
        };
        let mut scratch = Vec::new();
        let mut longest = 0;
        for (address, offset, len) in reads {
            let address = match address {
                Address::Entry(i) => table.addresses[i.index(table.addresses.len())],
                Address::Near(i, d) => table.addresses[i.index(table.addresses.len())]
                    .wrapping_add_signed(i64::from(d)),
                Address::Shifted(i, s) => {
                    table.addresses[i.index(table.addresses.len())].wrapping_shl(u32::from(s))
                }
                Address::Any(a) => a,
            };
            // Offsets mostly within a value's length, sometimes anywhere.
            let offset = if offset % 4 == 0 { offset } else { offset % 6000 };
            match reader.value_len_at(address) {
                Ok(_) => {}
                Err(e) => prop_assert_eq!(e.file.as_str(), "l.spl"),
            }
            longest = longest.max(len);
            match reader.read_value(address, offset, len, &mut scratch) {
                Ok(bytes) => prop_assert!(bytes.len() <= len),
                Err(e) => prop_assert_eq!(e.file.as_str(), "l.spl"),
            }
            // Blocks decode to at most the header's block size, which a
            // mutation may have changed; the writer's is the usual bound.
            let block = table.block_size.max(reader.log_header().compression_block_size as usize);
            prop_assert!(scratch.capacity() <= longest + block + 64);
        }
    }
}
