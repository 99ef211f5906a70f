//! Round trips through the project's writer and reader for every layout and
//! codec: a value of several MiB (larger than the reader's input window and
//! than one Hadoop Snappy/LZ4 chunk) and 100k small records spread over many
//! syncs and blocks.

use sequinsfs::format::sequencefile::{
    Codec, Compression, Reader, ReaderOptions, Writer, WriterOptions,
};

fn layouts() -> Vec<(Compression, Codec)> {
    let mut layouts = vec![(Compression::None, Codec::Default)];
    for codec in Codec::ALL {
        layouts.push((Compression::Record, codec));
        layouts.push((Compression::Block, codec));
    }
    layouts
}

/// Deterministic bytes that compress somewhat but not trivially.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b"abcdefghij\x00\xff/"[(x % 13) as usize]
        })
        .collect()
}

#[test]
fn several_mib_value_round_trips_in_every_layout() {
    let big = noise(5 << 20, 42);
    for (compression, codec) in layouts() {
        let options = WriterOptions::bytes_writable().compressed(compression, codec);
        let mut writer = Writer::new(Vec::new(), options).unwrap();
        writer.append_bytes_writable(b"", b"before").unwrap();
        writer.append_bytes_writable(b"big", &big).unwrap();
        writer.append_bytes_writable(b"x", b"").unwrap();
        let bytes = writer.finish().unwrap();

        let options = ReaderOptions {
            input_len: Some(bytes.len() as u64),
            buffer_size: 64 * 1024,
            ..ReaderOptions::default()
        };
        let mut reader = Reader::with_options(&bytes[..], "big.seq", options).unwrap();
        let label = format!("{compression} {codec:?}");
        assert_eq!(
            reader.next_unwrapped().unwrap(),
            Some((&b""[..], &b"before"[..])),
            "{label}"
        );
        let (key, value) = reader.next_unwrapped().unwrap().unwrap();
        assert_eq!(key, b"big", "{label}");
        assert!(value == big.as_slice(), "{label}: big value differs");
        assert_eq!(
            reader.next_unwrapped().unwrap(),
            Some((&b"x"[..], &b""[..])),
            "{label}"
        );
        assert_eq!(reader.next_unwrapped().unwrap(), None, "{label}");
    }
}

#[test]
fn hundred_thousand_small_records_round_trip_in_every_layout() {
    let records: Vec<(Vec<u8>, Vec<u8>)> = (0..100_000u64)
        .map(|i| {
            // Keys of 0..=12 bytes (empty and 1-byte keys included).
            let key = format!("{i:012}").into_bytes()[..(i % 13) as usize].to_vec();
            (key, noise((i % 40) as usize, i))
        })
        .collect();
    for (compression, codec) in layouts() {
        let mut options = WriterOptions::text().compressed(compression, codec);
        // Small blocks and syncs: many of both in the file.
        options.block_size = 64 * 1024;
        options.sync_interval = 2000;
        let mut writer = Writer::new(Vec::new(), options).unwrap();
        for (k, v) in &records {
            writer.append_text(k, v).unwrap();
        }
        let bytes = writer.finish().unwrap();
        let mut reader = Reader::new(&bytes[..], "many.seq").unwrap();
        let mut n = 0;
        while let Some((k, v)) = reader.next_unwrapped().unwrap() {
            assert_eq!(
                (k, v),
                (&records[n].0[..], &records[n].1[..]),
                "{compression} {codec:?} #{n}"
            );
            n += 1;
        }
        assert_eq!(n, records.len(), "{compression} {codec:?}");
        assert_eq!(reader.position(), bytes.len() as u64);
    }
}

#[test]
fn metadata_and_classes_survive_a_round_trip() {
    let mut options = WriterOptions::new(
        "org.apache.hadoop.io.IntWritable",
        "org.apache.hadoop.io.LongWritable",
    )
    .compressed(Compression::Block, Codec::Zstd);
    options.metadata = vec![(b"dataset".to_vec(), b"ints".to_vec())];
    let mut writer = Writer::new(Vec::new(), options).unwrap();
    writer
        .append(&42i32.to_be_bytes(), &(-1i64).to_be_bytes())
        .unwrap();
    let bytes = writer.finish().unwrap();
    let mut reader = Reader::new(&bytes[..], "ints.seq").unwrap();
    let header = reader.header().clone();
    assert_eq!(header.key_class, "org.apache.hadoop.io.IntWritable");
    assert_eq!(
        header.codec.as_deref(),
        Some("org.apache.hadoop.io.compress.ZStandardCodec")
    );
    assert_eq!(
        header.metadata_to_hadoop_string(),
        "size: 1\n\tdataset\tints\n"
    );
    // Other classes are served as their exact serialized bytes.
    assert_eq!(
        reader.next_unwrapped().unwrap(),
        Some((&[0, 0, 0, 0x2a][..], &[0xff; 8][..]))
    );
}
