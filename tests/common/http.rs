//! HTTP test helpers: a real sidecar running on its own runtime, a raw
//! HTTP/1.1 client (raw so tests can also send malformed input), catalogs
//! shaped like sequins' test databases, and a Prometheus text parser.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sequinsfs::catalog::{Catalog, InMemoryVersionData, Version};
use sequinsfs::http::HttpOptions;
use sequinsfs::metrics::Metrics;

/// A port on 127.0.0.1 that was free a moment ago, for a server started
/// as a separate process.
///
/// Taken below the kernel's ephemeral range (32768 and up by default):
/// a port from there could be handed to another socket of the tests
/// (`bind(0)`, or any outgoing connection) before the server binds it.
/// Each test process walks its own sequence, so tests running in parallel
/// threads never pick the same port.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7919) % COUNT;
    for _ in 0..COUNT {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + (start + offset) % COUNT) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 in {FIRST}..{}", FIRST + COUNT);
}

/// A sidecar serving `catalog` on 127.0.0.1 on a port of its own, on a
/// runtime of its own (so tests can drive it from plain threads). Shut down
/// and joined on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    pub catalog: Arc<Catalog>,
    pub metrics: Arc<Metrics>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl TestServer {
    pub fn start(catalog: Arc<Catalog>) -> TestServer {
        TestServer::with_options(catalog, HttpOptions::default())
    }

    pub fn with_options(catalog: Arc<Catalog>, options: HttpOptions) -> TestServer {
        TestServer::with_metrics(catalog, options, Metrics::new())
    }

    /// A server exporting `metrics` (for example an engine's).
    pub fn with_metrics(
        catalog: Arc<Catalog>,
        options: HttpOptions,
        metrics: Arc<Metrics>,
    ) -> TestServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (cat, met) = (Arc::clone(&catalog), Arc::clone(&metrics));
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                sequinsfs::http::serve(listener, cat, options, met, async {
                    let _ = rx.await;
                })
                .await
            })
        });
        TestServer {
            addr,
            catalog,
            metrics,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn connect(&self) -> Conn {
        Conn::connect(self.addr)
    }

    /// One request on a fresh connection.
    pub fn get(&self, target: &str) -> Reply {
        self.request("GET", target, &[])
    }

    pub fn request(&self, method: &str, target: &str, headers: &[(&str, &str)]) -> Reply {
        self.connect()
            .request(method, target, headers)
            .unwrap_or_else(|e| panic!("{method} {target}: {e}"))
    }

    /// Stops the server and returns what `serve` returned.
    pub fn stop(mut self) -> io::Result<()> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.thread.take() {
            Some(t) => t.join().expect("server thread panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}

/// One parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// A keep-alive HTTP/1.1 connection. Reads time out after 10 s so a
/// broken server fails a test instead of hanging it.
pub struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Conn {
            reader: BufReader::new(stream),
        }
    }

    pub fn stream(&mut self) -> &mut TcpStream {
        self.reader.get_mut()
    }

    pub fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
    ) -> io::Result<Reply> {
        let mut req = format!("{method} {target} HTTP/1.1\r\nHost: test\r\n");
        for (name, value) in headers {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        req.push_str("\r\n");
        self.send_raw(req.as_bytes())?;
        self.read_reply(method == "HEAD")
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.reader.get_mut().write_all(bytes)
    }

    /// Reads one response; `head` says the request was HEAD (no body).
    pub fn read_reply(&mut self, head: bool) -> io::Result<Reply> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other(format!("bad status line {line:?}")))?;
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| io::Error::other(format!("bad header {line:?}")))?;
            headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
        }
        let mut reply = Reply {
            status,
            headers,
            body: Vec::new(),
        };
        if !head && status != 304 && status != 204 {
            match reply.header("content-length") {
                Some(len) => {
                    let len: usize = len.parse().map_err(io::Error::other)?;
                    reply.body.resize(len, 0);
                    self.reader.read_exact(&mut reply.body)?;
                }
                None => {
                    self.reader.read_to_end(&mut reply.body)?;
                }
            }
        }
        Ok(reply)
    }

    /// True when the server has closed the connection (reads EOF or reset).
    pub fn is_closed_by_server(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.reader.read(&mut byte), Ok(0) | Err(_))
    }
}

/// A fixed creation time, so Last-Modified is predictable.
pub const CREATED_SECS: u64 = 1_500_000_000;

pub fn created_at() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(CREATED_SECS)
}

