//! A real S3 server for tests: `moto_server` (from PyPI, `moto[server]`) on
//! a free loopback port, stopped when the handle is dropped.
//!
//! Found through `SEQUINSFS_MOTO_SERVER` (a path) or `PATH`. When it is
//! missing the test is skipped with a message, except under `CI`, where a
//! missing server is a failure so CI cannot pass without the S3 tests.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;

/// Credentials moto accepts (it accepts any).
pub const ACCESS_KEY: &str = "test";
pub const SECRET_KEY: &str = "test";
pub const REGION: &str = "us-east-1";

pub struct MotoServer {
    child: Child,
    pub endpoint: String,
    addr: String,
}

impl MotoServer {
    /// Starts a server, or returns `None` (after saying so) when moto is
    /// not installed and `CI` is not set.
    pub fn start() -> Option<MotoServer> {
        let Some(binary) = find_moto() else {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "moto_server not found (set SEQUINSFS_MOTO_SERVER or put it on PATH); \
                     CI must run the S3 tests"
                );
            }
            eprintln!("skipped: moto_server not found");
            return None;
        };
        // The free port can be taken by someone else between our probe and
        // moto's bind; try a few times.
        let mut last_error = String::new();
        for _ in 0..3 {
            match MotoServer::start_on_free_port(&binary) {
                Ok(server) => return Some(server),
                Err(error) => last_error = error,
            }
        }
        panic!("moto_server did not start: {last_error}");
    }

    fn start_on_free_port(binary: &Path) -> Result<MotoServer, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let child = Command::new(binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{}: {e}", binary.display()))?;
        let addr = format!("127.0.0.1:{port}");
        let mut server = MotoServer {
            child,
            endpoint: format!("http://{addr}"),
            addr,
        };
        // Readiness: poll until an HTTP request gets an answer (moto takes
        // a couple of seconds to import), or the process exits.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("exited with {status}"));
            }
            if server.http("GET", "/", b"").is_ok() {
                return Ok(server);
            }
            if Instant::now() > deadline {
                return Err("not ready after 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A minimal unsigned HTTP/1.1 request (moto does not check
    /// signatures); returns the status code.
    pub fn http(&self, method: &str, path: &str, body: &[u8]) -> std::io::Result<u16> {
        let mut stream = TcpStream::connect(&self.addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.addr,
            body.len()
        )?;
        stream.write_all(body)?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        let text = String::from_utf8_lossy(&response);
        text.split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad response: {text:.200}")))
    }

    /// Creates a bucket.
    pub fn create_bucket(&self, bucket: &str) {
        let status = self.http("PUT", &format!("/{bucket}"), b"").unwrap();
        assert_eq!(status, 200, "creating bucket {bucket}");
    }

    /// An object_store client for `bucket`, for uploading test data.
    pub fn store(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        Arc::new(
            AmazonS3Builder::new()
                .with_endpoint(&self.endpoint)
                .with_allow_http(true)
                .with_bucket_name(bucket)
                .with_access_key_id(ACCESS_KEY)
                .with_secret_access_key(SECRET_KEY)
                .with_region(REGION)
                .build()
                .unwrap(),
        )
    }

    /// The `[s3]` config that points a source at this server.
    pub fn s3_config(&self) -> sequinsfs::config::S3Config {
        sequinsfs::config::S3Config {
            region: REGION.into(),
            access_key_id: ACCESS_KEY.into(),
            secret_access_key: SECRET_KEY.into(),
            endpoint: self.endpoint.clone(),
            max_retries: 2,
        }
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Uploads every file under `dir` to `store` under `prefix`.
pub async fn upload_dir(store: &dyn ObjectStore, dir: &Path, prefix: &str) {
    use object_store::ObjectStoreExt;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let relative = path.strip_prefix(dir).unwrap().to_str().unwrap();
            let key = if prefix.is_empty() {
                relative.to_string()
            } else {
                format!("{prefix}/{relative}")
            };
            let data = std::fs::read(&path).unwrap();
            store
                .put(&object_store::path::Path::parse(&key).unwrap(), data.into())
                .await
                .unwrap();
        }
    }
}

fn find_moto() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SEQUINSFS_MOTO_SERVER") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "SEQUINSFS_MOTO_SERVER={} does not exist",
            path.display()
        );
        return Some(path);
    }
    let search = std::env::var_os("PATH")?;
    std::env::split_paths(&search)
        .map(|dir| dir.join("moto_server"))
        .find(|candidate| candidate.is_file())
}
