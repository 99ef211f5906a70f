//! Large-value benchmark: one 64 MiB value read through the mount (`cat`:
//! sequential 128 KiB reads) and over HTTP (one GET), from a local store
//! whose logs are snappy-compressed and, in the same run, from one whose
//! logs are uncompressed (the baseline the target is stated against: a
//! snappy value within 2x of the uncompressed time). The daemon's peak
//! RSS is printed beside each HTTP figure: the body is streamed, so memory
//! must not grow with the value.
//!
//! Run (as root, with /dev/fuse): `cargo bench --bench large_value`
//! Knobs: `SEQUINSFS_BENCH_VALUE_MIB` (default 64).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sequinsfs::format::sequencefile::{Writer, WriterOptions};

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !Path::new("/dev/fuse").exists() {
        println!("large_value bench skipped: needs root and /dev/fuse");
        return;
    }
    let mib: usize = std::env::var("SEQUINSFS_BENCH_VALUE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source");
    let version = source.join("big").join("1");
    std::fs::create_dir_all(&version).unwrap();
    // Incompressible-ish bytes, so snappy blocks are full size.
    let mut value = vec![0u8; mib << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in value.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = (x >> 24) as u8;
    }
    {
        let out = std::fs::File::create(version.join("part-00000")).unwrap();
        let mut writer = Writer::new(out, WriterOptions::bytes_writable()).unwrap();
        writer.append_bytes_writable(b"small", b"x").unwrap();
        writer.append_bytes_writable(b"value", &value).unwrap();
    }
    println!("value: {mib} MiB in one key; reads through the mount and over HTTP");
    println!(
        "{:<14} {:>10} {:>10} {:>12} {:>14}",
        "storage", "cat (s)", "HTTP (s)", "cat MB/s", "HTTP peak RSS"
    );
    let mut results = Vec::new();
    for compression in ["none", "snappy"] {
        let r = run(work.path(), &source, compression, &value);
        println!(
            "{:<14} {:>10.3} {:>10.3} {:>12.0} {:>11} MiB",
            compression,
            r.cat.as_secs_f64(),
            r.http.as_secs_f64(),
            value.len() as f64 / r.cat.as_secs_f64() / 1e6,
            r.peak_rss_kib / 1024
        );
        results.push(r);
    }
    let (plain, snappy) = (&results[0], &results[1]);
    println!(
        "snappy / uncompressed: cat {:.2}x, HTTP {:.2}x (target: within 2x)",
        snappy.cat.as_secs_f64() / plain.cat.as_secs_f64(),
        snappy.http.as_secs_f64() / plain.http.as_secs_f64()
    );
}

struct Timings {
    cat: Duration,
    http: Duration,
    peak_rss_kib: u64,
}

fn run(work: &Path, source: &Path, compression: &str, value: &[u8]) -> Timings {
    let dir = work.join(compression);
    let mnt = dir.join("mnt");
    let store = dir.join("store");
    std::fs::create_dir_all(&mnt).unwrap();
    let config = dir.join("sequins.conf");
    std::fs::write(
        &config,
        format!("[storage]\ncompression = \"{compression}\"\n"),
    )
    .unwrap();
    let port = free_port();
    let status = Command::new(env!("CARGO_BIN_EXE_sequinsfs"))
        .arg("mount")
        .arg(source)
        .arg(&mnt)
        .arg("--local-store")
        .arg(&store)
        .arg("--config")
        .arg(&config)
        .arg("--http")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--log-file")
        .arg(dir.join("daemon.log"))
        .status()
        .unwrap();
    assert!(status.success(), "mount failed");
    let pid = daemon_pid(&mnt);

    // Through the mount, as `cat` reads: 128 KiB at a time.
    let path = mnt.join("big").join("value");
    let started = Instant::now();
    let mut file = std::fs::File::open(&path).unwrap();
    let mut buf = vec![0u8; 128 << 10];
    let mut read = Vec::with_capacity(value.len());
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        read.extend_from_slice(&buf[..n]);
    }
    let cat = started.elapsed();
    assert!(read == value, "value read through the mount differs");
    drop(read);

    // Over HTTP: one GET, body read to its end.
    let started = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET /big/value HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::with_capacity(value.len() + 1024);
    stream.read_to_end(&mut response).unwrap();
    let http = started.elapsed();
    let body_at = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head")
        + 4;
    assert!(
        response.starts_with(b"HTTP/1.1 200"),
        "HTTP answered {:?}",
        String::from_utf8_lossy(&response[..body_at.min(200)])
    );
    assert!(
        response[body_at..] == *value,
        "value read over HTTP differs"
    );
    let peak_rss_kib = peak_rss_kib(pid);

    let status = Command::new("fusermount3")
        .arg("-u")
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(status.success(), "unmount failed");
    Timings {
        cat,
        http,
        peak_rss_kib,
    }
}

/// The daemon serving `mnt`, found through /proc (it daemonized).
fn daemon_pid(mnt: &Path) -> u32 {
    let needle = mnt.to_string_lossy().into_owned();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.iter().any(|a| a == "mount") && args.contains(&needle) {
            return pid;
        }
    }
    panic!("no daemon found for {needle}");
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
