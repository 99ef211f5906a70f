//! Sparkey tables written by libsparkey, sparkey-java and snappy-java read
//! exactly as those tools read them.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use common::{fixtures_dir, unhex};
use sequinsfs::format::FormatErrorKind;
use sequinsfs::format::sparkey::{
    Compression, CompressionType, EntryKind, HashSize, INDEX_HEADER_SIZE, IndexHeader, LogHeader,
    LogWriter, Reader, ValueLocation, framed, write_index, write_index_seeded,
};

type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

fn open_plain(dir: &Path, stem: &str) -> Reader {
    Reader::open(
        &dir.join(format!("{stem}.spl")),
        &dir.join(format!("{stem}.spi")),
    )
    .unwrap_or_else(|e| panic!("{stem}: {e}"))
}

fn open_framed(dir: &Path, stem: &str) -> Reader {
    let sz = dir.join(format!("{stem}.spi.sz"));
    let mut index = Vec::new();
    let name = sz.display().to_string();
    framed::decode(std::fs::File::open(&sz).unwrap(), &mut index, &name).unwrap();
    Reader::open_with_index_bytes(&dir.join(format!("{stem}.spl")), &name, index)
        .unwrap_or_else(|e| panic!("{stem}: {e}"))
}

fn live(reader: &Reader) -> Pairs {
    reader
        .iter_live()
        .map(|r| r.map(|(k, v)| (k.into_owned(), v.into_owned())).unwrap())
        .collect()
}

fn expected(dir: &Path, stem: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join(format!("{stem}.expected.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn hex_pairs(value: &serde_json::Value) -> Pairs {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| {
            let pair = pair.as_array().unwrap();
            (
                unhex(pair[0].as_str().unwrap()),
                unhex(pair[1].as_str().unwrap()),
            )
        })
        .collect()
}

/// Checks a table against its `.expected.json`: count, live iteration
/// order, and a lookup of every live key.
fn check_against_expected(reader: &Reader, json: &serde_json::Value, what: &str) -> Pairs {
    let expected_live = hex_pairs(&json["live_in_iteration_order"]);
    assert_eq!(
        reader.num_entries(),
        json["num_entries"].as_u64().unwrap(),
        "{what}"
    );
    assert_eq!(live(reader), expected_live, "{what}: live iteration order");
    for (key, value) in &expected_live {
        let got = reader.get(key).unwrap();
        assert_eq!(
            got.as_deref(),
            Some(value.as_slice()),
            "{what}: key {key:x?}"
        );
        let via_callback = reader.get_with(key, |v| v.to_vec()).unwrap();
        assert_eq!(via_callback.as_ref(), Some(value), "{what}");
    }
    expected_live
}

#[test]
fn ops_tables_match_libsparkey_including_deletes_and_log_order() {
    let Some(fixtures) = fixtures_dir() else {
        return;
    };
    let dir = fixtures.join("sparkey");
    for stem in ["ops_snappy_4k", "ops_none_hash64"] {
        let json = expected(&dir, stem);
        for (reader, how) in [
            (open_plain(&dir, stem), ".spi"),
            (open_framed(&dir, stem), ".spi.sz"),
        ] {
            let what = format!("{stem}{how}");
            let expected_live = check_against_expected(&reader, &json, &what);

            // Raw log iteration, deletes included, in file order.
            let log: Vec<(Vec<u8>, Vec<u8>, EntryKind)> = reader
                .iter_log()
                .map(|e| {
                    let e = e.unwrap();
                    (e.key.into_owned(), e.value.into_owned(), e.kind)
                })
                .collect();
            let expected_log: Vec<(Vec<u8>, Vec<u8>, EntryKind)> = json["log_entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    let e = e.as_array().unwrap();
                    let kind = match e[2].as_str().unwrap() {
                        "PUT" => EntryKind::Put,
                        _ => EntryKind::Delete,
                    };
                    (
                        unhex(e[0].as_str().unwrap()),
                        unhex(e[1].as_str().unwrap()),
                        kind,
                    )
                })
                .collect();
            assert_eq!(log, expected_log, "{what}: log entries");
            let deletes = log.iter().filter(|e| e.2 == EntryKind::Delete).count();
            assert_eq!(reader.log_header().num_deletes, deletes as u64);

            // Every key of the log that is not live is absent.
            let live_keys: HashSet<&[u8]> =
                expected_live.iter().map(|(k, _)| k.as_slice()).collect();
            let mut dead = 0;
            for (key, _, _) in &log {
                if !live_keys.contains(key.as_slice()) {
                    assert_eq!(reader.get(key).unwrap(), None, "{what}: {key:x?}");
                    dead += 1;
                }
            }
            assert!(dead > 0, "{what}: the fixture has deleted keys");
            assert_eq!(reader.get(b"never written").unwrap(), None);
        }
    }
}

