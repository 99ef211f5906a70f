//! Cluster proxying cost over HTTP, measured with `wrk` on loopback.
//!
//! Starts a private ZooKeeper, a three-node cluster of `sequinsfs serve`
//! processes (replication 2, shard IDs 1..3) and a standalone node, all over
//! one source of 6 SequenceFiles (6 partitions, 60,000 keys), then runs
//! `wrk` with 16 connections, then 1, against node 1 for:
//! - a key of a partition node 1 holds (answered from its mmap),
//! - a key of a partition node 1 does not hold (proxied to a peer),
//! - the local key on the standalone node.
//!
//! The target of the cluster issue: a proxied request costs at most 2x a
//! local one, i.e. `local req/s / proxied req/s <= 2`. Every process shares
//! this machine's cores with `wrk`, so the figures are relative.
//!
//! Node 1 and the standalone node run `sequinsfs mount` (with the sidecar),
//! so the bench then reads 5,000 keys of node 1's partitions and 5,000 of
//! the others' through node 1's mount (open, read, close), cold then warm,
//! beside the same keys through the standalone mount. Target: a warm
//! remote key costs what a warm local one does (the kernel answers both).
//!
//! Run: `cargo bench --bench cluster` (needs `wrk` and Debian's
//! `zookeeper`). `SEQUINSFS_BENCH_SECONDS` sets each run's length (default 5).

#[path = "../tests/common/zk.rs"]
#[allow(dead_code)]
mod zk;

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sequinsfs::format::sequencefile::{Writer, WriterOptions};

const PARTITIONS: u32 = 6;
const KEYS: u32 = 60_000;
/// Partitions shard ID 1 holds of 6 with replication 2 over IDs 1, 2, 3.
const NODE1_PARTITIONS: [u32; 4] = [0, 1, 3, 4];

fn main() {
    if Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("skipped: wrk not found (apt-get install wrk)");
        return;
    }
    let Some(zk) = zk::ZkServer::started() else {
        return;
    };
    let seconds: u64 = std::env::var("SEQUINSFS_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("source");
    write_source(&source.join("bench/1"));

    let cluster = format!(
        "[zk]\nservers = [\"{}\"]\ncluster_name = \"bench\"\ntime_to_converge = \"1s\"\n\
         [sharding]\nreplication = 2\nmin_replication = 2\n",
        zk.address()
    );
    let mut nodes: Vec<Daemon> = ["1", "2", "3"]
        .iter()
        .map(|id| {
            Daemon::start(
                dir.path(),
                &source,
                &format!("node-{id}"),
                &format!("{cluster}shard_id = \"{id}\"\n"),
                *id == "1",
            )
        })
        .collect();
    let mut standalone = Daemon::start(dir.path(), &source, "standalone", "", true);
    for daemon in nodes.iter_mut().chain(std::iter::once(&mut standalone)) {
        daemon.wait_serving();
    }

    let key_where = |local: bool| {
        (0..KEYS)
            .map(key)
            .find(|k| {
                let p = sequinsfs::partition::partition(k.as_bytes(), PARTITIONS);
                NODE1_PARTITIONS.contains(&p) == local
            })
            .expect("a key")
    };
    let (local_key, remote_key) = (key_where(true), key_where(false));
    println!("cluster: 3 nodes, replication 2; wrk, {seconds} s per run");
    println!(
        "{:<34} {:>6} {:>12} {:>10} {:>10}",
        "run", "conns", "req/s", "p50", "p99"
    );
    for conns in [16, 1] {
        let runs = [
            ("standalone, key A", standalone.addr, &local_key),
            ("node 1, key A (local partition)", nodes[0].addr, &local_key),
            ("node 1, key B (proxied)", nodes[0].addr, &remote_key),
        ];
        let mut results = Vec::new();
        for (name, addr, key) in runs {
            let result = wrk(addr, &format!("/bench/{key}"), seconds, conns);
            println!(
                "{name:<34} {conns:>6} {:>12.0} {:>10} {:>10}",
                result.rps, result.p50, result.p99
            );
            results.push(result);
        }
        println!(
            "{conns} connections: a proxied request costs {:.2}x a local one in req/s \
             (target <= 2x), {:.2}x in p50; local in the cluster vs standalone: {:.2}x",
            results[1].rps / results[2].rps,
            micros(&results[2].p50) / micros(&results[1].p50),
            results[0].rps / results[1].rps,
        );
    }
    mount_reads(&nodes[0], &standalone);
    for daemon in nodes.iter_mut().chain(std::iter::once(&mut standalone)) {
        daemon.stop();
    }
}

/// Keys per mount pass.
const MOUNT_KEYS: usize = 5_000;

