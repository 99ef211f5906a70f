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

#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(Index, u8),
    Truncate(Index),
    Insert(Index, Vec<u8>),
    Overwrite(Index, Vec<u8>),
    /// A 4-byte big-endian length or a 5-byte vint with a huge value.
    HugeLength(Index, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        2 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        2 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, b)| Mutation::Overwrite(i, b)),
        3 => (any::<Index>(), 0u8..6).prop_map(|(i, k)| Mutation::HugeLength(i, k)),
    ]
}

fn apply(bytes: &mut Vec<u8>, mutation: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    match mutation {
        Mutation::FlipBit(i, bit) => {
            let at = i.index(bytes.len());
            bytes[at] ^= 1 << bit;
        }
        Mutation::Truncate(i) => bytes.truncate(i.index(bytes.len())),
        Mutation::Insert(i, new) => {
            let at = i.index(bytes.len() + 1);
            bytes.splice(at..at, new.iter().copied());
        }
        Mutation::Overwrite(i, new) => {
            let at = i.index(bytes.len());
            for (offset, b) in new.iter().enumerate() {
                if let Some(slot) = bytes.get_mut(at + offset) {
                    *slot = *b;
                }
            }
        }
        Mutation::HugeLength(i, kind) => {
            let patch: &[u8] = match kind {
                0 => &[0x7f, 0xff, 0xff, 0xff],
                1 => &[0x3f, 0xff, 0xff, 0x00],
                2 => &[0xff, 0xff, 0xff, 0xfe],
                3 => &[0x00, 0x10, 0x00, 0x00],
                4 => &[0x8c, 0x7f, 0xff, 0xff, 0xff],
                _ => &[0x88, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            };
            let at = i.index(bytes.len());
            for (offset, b) in patch.iter().enumerate() {
                if let Some(slot) = bytes.get_mut(at + offset) {
                    *slot = *b;
                }
            }
        }
    }
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

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn mutated_files_never_panic_or_hang(
        file in any::<Index>(),
        mutations in prop::collection::vec(mutation(), 1..5),
        known_len: bool,
        small_window: bool,
        unwrap: bool,
    ) {
        let corpus = corpus();
        let mut bytes = corpus[file.index(corpus.len())].clone();
        for m in &mutations {
            apply(&mut bytes, m);
        }
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
