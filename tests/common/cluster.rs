//! Nodes of a test cluster: `sequinsfs serve` (or `mount`) processes on loopback
//! addresses with their own local stores, coordinated by a private
//! ZooKeeper ([`super::zk::ZkServer`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use super::http::{Conn, free_port};
use super::zk::ZkServer;

/// Bound of every wait for a node's event (a first load of every database
/// of the fixture corpus, in a debug build, on a busy machine).
const WAIT: Duration = Duration::from_secs(180);

/// One `sequinsfs serve` process; [`Node::stop`] sends SIGTERM and checks
/// the exit, dropping it kills the process.
pub struct Node {
    child: Option<Child>,
    pub addr: std::net::SocketAddr,
    store: PathBuf,
    /// The node's log, a line at a time, to wait for its events.
    log: mpsc::Receiver<String>,
    /// What [`Node::restart`] needs.
    command: Command,
    name: String,
    /// Where the node is mounted, for a node started with
    /// [`Node::start_mounted`].
    pub mountpoint: Option<PathBuf>,
    /// The log line that says the node serves.
    serving_line: &'static str,
}

impl Node {
    /// A node with shard ID `shard_id`; its files are named after it under
    /// `dir`. `extra` adds `[sharding]` keys.
    pub fn start(dir: &Path, zk: &ZkServer, source: &Path, shard_id: &str, extra: &str) -> Node {
        Node::start_named(
            dir,
            zk,
            source,
            shard_id,
            &format!("shard_id = \"{shard_id}\"\n{extra}"),
        )
    }

    /// A node named `name` (its files under `dir`) that chooses its shard
    /// ID itself unless `extra` sets one.
    pub fn start_named(dir: &Path, zk: &ZkServer, source: &Path, name: &str, extra: &str) -> Node {
        Node::start_through(dir, &zk.address(), source, name, extra, &[])
    }

    /// A node named `name` that reaches ZooKeeper at `servers` (a
    /// [`super::relay::Relay`], say); `extra` adds `[sharding]` keys and
    /// `flags` command-line flags.
    pub fn start_through(
        dir: &Path,
        servers: &str,
        source: &Path,
        name: &str,
        extra: &str,
        flags: &[&str],
    ) -> Node {
        Node::launch(dir, servers, source, name, extra, flags, false)
    }

    /// [`Node::start_through`] running `sequinsfs mount` (with its HTTP
    /// sidecar) instead of `serve`, mounted at `dir/mnt-<name>`.
    pub fn start_mounted_through(
        dir: &Path,
        servers: &str,
        source: &Path,
        name: &str,
        extra: &str,
        flags: &[&str],
    ) -> Node {
        Node::launch(dir, servers, source, name, extra, flags, true)
    }

    fn launch(
        dir: &Path,
        servers: &str,
        source: &Path,
        name: &str,
        extra: &str,
        flags: &[&str],
        mounted: bool,
    ) -> Node {
        let port = free_port();
        let store = dir.join(format!("store-{name}"));
        let config = dir.join(format!("node-{name}.conf"));
        std::fs::write(
            &config,
            format!(
                "[zk]\nservers = [\"{servers}\"]\ncluster_name = \"nodes-test\"\n\
                 time_to_converge = \"1s\"\n\
                 [sharding]\nreplication = 2\n\
                 proxy_timeout = \"2s\"\nproxy_stage_timeout = \"500ms\"\n{extra}"
            ),
        )
        .unwrap();
        let address = format!("127.0.0.1:{port}");
        let mut command = Command::new(env!("CARGO_BIN_EXE_sequinsfs"));
        let mountpoint = mounted.then(|| dir.join(format!("mnt-{name}")));
        match &mountpoint {
            Some(mountpoint) => {
                std::fs::create_dir_all(mountpoint).unwrap();
                command.args(["mount", "-f", "--http", &address]);
            }
            None => {
                command.args(["serve", "--bind", &address]);
            }
        }
        command
            .arg("--config")
            .arg(&config)
            .arg("--local-store")
            .arg(&store)
            .args(flags)
            .arg(source);
        if let Some(mountpoint) = &mountpoint {
            command.arg(mountpoint);
        }
        command.stderr(Stdio::piped());
        let name = format!("node {name}");
        let (child, log) = spawn(&mut command, &name);
        Node {
            child: Some(child),
            addr: address.parse().unwrap(),
            store,
            log,
            command,
            name,
            serving_line: if mounted {
                "mounted mountpoint="
            } else {
                "serving HTTP"
            },
            mountpoint,
        }
    }

