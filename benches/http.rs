//! HTTP sidecar throughput and latency, measured with `wrk` on loopback.
//!
//! Serves one database, `bench`, version `1`, of 1,000,000 in-memory keys
//! `key-0000000` .. `key-0999999` with values `value-0000000` ..
//! `value-0999999` (13 bytes), and runs `wrk --latency` for:
//! - a hot key (`/bench/key-0000042`) and random keys (a Lua script picking
//!   a uniformly random key per request),
//! - with 1 and with 16 keep-alive connections.
//!
//! Run: `cargo bench --bench http` (needs `wrk` on the PATH; Debian package
//! `wrk`). `SEQUINSFS_BENCH_SECONDS` sets each run's length (default 5),
//! `SEQUINSFS_BENCH_SERVER_THREADS` the server's worker threads (default:
//! one per core). The server and `wrk` share the machine's cores, so the
//! figures are a lower bound of what a dedicated server does.

use std::io::Write;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sequinsfs::catalog::{Catalog, InMemoryVersionData, Version};
use sequinsfs::http::HttpOptions;
use sequinsfs::metrics::Metrics;

const KEYS: u32 = 1_000_000;

fn main() {
    if Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("skipped: wrk not found (apt-get install wrk)");
        return;
    }
    let seconds: u64 = env_or("SEQUINSFS_BENCH_SECONDS", 5);
    let threads: usize = env_or(
        "SEQUINSFS_BENCH_SERVER_THREADS",
        std::thread::available_parallelism().map_or(2, |n| n.get()),
    );

    let started = Instant::now();
    let catalog = Catalog::new();
    let data = InMemoryVersionData::new((0..KEYS).map(|i| {
        (
            format!("key-{i:07}").into_bytes(),
            format!("value-{i:07}").into_bytes(),
        )
    }));
    catalog.publish(
        Version::new(
            "bench",
            "1",
            SystemTime::now(),
            "/bench/1",
            1,
            Box::new(data),
        ),
        "/bench/1".into(),
        Duration::from_secs(60),
    );
    eprintln!(
        "built {KEYS} keys in {:.1} s; server threads: {threads}; {seconds} s per run",
        started.elapsed().as_secs_f64()
    );

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server_catalog = Arc::clone(&catalog);
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            sequinsfs::http::serve(
                listener,
                server_catalog,
                HttpOptions::default(),
                Metrics::new(),
                async {
                    let _ = stop_rx.await;
                },
            )
            .await
            .expect("serve");
        });
    });

    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("random.lua");
    std::fs::File::create(&script)
        .and_then(|mut f| {
            write!(
                f,
                "math.randomseed(os.time())\n\
                 request = function()\n  \
                 return wrk.format(\"GET\", string.format(\"/bench/key-%07d\", math.random(0, {})))\n\
                 end\n",
                KEYS - 1
            )
        })
        .expect("lua script");

    println!(
        "{:<10} {:>5} {:>12} {:>10} {:>10} {:>8} {:>16}",
        "keys", "conns", "requests/s", "p50", "p99", "errors", "server CPU/req"
    );
    for (name, script) in [("hot", None), ("random", Some(&script))] {
        for conns in [1u32, 16] {
            let url = format!("http://{addr}/bench/key-0000042");
            let mut wrk = Command::new("wrk");
            // One wrk thread: the load generator shares the cores with the
            // server, and one event loop saturates 16 connections here.
            wrk.args(["-t1", "--latency"])
                .arg(format!("-c{conns}"))
                .arg(format!("-d{seconds}s"));
            if let Some(script) = script {
                wrk.arg("-s").arg(script);
            }
            let cpu_before = process_cpu_time();
            let out = wrk.arg(&url).output().expect("run wrk");
            let server_cpu = process_cpu_time().saturating_sub(cpu_before);
            let text = String::from_utf8_lossy(&out.stdout);
            let rps = field(&text, "Requests/sec:").unwrap_or("?");
            let p50 = percentile(&text, "50%").unwrap_or("?");
            let p99 = percentile(&text, "99%").unwrap_or("?");
            let errors = field(&text, "Non-2xx or 3xx responses:").unwrap_or("0");
            // CPU the server spent per request: unlike requests/s, this
            // hardly depends on what else runs on the machine.
            let total = requests_done(&text);
            let per_request = if total > 0.0 {
                format!("{:.1}us", server_cpu.as_secs_f64() * 1e6 / total)
            } else {
                "?".to_string()
            };
            println!(
                "{name:<10} {conns:>5} {rps:>12} {p50:>10} {p99:>10} {errors:>8} {per_request:>16}"
            );
            if !out.status.success() || text.contains("Socket errors") {
                eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
            }
        }
    }
    let _ = stop_tx.send(());
    let _ = server.join();
}

/// User plus system CPU time of this process (the server; `wrk` is a child
/// and not included).
fn process_cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a complete `rusage` into the pointer it is
    // given, which points to memory of that type we own.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return Duration::ZERO;
    }
    // SAFETY: getrusage succeeded, so it initialised the struct (and it was
    // zeroed before, so every field is initialised either way).
    let usage = unsafe { usage.assume_init() };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// "123456 requests in 5.00s, ..." -> 123456.
fn requests_done(text: &str) -> f64 {
    text.lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0)
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The token after `label` in wrk's output.
fn field<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
}

/// A line of wrk's "Latency Distribution" block, e.g. "     50%  101.00us".
fn percentile<'a>(text: &'a str, pct: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let mut parts = l.split_whitespace();
        (parts.next() == Some(pct)).then(|| parts.next()).flatten()
    })
}