/// Publishes `pairs` as version `version` of `db`.
pub fn publish(catalog: &Catalog, db: &str, version: &str, pairs: &[(&[u8], &[u8])]) {
    let data = InMemoryVersionData::new(pairs.iter().map(|(k, v)| (k.to_vec(), v.to_vec())));
    let path = format!("/src/{db}/{version}");
    catalog.publish(
        Version::new(db, version, created_at(), path.clone(), 5, Box::new(data)),
        path,
        Duration::from_secs(60),
    );
}

/// Records a failed build of `db`/`version`.
pub fn set_error(catalog: &Catalog, db: &str, version: &str, error: &str) {
    catalog.load_failed(
        db,
        version,
        format!("/src/{db}/{version}"),
        std::sync::Arc::new(std::io::Error::other(error.to_string())),
    );
}

/// Some of the `baby-names` keys of sequins' `healthy` test database.
pub const BABY_NAMES: &[(&[u8], &[u8])] = &[
    (b"1881/boy", b"John"),
    (b"1881/girl", b"Mary"),
    (b"1882/boy", b"John"),
    (b"1898/girl", b"Mary"),
    (b"1951/girl", b"Linda"),
    (b"1992/girl", b"Ashley"),
    (b"2006/boy", b"Jacob"),
];

/// Like sequins' `healthy` root: `baby-names` version `1`.
pub fn healthy_catalog() -> Arc<Catalog> {
    let catalog = Catalog::new();
    publish(&catalog, "baby-names", "1", BABY_NAMES);
    catalog
}

/// Like `partially_healthy`: `healthy` plus `baby-names-bad` whose only
/// version failed to load.
pub fn partially_healthy_catalog() -> Arc<Catalog> {
    let catalog = healthy_catalog();
    set_error(
        &catalog,
        "baby-names-bad",
        "1",
        "part-00000 at byte 0: not a SequenceFile",
    );
    catalog
}

/// Like `unhealthy`: only the failed `baby-names-bad`.
pub fn unhealthy_catalog() -> Arc<Catalog> {
    let catalog = Catalog::new();
    set_error(
        &catalog,
        "baby-names-bad",
        "1",
        "part-00000 at byte 0: not a SequenceFile",
    );
    catalog
}

/// One sample of a Prometheus exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the Prometheus text format strictly enough to catch malformed
/// output: every sample line is `name{labels} value`, label values are
/// quoted with `\\`, `\"`, `\n` escapes, every sample's family has a
/// `# TYPE` line before it, and no family is declared twice.
pub fn parse_prometheus(text: &str) -> Result<Vec<Sample>, String> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let err = |m: &str| format!("line {}: {m}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or_else(|| err("bad TYPE"))?;
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(err("unknown type"));
            }
            if types.insert(name.to_string(), kind.to_string()).is_some() {
                return Err(err("family declared twice"));
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| err("no value"))?;
        let name = &line[..name_end];
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        {
            return Err(err("bad metric name"));
        }
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(after) = rest.strip_prefix('{') {
            let mut chars = after.char_indices().peekable();
            let end;
            loop {
                // label name
                let start = match chars.peek() {
                    Some(&(i, '}')) => {
                        end = Some(i + 1);
                        break;
                    }
                    Some(&(i, _)) => i,
                    None => return Err(err("unterminated labels")),
                };
                let eq = after[start..]
                    .find('=')
                    .ok_or_else(|| err("label without ="))?
                    + start;
                let lname = &after[start..eq];
                while chars.peek().is_some_and(|&(i, _)| i <= eq) {
                    chars.next();
                }
                if chars.next().map(|(_, c)| c) != Some('"') {
                    return Err(err("unquoted label value"));
                }
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, '\\')) => value.push('\\'),
                            Some((_, '"')) => value.push('"'),
                            _ => return Err(err("bad escape")),
                        },
                        Some((_, '"')) => break,
                        Some((_, c)) => value.push(c),
                        None => return Err(err("unterminated label value")),
                    }
                }
                labels.insert(lname.to_string(), value);
                if chars.peek().is_some_and(|&(_, c)| c == ',') {
                    chars.next();
                }
            }
            rest = &after[end.ok_or_else(|| err("unterminated labels"))?..];
        }
        let value_text = rest
            .strip_prefix(' ')
            .ok_or_else(|| err("no space before value"))?;
        let value: f64 = match value_text {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().map_err(|_| err("bad value"))?,
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(name);
        if !types.contains_key(family) {
            return Err(err("sample without # TYPE"));
        }
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Ok(samples)
}

/// `GET /metrics` on `conn`, parsed strictly ([`parse_prometheus`]).
pub fn scrape(conn: &mut Conn) -> Vec<Sample> {
    let text = conn.request("GET", "/metrics", &[]).unwrap().text();
    parse_prometheus(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// The value of the sample `name` whose labels include all of `labels`.
pub fn sample(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}