    /// Waits until the node logs that it serves HTTP (once its first
    /// versions are served).
    pub fn wait_serving(&self) {
        self.wait_log(self.serving_line);
    }

    /// Waits for a log line containing `text`; returns it.
    /// Waits at most [`WAIT`] in all, however chatty the log.
    pub fn wait_log(&self, text: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(e) => panic!("{}: no log line with {text:?} in {WAIT:?}: {e}", self.name),
            }
        }
    }

    /// Sends SIGHUP: a refresh.
    pub fn refresh(&self) {
        let child = self.child.as_ref().expect("running");
        // SAFETY: kill sends a signal to the child this test started.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGHUP) }, 0);
    }

    /// Starts the node again (same address, store and configuration) after
    /// [`Node::stop`].
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop it first");
        let (child, log) = spawn(&mut self.command, &self.name);
        self.child = Some(child);
        self.log = log;
    }

    /// The partitions this node built of `db`/`version`, from its manifest.
    pub fn held(&self, db: &str, version: &str) -> Vec<u64> {
        self.try_held(db, version)
            .expect("a partial version lists its partitions")
    }

    /// [`Node::held`], or `None` while the version is not in the store
    /// (say, between the two steps of replacing it with a rebuild).
    pub fn try_held(&self, db: &str, version: &str) -> Option<Vec<u64>> {
        let manifest = self.try_manifest(db, version)?;
        let held = manifest["held_partitions"].as_array()?;
        Some(held.iter().map(|p| p.as_u64().unwrap()).collect())
    }

    /// The value of the metric `name` (no labels) on the node's `/metrics`.
    pub fn metric(&self, name: &str) -> f64 {
        let reply = Conn::connect(self.addr)
            .request("GET", "/metrics", &[])
            .unwrap();
        super::http::parse_prometheus(&reply.text())
            .unwrap()
            .into_iter()
            .find(|sample| sample.name == name && sample.labels.is_empty())
            .unwrap_or_else(|| panic!("{}: no metric {name}", self.name))
            .value
    }

    /// The shard ID this node chose for itself and kept in its store.
    pub fn self_assigned_id(&self) -> Option<String> {
        std::fs::read_to_string(self.store.join("self_assigned_id"))
            .ok()
            .map(|id| id.trim().to_string())
    }

    /// Whether `db`/`version` is in this node's local store.
    pub fn has_version(&self, db: &str, version: &str) -> bool {
        self.store.join("data").join(db).join(version).exists()
    }

    /// Bytes of the source this node read to build `db`/`version`.
    pub fn source_bytes(&self, db: &str, version: &str) -> u64 {
        self.manifest(db, version)["source_bytes"].as_u64().unwrap()
    }

    fn manifest(&self, db: &str, version: &str) -> serde_json::Value {
        self.try_manifest(db, version)
            .unwrap_or_else(|| panic!("{}: no manifest of {db}/{version}", self.name))
    }

    fn try_manifest(&self, db: &str, version: &str) -> Option<serde_json::Value> {
        let path = self
            .store
            .join("data")
            .join(db)
            .join(version)
            .join("manifest.json");
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    /// Whether the process is still running (it has not exited by itself).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| child.try_wait().unwrap().is_none())
    }

    /// Kills the node with SIGKILL (a crash: its ZooKeeper entries stay
    /// until its session times out).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        self.detach_stale_mount();
    }

    /// A killed mount leaves its mount point stale: detach it.
    fn detach_stale_mount(&self) {
        if let Some(mountpoint) = &self.mountpoint {
            let _ = Command::new("fusermount3")
                .arg("-uz")
                .arg(mountpoint)
                .stderr(Stdio::null())
                .status();
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill sends a signal to the child this test started.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let status = child.wait().unwrap();
            assert_eq!(status.code(), Some(0), "exit after SIGTERM");
        }
    }
}