#[test]
fn cli_tables_hold_every_line_of_their_input() {
    let Some(fixtures) = fixtures_dir() else {
        return;
    };
    let dir = fixtures.join("sparkey");
    for (stem, tsv) in [
        ("none_small", "small.tsv"),
        ("snappy_big", "big.tsv"),
        ("zstd_big", "big.tsv"),
    ] {
        let text = std::fs::read_to_string(dir.join(tsv)).unwrap();
        let lines: BTreeMap<&str, &str> = text
            .lines()
            .map(|line| line.split_once('\t').expect("key<TAB>value"))
            .collect();
        let json = expected(&dir, stem);
        for (reader, how) in [
            (open_plain(&dir, stem), ".spi"),
            (open_framed(&dir, stem), ".spi.sz"),
        ] {
            let what = format!("{stem}{how}");
            check_against_expected(&reader, &json, &what);
            assert_eq!(reader.num_entries(), lines.len() as u64, "{what}");
            for (key, value) in &lines {
                let got = reader.get(key.as_bytes()).unwrap();
                assert_eq!(got.as_deref(), Some(value.as_bytes()), "{what}: {key}");
            }
        }
    }
    let snappy = open_plain(&dir, "snappy_big");
    assert_eq!(snappy.log_header().compression_block_size, 4096);
    assert_eq!(snappy.log_header().compression.name(), "snappy");
    assert_eq!(
        open_plain(&dir, "zstd_big").log_header().compression.name(),
        "zstd"
    );
}

#[test]
fn sequins_sparkey_fixture_reads() {
    let Some(fixtures) = fixtures_dir() else {
        return;
    };
    let dir = fixtures.join("sequins").join("sparkey");
    let file0 = open_framed(&dir, "part0-file0");
    let file1 = open_framed(&dir, "part0-file1");
    let empty = open_framed(&dir, "part1");
    let lookup = |key: &str| {
        [&file0, &file1, &empty]
            .iter()
            .find_map(|r| r.get(key.as_bytes()).unwrap().map(|v| v.into_owned()))
    };
    for (key, value) in [
        ("Alice", "Practice"),
        ("Betty", "White"),
        ("Charlie", "Chaplin"),
        ("Dylan", "Thomas"),
    ] {
        assert_eq!(lookup(key).as_deref(), Some(value.as_bytes()), "{key}");
    }
    assert_eq!(lookup("Bob"), None);
    assert_eq!(empty.num_entries(), 0);
    assert_eq!(live(&empty), Pairs::new());
    // sequins takes the first log key as the file's minimum key.
    let first = file0.iter_log().next().unwrap().unwrap();
    assert_eq!(first.key.as_ref(), b"Alice");
}

#[test]
fn framed_snappy_fixture_decodes_and_a_bad_crc_is_an_error() {
    let Some(fixtures) = fixtures_dir() else {
        return;
    };
    let dir = fixtures.join("framed-snappy");
    let framed_bytes = std::fs::read(dir.join("random_200k.bin.sz")).unwrap();
    let plain = std::fs::read(dir.join("random_200k.bin")).unwrap();
    let mut out = Vec::new();
    let n = framed::decode(&framed_bytes[..], &mut out, "random_200k.bin.sz").unwrap();
    assert_eq!(n, plain.len() as u64);
    assert_eq!(out, plain);

    // Flip one bit of the first data chunk's stored CRC (bytes 14..18).
    let mut corrupt = framed_bytes.clone();
    corrupt[15] ^= 0x10;
    let err = framed::decode(&corrupt[..], &mut Vec::new(), "x.sz").unwrap_err();
    assert!(
        matches!(err.kind, FormatErrorKind::Checksum { .. }),
        "{err}"
    );
    assert_eq!(err.offset, 10);
    // And one bit of the payload of the last chunk.
    let mut corrupt = framed_bytes.clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 1;
    assert!(framed::decode(&corrupt[..], &mut Vec::new(), "x.sz").is_err());

    // Our encoder's output decodes to the same bytes.
    let mut reencoded = Vec::new();
    framed::encode(&plain[..], &mut reencoded).unwrap();
    let mut back = Vec::new();
    framed::decode(&reencoded[..], &mut back, "re.sz").unwrap();
    assert_eq!(back, plain);
}

