//! Mutation fuzzing of the SequenceFile reader: real files (Hadoop's
//! fixtures when `SEQUINSFS_FIXTURES` is set, plus files from the project's
//! writer in every layout) with random structural damage (bit flips,
//! truncations, inserted and overwritten bytes, lengths set to huge values).
//! Whatever the damage, reading must end in `Ok` or a typed `Err`: no panic,
//! no endless loop.
//!
//! The default case count keeps CI fast; raise it with `PROPTEST_CASES`
//! (for example `PROPTEST_CASES=20000 cargo test --release --test
//! sequencefile_fuzz`).

mod common;

use std::sync::OnceLock;

use common::mutate;
use proptest::prelude::*;
use proptest::sample::Index;
use sequinsfs::format::sequencefile::{
    Codec, Compression, Reader, ReaderOptions, Writer, WriterOptions,
};

/// Cases per run unless `PROPTEST_CASES` says otherwise.
const DEFAULT_CASES: u32 = 1000;

fn corpus() -> &'static [Vec<u8>] {
    static CORPUS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let mut files = Vec::new();
        if let Some(dir) = common::fixtures_dir() {
            let mut paths: Vec<_> = std::fs::read_dir(dir.join("seqfile"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "seq"))
                .collect();
            paths.push(dir.join("sequins/healthy/baby-names/1/part-00000"));
            paths.sort();
            files.extend(paths.iter().map(|p| std::fs::read(p).unwrap()));
        }
        let mut layouts = vec![(Compression::None, Codec::Default)];
        for codec in Codec::ALL {
            layouts.push((Compression::Record, codec));
            layouts.push((Compression::Block, codec));
        }
        for (compression, codec) in layouts {
            let mut options = WriterOptions::text().compressed(compression, codec);
            options.sync_interval = 200;
            options.block_size = 300;
            let mut writer = Writer::new(Vec::new(), options).unwrap();
            for i in 0..40u32 {
                let value = format!("value {i} ").repeat((i % 7) as usize);
                writer
                    .append_text(format!("k{i}").as_bytes(), value.as_bytes())
                    .unwrap();
            }
            files.push(writer.finish().unwrap());
        }
        files
    })
}

/// Big-endian 4-byte lengths and Hadoop vints set to huge or odd values.
fn huge_length_patches() -> Vec<Vec<u8>> {
    vec![
        vec![0x7f, 0xff, 0xff, 0xff],
        vec![0x3f, 0xff, 0xff, 0x00],
        vec![0xff, 0xff, 0xff, 0xfe],
        vec![0x00, 0x10, 0x00, 0x00],
        vec![0x8c, 0x7f, 0xff, 0xff, 0xff],
        vec![0x88, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    ]
}

/// Reads the whole input; the number of records is bounded by what the
/// limit lets decompress, so the loop guard only catches a reader that
/// stops consuming input.
fn read_everything(bytes: &[u8], known_len: bool, small_window: bool, unwrap: bool) {
    let options = ReaderOptions {
        input_len: known_len.then_some(bytes.len() as u64),
        buffer_size: if small_window { 64 } else { 1 << 20 },
        // Keep decompression bombs cheap in the fuzzer.
        max_record_bytes: 16 << 20,
    };
    let Ok(mut reader) = Reader::with_options(bytes, "fuzz.seq", options) else {
        return;
    };
    let mut records = 0u64;
    loop {
        let next = if unwrap {
            reader.next_unwrapped().map(|r| r.is_some())
        } else {
            reader.next_raw().map(|r| r.is_some())
        };
        match next {
            Ok(true) => records += 1,
            Ok(false) | Err(_) => return,
        }
        assert!(records < 50_000_000, "reader does not advance");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: mutate::cases(DEFAULT_CASES), ..ProptestConfig::default() })]

    #[test]
    fn mutated_files_never_panic_or_hang(
        file in any::<Index>(),
        mutations in prop::collection::vec(mutate::binary(huge_length_patches()), 1..5),
        known_len: bool,
        small_window: bool,
        unwrap: bool,
    ) {
        let corpus = corpus();
        let mut bytes = corpus[file.index(corpus.len())].clone();
        mutate::apply_all(&mut bytes, &mutations);
        read_everything(&bytes, known_len, small_window, unwrap);
    }
}

/// The unmutated corpus reads cleanly, so the fuzzer starts from valid files.
#[test]
fn corpus_reads_cleanly() {
    for bytes in corpus() {
        let mut reader = Reader::new(&bytes[..], "corpus").unwrap();
        while reader.next_raw().unwrap().is_some() {}
    }
}