/// Starts nodes with shard IDs `ids` together (so each assigns over all of
/// them) and waits until every one serves.
pub fn start_cluster(
    dir: &Path,
    zk: &ZkServer,
    source: &Path,
    ids: &[&str],
    extra: &str,
) -> Vec<Node> {
    let nodes: Vec<Node> = ids
        .iter()
        .map(|id| Node::start(dir, zk, source, id, extra))
        .collect();
    for node in &nodes {
        node.wait_serving();
    }
    nodes
}

/// What most cluster tests start from: ZooKeeper, a directory for the
/// nodes' files, and a source root holding version 1 of [`words`].
pub struct WordsCluster {
    pub zk: ZkServer,
    pub dir: tempfile::TempDir,
    pub source: PathBuf,
}

impl WordsCluster {
    /// `None`, after saying why, when this machine cannot mount or has no
    /// ZooKeeper (the tests then report a skip).
    pub fn new() -> Option<WordsCluster> {
        if !super::mount::can_mount() {
            return None;
        }
        let zk = ZkServer::started()?;
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source");
        write_words(&source, "1");
        Some(WordsCluster { zk, dir, source })
    }

    /// Mounted nodes with shard IDs `ids` ([`start_mounted_cluster`]).
    pub fn mounted(&self, ids: &[&str], extra: &str) -> Vec<Node> {
        start_mounted_cluster(self.dir.path(), &self.zk, &self.source, ids, extra)
    }
}