#[test]
fn framed_index_files_decode_to_the_plain_index() {
    let Some(fixtures) = fixtures_dir() else {
        return;
    };
    let dir = fixtures.join("sparkey");
    let out = tempfile::tempdir().unwrap();
    for stem in [
        "none_small",
        "snappy_big",
        "zstd_big",
        "ops_snappy_4k",
        "ops_none_hash64",
    ] {
        let decoded = out.path().join(format!("{stem}.spi"));
        framed::decode_file(&dir.join(format!("{stem}.spi.sz")), &decoded).unwrap();
        assert_eq!(
            std::fs::read(&decoded).unwrap(),
            std::fs::read(dir.join(format!("{stem}.spi"))).unwrap(),
            "{stem}"
        );
    }
}

/// Every libsparkey table, by stem, with the hash size its index was
/// written with when it was forced rather than chosen automatically.
const LIBSPARKEY_TABLES: [(&str, Option<HashSize>); 5] = [
    ("none_small", None),
    ("snappy_big", None),
    ("zstd_big", None),
    ("ops_snappy_4k", None),
    ("ops_none_hash64", Some(HashSize::Bits64)),
];

/// Our index writer, given libsparkey's log and the hash seed libsparkey
/// drew, writes libsparkey's index: the same header byte for byte (hash size
/// choice, capacity, address size, displacement and collision statistics)
/// and the same entries in the same slots, except that entries sharing a
/// home slot may be in another order among themselves (our writer inserts
/// in home-slot order for speed; a lookup compares each of them anyway, so
/// no reader can tell).
#[test]
fn indexes_written_for_libsparkey_logs_match_libsparkey_s() {
    let Some(fixtures) = fixtures_dir() else {
        return;
    };
    let dir = fixtures.join("sparkey");
    let out = tempfile::tempdir().unwrap();
    for (stem, hash_size) in LIBSPARKEY_TABLES {
        let theirs = std::fs::read(dir.join(format!("{stem}.spi"))).unwrap();
        let header = open_plain(&dir, stem).index_header().clone();
        let ours_path = out.path().join(format!("{stem}.spi"));
        write_index_seeded(
            &dir.join(format!("{stem}.spl")),
            &ours_path,
            hash_size,
            header.hash_seed,
        )
        .unwrap_or_else(|e| panic!("{stem}: {e}"));
        let ours = std::fs::read(&ours_path).unwrap();
        assert_eq!(ours.len(), theirs.len(), "{stem}: index length");
        let header_len = INDEX_HEADER_SIZE as usize;
        assert!(
            ours[..header_len] == theirs[..header_len],
            "{stem}: index headers differ"
        );
        assert_eq!(
            canonical_slots(&ours, &header),
            canonical_slots(&theirs, &header),
            "{stem}: slots"
        );
    }
}

/// The index's slots as (hash, address) pairs, each run of slots whose
/// entries share a home slot sorted (a Robin Hood table is otherwise
/// determined by its entries).
fn canonical_slots(index: &[u8], header: &IndexHeader) -> Vec<(u64, u64)> {
    let hash_len = header.hash_size.bytes() as usize;
    let address_len = header.address_size as usize;
    let le = |bytes: &[u8]| {
        bytes
            .iter()
            .rev()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
    };
    let mut slots: Vec<(u64, u64)> = index[INDEX_HEADER_SIZE as usize..]
        .chunks_exact(hash_len + address_len)
        .map(|slot| (le(&slot[..hash_len]), le(&slot[hash_len..])))
        .collect();
    let home = |&(hash, address): &(u64, u64)| (address != 0).then(|| hash % header.hash_capacity);
    let mut start = 0;
    while start < slots.len() {
        let mut end = start + 1;
        while end < slots.len()
            && home(&slots[end]).is_some()
            && home(&slots[end]) == home(&slots[start])
        {
            end += 1;
        }
        slots[start..end].sort_unstable();
        start = end;
    }
    slots
}

