//! A private ZooKeeper server for tests: Debian's standalone server
//! (`/usr/share/java/zookeeper.jar`) on a free 127.0.0.1 port with its own
//! data directory, stoppable and restartable on the same port and data (for
//! outage tests), killed by PID when dropped.
//!
//! When java or the jar is missing the test is skipped with a message,
//! except under `CI`, where that is a failure (`scripts/test` installs
//! them).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const JARS: &str = "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-nop.jar";
const ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";

/// The server's tick. The shortest session the server grants is 2 ticks,
/// so 200 ms allows sessions from 0.4 s: dead nodes vanish quickly.
pub const TICK: Duration = Duration::from_millis(200);
/// The longest session granted (the default, 20 ticks, would be 4 s): tests
/// of outages that the session must survive need room for a JVM restart.
pub const MAX_SESSION: Duration = Duration::from_secs(30);

pub struct ZkServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl ZkServer {
    /// A running server, or `None` (after saying so) when ZooKeeper is not
    /// installed and `CI` is not set.
    pub fn started() -> Option<ZkServer> {
        let mut server = ZkServer::stopped()?;
        server.start();
        Some(server)
    }

    /// A configured server on a free port that is not running yet (to test
    /// clients that start while ZooKeeper is down); see [`ZkServer::start`].
    pub fn stopped() -> Option<ZkServer> {
        ZkServer::configured("127.0.0.1")
    }

    /// A running server listening on every address of the loopback
    /// interface (`0.0.0.0`): only for a test inside a network namespace
    /// of its own ([`super::netns`]), where that is loopback only.
    pub fn started_on_every_loopback_address() -> Option<ZkServer> {
        let mut server = ZkServer::configured("0.0.0.0")?;
        server.start();
        Some(server)
    }

    fn configured(client_address: &str) -> Option<ZkServer> {
        if !installed() {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "ZooKeeper not installed ({ZOOKEEPER_JAR}, java); CI must run the cluster tests"
                );
            }
            eprintln!(
                "skipped: ZooKeeper not installed ({ZOOKEEPER_JAR} and java; apt-get install zookeeper) ({})",
                std::thread::current().name().unwrap_or("test")
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        let port = free_port();
        let config = format!(
            "tickTime={}\nmaxSessionTimeout={}\ndataDir={}\nclientPort={port}\n\
             clientPortAddress={client_address}\nmaxClientCnxns=0\nadmin.enableServer=false\n\
             4lw.commands.whitelist=ruok,srvr,stat,mntr\n",
            TICK.as_millis(),
            MAX_SESSION.as_millis(),
            dir.path().join("data").display(),
        );
        std::fs::write(dir.path().join("zoo.cfg"), config).unwrap();
        Some(ZkServer {
            child: None,
            port,
            dir,
        })
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`, for `[zk] servers`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the server (again: same port, same data) and waits until it
    /// serves sessions.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "ZooKeeper is already running");
        let log = std::fs::File::create(self.log_path()).unwrap();
        let child = Command::new("java")
            // A small heap and a quick JIT: a test server starts faster.
            .args(["-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"])
            .args([
                "-cp",
                JARS,
                "org.apache.zookeeper.server.ZooKeeperServerMain",
            ])
            .arg(self.dir.path().join("zoo.cfg"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("starting java");
        self.child = Some(child);
        // No event tells that the server is ready: poll its health probe.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!(
                    "ZooKeeper exited with {status}: {}",
                    std::fs::read_to_string(self.log_path()).unwrap_or_default()
                );
            }
            // `ruok` says the process runs; `srvr` names its mode only
            // once it serves sessions (before, it says it is "not
            // currently serving requests").
            if self
                .four_letter_word("ruok")
                .is_ok_and(|answer| answer == "imok")
                && self
                    .four_letter_word("srvr")
                    .is_ok_and(|answer| answer.contains("Mode: standalone"))
            {
                return;
            }
            assert!(Instant::now() < deadline, "ZooKeeper not ready after 60 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the server (like a crash; the data directory stays) and waits
    /// for it to be gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Sends a four-letter command and returns the answer.
    pub fn four_letter_word(&self, word: &str) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(word.as_bytes())?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    }

    /// Waits until the server holds no ephemeral node: every session with
    /// one has expired or closed. The server sends no event for that, so
    /// this polls its `mntr` report (bounded).
    pub fn wait_no_ephemerals(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let report = self.four_letter_word("mntr").unwrap();
            let count = report
                .lines()
                .find_map(|line| line.strip_prefix("zk_ephemerals_count"))
                .map(|n| n.trim().parse::<u64>().unwrap());
            if count == Some(0) {
                return;
            }
            assert!(Instant::now() < deadline, "ephemerals left: {report}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("zookeeper.log")
    }
}

impl Drop for ZkServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn installed() -> bool {
    Path::new(ZOOKEEPER_JAR).is_file()
        && Command::new("java")
            .arg("-version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}