/// Cold then warm open+read+close of local and remote keys through node
/// 1's mount, beside the standalone mount.
fn mount_reads(node: &Daemon, standalone: &Daemon) {
    let keys_where = |local: bool| -> Vec<String> {
        (0..KEYS)
            .map(key)
            .filter(|k| {
                let p = sequinsfs::partition::partition(k.as_bytes(), PARTITIONS);
                NODE1_PARTITIONS.contains(&p) == local
            })
            .take(MOUNT_KEYS)
            .collect()
    };
    let (local, remote) = (keys_where(true), keys_where(false));
    let node_db = node
        .mountpoint
        .as_ref()
        .expect("node 1 mounts")
        .join("bench");
    let alone_db = standalone
        .mountpoint
        .as_ref()
        .expect("mounted")
        .join("bench");
    println!("mount: open+read+close of {MOUNT_KEYS} distinct keys, microseconds per file");
    println!("{:<34} {:>10} {:>10}", "keys", "cold", "warm");
    let mut rows = Vec::new();
    for (name, db, keys) in [
        ("standalone, node 1's keys", &alone_db, &local),
        ("node 1, its own partitions", &node_db, &local),
        ("node 1, peers' partitions", &node_db, &remote),
    ] {
        let cold = read_pass(db, keys);
        let warm = read_pass(db, keys);
        println!("{name:<34} {cold:>10.1} {warm:>10.1}");
        rows.push((cold, warm));
    }
    println!(
        "mount: a remote key costs {:.2}x a local one cold and {:.2}x warm (target: warm 1x); \
         local in the cluster vs standalone: {:.2}x cold, {:.2}x warm",
        rows[2].0 / rows[1].0,
        rows[2].1 / rows[1].1,
        rows[1].0 / rows[0].0,
        rows[1].1 / rows[0].1,
    );
}

/// Microseconds per open+read+close over `keys` in `db`.
fn read_pass(db: &Path, keys: &[String]) -> f64 {
    use std::io::Read;
    let mut buf = [0u8; 64];
    let start = std::time::Instant::now();
    for k in keys {
        let mut file = std::fs::File::open(db.join(k)).expect("open");
        let n = file.read(&mut buf).expect("read");
        assert_eq!(n, 13, "{k}");
    }
    start.elapsed().as_secs_f64() * 1e6 / keys.len() as f64
}

fn key(i: u32) -> String {
    format!("key-{i:07}")
}

/// `<dir>/part-0000N`, 6 BytesWritable SequenceFiles of 10,000 records.
fn write_source(dir: &Path) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let per_file = KEYS / PARTITIONS;
    for f in 0..PARTITIONS {
        let path = dir.join(format!("part-{f:05}"));
        let out = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
        let mut writer = Writer::new(out, WriterOptions::bytes_writable()).expect("writer");
        for i in f * per_file..(f + 1) * per_file {
            writer
                .append_bytes_writable(key(i).as_bytes(), format!("value-{i:07}").as_bytes())
                .expect("append");
        }
        writer.finish().expect("finish");
    }
}

/// One `sequinsfs serve` process, or `sequinsfs mount` with its sidecar.
struct Daemon {
    child: Option<Child>,
    addr: SocketAddr,
    serving: std::sync::mpsc::Receiver<()>,
    mountpoint: Option<PathBuf>,
}

impl Daemon {
    fn start(dir: &Path, source: &Path, name: &str, config: &str, mount: bool) -> Daemon {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let config_path: PathBuf = dir.join(format!("{name}.conf"));
        std::fs::write(&config_path, config).expect("config");
        let address = format!("127.0.0.1:{port}");
        let mountpoint = mount.then(|| dir.join(format!("mnt-{name}")));
        let mut command = Command::new(env!("CARGO_BIN_EXE_sequinsfs"));
        match &mountpoint {
            Some(mountpoint) => {
                std::fs::create_dir_all(mountpoint).expect("mount point");
                command.args(["mount", "-f", "--http", &address]);
            }
            None => {
                command.args(["serve", "--bind", &address]);
            }
        }
        command
            .args(["--log-level", "warn", "--config"])
            .arg(&config_path)
            .arg("--local-store")
            .arg(dir.join(format!("store-{name}")))
            .arg(source);
        if let Some(mountpoint) = &mountpoint {
            command.arg(mountpoint);
        }
        let mut child = command
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sequinsfs");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, serving) = std::sync::mpsc::channel();
        let name = name.to_string();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                eprintln!("{name}: {line}");
            }
            let _ = tx.send(());
        });
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        Daemon {
            child: Some(child),
            addr,
            serving,
            mountpoint,
        }
    }

    /// Waits until the node answers `/healthz` with 200 (it opens its port
    /// for requests once its first versions are served).
    fn wait_serving(&mut self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while std::time::Instant::now() < deadline {
            if self.serving.try_recv().is_ok() {
                panic!("sequinsfs at {} exited", self.addr);
            }
            let ok = Command::new("curl")
                .args(["-sf", "-o", "/dev/null", "--max-time", "1"])
                .arg(format!("http://{}/healthz", self.addr))
                .status()
                .is_ok_and(|s| s.success());
            // A mount serves HTTP first (a cluster node) or last: both.
            let mounted = self
                .mountpoint
                .as_ref()
                .is_none_or(|m| m.join("bench").exists());
            if ok && mounted {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("sequinsfs at {} never served", self.addr);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill sends a signal to the child this bench started.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct WrkResult {
    rps: f64,
    p50: String,
    p99: String,
}

/// A wrk latency figure ("373.00us", "2.28ms") in microseconds.
fn micros(text: &str) -> f64 {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e6)
    } else {
        (text, f64::NAN)
    };
    number.parse::<f64>().map_or(f64::NAN, |n| n * scale)
}

fn wrk(addr: SocketAddr, path: &str, seconds: u64, conns: u32) -> WrkResult {
    let threads = conns.min(2).to_string();
    let conns = conns.to_string();
    let out = Command::new("wrk")
        .args(["-t", &threads, "-c", &conns, "--latency", "-d"])
        .arg(format!("{seconds}s"))
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if text.contains("Non-2xx") {
        panic!("wrk saw errors:\n{text}");
    }
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_string()))
    };
    WrkResult {
        rps: field("Requests/sec:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0),
        p50: field("50%").unwrap_or_else(|| "?".into()),
        p99: field("99%").unwrap_or_else(|| "?".into()),
    }
}
