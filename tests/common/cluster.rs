//! Nodes of a test cluster: `sequinsfs serve` processes on loopback
//! addresses with their own local stores, coordinated by a private
//! ZooKeeper ([`super::zk::ZkServer`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::http::free_port;
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
        let port = free_port();
        let store = dir.join(format!("store-{name}"));
        let config = dir.join(format!("node-{name}.conf"));
        std::fs::write(
            &config,
            format!(
                "[zk]\nservers = [\"{}\"]\ncluster_name = \"nodes-test\"\n\
                 time_to_converge = \"1s\"\n\
                 [sharding]\nreplication = 2\n\
                 proxy_timeout = \"2s\"\nproxy_stage_timeout = \"500ms\"\n{extra}",
                zk.address()
            ),
        )
        .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_sequinsfs"));
        command
            .args(["serve", "--config"])
            .arg(&config)
            .arg("--bind")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--local-store")
            .arg(&store)
            .arg(source)
            .stderr(Stdio::piped());
        let name = format!("node {name}");
        let (child, log) = spawn(&mut command, &name);
        Node {
            child: Some(child),
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            store,
            log,
            command,
            name,
        }
    }

    /// Waits until the node logs that it serves HTTP (once its first
    /// versions are served).
    pub fn wait_serving(&self) {
        self.wait_log("serving HTTP");
    }

    /// Waits for a log line containing `text`; returns it.
    pub fn wait_log(&self, text: &str) -> String {
        loop {
            match self.log.recv_timeout(WAIT) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(e) => panic!("{}: no log line with {text:?}: {e}", self.name),
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
        self.manifest(db, version)["held_partitions"]
            .as_array()
            .expect("a partial version lists its partitions")
            .iter()
            .map(|p| p.as_u64().unwrap())
            .collect()
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
        let path = self
            .store
            .join("data")
            .join(db)
            .join(version)
            .join("manifest.json");
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
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

/// Stops every node with SIGTERM, checking each exits cleanly.
pub fn stop_all(nodes: &mut [Node]) {
    for node in nodes {
        node.stop();
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
        }
    }
}
