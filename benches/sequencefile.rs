//! SequenceFile read speed.
//!
//! Generates its own data (256 MiB of 100-byte values by default; set
//! `SEQFILE_BENCH_MB` for quicker runs) as BytesWritable records, writes it
//! as NONE and as BLOCK with snappy, zlib and zstd (Hadoop's default 1 MB
//! blocks), and reports:
//! - NONE: MB/s of file bytes through `Reader::next_raw`;
//! - BLOCK: MB/s of uncompressed record bytes, the time of decompressing
//!   the same payloads directly with the same crate (best case: reused
//!   contexts and buffers), and the ratio reader time / raw time (target
//!   <= 1.25).
//!
//! Run: `cargo bench --bench sequencefile` (one core is enough; MB = 10^6).

use std::hint::black_box;
use std::time::{Duration, Instant};

use sequinsfs::format::sequencefile::{Codec, Compression, Reader, Writer, WriterOptions, vint};

/// Timed runs per measurement; the best is reported (least disturbed by
/// other work on the machine). Reader and raw runs alternate so that both
/// see the same conditions.
const RUNS: usize = 5;
const VALUE_LEN: usize = 100;

fn main() {
    let mb: usize = std::env::var("SEQFILE_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let records = (mb << 20) / VALUE_LEN;
    println!(
        "SequenceFile read benchmark: {mb} MiB of {VALUE_LEN}-byte values, {records} records, best of {RUNS}"
    );
    let cases = [
        ("NONE", Compression::None, Codec::Default),
        ("BLOCK snappy", Compression::Block, Codec::Snappy),
        ("BLOCK zlib", Compression::Block, Codec::Default),
        ("BLOCK zstd", Compression::Block, Codec::Zstd),
    ];
    for (label, compression, codec) in cases {
        let (file, raw_bytes) = generate(records, compression, codec);
        let file_mb = file.len() as f64 / 1e6;
        if compression == Compression::None {
            let read_time = best(|| read_all(&file));
            println!(
                "{label:<13} file {file_mb:8.1} MB  reader {:8.1} MB/s of file bytes",
                file_mb / read_time.as_secs_f64()
            );
            continue;
        }
        let payloads = block_payloads(&file);
        let mut raw = RawDecompressor::new(codec, &payloads);
        let (mut read_time, mut raw_time) = (Duration::MAX, Duration::MAX);
        for _ in 0..RUNS {
            read_time = read_time.min(time(|| read_all(&file)));
            raw_time = raw_time.min(time(|| raw.run(&payloads)));
        }
        let raw_mb = raw_bytes as f64 / 1e6;
        println!(
            "{label:<13} file {file_mb:8.1} MB  reader {:8.1} MB/s of uncompressed bytes  raw {} {:8.1} MB/s  reader/raw {:.2}",
            raw_mb / read_time.as_secs_f64(),
            codec.label(),
            raw_mb / raw_time.as_secs_f64(),
            read_time.as_secs_f64() / raw_time.as_secs_f64()
        );
    }
}

fn time(run: impl FnOnce() -> u64) -> Duration {
    let start = Instant::now();
    black_box(run());
    start.elapsed()
}

fn best(mut run: impl FnMut() -> u64) -> Duration {
    (0..RUNS).map(|_| time(&mut run)).min().unwrap_or_default()
}

/// Writes the records; returns the file and the total serialized record
/// bytes (keys + values).
fn generate(records: usize, compression: Compression, codec: Codec) -> (Vec<u8>, u64) {
    let options = WriterOptions::bytes_writable().compressed(compression, codec);
    let mut writer = Writer::new(Vec::new(), options).unwrap();
    let words: [&[u8]; 8] = [
        b"alpha ",
        b"beta ",
        b"gamma ",
        b"delta ",
        b"epsilon ",
        b"zeta ",
        b"eta ",
        b"theta ",
    ];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut value = Vec::with_capacity(VALUE_LEN);
    let mut raw = 0u64;
    for i in 0..records {
        // Text-like values from a small vocabulary plus a random number:
        // they compress about as well as typical batch output.
        value.clear();
        while value.len() < VALUE_LEN {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x % 5 == 0 {
                value.extend_from_slice(format!("{} ", x % 100_000).as_bytes());
            } else {
                value.extend_from_slice(words[(x % 8) as usize]);
            }
        }
        value.truncate(VALUE_LEN);
        let key = format!("key-{i:012}");
        writer
            .append_bytes_writable(key.as_bytes(), &value)
            .unwrap();
        raw += (4 + key.len() + 4 + VALUE_LEN) as u64;
    }
    (writer.finish().unwrap(), raw)
}

fn read_all(file: &[u8]) -> u64 {
    let mut reader = Reader::new(file, "bench").unwrap();
    let mut total = 0u64;
    while let Some((k, v)) = reader.next_raw().unwrap() {
        total += (k.len() + v.len()) as u64;
    }
    total
}

/// The compressed sections of every block, found by walking the file's
/// structure (sync escape, record count, four length-prefixed sections).
fn block_payloads(file: &[u8]) -> Vec<&[u8]> {
    let mut pos = Reader::new(file, "bench").unwrap().position() as usize;
    let mut payloads = Vec::new();
    while pos < file.len() {
        pos += 4 + 16;
        let (_, used) = vint::decode_vint(&file[pos..]).unwrap();
        pos += used;
        for _ in 0..4 {
            let (len, used) = vint::decode_vint(&file[pos..]).unwrap();
            pos += used;
            payloads.push(&file[pos..pos + len as usize]);
            pos += len as usize;
        }
    }
    payloads
}

/// Decompresses payloads straight with each codec's crate, reusing contexts
/// and one output buffer sized for the largest section.
struct RawDecompressor {
    codec: Codec,
    out: Vec<u8>,
    zlib: flate2::Decompress,
    snappy: snap::raw::Decoder,
    zstd: zstd::bulk::Decompressor<'static>,
}

impl RawDecompressor {
    fn new(codec: Codec, payloads: &[&[u8]]) -> Self {
        let mut raw = RawDecompressor {
            codec,
            // Large enough for any section of a 1 MB block.
            out: Vec::with_capacity(4 << 20),
            zlib: flate2::Decompress::new(true),
            snappy: snap::raw::Decoder::new(),
            zstd: zstd::bulk::Decompressor::new().unwrap(),
        };
        // Warm up (and check) once.
        raw.run(payloads);
        raw
    }

    fn run(&mut self, payloads: &[&[u8]]) -> u64 {
        let mut total = 0u64;
        for payload in payloads {
            self.out.clear();
            match self.codec {
                Codec::Snappy => {
                    // Hadoop framing: u32 block length, then u32-length chunks.
                    let mut pos = 4;
                    while pos < payload.len() {
                        let len =
                            u32::from_be_bytes(payload[pos..pos + 4].try_into().unwrap()) as usize;
                        pos += 4;
                        let chunk = &payload[pos..pos + len];
                        pos += len;
                        let n = snap::raw::decompress_len(chunk).unwrap();
                        let start = self.out.len();
                        self.out.resize(start + n, 0);
                        self.snappy
                            .decompress(chunk, &mut self.out[start..])
                            .unwrap();
                    }
                }
                Codec::Default => {
                    self.zlib.reset(true);
                    self.zlib
                        .decompress_vec(payload, &mut self.out, flate2::FlushDecompress::Finish)
                        .unwrap();
                }
                Codec::Zstd => {
                    self.zstd
                        .decompress_to_buffer(payload, &mut self.out)
                        .unwrap();
                }
                other => unreachable!("no raw baseline for {other:?}"),
            }
            total += self.out.len() as u64;
        }
        total
    }
}
