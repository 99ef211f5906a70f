//! HTTP sidecar throughput and latency, measured with `wrk` on loopback.
//!
//! Serves one database, `bench`, version `1`, of 1,000,000 keys
//! `key-0000000` .. `key-0999999` with values `value-0000000` ..
//! `value-0999999` (13 bytes), loaded by the engine from a SequenceFile into
//! a local store as the daemon does (so lookups are the daemon's: a hash
//! probe in a memory-mapped table), and runs `wrk --latency` for:
//! - a hot key (`/bench/key-0000042`) and random keys (a Lua script picking
//!   a uniformly random key per request),
//! - with 1 and with 16 keep-alive connections.
//!
//! For scale, the same runs go first against a *floor* server on the same
//! runtime: a task per connection that reads whatever arrives and writes a
//! canned response of the same size for each request head, with no HTTP
//! parsing and no lookup. What it reaches is what the sockets, the runtime
//! and `wrk` cost on this machine; no HTTP server can do better here.
//!
//! Besides requests/s and latency, each row shows the CPU time the server
//! and `wrk` spent per request, and how busy the machine was with other
//! processes during the run (from `/proc/stat`; a shared machine makes
//! figures with a high value there unreliable).
//!
//! Rows marked `+ip` are the same servers with `--idle-poll` (as root):
//! idle CPUs poll while requests arrive (see `sequinsfs::wakeup`).
//!
//! Run: `cargo bench --bench http` (needs `wrk` on the PATH; Debian package
//! `wrk`). `SEQUINSFS_BENCH_SECONDS` sets each run's length (default 5),
//! `SEQUINSFS_BENCH_CONNS` one connection count only (1 or 16),
//! `SEQUINSFS_BENCH_SERVER_THREADS` the server's worker threads (default:
//! the daemon's, `--http-threads`, 1). The server and `wrk` share the machine's cores, so the
//! figures are a lower bound of what a dedicated server does.

use std::io::Write;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sequinsfs::config::Config;
use sequinsfs::engine::Engine;
use sequinsfs::format::sequencefile::{Writer, WriterOptions};
use sequinsfs::http::HttpOptions;
use sequinsfs::metrics::Metrics;
use sequinsfs::wakeup::{Activity, IdlePoll};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEYS: u32 = 1_000_000;

/// What the floor server answers to every request head: the sidecar's
/// response to the hot key, byte for byte in size and shape.
const CANNED_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\n\
    x-sequins-version: 1\r\n\
    last-modified: Sat, 21 Nov 2026 13:00:00 GMT\r\n\
    etag: \"0123456789abcdef\"\r\n\
    accept-ranges: bytes\r\n\
    content-type: application/octet-stream\r\n\
    content-length: 13\r\n\
    date: Sat, 21 Nov 2026 13:00:00 GMT\r\n\
    \r\n\
    value-0000042";

