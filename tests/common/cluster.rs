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
    serving: mpsc::Receiver<()>,
}

impl Node {
    pub fn start(dir: &Path, zk: &ZkServer, source: &Path, shard_id: &str, extra: &str) -> Node {
        let port = free_port();
        let store = dir.join(format!("store-{shard_id}"));
        let config = dir.join(format!("node-{shard_id}.conf"));
        std::fs::write(
            &config,
            format!(
                "[zk]\nservers = [\"{}\"]\ncluster_name = \"nodes-test\"\n\
                 time_to_converge = \"1s\"\n\
                 [sharding]\nshard_id = \"{shard_id}\"\nreplication = 2\n\
                 proxy_timeout = \"2s\"\nproxy_stage_timeout = \"500ms\"\n{extra}",
                zk.address()
            ),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_sequinsfs"))
            .args(["serve", "--config"])
            .arg(&config)
            .arg("--bind")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--local-store")
            .arg(&store)
            .arg(source)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, serving) = mpsc::channel();
        let name = format!("node {shard_id}");
        std::thread::spawn(move || {
            for line in
                std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok)
            {
                eprintln!("{name}: {line}");
                if line.contains("serving HTTP") {
                    let _ = tx.send(());
                }
            }
        });
        Node {
            child: Some(child),
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            store,
            serving,
        }
    }

    pub fn wait_serving(&self) {
        self.serving
            .recv_timeout(WAIT)
            .expect("the node never started serving");
    }

    /// The partitions this node built of `db`/`version`, from its manifest.
    pub fn held(&self, db: &str, version: &str) -> Vec<u64> {
        let manifest = self
            .store
            .join("data")
            .join(db)
            .join(version)
            .join("manifest.json");
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
        json["held_partitions"]
            .as_array()
            .expect("a partial version lists its partitions")
            .iter()
            .map(|p| p.as_u64().unwrap())
            .collect()
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

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
