//! Load benchmark: time from refresh to ACTIVE for a large version, as
//! SequenceFiles and as Sparkey input, with peak and serving memory.
//!
//! ```text
//! cargo bench --bench load                      # 10 million records
//! LOAD_BENCH_RECORDS=1000000 cargo bench --bench load
//! ```
//!
//! The data (24-byte keys, 100-byte values, 8 files; BLOCK snappy
//! SequenceFiles, and the same records as snappy Sparkey tables with framed
//! indexes, partitioned as sequins requires) is generated once into
//! `target/bench-data/load-<records>/` and reused. Each measured phase runs
//! in a child process of its own, so its peak RSS is its own:
//!
//! - `seqfile`: an engine loads the SequenceFile version from refresh to
//!   ACTIVE;
//! - `sparkey`: the same for the Sparkey version; its baseline is `cp -r` of
//!   the same files measured in the same run;
//! - `serve`: an engine restarts on the loaded store, answers one million
//!   random lookups, and reports its anonymous RSS (what it uses beyond the
//!   page cache);
//! - `first key` (the load-speed issue's input, generated into
//!   `target/bench-data/first-key-<records>/`): 8 uncompressed BytesWritable
//!   SequenceFiles of `LOAD_BENCH_FIRST_KEY_RECORDS` records (default 4
//!   million, about 505 MB: 24-byte keys, 86-byte values), timed from the
//!   start of a `sequinsfs serve` process (the release binary) to the first
//!   key answered over HTTP; its baselines are `cp -r` of the same files
//!   measured in the same run, sequins' published 3.0 s for this input, and
//!   the same daemon with `[storage] in_place = false` (the files rewritten
//!   into Sparkey tables, as before they were served in place); then
//!   1,000,000 random lookups on the version in place.
//!
//! `LOAD_BENCH_ONLY=first-key` runs only the last phase.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sequinsfs::config::Config;
use sequinsfs::engine::Engine;
use sequinsfs::format::sequencefile::{Codec, Compression, Writer, WriterOptions};
use sequinsfs::format::sparkey;
use sequinsfs::partition;

const FILES: u32 = 8;
const KEY_LEN: usize = 24;
const VALUE_LEN: usize = 100;

fn key(i: u64) -> Vec<u8> {
    format!("key-{i:020}").into_bytes()
}

/// 100 bytes of lower-case letters from a per-record xorshift stream: about
/// as compressible as typical text values.
fn value(i: u64, out: &mut Vec<u8>) {
    out.clear();
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while out.len() < VALUE_LEN {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        for b in x.to_le_bytes() {
            if out.len() < VALUE_LEN {
                out.push(b'a' + b % 16);
            }
        }
    }
}

fn main() {
    match std::env::var("LOAD_BENCH_PHASE").ok().as_deref() {
        Some("seqfile") => phase_load("seqfile"),
        Some("sparkey") => phase_load("sparkey"),
        Some("serve") => phase_serve(),
        Some("first-key-serve") => phase_first_key_serve(),
        _ => driver(),
    }
}

fn records() -> u64 {
    std::env::var("LOAD_BENCH_RECORDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000_000)
}

fn data_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target
        .join("bench-data")
        .join(format!("load-{}", records()))
}

fn driver() {
    if std::env::var("LOAD_BENCH_ONLY").as_deref() != Ok("first-key") {
        main_phases();
    }
    first_key();
}

