//! Switch benchmark: read latency of readers doing random reads over a
//! working set, in the steady state and in the first seconds after a
//! version switch, with and without pre-warming (`--prewarm-limit`), each
//! on a fresh mount in the same run.
//!
//! Run (as root, with /dev/fuse): `cargo bench --bench switch`
//! Knobs: `SEQUINSFS_BENCH_KEYS` (working set, default 100000 keys of 100
//! bytes), `SEQUINSFS_BENCH_READERS` (reader threads, default 2),
//! `SEQUINSFS_BENCH_SECONDS` (length of the steady and after-switch
//! windows, default 10).
//!
//! Per mode: mount version 1, read every key once (cold), start the
//! readers (open + read(4096) + close of a random key of `<db>/`), measure
//! the steady window, then warm version 2 (`Catalog::warm_for_switch`, what
//! a refresh does) and switch to it while the readers go on, and measure
//! the window after the switch. Printed: p50/p99 per window, the ratio of
//! the after-switch p99 to the steady p99 (target: within 2x with
//! pre-warming), how long the switch waited, and the daemon's LOOKUPs and
//! READs in the after-switch window.

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use sequinsfs::catalog::{Catalog, InMemoryVersionData, Version};
use sequinsfs::fs::{MountOptions, Op, mount};

const VALUE_LEN: usize = 100;

/// Which window a read falls in.
const WARMUP: usize = 0;
const STEADY: usize = 1;
const WARMING: usize = 2;
const AFTER: usize = 3;
const WINDOWS: usize = 4;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn version(name: &str, keys: &[String]) -> Arc<Version> {
    let pairs = keys.iter().enumerate().map(|(i, k)| {
        let mut v = format!("version {name} value of key {i} ").into_bytes();
        v.resize(VALUE_LEN, b'.');
        (k.clone().into_bytes(), v)
    });
    Version::new(
        "db",
        name,
        SystemTime::now(),
        "bench",
        1,
        Box::new(InMemoryVersionData::new(pairs)),
    )
}

/// Latencies (nanoseconds) per window, of all readers.
type Samples = [Vec<u64>; WINDOWS];

struct Outcome {
    windows: Samples,
    switch_wait: Duration,
    after_lookups: u64,
    after_reads: u64,
    warmed: Option<u64>,
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !std::path::Path::new("/dev/fuse").exists() {
        println!("switch bench skipped: needs root and /dev/fuse");
        return;
    }
    let keys = env("SEQUINSFS_BENCH_KEYS", 100_000) as usize;
    let readers = env("SEQUINSFS_BENCH_READERS", 2) as usize;
    let window = Duration::from_secs(env("SEQUINSFS_BENCH_SECONDS", 10));
    let names: Arc<Vec<String>> = Arc::new((0..keys).map(|i| format!("k{i:07}")).collect());
    println!(
        "{keys} keys of {VALUE_LEN} bytes, {readers} readers (open + read + close of a random \
         key), {window:?} windows"
    );
    let modes = [
        ("no pre-warming", None),
        (
            "pre-warming (default limit)",
            Some(sequinsfs::fs::DEFAULT_PREWARM_LIMIT),
        ),
    ];
    println!(
        "| mode | steady p50 / p99 | after switch p50 / p99 | p99 after / steady | \
         during warming p50 / p99 | switch waited | daemon LOOKUPs / READs after |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (label, limit) in modes {
        let o = run(&names, readers, window, limit);
        let steady = percentiles(&o.windows[STEADY]);
        let after = percentiles(&o.windows[AFTER]);
        let warming = percentiles(&o.windows[WARMING]);
        println!(
            "| {label} | {} / {} | {} / {} | **{:.2}** | {} | {:.2} s{} | {} / {} |",
            us(steady.0),
            us(steady.1),
            us(after.0),
            us(after.1),
            after.1 as f64 / steady.1.max(1) as f64,
            if o.windows[WARMING].is_empty() {
                "-".to_string()
            } else {
                format!("{} / {}", us(warming.0), us(warming.1))
            },
            o.switch_wait.as_secs_f64(),
            o.warmed
                .map(|w| format!(" ({w} keys warmed)"))
                .unwrap_or_default(),
            o.after_lookups,
            o.after_reads,
        );
        println!(
            "  reads: steady {}, during warming {}, after switch {}",
            o.windows[STEADY].len(),
            o.windows[WARMING].len(),
            o.windows[AFTER].len()
        );
    }
}