fn main() {
    if Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("skipped: wrk not found (apt-get install wrk)");
        return;
    }
    let seconds: u64 = env_or("SEQUINSFS_BENCH_SECONDS", 5);
    // The daemon's default unless told otherwise.
    let threads: usize = env_or(
        "SEQUINSFS_BENCH_SERVER_THREADS",
        HttpOptions::default().threads,
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    write_source(&dir.path().join("source/bench/1"));
    let config = Config {
        source: dir.path().join("source").display().to_string(),
        local_store: dir.path().join("store"),
        ..Config::default()
    };

    let bind = || {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        listener
    };
    let (sidecar_listener, floor_listener) = (bind(), bind());
    let sidecar_addr = sidecar_listener.local_addr().expect("addr");
    let floor_addr = floor_listener.local_addr().expect("addr");
    // The same two servers again with `--idle-poll` (needs root).
    let idle_poll = match IdlePoll::start() {
        Ok(poll) => Some(poll),
        Err(err) => {
            eprintln!("no --idle-poll rows: {err}");
            None
        }
    };
    let activity = idle_poll.as_ref().map(IdlePoll::activity);
    let (polled_sidecar_listener, polled_floor_listener) = (bind(), bind());
    let polled_sidecar_addr = polled_sidecar_listener.local_addr().expect("addr");
    let polled_floor_addr = polled_floor_listener.local_addr().expect("addr");
    let (loaded_tx, loaded_rx) = std::sync::mpsc::channel::<()>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let engine = Engine::start(config).await.expect("engine");
            engine.refresh_now().await;
            assert!(
                engine.catalog().current("bench").is_some(),
                "not loaded: {:?}",
                engine.catalog().status()
            );
            let _ = loaded_tx.send(());
            let floor_listener =
                tokio::net::TcpListener::from_std(floor_listener).expect("listener");
            tokio::spawn(floor_server(floor_listener, None));
            let polled_floor_listener =
                tokio::net::TcpListener::from_std(polled_floor_listener).expect("listener");
            tokio::spawn(floor_server(polled_floor_listener, activity.clone()));
            let polled_listener =
                tokio::net::TcpListener::from_std(polled_sidecar_listener).expect("listener");
            tokio::spawn(sequinsfs::http::serve(
                polled_listener,
                Arc::clone(engine.catalog()),
                HttpOptions {
                    activity,
                    ..HttpOptions::default()
                },
                Metrics::new(),
                std::future::pending(),
            ));
            let listener = tokio::net::TcpListener::from_std(sidecar_listener).expect("listener");
            sequinsfs::http::serve(
                listener,
                Arc::clone(engine.catalog()),
                HttpOptions::default(),
                Metrics::new(),
                async {
                    let _ = stop_rx.await;
                },
            )
            .await
            .expect("serve");
            engine.shutdown().await;
        });
    });
    loaded_rx.recv().expect("the engine loads the database");
    eprintln!(
        "wrote and loaded {KEYS} keys in {:.1} s; server threads: {threads}; {seconds} s per run",
        started.elapsed().as_secs_f64()
    );

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
        "{:<8} {:<7} {:>5} {:>11} {:>9} {:>9} {:>6} {:>11} {:>9} {:>7}",
        "server",
        "keys",
        "conns",
        "requests/s",
        "p50",
        "p99",
        "errors",
        "server/req",
        "wrk/req",
        "others"
    );
    let mut runs = vec![
        ("floor", floor_addr, "hot", None),
        ("sidecar", sidecar_addr, "hot", None),
        ("sidecar", sidecar_addr, "random", Some(&script)),
    ];
    if idle_poll.is_some() {
        runs.extend([
            ("floor+ip", polled_floor_addr, "hot", None),
            ("side+ip", polled_sidecar_addr, "hot", None),
            ("side+ip", polled_sidecar_addr, "random", Some(&script)),
        ]);
    }
    // SEQUINSFS_BENCH_CONNS=16 (or 1) runs one connection count only.
    let only_conns: Option<u32> = std::env::var("SEQUINSFS_BENCH_CONNS")
        .ok()
        .and_then(|c| c.parse().ok());
    for (server_name, addr, keys, script) in runs {
        for conns in [1u32, 16] {
            if only_conns.is_some_and(|only| only != conns) {
                continue;
            }
            let row = run_wrk(addr, conns, seconds, script.map(|s| s.as_path()));
            println!("{server_name:<8} {keys:<7} {conns:>5} {row}");
        }
    }
    let _ = stop_tx.send(());
    let _ = server.join();
}

/// Writes the database's one data file, an uncompressed SequenceFile of
/// `BytesWritable` keys and values, into `version_dir`.
fn write_source(version_dir: &std::path::Path) {
    std::fs::create_dir_all(version_dir).expect("source dir");
    let out = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(version_dir.join("part-00000")).expect("data file"),
    );
    let mut writer = Writer::new(out, WriterOptions::bytes_writable()).expect("writer");
    for i in 0..KEYS {
        writer
            .append_bytes_writable(
                format!("key-{i:07}").as_bytes(),
                format!("value-{i:07}").as_bytes(),
            )
            .expect("append");
    }
    writer
        .finish()
        .expect("finish")
        .flush()
        .expect("flush data file");
}