/// The `.status` document of a node's mount.
pub fn mount_status(node: &Node) -> serde_json::Value {
    let mountpoint = node.mountpoint.as_ref().expect("a mounted node");
    let text = std::fs::read_to_string(mountpoint.join(".status")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// [`start_cluster`] of nodes running mounts ([`Node::start_mounted`]).
pub fn start_mounted_cluster(
    dir: &Path,
    zk: &ZkServer,
    source: &Path,
    ids: &[&str],
    extra: &str,
) -> Vec<Node> {
    let nodes: Vec<Node> = ids
        .iter()
        .map(|id| {
            let extra = format!("shard_id = \"{id}\"\n{extra}");
            Node::start_mounted_through(dir, &zk.address(), source, id, &extra, &[])
        })
        .collect();
    for node in &nodes {
        node.wait_serving();
    }
    nodes
}

/// Stops every node with SIGTERM, checking each exits cleanly.
pub fn stop_all(nodes: &mut [Node]) {
    for node in nodes {
        node.stop();
    }
}

/// Version `version` of the database `words`: 300 keys whose values name
/// the version.
pub fn words(version: &str) -> BTreeMap<Vec<u8>, Vec<u8>> {
    (0..300)
        .map(|i| {
            (
                format!("key-{i:04}").into_bytes(),
                format!("{version}:value {i}").into_bytes(),
            )
        })
        .collect()
}

/// Writes [`words`]`(version)` under `root` as 6 SequenceFiles (so 6
/// partitions).
pub fn write_words(root: &Path, version: &str) {
    let mut files: Vec<Vec<(Vec<u8>, Vec<u8>)>> = vec![Vec::new(); 6];
    for (i, pair) in words(version).into_iter().enumerate() {
        files[i % 6].push(pair);
    }
    super::data::write_seqfile_version(root, "words", version, &files);
}

/// Waits until `node` logs that it switched `words` to `version`.
pub fn wait_switched(node: &Node, version: &str) {
    let wanted = format!("version=\"{version}\"");
    loop {
        let line = node.wait_log("switched to new version");
        if line.contains(&wanted) {
            return;
        }
    }
}

/// Lists `words` through `node`'s mount and reads every key: the listing
/// is every key in order, and every value is the expected one.
pub fn assert_mount_serves(node: &Node, expected: &BTreeMap<Vec<u8>, Vec<u8>>) {
    use std::os::unix::ffi::OsStrExt;
    let db = node
        .mountpoint
        .as_ref()
        .expect("a mounted node")
        .join("words");
    let listed: Vec<Vec<u8>> = std::fs::read_dir(&db)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().as_bytes().to_vec())
        .filter(|name| name != b".version")
        .collect();
    let keys: Vec<Vec<u8>> = expected.keys().cloned().collect();
    assert_eq!(listed, keys, "listing of {}", db.display());
    for (key, value) in expected {
        let path = db.join(std::ffi::OsStr::from_bytes(key));
        let read = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(&read, value, "{}", path.display());
    }
}

/// Reads every key of `words` from `node` once, over HTTP and through its
/// mount if it runs one; checks each value.
pub fn assert_serves(node: &Node, expected: &BTreeMap<Vec<u8>, Vec<u8>>) {
    if node.mountpoint.is_some() {
        assert_mount_serves(node, expected);
    }
    let mut conn = Conn::connect(node.addr);
    for (key, value) in expected {
        let key = String::from_utf8_lossy(key);
        let reply = conn.request("GET", &format!("/words/{key}"), &[]).unwrap();
        assert_eq!(reply.status, 200, "{key} from {}", node.name);
        assert_eq!(&reply.body, value, "{key} from {}", node.name);
    }
}

/// Publishes version `version` of [`words`] under `source`, refreshes every
/// node, and checks that each switches to it and answers every key.
pub fn upgrade_all(nodes: &[Node], source: &Path, version: &str) {
    write_words(source, version);
    switch_all(nodes, version);
}

/// Refreshes every node and checks that each switches `words` to
/// `version` and answers every key of it.
pub fn switch_all(nodes: &[Node], version: &str) {
    for node in nodes {
        node.refresh();
    }
    for node in nodes {
        wait_switched(node, version);
        assert_serves(node, &words(version));
    }
}

/// Waits until `node` logs an event `what` (say "lost peer") about the
/// node with shard ID `shard_id`.
pub fn wait_peer_event(node: &Node, what: &str, shard_id: &str) {
    let wanted = format!("shard_id={shard_id} ");
    loop {
        if node.wait_log(what).contains(&wanted) {
            return;
        }
    }
}

/// Threads reading every key of one database, in a loop, from each of a
/// set of nodes over HTTP or through their mounts, until [`Readers::finish`]; every failed read
/// (wrong status, wrong value, broken connection) is kept with its time.
pub struct Readers {
    stop: Arc<AtomicBool>,
    reads: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<(Instant, String)>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// Where a reader reads: a node's HTTP sidecar, or its mount.
#[derive(Debug, Clone)]
pub enum ReadTarget {
    Http(SocketAddr),
    /// A mount point: keys are read from `<mount>/<db>/<key>`, and each
    /// file's pages are dropped after the read (`POSIX_FADV_DONTNEED`), so
    /// every read reaches the daemon (and, for a peer's key, the peer).
    Mount(PathBuf),
}

impl ReadTarget {
    /// HTTP and, for nodes that run one, the mount of every node.
    pub fn all(nodes: &[Node]) -> Vec<ReadTarget> {
        let mut targets: Vec<ReadTarget> = nodes.iter().map(|n| ReadTarget::Http(n.addr)).collect();
        targets.extend(
            nodes
                .iter()
                .filter_map(|n| n.mountpoint.clone().map(ReadTarget::Mount)),
        );
        targets
    }
}

/// One read of `key` through a mount, pages dropped afterwards.
fn read_through_mount(mountpoint: &Path, db: &str, key: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let path = mountpoint.join(db).join(std::ffi::OsStr::from_bytes(key));
    let mut file = std::fs::File::open(path)?;
    let mut value = Vec::new();
    file.read_to_end(&mut value)?;
    // SAFETY: fadvise on a descriptor this function owns; it only drops
    // cached pages.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    Ok(value)
}

impl Readers {
    pub fn start(addrs: &[SocketAddr], db: &str, expected: &BTreeMap<Vec<u8>, Vec<u8>>) -> Readers {
        let targets: Vec<ReadTarget> = addrs.iter().map(|&a| ReadTarget::Http(a)).collect();
        Readers::start_on(&targets, db, expected)
    }

    /// Readers on each of `targets`, one thread each.
    pub fn start_on(
        targets: &[ReadTarget],
        db: &str,
        expected: &BTreeMap<Vec<u8>, Vec<u8>>,
    ) -> Readers {
        let readers = Readers {
            stop: Arc::default(),
            reads: Arc::default(),
            failures: Arc::default(),
            threads: Vec::new(),
        };
        let threads = targets
            .iter()
            .map(|target| {
                let (stop, reads) = (Arc::clone(&readers.stop), Arc::clone(&readers.reads));
                let failures = Arc::clone(&readers.failures);
                let (db, expected, target) = (db.to_string(), expected.clone(), target.clone());
                std::thread::spawn(move || {
                    let mut conn = match &target {
                        ReadTarget::Http(addr) => Some(Conn::connect(*addr)),
                        ReadTarget::Mount(_) => None,
                    };
                    while !stop.load(Ordering::Relaxed) {
                        for (key, value) in &expected {
                            let failure = match &target {
                                ReadTarget::Http(addr) => {
                                    let text = String::from_utf8_lossy(key);
                                    let c = conn.as_mut().expect("a connection");
                                    match c.request("GET", &format!("/{db}/{text}"), &[]) {
                                        Ok(reply)
                                            if reply.status == 200 && &reply.body == value =>
                                        {
                                            None
                                        }
                                        Ok(reply) => {
                                            Some(format!("{addr} {text}: {}", reply.status))
                                        }
                                        Err(e) => {
                                            conn = Some(Conn::connect(*addr));
                                            Some(format!("{addr} {text}: {e}"))
                                        }
                                    }
                                }
                                ReadTarget::Mount(mountpoint) => {
                                    match read_through_mount(mountpoint, &db, key) {
                                        Ok(read) if &read == value => None,
                                        Ok(_) => Some(format!(
                                            "{}: {}: wrong value",
                                            mountpoint.display(),
                                            String::from_utf8_lossy(key)
                                        )),
                                        Err(e) => Some(format!(
                                            "{}: {}: {e}",
                                            mountpoint.display(),
                                            String::from_utf8_lossy(key)
                                        )),
                                    }
                                }
                            };
                            if let Some(failure) = failure {
                                failures.lock().unwrap().push((Instant::now(), failure));
                            }
                            reads.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        Readers { threads, ..readers }
    }

    /// Reads so far, failed or not.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Failed reads so far at or after `since`.
    pub fn failures_since(&self, since: Instant) -> Vec<String> {
        let failures = self.failures.lock().unwrap();
        failures
            .iter()
            .filter(|(at, _)| *at >= since)
            .map(|(_, what)| what.clone())
            .collect()
    }

    /// Stops the readers; returns the number of reads and the failures.
    pub fn finish(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            thread.join().unwrap();
        }
        let failures = std::mem::take(&mut *self.failures.lock().unwrap());
        (
            self.reads(),
            failures.into_iter().map(|(_, what)| what).collect(),
        )
    }
}

/// Starts `command`, echoing its log with `name` and feeding it to the
/// returned channel.
fn spawn(command: &mut Command, name: &str) -> (Child, mpsc::Receiver<String>) {
    let mut child = command.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let name = name.to_string();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            eprintln!("{name}: {line}");
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            self.detach_stale_mount();
        }
    }
}