fn main_phases() {
    let n = records();
    let dir = data_dir();
    if !dir.join("ready").exists() {
        eprintln!("generating {n} records into {}", dir.display());
        let _ = std::fs::remove_dir_all(&dir);
        generate(&dir, n);
        std::fs::write(dir.join("ready"), b"").unwrap();
    }
    let uncompressed = n * (KEY_LEN + VALUE_LEN) as u64;
    println!(
        "load benchmark: {n} records, {KEY_LEN}-byte keys, {VALUE_LEN}-byte values, {FILES} files, {:.0} MB uncompressed",
        uncompressed as f64 / 1e6
    );

    let seq = run_phase("seqfile");
    let seq_bytes = dir_size(&dir.join("seqfile/db/1"));
    println!(
        "SequenceFile (BLOCK snappy, {:.0} MB on disk): {:.2} s refresh->ACTIVE, {:.0} MB/s uncompressed, peak RSS {:.0} MiB",
        seq_bytes as f64 / 1e6,
        seq.seconds,
        uncompressed as f64 / 1e6 / seq.seconds,
        seq.peak_rss_mib
    );

    let spk = run_phase("sparkey");
    let spk_bytes = dir_size(&dir.join("sparkey/db/1"));
    let cp_seconds = time_cp(&dir.join("sparkey/db/1"), &dir.join("cp-copy"));
    println!(
        "Sparkey input ({:.0} MB on disk): {:.2} s refresh->ACTIVE ({:.0} MB/s of files), peak RSS {:.0} MiB; cp -r of the same files {:.2} s; load speed / cp speed = {:.2}",
        spk_bytes as f64 / 1e6,
        spk.seconds,
        spk_bytes as f64 / 1e6 / spk.seconds,
        spk.peak_rss_mib,
        cp_seconds,
        cp_seconds / spk.seconds
    );

    let serve = run_phase("serve");
    println!(
        "serving {n} keys after 1,000,000 random lookups: anonymous RSS {:.1} MiB (file-backed, i.e. page cache: {:.0} MiB), {:.0} lookups/s",
        serve.anon_rss_mib, serve.file_rss_mib, serve.rate
    );
}

#[derive(Default)]
struct PhaseResult {
    seconds: f64,
    peak_rss_mib: f64,
    anon_rss_mib: f64,
    file_rss_mib: f64,
    rate: f64,
}

fn run_phase(phase: &str) -> PhaseResult {
    let out = Command::new(std::env::current_exe().unwrap())
        .env("LOAD_BENCH_PHASE", phase)
        .output()
        .unwrap();
    if !out.status.success() {
        panic!(
            "phase {phase} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8(out.stdout).unwrap();
    let mut r = PhaseResult::default();
    for line in text.lines() {
        let mut parts = line.split('=');
        let (Some(k), Some(v)) = (parts.next(), parts.next()) else {
            continue;
        };
        let v: f64 = v.parse().unwrap_or(0.0);
        match k {
            "seconds" => r.seconds = v,
            "peak_rss_mib" => r.peak_rss_mib = v,
            "anon_rss_mib" => r.anon_rss_mib = v,
            "file_rss_mib" => r.file_rss_mib = v,
            "rate" => r.rate = v,
            _ => {}
        }
    }
    r
}

fn config(source: &Path, store: &Path) -> Config {
    Config {
        source: source.display().to_string(),
        local_store: store.to_path_buf(),
        // The daemon's defaults otherwise: uncompressed local logs and
        // 10 file workers.
        ..Config::default()
    }
}

fn phase_load(kind: &str) {
    // `RUST_LOG=sequinsfs=debug LOAD_BENCH_PHASE=seqfile` shows the phases.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let dir = data_dir();
    let store = dir.join(format!("store-{kind}"));
    let _ = std::fs::remove_dir_all(&store);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let seconds = runtime.block_on(async {
        // The startup refresh loads every new database before start returns.
        let started = Instant::now();
        let engine = Engine::start(config(&dir.join(kind), &store))
            .await
            .unwrap();
        engine.refresh_now().await;
        let seconds = started.elapsed().as_secs_f64();
        let v = engine
            .catalog()
            .current("db")
            .unwrap_or_else(|| panic!("not loaded: {:?}", engine.catalog().status()));
        assert_eq!(v.keys().key_count(), records());
        engine.shutdown().await;
        seconds
    });
    let status = proc_status();
    println!("seconds={seconds}");
    println!("peak_rss_mib={}", status("VmHWM") / 1024.0);
}

fn phase_serve() {
    let dir = data_dir();
    let cfg = config(&dir.join("seqfile"), &dir.join("store-seqfile"));
    random_lookups(cfg, records());
}

/// Starts an engine with `cfg` (its store already loaded), answers a
/// million lookups of random keys of the `n` in the version, and prints
/// their rate and the process's memory while the engine still serves.
fn random_lookups(cfg: Config, n: u64) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let rate = runtime.block_on(async {
        let engine = Engine::start(cfg).await.unwrap();
        engine.refresh_now().await;
        let v = engine.catalog().current("db").unwrap();
        let mut x = 88172645463325252u64;
        let started = Instant::now();
        let lookups = 1_000_000;
        for _ in 0..lookups {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let k = key(x % n);
            assert!(v.get(&k).unwrap().is_some());
        }
        let rate = lookups as f64 / started.elapsed().as_secs_f64();
        drop(v);
        // Measure while the engine is up and serving.
        let status = proc_status();
        println!("anon_rss_mib={}", status("RssAnon") / 1024.0);
        println!("file_rss_mib={}", status("RssFile") / 1024.0);
        engine.shutdown().await;
        rate
    });
    println!("rate={rate}");
}

/// A field of /proc/self/status in KiB.
fn proc_status() -> impl Fn(&str) -> f64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap();
    move |field: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{field}:")))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
}

