//! Corrupt and mismatched Sparkey files give typed errors naming the file
//! and offset, never panics.

use std::path::{Path, PathBuf};

use sequinsfs::format::FormatErrorKind;
use sequinsfs::format::sparkey::{Compression, LogWriter, Reader};

/// Writes a 50-entry table and returns (log bytes, index bytes).
fn table(dir: &Path, name: &str, compression: Compression) -> (Vec<u8>, Vec<u8>) {
    let log = dir.join(format!("{name}.spl"));
    let index = dir.join(format!("{name}.spi"));
    let mut writer = LogWriter::create(&log, compression, 64).unwrap();
    for i in 0..50u32 {
        writer
            .put(format!("k{i}").as_bytes(), format!("value {i}").as_bytes())
            .unwrap();
    }
    writer.finish_with_index(&index).unwrap();
    (std::fs::read(log).unwrap(), std::fs::read(index).unwrap())
}

fn open(log: Vec<u8>, index: Vec<u8>) -> sequinsfs::format::FormatResult<Reader> {
    Reader::from_bytes("t.spl", log, "t.spi", index)
}

/// Every lookup and both iterations, collecting the first error.
fn exercise(reader: &Reader) -> Option<sequinsfs::format::FormatError> {
    for i in 0..50u32 {
        if let Err(e) = reader.get(format!("k{i}").as_bytes()) {
            return Some(e);
        }
    }
    if let Some(Err(e)) = reader.iter_live().find(|r| r.is_err()) {
        return Some(e);
    }
    reader.iter_log().find_map(|r| r.err())
}

const BOTH: [Compression; 2] = [Compression::None, Compression::Snappy];

#[test]
fn truncated_files_are_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    for compression in BOTH {
        let (log, index) = table(dir.path(), "t", compression);
        for cut in [0, 10, 83, 84, log.len() - 1] {
            let err = open(log[..cut].to_vec(), index.clone())
                .err()
                .expect("refused");
            assert_eq!(err.file, "t.spl");
            assert!(
                matches!(err.kind, FormatErrorKind::Truncated { .. }),
                "{cut}: {err}"
            );
        }
        for cut in [0, 111, 112, index.len() - 1] {
            let err = open(log.clone(), index[..cut].to_vec())
                .err()
                .expect("refused");
            assert_eq!(err.file, "t.spi");
            assert!(
                matches!(err.kind, FormatErrorKind::Truncated { .. }),
                "{cut}: {err}"
            );
        }
    }
}

#[test]
fn wrong_magic_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (log, index) = table(dir.path(), "t", Compression::None);
    let mut bad_log = log.clone();
    bad_log[0] = 0;
    let err = open(bad_log, index.clone()).err().unwrap();
    assert!(matches!(err.kind, FormatErrorKind::BadMagic { .. }));
    assert_eq!((err.file.as_str(), err.offset), ("t.spl", 0));
    let mut bad_index = index.clone();
    bad_index[3] = 0;
    let err = open(log, bad_index).err().unwrap();
    assert!(matches!(err.kind, FormatErrorKind::BadMagic { .. }));
    assert_eq!((err.file.as_str(), err.offset), ("t.spi", 0));
}

#[test]
fn an_index_of_another_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (log_a, _) = table(dir.path(), "a", Compression::None);
    let (_, index_b) = table(dir.path(), "b", Compression::None);
    let err = open(log_a, index_b).err().unwrap();
    assert_eq!((err.file.as_str(), err.offset), ("t.spi", 12));
    assert!(err.to_string().contains("file identifier"), "{err}");
}

#[test]
fn slot_addresses_past_the_end_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    for compression in BOTH {
        let (log, index) = table(dir.path(), "t", compression);
        let reader = open(log.clone(), index.clone()).unwrap();
        let slot_size = reader.index_header().slot_size() as usize;
        let hash_bytes = reader.index_header().hash_size.bytes() as usize;
        let address_bytes = reader.index_header().address_size as usize;
        // Point every occupied slot far past the log.
        let mut bad = index.clone();
        for slot in bad[112..].chunks_exact_mut(slot_size) {
            let address = &mut slot[hash_bytes..hash_bytes + address_bytes];
            if address.iter().any(|&b| b != 0) {
                address.fill(0x7f);
            }
        }
        let reader = open(log, bad).unwrap();
        let err = exercise(&reader).expect("an error");
        assert!(
            matches!(
                err.kind,
                FormatErrorKind::Corrupt(_) | FormatErrorKind::Truncated { .. }
            ),
            "{compression:?}: {err}"
        );
    }
}

/// An uncompressed log whose only entry has an 11-byte key length varint.
fn overflowing_varint_log(dir: &Path) -> PathBuf {
    let path = dir.join("v.spl");
    let mut writer = LogWriter::create(&path, Compression::None, 0).unwrap();
    writer.put(b"abcdefghijkl", b"v").unwrap();
    writer.finish().unwrap();
    // The entry is `0d 01 "abcdefghijkl" "v"`; rewrite it as a varint that
    // never ends within 64 bits.
    let mut bytes = std::fs::read(&path).unwrap();
    for b in &mut bytes[84..84 + 11] {
        *b = 0xff;
    }
    std::fs::write(&path, &bytes).unwrap();
    path
}

