//! Pack benchmark: `sequinsfs pack` of a TSV against `LC_ALL=C sort` of the
//! same file, in the same run on the same disk. The target is for packing
//! (parse, partition, sort, write snappy Sparkey tables and indexes) to be at
//! least as fast as sorting the lines.
//!
//! The TSV has 10 M records of about 100 bytes each (a 20-byte key, a tab,
//! a 78-byte value, a newline), keys in scrambled order, values partly
//! compressible.
//!
//! Run: `cargo bench --bench pack`
//! Knobs: `SEQUINSFS_BENCH_RECORDS` (default 10000000), `SEQUINSFS_BENCH_PARTITIONS`
//! (default 8).

use std::io::{BufWriter, Write};
use std::process::Command;
use std::time::Instant;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let records = env_or("SEQUINSFS_BENCH_RECORDS", 10_000_000);
    let partitions = env_or("SEQUINSFS_BENCH_PARTITIONS", 8);
    // Beside the build output rather than in /tmp, which may be a small
    // tmpfs: the files are gigabytes.
    let base = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
    let base = std::env::var_os("CARGO_TARGET_DIR").map_or(base, std::path::PathBuf::from);
    std::fs::create_dir_all(&base).unwrap();
    let work = tempfile::tempdir_in(&base).unwrap();
    let input = work.path().join("input.tsv");
    {
        let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(&input).unwrap());
        for i in 0..records {
            // A bijection of 0..2^64 scrambles the order of the keys.
            let k = i.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17);
            writeln!(
                out,
                "{:020}\tvalue-{:016x}-{:054}",
                k % 100_000_000_000_000_000,
                k,
                i
            )
            .unwrap();
        }
        out.flush().unwrap();
    }
    let bytes = std::fs::metadata(&input).unwrap().len();
    let mb = bytes as f64 / 1e6;
    println!(
        "input: {records} records, {mb:.1} MB TSV ({:.1} bytes/record)",
        bytes as f64 / records as f64
    );

    // Page cache warm for both: each reads the file once first.
    let _ = std::fs::read(&input);
    let sorted = work.path().join("sorted.tsv");
    let t = Instant::now();
    let status = Command::new("sort")
        .env("LC_ALL", "C")
        .arg("-T")
        .arg(work.path())
        .arg("-o")
        .arg(&sorted)
        .arg(&input)
        .status()
        .expect("sort");
    assert!(status.success());
    let sort_s = t.elapsed().as_secs_f64();
    std::fs::remove_file(&sorted).unwrap();

    let _ = std::fs::read(&input);
    let out = work.path().join("packed");
    let t = Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_sequinsfs"))
        .arg("pack")
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .arg("--partitions")
        .arg(partitions.to_string())
        .status()
        .expect("sequinsfs pack");
    assert!(status.success());
    let pack_s = t.elapsed().as_secs_f64();
    let packed: u64 = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();

    println!("LC_ALL=C sort:  {sort_s:8.2} s  {:8.1} MB/s", mb / sort_s);
    println!(
        "sequinsfs pack: {pack_s:8.2} s  {:8.1} MB/s  ({partitions} partitions, {:.1} MB written)",
        mb / pack_s,
        packed as f64 / 1e6
    );
    println!("pack / sort throughput: {:.2}x", sort_s / pack_s);
}