fn generate(dir: &Path, n: u64) {
    let seq_dir = dir.join("seqfile/db/1");
    let spk_dir = dir.join("sparkey/db/1");
    std::fs::create_dir_all(&seq_dir).unwrap();
    std::fs::create_dir_all(&spk_dir).unwrap();
    let mut value_buf = Vec::with_capacity(VALUE_LEN);

    // SequenceFiles: records spread round-robin, as an unpartitioned job
    // would write them (the loader must route every record).
    let mut writers: Vec<_> = (0..FILES)
        .map(|f| {
            let out = std::io::BufWriter::with_capacity(
                1 << 20,
                std::fs::File::create(seq_dir.join(format!("part-{f:05}"))).unwrap(),
            );
            let opts =
                WriterOptions::bytes_writable().compressed(Compression::Block, Codec::Snappy);
            Writer::new(out, opts).unwrap()
        })
        .collect();
    // Sparkey tables: one per partition, as a partitioned job writes them.
    let mut logs: Vec<_> = (0..FILES)
        .map(|p| {
            sparkey::LogWriter::create(
                &spk_dir.join(format!("part-{p:05}.spl")),
                sparkey::Compression::Snappy,
                4096,
            )
            .unwrap()
        })
        .collect();
    for i in 0..n {
        let k = key(i);
        value(i, &mut value_buf);
        writers[(i % FILES as u64) as usize]
            .append_bytes_writable(&k, &value_buf)
            .unwrap();
        let (p, _) = partition::partitions(&k, FILES);
        logs[p as usize].put(&k, &value_buf).unwrap();
    }
    for w in writers {
        let mut out = w.finish().unwrap();
        out.flush().unwrap();
    }
    for (p, log) in logs.into_iter().enumerate() {
        let spi = dir.join(format!("part-{p:05}.spi"));
        log.finish_with_index(&spi).unwrap();
        let framed = std::fs::File::create(spk_dir.join(format!("part-{p:05}.spi.sz"))).unwrap();
        sparkey::framed::encode(std::fs::File::open(&spi).unwrap(), framed).unwrap();
        std::fs::remove_file(&spi).unwrap();
    }
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

/// `cp -r` of a directory with a warm page cache (read once first).
fn time_cp(from: &Path, to: &Path) -> f64 {
    let _ = std::fs::remove_dir_all(to);
    let warm = Command::new("cat")
        .args(std::fs::read_dir(from).unwrap().map(|e| e.unwrap().path()))
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(warm.success());
    let started = Instant::now();
    let status = Command::new("cp")
        .arg("-r")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert!(status.success());
    let _ = std::fs::remove_dir_all(to);
    seconds.max(Duration::from_micros(1).as_secs_f64())
}

/// sequins' time from process start to the first served key on the first
/// key input, as published in the load-speed issue (Go sequins, same
/// machine as sequinsfs' 1.3-1.9 s there).
const SEQUINS_FIRST_KEY_SECONDS: f64 = 3.0;
const FIRST_KEY_VALUE_LEN: usize = 86;

fn first_key_records() -> u64 {
    std::env::var("LOAD_BENCH_FIRST_KEY_RECORDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4_000_000)
}

/// The first key phase (see the module comment): three runs, each with a
/// fresh store after a `sync`, beside `cp -r` of the same files.
fn first_key() {
    let n = first_key_records();
    let dir = first_key_dir();
    let version = dir.join("source/db/1");
    if !dir.join("ready").exists() {
        eprintln!("generating {n} records into {}", dir.display());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&version).unwrap();
        let mut writers: Vec<_> = (0..FILES)
            .map(|f| {
                let out = std::io::BufWriter::with_capacity(
                    1 << 20,
                    std::fs::File::create(version.join(format!("part-{f:05}"))).unwrap(),
                );
                Writer::new(out, WriterOptions::bytes_writable()).unwrap()
            })
            .collect();
        let mut value_buf = Vec::new();
        for i in 0..n {
            value(i, &mut value_buf);
            value_buf.truncate(FIRST_KEY_VALUE_LEN);
            writers[(i % FILES as u64) as usize]
                .append_bytes_writable(&key(i), &value_buf)
                .unwrap();
        }
        for w in writers {
            w.finish().unwrap().flush().unwrap();
        }
        std::fs::write(dir.join("ready"), b"").unwrap();
    }
    let bytes = dir_size(&version);
    println!(
        "first key: {n} records, {KEY_LEN}-byte keys, {FIRST_KEY_VALUE_LEN}-byte values, {FILES} uncompressed SequenceFiles, {:.0} MB",
        bytes as f64 / 1e6
    );
    // The daemon's defaults, and the same with SequenceFiles rewritten into
    // Sparkey tables as before they were served in place.
    let in_place = dir.join("in-place.conf");
    std::fs::write(&in_place, "").unwrap();
    let sparkey = dir.join("sparkey.conf");
    std::fs::write(&sparkey, "[storage]\nin_place = false\n").unwrap();
    let probe = key(n / 2 + 1);
    let mut expected = Vec::new();
    value(n / 2 + 1, &mut expected);
    expected.truncate(FIRST_KEY_VALUE_LEN);
    let store = dir.join("store");
    for run in 1..=3 {
        sync();
        let cp_seconds = time_cp(&version, &dir.join("cp-copy"));
        let mut times = Vec::new();
        for config in [&sparkey, &in_place] {
            let _ = std::fs::remove_dir_all(&store);
            sync();
            times.push(serve_first_key(
                &dir.join("source"),
                &store,
                config,
                &probe,
                &expected,
            ));
        }
        let (before, seconds) = (times[0], times[1]);
        println!(
            "run {run}: process start -> first key {seconds:.2} s in place ({before:.2} s into Sparkey tables); cp -r of the same files {cp_seconds:.2} s; load speed / cp speed = {:.2} ({:.2}); vs sequins' {SEQUINS_FIRST_KEY_SECONDS:.1} s: {:.2}x ({:.2}x)",
            cp_seconds / seconds,
            cp_seconds / before,
            SEQUINS_FIRST_KEY_SECONDS / seconds,
            SEQUINS_FIRST_KEY_SECONDS / before,
        );
    }
    // The last run's store (in place) stays for the lookups below.
    let serve = run_phase("first-key-serve");
    println!(
        "serving the {n} keys in place after 1,000,000 random lookups: anonymous RSS {:.1} MiB, {:.0} lookups/s",
        serve.anon_rss_mib, serve.rate
    );
    let _ = std::fs::remove_dir_all(dir.join("store"));
}

fn first_key_dir() -> PathBuf {
    data_dir()
        .parent()
        .unwrap()
        .join(format!("first-key-{}", first_key_records()))
}

/// `serve` on the store the first key phase left: lookups by key through
/// the engine, which for SequenceFiles in place search the key index.
fn phase_first_key_serve() {
    let dir = first_key_dir();
    let cfg = config(&dir.join("source"), &dir.join("store"));
    random_lookups(cfg, first_key_records());
}

fn sync() {
    assert!(Command::new("sync").status().unwrap().success());
}

/// Starts `sequinsfs serve` on `source` with an empty store and returns the
/// seconds from spawning it to the answer to the first GET of `key`.
fn serve_first_key(source: &Path, store: &Path, config: &Path, key: &[u8], expected: &[u8]) -> f64 {
    use std::io::{BufRead, Read};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sequinsfs"))
        .args([
            "serve",
            "--bind",
            &address,
            "--log-level",
            "info",
            "--config",
        ])
        .arg(config)
        .arg("--local-store")
        .arg(store)
        .arg(source)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(stderr).lines();
    // The daemon listens before loading, but answers only once the first
    // loads have ended, when it logs this line.
    loop {
        let line = lines
            .next()
            .expect("sequinsfs serve exited before serving")
            .unwrap();
        if line.contains("serving HTTP on") {
            break;
        }
    }
    let mut stream = std::net::TcpStream::connect(&address).unwrap();
    let path = String::from_utf8(key.to_vec()).unwrap();
    write!(
        stream,
        "GET /db/{path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert!(
        reply.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert!(reply.ends_with(expected), "wrong value");
    let stopped = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    // Drain the log so the child never blocks writing it.
    for _ in lines {}
    assert!(child.wait().unwrap().success());
    seconds
}