fn run(
    names: &Arc<Vec<String>>,
    readers: usize,
    window: Duration,
    limit: Option<Duration>,
) -> Outcome {
    let catalog = Catalog::new();
    catalog.publish(version("1", names), "bench".into(), Duration::from_secs(60));
    let dir = tempfile::tempdir().unwrap();
    let handle = mount(
        Arc::clone(&catalog),
        || {},
        dir.path(),
        MountOptions {
            prewarm_limit: limit,
            ..MountOptions::default()
        },
    )
    .unwrap();
    let db = dir.path().join("db");
    // Every key read once: the kernel holds the working set.
    let mut buf = vec![0u8; 4096];
    for name in names.iter() {
        let n = std::fs::File::open(db.join(name))
            .and_then(|mut f| f.read(&mut buf))
            .unwrap();
        assert_eq!(n, VALUE_LEN);
    }

    let phase = Arc::new(AtomicUsize::new(WARMUP));
    let stop = Arc::new(AtomicBool::new(false));
    let samples: Arc<Mutex<Samples>> = Arc::new(Mutex::new(Default::default()));
    let threads: Vec<_> = (0..readers)
        .map(|t| {
            let (names, db) = (Arc::clone(names), db.clone());
            let (phase, stop, samples) =
                (Arc::clone(&phase), Arc::clone(&stop), Arc::clone(&samples));
            std::thread::spawn(move || {
                let mut mine: Samples = Default::default();
                let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (t as u64 + 1);
                let mut buf = vec![0u8; 4096];
                while !stop.load(Ordering::Relaxed) {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let path = db.join(&names[(rng % names.len() as u64) as usize]);
                    let at = phase.load(Ordering::Relaxed);
                    let start = Instant::now();
                    let n = std::fs::File::open(&path)
                        .and_then(|mut f| f.read(&mut buf))
                        .unwrap();
                    let took = start.elapsed();
                    assert_eq!(n, VALUE_LEN);
                    mine[at].push(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
                }
                let mut all = samples.lock().unwrap();
                for (w, s) in mine.iter_mut().enumerate() {
                    all[w].append(s);
                }
            })
        })
        .collect();

    std::thread::sleep(Duration::from_secs(1));
    phase.store(STEADY, Ordering::Relaxed);
    std::thread::sleep(window);
    let counters = handle.counters();
    phase.store(WARMING, Ordering::Relaxed);
    let v2 = version("2", names);
    let started = Instant::now();
    catalog.warm_for_switch(&v2);
    let switch_wait = started.elapsed();
    catalog.publish(v2, "bench".into(), Duration::from_secs(60));
    let (lookups, reads) = (counters.get(Op::Lookup), counters.get(Op::Read));
    phase.store(AFTER, Ordering::Relaxed);
    std::thread::sleep(window);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let warmed = handle
        .core()
        .prewarm_stats()
        .last("db")
        .map(|run| run.warmed.load(Ordering::Relaxed));
    let outcome = Outcome {
        windows: std::mem::take(&mut *samples.lock().unwrap()),
        switch_wait,
        after_lookups: counters.get(Op::Lookup) - lookups,
        after_reads: counters.get(Op::Read) - reads,
        warmed,
    };
    handle.unmount().unwrap();
    outcome
}

/// (p50, p99) in nanoseconds.
fn percentiles(samples: &[u64]) -> (u64, u64) {
    if samples.is_empty() {
        return (0, 0);
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    (at(0.50), at(0.99))
}

fn us(nanos: u64) -> String {
    format!("{:.1} µs", nanos as f64 / 1000.0)
}