#[test]
fn overflowing_varints_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let log = overflowing_varint_log(dir.path());
    let index = dir.path().join("v.spi");
    let err = sequinsfs::format::sparkey::write_index(&log, &index).unwrap_err();
    assert_eq!(err.offset, 84, "{err}");
    assert!(err.to_string().contains("overflows"), "{err}");

    // Through a valid index of the original entry: lookups fail cleanly.
    let good = dir.path().join("g.spl");
    let good_index = dir.path().join("g.spi");
    let mut writer = LogWriter::create(&good, Compression::None, 0).unwrap();
    writer.put(b"abcdefghijkl", b"v").unwrap();
    writer.finish_with_index(&good_index).unwrap();
    let mut log_bytes = std::fs::read(&good).unwrap();
    let corrupt = std::fs::read(&log).unwrap();
    log_bytes[84..].copy_from_slice(&corrupt[84..]);
    let reader = open(log_bytes, std::fs::read(&good_index).unwrap()).unwrap();
    let err = reader.get(b"abcdefghijkl").unwrap_err();
    assert_eq!(err.offset, 84, "{err}");
    assert!(reader.iter_log().next().unwrap().is_err());
}

#[test]
fn corrupt_compressed_blocks_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (log, index) = table(dir.path(), "t", Compression::Snappy);
    // Garble every byte of the first block's payload.
    let mut bad = log.clone();
    for b in &mut bad[86..100] {
        *b = 0xee;
    }
    let reader = open(bad, index).unwrap();
    assert!(exercise(&reader).is_some());
}

/// Lookups in snappy logs decode a block only as far as the entry they
/// want, so damage at the end of a block is found by the lookups that reach
/// it (and by iteration), with the block's offset in the error, while keys
/// before it still read.
#[test]
fn snappy_lookups_decode_only_up_to_their_entry() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("one.spl");
    let index_path = dir.path().join("one.spi");
    // One block: 40 entries of about 30 bytes fit in 4 KiB.
    let mut writer = LogWriter::create(&log_path, Compression::Snappy, 4096).unwrap();
    let value = |i: u32| format!("value {i:04} of a one-block log").into_bytes();
    for i in 0..40u32 {
        writer
            .put(format!("k{i:02}").as_bytes(), &value(i))
            .unwrap();
    }
    let (header, _) = writer.finish_with_index(&index_path).unwrap();
    let mut log = std::fs::read(&log_path).unwrap();
    let index = std::fs::read(&index_path).unwrap();
    let data_end = header.data_end as usize;
    // Shorten the block's stated length by one byte: its last snappy
    // element is cut, which only decoding up to the last entry notices.
    let payload_len = log[84] as usize | ((log[85] as usize & 0x7f) << 7);
    assert_eq!(
        84 + 2 + payload_len,
        data_end,
        "one block with a 2-byte length"
    );
    assert_ne!(payload_len & 0x7f, 0);
    log[84] -= 1;
    let reader = Reader::from_bytes("one.spl", log, "one.spi", index).unwrap();
    for i in 0..10u32 {
        let got = reader
            .get(format!("k{i:02}").as_bytes())
            .unwrap_or_else(|e| panic!("k{i:02}: {e}"));
        assert_eq!(got.as_deref(), Some(&value(i)[..]), "k{i:02}");
    }
    let err = reader.get(b"k39").unwrap_err();
    assert_eq!((err.file.as_str(), err.offset), ("one.spl", 84), "{err}");
    assert!(
        matches!(err.kind, FormatErrorKind::Decompress { .. }),
        "{err}"
    );
    assert!(reader.iter_log().any(|r| r.is_err()));
}

#[test]
fn log_header_counts_that_cannot_fit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, index) = table(dir.path(), "t", Compression::None);
    log[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    let err = open(log, index).err().unwrap();
    assert_eq!(err.offset, 16, "{err}");
}

/// A table with small values, a delete and a value spilling across many
/// 64-byte blocks; returns (log, index, log header, the delete's address,
/// the big value's address).
fn table_with_a_big_value(
    dir: &Path,
    compression: Compression,
) -> (
    Vec<u8>,
    Vec<u8>,
    sequinsfs::format::sparkey::LogHeader,
    u64,
    u64,
) {
    let log = dir.join("b.spl");
    let index = dir.join("b.spi");
    let mut writer = LogWriter::create(&log, compression, 64).unwrap();
    for i in 0..10u32 {
        writer
            .put(format!("k{i}").as_bytes(), format!("value {i}").as_bytes())
            .unwrap();
    }
    let delete = writer.delete(b"k3").unwrap();
    let big: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let big = writer.put(b"big", &big).unwrap();
    let (header, _) = writer.finish_with_index(&index).unwrap();
    let bits = header.entry_block_bits();
    (
        std::fs::read(log).unwrap(),
        std::fs::read(index).unwrap(),
        header,
        delete.address(bits).unwrap(),
        big.address(bits).unwrap(),
    )
}

