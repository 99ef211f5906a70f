//! Bad input: each case of the issue is a typed error naming the file and
//! the byte offset of the structure that is wrong, never a panic.

use sequinsfs::format::sequencefile::{
    Codec, Compression, Reader, ReaderOptions, Writer, WriterOptions,
};
use sequinsfs::format::{FormatError, FormatErrorKind};

const SYNC: [u8; 16] = *b"sync-marker-0123";

/// A file of `records` BytesWritable pairs `("k{i}", "value {i}")`.
fn file(compression: Compression, codec: Codec, records: usize, sync_interval: u64) -> Vec<u8> {
    let mut options = WriterOptions::bytes_writable().compressed(compression, codec);
    options.sync = Some(SYNC);
    options.sync_interval = sync_interval;
    let mut writer = Writer::new(Vec::new(), options).unwrap();
    for i in 0..records {
        writer
            .append_bytes_writable(format!("k{i}").as_bytes(), format!("value {i}").as_bytes())
            .unwrap();
    }
    writer.finish().unwrap()
}

/// Where the records start.
fn header_len(bytes: &[u8]) -> u64 {
    Reader::new(bytes, "f").unwrap().position()
}

/// Reads every record; returns the first error.
fn read_err(bytes: &[u8]) -> FormatError {
    read_err_with(bytes, ReaderOptions::default())
}

fn read_err_with(bytes: &[u8], options: ReaderOptions) -> FormatError {
    let mut reader = match Reader::with_options(bytes, "bad.seq", options) {
        Ok(reader) => reader,
        Err(e) => return e,
    };
    loop {
        match reader.next_unwrapped() {
            Ok(Some(_)) => {}
            Ok(None) => panic!("bad input read to the end without an error"),
            Err(e) => return e,
        }
    }
}

#[test]
fn zero_length_file_is_truncated_at_byte_0() {
    let err = read_err(b"");
    assert!(
        matches!(err.kind, FormatErrorKind::Truncated { available: 0, .. }),
        "{err}"
    );
    assert_eq!((err.file.as_str(), err.offset), ("bad.seq", 0));
}

#[test]
fn wrong_magic_is_bad_magic_at_byte_0() {
    let err = read_err(b"PAR1 not a sequence file");
    assert!(
        matches!(err.kind, FormatErrorKind::BadMagic { .. }),
        "{err}"
    );
    assert_eq!(err.offset, 0);
    assert!(
        err.to_string()
            .starts_with("bad.seq: byte 0: not a SequenceFile")
    );
}

