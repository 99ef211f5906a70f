//! Sparkey speed: writing log + index, random hits and misses, one thread
//! and four, uncompressed and snappy with 4 KiB blocks; and one 64 MiB value
//! read in 128 KiB chunks (as `cat` through the mount reads it).
//!
//! `cargo bench --bench sparkey` (release build). Defaults follow the issue:
//! 10^6 entries, 16-byte keys, 100-byte values; `SPARKEY_BENCH_ENTRIES` and
//! `SPARKEY_BENCH_LOOKUPS` change the sizes, and `SPARKEY_BENCH_ONLY=none`
//! or `=snappy` runs one compression only (for profiling). Keys are 16 hex digits of a
//! scrambled counter; values start with the entry number and continue with
//! English text (so snappy compresses them roughly 2:1 as real text data
//! would). Lookups are in a random order fixed up front, with the page
//! cache warm (the files were just written and are read once before
//! timing).

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use sequinsfs::format::sparkey::{Compression, LogWriter, Reader};

/// Size of the large value, and of the chunks it is read in (a FUSE READ).
const LARGE_VALUE: usize = 64 << 20;
const CHUNK: usize = 128 << 10;

const TEXT: &[u8] = b"It was the best of times, it was the worst of times, it was the age of \
wisdom, it was the age of foolishness, it was the epoch of belief, it was the epoch of \
incredulity, it was the season of Light";

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn key(i: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(format!("{:016x}", splitmix(i)).as_bytes());
    out
}

fn value(i: u64, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(format!("{i:010}:").as_bytes());
    let start = (i % 64) as usize;
    out.extend_from_slice(&TEXT[start..start + 89]);
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn write(dir: &Path, name: &str, compression: Compression, n: u64) -> Reader {
    let log = dir.join(format!("{name}.spl"));
    let index = dir.join(format!("{name}.spi"));
    let keys: Vec<[u8; 16]> = (0..n).map(key).collect();
    let mut buf = Vec::with_capacity(100);
    let values: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            value(i, &mut buf);
            buf.clone()
        })
        .collect();
    let start = Instant::now();
    let mut writer = LogWriter::create(&log, compression, 4096).unwrap();
    for (k, v) in keys.iter().zip(&values) {
        writer.put(k, v).unwrap();
    }
    let (log_header, _) = writer.finish_with_index(&index).unwrap();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{name:>7}: write log+index  {:>6.2} M entries/s  ({n} entries, log {:.1} MB, {secs:.2} s)",
        n as f64 / secs / 1e6,
        log_header.data_end as f64 / 1e6
    );
    Reader::open(&log, &index).unwrap()
}

/// Lookups per second of `keys` (in order) on `threads` threads, each
/// thread doing all of them from a different starting point.
fn lookups(reader: &Reader, keys: &[[u8; 16]], threads: usize, expect_hit: bool) -> f64 {
    let start = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            scope.spawn(move || {
                let offset = t * keys.len() / threads;
                for i in 0..keys.len() {
                    let k = &keys[(i + offset) % keys.len()];
                    let found = reader.get_with(black_box(k), |v| v.len()).unwrap();
                    assert_eq!(found.is_some(), expect_hit);
                    black_box(found);
                }
            });
        }
    });
    (keys.len() * threads) as f64 / start.elapsed().as_secs_f64()
}

/// `get` (which copies values out of compressed blocks) on one thread.
fn gets(reader: &Reader, keys: &[[u8; 16]]) -> f64 {
    let start = Instant::now();
    for k in keys {
        black_box(reader.get(black_box(k)).unwrap().map(|v| v.len()));
    }
    keys.len() as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    // `cargo bench` passes `--bench`; other arguments (filters) are ignored.
    let n = env_u64("SPARKEY_BENCH_ENTRIES", 1_000_000);
    let lookups_n = env_u64("SPARKEY_BENCH_LOOKUPS", 2_000_000);
    let dir = tempfile::tempdir().unwrap();
    let hits: Vec<[u8; 16]> = (0..lookups_n)
        .map(|i| key(splitmix(i ^ 0x5eed) % n))
        .collect();
    let misses: Vec<[u8; 16]> = (0..lookups_n).map(|i| key(n + i)).collect();
    println!(
        "sparkey: {n} entries, 16-byte keys, 100-byte values, {lookups_n} random lookups per run"
    );
    let only = std::env::var("SPARKEY_BENCH_ONLY").ok();
    for (name, compression) in [("none", Compression::None), ("snappy", Compression::Snappy)] {
        if only.as_deref().is_some_and(|only| only != name) {
            continue;
        }
        let reader = write(dir.path(), name, compression, n);
        // Warm the page cache and the per-thread state.
        lookups(&reader, &hits[..hits.len().min(100_000)], 1, true);
        let hit1 = lookups(&reader, &hits, 1, true);
        let miss1 = lookups(&reader, &misses, 1, false);
        let get1 = gets(&reader, &hits);
        let hit4 = lookups(&reader, &hits, 4, true);
        println!(
            "{name:>7}: random hits        {:>6.2} M/s (1 thread, get_with)",
            hit1 / 1e6
        );
        println!(
            "{name:>7}: random hits        {:>6.2} M/s (1 thread, get)",
            get1 / 1e6
        );
        println!(
            "{name:>7}: random misses      {:>6.2} M/s (1 thread)",
            miss1 / 1e6
        );
        println!(
            "{name:>7}: random hits        {:>6.2} M/s (4 threads, {:.2}x one thread)",
            hit4 / 1e6,
            hit4 / hit1
        );
        large_value(dir.path(), name, compression);
    }
}

/// Reads one `LARGE_VALUE`-byte value in `CHUNK`-byte chunks through
/// `Reader::read_value` (one thread, chunks in order).
fn large_value(dir: &Path, name: &str, compression: Compression) {
    let log = dir.join(format!("{name}-large.spl"));
    let index = dir.join(format!("{name}-large.spi"));
    let mut value = Vec::with_capacity(LARGE_VALUE);
    while value.len() < LARGE_VALUE {
        value.extend_from_slice(TEXT);
        value.extend_from_slice(format!("{}", value.len()).as_bytes());
    }
    value.truncate(LARGE_VALUE);
    let mut writer = LogWriter::create(&log, compression, 4096).unwrap();
    writer.put(b"large", &value).unwrap();
    writer.finish_with_index(&index).unwrap();
    let reader = Reader::open(&log, &index).unwrap();
    let location = reader.locate(b"large").unwrap().unwrap();
    let mut scratch = Vec::new();
    // Each chunk is copied out, as a FUSE reply copies it to the kernel.
    let mut reply = vec![0u8; CHUNK];
    let start = Instant::now();
    let mut offset = 0;
    while offset < location.len {
        let chunk = reader
            .read_value(location.address, offset, CHUNK, &mut scratch)
            .unwrap();
        reply[..chunk.len()].copy_from_slice(chunk);
        offset += black_box(&reply[..chunk.len()]).len() as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{name:>7}: {} MiB value in {} KiB chunks  {secs:>6.3} s  ({:.0} MB/s, read_value)",
        LARGE_VALUE >> 20,
        CHUNK >> 10,
        LARGE_VALUE as f64 / secs / 1e6
    );
}