/// Our log writer, given the entries of a libsparkey log in order, writes
/// the same log: byte for byte apart from the random file identifier when
/// uncompressed; for compressed logs (whose bytes depend on the compressor
/// library) the same header fields and the same entries in the same blocks
/// at the same ordinals.
#[test]
fn logs_rewritten_from_libsparkey_entries_match_libsparkey_s() {
    let Some(fixtures) = fixtures_dir() else {
        return;
    };
    let dir = fixtures.join("sparkey");
    let out = tempfile::tempdir().unwrap();
    for (stem, _) in LIBSPARKEY_TABLES {
        let theirs = open_plain(&dir, stem);
        let header = theirs.log_header().clone();
        let compression = match header.compression {
            CompressionType::None => Compression::None,
            CompressionType::Snappy => Compression::Snappy,
            CompressionType::Zstd => Compression::Zstd { level: 3 },
        };
        let path = out.path().join(format!("{stem}.spl"));
        let mut writer =
            LogWriter::create(&path, compression, header.compression_block_size).unwrap();
        for entry in theirs.iter_log() {
            let entry = entry.unwrap();
            match entry.kind {
                EntryKind::Put => writer.put(&entry.key, &entry.value).unwrap(),
                EntryKind::Delete => writer.delete(&entry.key).unwrap(),
            };
        }
        let ours_header = writer.finish().unwrap();
        if header.compression == CompressionType::None {
            let mut ours = std::fs::read(&path).unwrap();
            let theirs_bytes = std::fs::read(dir.join(format!("{stem}.spl"))).unwrap();
            // Bytes 12..16: the file identifier, random per log.
            ours[12..16].copy_from_slice(&theirs_bytes[12..16]);
            assert!(ours == theirs_bytes, "{stem}: logs differ");
            continue;
        }
        let comparable = |h: &LogHeader| LogHeader {
            file_identifier: 0,
            data_end: 0,
            ..h.clone()
        };
        assert_eq!(comparable(&ours_header), comparable(&header), "{stem}");
        let blocks = |reader_log: Vec<(u64, Vec<u8>)>| {
            let bits = header.entry_block_bits();
            let mut rank = BTreeMap::new();
            reader_log
                .into_iter()
                .map(|(address, key)| {
                    let next = rank.len();
                    let block = *rank.entry(address >> bits).or_insert(next);
                    (block, address & ((1 << bits) - 1), key)
                })
                .collect::<Vec<_>>()
        };
        let entries = |path: &Path| {
            let index = out.path().join("scratch.spi");
            write_index(path, &index).unwrap();
            Reader::open(path, &index)
                .unwrap()
                .iter_log()
                .map(|e| e.map(|e| (e.address, e.key.into_owned())).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            blocks(entries(&path)),
            blocks(entries(&dir.join(format!("{stem}.spl")))),
            "{stem}: entries by block and ordinal"
        );
    }
}

/// Values of libsparkey's tables read by address, whole and in ranges,
/// equal what lookups return; the addresses are the index's.
#[test]
fn fixture_values_read_by_address_and_range() {
    let Some(fixtures) = fixtures_dir() else {
        return;
    };
    let dir = fixtures.join("sparkey");
    for stem in [
        "none_small",
        "snappy_big",
        "zstd_big",
        "ops_snappy_4k",
        "ops_none_hash64",
    ] {
        let reader = open_plain(&dir, stem);
        let mut scratch = Vec::new();
        let mut count = 0;
        for entry in reader.iter_live_entries() {
            let entry = entry.unwrap();
            let len = entry.value.len() as u64;
            assert_eq!(
                reader.locate(&entry.key).unwrap(),
                Some(ValueLocation {
                    address: entry.address,
                    len
                }),
                "{stem}"
            );
            assert_eq!(reader.value_len_at(entry.address).unwrap(), len, "{stem}");
            let chunk = (entry.value.len() / 3).max(1);
            let mut joined = Vec::new();
            while (joined.len() as u64) < len {
                let offset = joined.len() as u64;
                let bytes = reader
                    .read_value(entry.address, offset, chunk, &mut scratch)
                    .unwrap();
                assert!(!bytes.is_empty(), "{stem}");
                joined.extend_from_slice(bytes);
            }
            assert_eq!(joined, entry.value.as_ref(), "{stem}");
            count += 1;
        }
        assert_eq!(count, reader.num_entries(), "{stem}");
    }
}