/// Runs `wrk` once against `addr` and formats its figures as the rest of a
/// table row.
fn run_wrk(addr: SocketAddr, conns: u32, seconds: u64, script: Option<&std::path::Path>) -> String {
    let url = format!("http://{addr}/bench/key-0000042");
    let mut wrk = Command::new("wrk");
    // One wrk thread: the load generator shares the cores with the server,
    // and one event loop saturates 16 connections here.
    wrk.args(["-t1", "--latency"])
        .arg(format!("-c{conns}"))
        .arg(format!("-d{seconds}s"));
    if let Some(script) = script {
        wrk.arg("-s").arg(script);
    }
    let machine_before = machine_busy();
    let (server_before, wrk_before) =
        (cpu_time(libc::RUSAGE_SELF), cpu_time(libc::RUSAGE_CHILDREN));
    let wall = Instant::now();
    let out = wrk.arg(&url).output().expect("run wrk");
    let wall = wall.elapsed();
    let server_cpu = cpu_time(libc::RUSAGE_SELF).saturating_sub(server_before);
    let wrk_cpu = cpu_time(libc::RUSAGE_CHILDREN).saturating_sub(wrk_before);
    let machine_cpu = machine_busy()
        .zip(machine_before)
        .map(|(after, before)| after.saturating_sub(before));

    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.contains("Socket errors") {
        eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    }
    let rps = field(&text, "Requests/sec:").unwrap_or("?");
    let p50 = percentile(&text, "50%").unwrap_or("?");
    let p99 = percentile(&text, "99%").unwrap_or("?");
    let errors = field(&text, "Non-2xx or 3xx responses:").unwrap_or("0");
    // CPU spent per request: unlike requests/s, this hardly depends on
    // what else runs on the machine.
    let total = requests_done(&text);
    let per_request = |cpu: Duration| {
        if total > 0.0 {
            format!("{:.1}us", cpu.as_secs_f64() * 1e6 / total)
        } else {
            "?".to_string()
        }
    };
    // Everything else the machine did meanwhile, in cores.
    let others = machine_cpu.map_or("?".to_string(), |busy| {
        let others = busy.saturating_sub(server_cpu + wrk_cpu);
        format!("{:.2}", others.as_secs_f64() / wall.as_secs_f64())
    });
    format!(
        "{rps:>11} {p50:>9} {p99:>9} {errors:>6} {:>11} {:>9} {others:>7}",
        per_request(server_cpu),
        per_request(wrk_cpu)
    )
}

/// The scale of the measurements: answers each request head it reads with
/// [`CANNED_RESPONSE`], nothing more.
async fn floor_server(listener: tokio::net::TcpListener, activity: Option<Activity>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = activity.clone();
        tokio::spawn(async move {
            let mut input = vec![0u8; 64 * 1024];
            let mut output = Vec::new();
            // How much of "\r\n\r\n" the bytes read so far end with.
            let mut matched = 0;
            loop {
                let n = match stream.read(&mut input).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if let Some(activity) = &activity {
                    activity.touch();
                }
                output.clear();
                for &b in &input[..n] {
                    matched = match (matched, b) {
                        (0 | 2, b'\r') => matched + 1,
                        (1 | 3, b'\n') => matched + 1,
                        (_, b'\r') => 1,
                        _ => 0,
                    };
                    if matched == 4 {
                        output.extend_from_slice(CANNED_RESPONSE);
                        matched = 0;
                    }
                }
                if stream.write_all(&output).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// CPU time, user plus system, of this process (`RUSAGE_SELF`: the
/// servers) or of its waited-for children (`RUSAGE_CHILDREN`: `wrk`).
fn cpu_time(who: libc::c_int) -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a complete `rusage` into the pointer it is
    // given, which points to memory of that type we own.
    let rc = unsafe { libc::getrusage(who, usage.as_mut_ptr()) };
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

/// CPU time the whole machine has spent busy since boot (all cores; from
/// the first line of `/proc/stat`), or `None` where that file is missing.
fn machine_busy() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...: idle and iowait
    // are not busy, steal is other virtual machines, guest time is already
    // counted in user.
    let busy: u64 = ticks
        .iter()
        .take(7)
        .enumerate()
        .filter(|&(i, _)| i != 3 && i != 4)
        .map(|(_, t)| t)
        .sum();
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|&hz| hz > 0)?;
    Some(Duration::from_secs_f64(busy as f64 / hz as f64))
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