#[test]
fn file_truncated_in_the_header_names_the_field() {
    let bytes = file(Compression::None, Codec::Default, 1, 1 << 20);
    // magic + version (4), key class (1 + 34), value class cut short.
    let err = read_err(&bytes[..44]);
    assert!(
        matches!(
            err.kind,
            FormatErrorKind::Truncated {
                what: "value class name",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.offset, 4 + 1 + 34);
}

#[test]
fn file_truncated_inside_a_record_names_the_record_offset() {
    let bytes = file(Compression::None, Codec::Default, 3, 1 << 20);
    let start = header_len(&bytes);
    // Records are 8 + 4 + 2 + 4 + 7 = 25 bytes; cut the third in its middle.
    let third = start + 50;
    let err = read_err(&bytes[..third as usize + 12]);
    assert!(
        matches!(
            err.kind,
            FormatErrorKind::Truncated {
                what: "record",
                needed: 17,
                available: 4
            }
        ),
        "{err}"
    );
    assert_eq!(err.offset, third);
    // Cut inside the record length itself.
    let err = read_err(&bytes[..third as usize + 2]);
    assert!(matches!(
        err.kind,
        FormatErrorKind::Truncated {
            needed: 4,
            available: 2,
            ..
        }
    ));
    assert_eq!(err.offset, third);
}

#[test]
fn truncated_block_is_an_error_at_its_section() {
    let bytes = file(Compression::Block, Codec::Snappy, 20, 0);
    let err = read_err(&bytes[..bytes.len() - 5]);
    assert!(
        matches!(
            err.kind,
            FormatErrorKind::Truncated {
                what: "values section",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.offset > header_len(&bytes));
}

#[test]
fn record_length_beyond_the_file_is_truncated_with_or_without_a_known_length() {
    let mut bytes = file(Compression::None, Codec::Default, 2, 1 << 20);
    let start = header_len(&bytes) as usize;
    bytes[start..start + 4].copy_from_slice(&0x3fff_0000i32.to_be_bytes());
    // A known length refuses it before reading: the bytes left after the
    // two length fields are what is available.
    let options = ReaderOptions {
        input_len: Some(bytes.len() as u64),
        ..ReaderOptions::default()
    };
    let err = read_err_with(&bytes, options);
    let left = (bytes.len() - start - 8) as u64;
    assert!(
        matches!(err.kind, FormatErrorKind::Truncated { what: "record", needed: 0x3fff_0000, available } if available == left),
        "{err}"
    );
    assert_eq!(err.offset, start as u64);
    // A stream finds the same when it runs out.
    let err = read_err(&bytes);
    assert!(
        matches!(err.kind, FormatErrorKind::Truncated { what: "record", needed: 0x3fff_0000, available } if available == left),
        "{err}"
    );
    assert_eq!(err.offset, start as u64);
}

#[test]
fn record_length_beyond_the_configured_limit_is_too_large() {
    let mut writer = Writer::new(Vec::new(), WriterOptions::bytes_writable()).unwrap();
    writer.append_bytes_writable(b"k", &[7; 100]).unwrap();
    let bytes = writer.finish().unwrap();
    let options = ReaderOptions {
        max_record_bytes: 64,
        ..ReaderOptions::default()
    };
    let err = read_err_with(&bytes, options);
    assert!(
        matches!(
            err.kind,
            FormatErrorKind::TooLarge {
                length: 109,
                limit: 64,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.offset, header_len(&bytes));
}

#[test]
fn negative_record_length_and_oversized_key_length_are_corrupt() {
    let mut bytes = file(Compression::None, Codec::Default, 1, 1 << 20);
    let start = header_len(&bytes) as usize;
    let mut negative = bytes.clone();
    negative[start..start + 4].copy_from_slice(&(-7i32).to_be_bytes());
    let err = read_err(&negative);
    assert!(
        matches!(err.kind, FormatErrorKind::Corrupt(ref m) if m.contains("negative record length -7"))
    );
    assert_eq!(err.offset, start as u64);
    bytes[start + 4..start + 8].copy_from_slice(&100i32.to_be_bytes());
    let err = read_err(&bytes);
    assert!(matches!(err.kind, FormatErrorKind::Corrupt(ref m) if m.contains("key length 100")));
    assert_eq!(err.offset, start as u64 + 4);
}

#[test]
fn corrupt_record_value_is_a_decompress_error_at_the_value() {
    let mut bytes = file(Compression::Record, Codec::Default, 2, 1 << 20);
    let start = header_len(&bytes) as usize;
    // Key "k0" as BytesWritable is 6 bytes; the zlib value follows.
    let value_at = start + 8 + 6;
    bytes[value_at] = 0xff;
    bytes[value_at + 1] = 0xff;
    let err = read_err(&bytes);
    assert!(
        matches!(err.kind, FormatErrorKind::Decompress { codec: "zlib", .. }),
        "{err}"
    );
    assert_eq!(err.offset, value_at as u64);
}

#[test]
fn corrupt_block_section_is_a_decompress_error_at_the_section() {
    let mut bytes = file(Compression::Block, Codec::Default, 3, 0);
    let block = header_len(&bytes) as usize;
    // escape + sync (20), record count (1), key lengths length (1), data.
    let data = block + 22;
    bytes[data] = 0xff;
    bytes[data + 1] = 0xff;
    let err = read_err(&bytes);
    assert!(
        matches!(err.kind, FormatErrorKind::Decompress { codec: "zlib", .. }),
        "{err}"
    );
    assert_eq!(err.offset, data as u64);
}

#[test]
fn sync_mismatch_in_a_record_file_is_reported_at_the_marker() {
    // Interval 0 puts a sync escape before every record.
    let mut bytes = file(Compression::None, Codec::Default, 2, 0);
    let start = header_len(&bytes) as usize;
    assert_eq!(&bytes[start..start + 4], &[0xff; 4]);
    bytes[start + 4 + 15] ^= 1;
    let err = read_err(&bytes);
    assert!(
        matches!(err.kind, FormatErrorKind::SyncMismatch { .. }),
        "{err}"
    );
    assert_eq!(err.offset, start as u64 + 4);
}

#[test]
fn sync_mismatch_before_a_block_is_reported_at_the_marker() {
    let mut bytes = file(Compression::Block, Codec::Snappy, 2, 0);
    let start = header_len(&bytes) as usize;
    bytes[start + 4] ^= 0x80;
    let err = read_err(&bytes);
    assert!(
        matches!(err.kind, FormatErrorKind::SyncMismatch { .. }),
        "{err}"
    );
    assert_eq!(err.offset, start as u64 + 4);
}

#[test]
fn missing_sync_escape_before_a_block_is_corrupt() {
    let mut bytes = file(Compression::Block, Codec::Snappy, 2, 0);
    let start = header_len(&bytes) as usize;
    bytes[start..start + 4].copy_from_slice(&12i32.to_be_bytes());
    let err = read_err(&bytes);
    assert!(
        matches!(err.kind, FormatErrorKind::Corrupt(ref m) if m.contains("expected a sync marker"))
    );
    assert_eq!(err.offset, start as u64);
}

#[test]
fn vint_overflow_in_the_block_record_count_is_bad_vint() {
    let bytes = file(Compression::Block, Codec::Snappy, 2, 0);
    let count_at = header_len(&bytes) as usize + 20;
    assert_eq!(bytes[count_at], 2);
    // 2^32 does not fit the i32 a vint must be.
    let mut bad = bytes[..count_at].to_vec();
    bad.extend_from_slice(&[0x8b, 0x01, 0, 0, 0, 0]);
    bad.extend_from_slice(&bytes[count_at + 1..]);
    let err = read_err(&bad);
    assert!(
        matches!(err.kind, FormatErrorKind::BadVint(ref m) if m.contains("record count")),
        "{err}"
    );
    assert_eq!(err.offset, count_at as u64);
}

#[test]
fn block_record_count_that_lies_is_corrupt_at_the_block() {
    let bytes = file(Compression::Block, Codec::Snappy, 3, 0);
    let block = header_len(&bytes) as usize;
    for (count, phrase) in [
        (4u8, "lengths for only 3"),
        (2, "left over"),
        (100, "lengths for only 3"),
    ] {
        let mut bad = bytes.clone();
        bad[block + 20] = count;
        let err = read_err(&bad);
        assert!(
            matches!(err.kind, FormatErrorKind::Corrupt(ref m) if m.contains(phrase)),
            "count {count}: {err}"
        );
        assert_eq!(err.offset, block as u64);
    }
}

#[test]
fn unknown_codec_is_named() {
    let bytes = file(Compression::Record, Codec::Gzip, 1, 1 << 20);
    let name = b"org.apache.hadoop.io.compress.GzipCodec";
    let at = bytes.windows(name.len()).position(|w| w == name).unwrap();
    let mut bad = bytes.clone();
    bad[at + name.len() - 9..at + name.len()].copy_from_slice(b"ZzzzCodec");
    let err = read_err(&bad);
    assert!(
        matches!(err.kind, FormatErrorKind::UnknownCodec(ref c) if c == "org.apache.hadoop.io.compress.ZzzzCodec"),
        "{err}"
    );
    assert_eq!(err.offset, at as u64 - 1);
}

#[test]
fn bytes_writable_length_that_lies_fails_unwrapping_at_the_record() {
    let mut bytes = file(Compression::None, Codec::Default, 1, 1 << 20);
    let start = header_len(&bytes) as usize;
    // The key's own 4-byte length says 3 where it holds 2.
    bytes[start + 8 + 3] = 3;
    let err = read_err(&bytes);
    assert!(
        matches!(err.kind, FormatErrorKind::Corrupt(ref m) if m.starts_with("key: BytesWritable declares 3")),
        "{err}"
    );
    assert_eq!(err.offset, start as u64);
    // The raw record is still readable for callers that want it.
    let mut reader = Reader::new(&bytes[..], "f").unwrap();
    assert!(reader.next_raw().unwrap().is_some());
}

#[test]
fn header_only_files_have_no_records_in_every_layout() {
    for compression in [Compression::None, Compression::Record, Compression::Block] {
        let bytes = file(compression, Codec::Snappy, 0, 0);
        let mut reader = Reader::new(&bytes[..], "empty").unwrap();
        assert!(reader.next_raw().unwrap().is_none(), "{compression}");
        assert_eq!(reader.position(), bytes.len() as u64);
    }
}