#[test]
fn read_value_refuses_addresses_that_are_not_puts() {
    let dir = tempfile::tempdir().unwrap();
    for compression in [
        Compression::None,
        Compression::Snappy,
        Compression::Zstd { level: 1 },
    ] {
        let (log, index, header, delete, big) = table_with_a_big_value(dir.path(), compression);
        let reader = open(log, index).unwrap();
        let bits = header.entry_block_bits();
        let mut scratch = Vec::new();
        let mut hostile = vec![
            0,
            1,
            83,
            header.data_end,
            header.data_end << bits,
            u64::MAX,
            delete,
        ];
        if bits > 0 {
            // The last ordinal the address bits allow, in the big value's
            // block (which holds fewer entries).
            hostile.push(big | ((1 << bits) - 1));
        }
        for address in hostile {
            let what = format!("{compression:?} at {address:#x}");
            let err = reader
                .read_value(address, 0, 10, &mut scratch)
                .expect_err(&what);
            assert_eq!(err.file, "t.spl", "{what}: {err}");
            assert!(
                matches!(
                    err.kind,
                    FormatErrorKind::Corrupt(_)
                        | FormatErrorKind::Truncated { .. }
                        | FormatErrorKind::Decompress { .. }
                ),
                "{what}: {err}"
            );
            let err = reader.value_len_at(address).expect_err(&what);
            assert_eq!(err.file, "t.spl", "{what}: {err}");
        }
        let err = reader.read_value(delete, 0, 10, &mut scratch).unwrap_err();
        assert!(err.to_string().contains("delete"), "{err}");
        assert_eq!(reader.value_len_at(big).unwrap(), 20_000);
    }
}

/// A damaged block in the middle of a spilled value: reads of the chunks
/// before it still succeed, the chunk holding it is an error naming the
/// log and an offset inside the log data, and nothing panics.
#[test]
fn a_damaged_block_fails_only_the_reads_that_reach_it() {
    let dir = tempfile::tempdir().unwrap();
    for compression in [Compression::Snappy, Compression::Zstd { level: 1 }] {
        let (mut log, index, header, _, big) = table_with_a_big_value(dir.path(), compression);
        let value: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        // Find the blocks from their length prefixes, and garble the codec
        // header of one two thirds of the way in (damage to literal bytes
        // would go unseen: neither codec's blocks carry a checksum here).
        let mut blocks = Vec::new();
        let mut at = 84;
        while at < header.data_end as usize {
            let (mut len, mut shift) = (0usize, 0);
            while log[at] >= 0x80 {
                len |= usize::from(log[at] & 0x7f) << shift;
                shift += 7;
                at += 1;
            }
            len |= usize::from(log[at]) << shift;
            blocks.push(at + 1);
            at += 1 + len;
        }
        let damaged = blocks[blocks.len() * 2 / 3];
        log[damaged..damaged + 5].fill(0xff);
        let reader = open(log, index).unwrap();
        let mut scratch = Vec::new();
        assert_eq!(
            reader.read_value(big, 0, 100, &mut scratch).unwrap(),
            &value[..100],
            "{compression:?}"
        );
        let mut first_error = None;
        for start in (0..value.len()).step_by(1000) {
            match reader.read_value(big, start as u64, 1000, &mut scratch) {
                Ok(bytes) if first_error.is_none() => {
                    assert_eq!(bytes, &value[start..start + 1000], "{compression:?}")
                }
                Ok(_) => {}
                Err(err) => {
                    assert_eq!(err.file, "t.spl");
                    assert!(
                        (84..header.data_end).contains(&err.offset),
                        "{compression:?}: {err}"
                    );
                    first_error.get_or_insert(start);
                }
            }
        }
        assert!(first_error.is_some(), "{compression:?}: damage not seen");
        assert!(reader.get(b"big").is_err());
    }
}

/// A spilled value whose length is beyond the log header's `max_value_len`
/// is refused before anything is read.
#[test]
fn spilled_values_longer_than_the_header_allows_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, mut index, _, _, big) = table_with_a_big_value(dir.path(), Compression::Snappy);
    // max_value_len, at offset 48 of the log header and 36 of the index's
    // (which may not be larger).
    log[48..56].copy_from_slice(&100u64.to_le_bytes());
    index[36..44].copy_from_slice(&100u64.to_le_bytes());
    let reader = open(log, index).unwrap();
    let err = reader.value_len_at(big).unwrap_err();
    assert!(err.to_string().contains("max_value_len"), "{err}");
    assert!(reader.locate(b"big").is_err());
    assert!(reader.read_value(big, 0, 10, &mut Vec::new()).is_err());
    assert_eq!(reader.get(b"k1").unwrap().as_deref(), Some(&b"value 1"[..]));
}
