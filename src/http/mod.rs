//! The HTTP sidecar: sequins' API over the catalog, plus what sequins lacks
//! (HEAD, Range, ETag and conditional requests, a configurable Content-Type,
//! Prometheus metrics, bounded header sizes and timeouts).
//!
//! This module owns the server (accepting connections, HTTP/1.1 framing via
//! hyper, graceful shutdown) and request dispatch; the answers themselves
//! live in [`keys`] (values), [`status`] (status document, `/healthz`),
//! [`accept`] (JSON or HTML), [`path`] (decoding the request path) and
//! [`log`] (the request log); `idle` holds each connection's deadline.
//!
//! Dispatch is by hand rather than through a router: the routes are
//! sequins' fixed handler order, and every request to a value pays only for
//! one percent-decoding pass, one atomic pointer load and one lookup. The
//! handler never awaits: lookups are memory probes, so a response is ready
//! the moment the request head is parsed.
//!
//! Where the time goes: a request on a kept-alive connection costs the
//! server one `recv` and one `writev`, plus an `epoll_wait` shared by all
//! connections ready at the same moment; nothing else enters the kernel.
//! Those two calls and the TCP work behind them are most of the server's
//! CPU time; HTTP parsing, dispatch and the response headers are the rest
//! (`cargo bench --bench http` compares with a server that does no HTTP at
//! all on the same runtime). Hence:
//! - no timer per request: hyper's header timeout would insert and remove
//!   one for every request; each connection has one deadline instead, which
//!   a request moves by storing its arrival time (see `idle`);
//! - the daemon runs the sidecar on a runtime of its own
//!   ([`spawn_dedicated`]), one thread by default, so engine work never
//!   delays a request and clients on the same machine keep a core;
//! - connections are tasks on that multi-thread runtime, not one
//!   current-thread runtime per core with `SO_REUSEPORT` listeners: a C
//!   epoll server built that way did no better than the runtime here, which
//!   already runs a connection on the thread that polled its socket (futex
//!   wake-ups between threads are about 4% of requests);
//! - the metrics stay shared relaxed atomics: the gap to the no-HTTP server
//!   is no larger with two server threads than with one, so contention on
//!   them does not show.
//!
//! The sidecar reads the catalog only; it answers the same whether or not a
//! mount is running.

pub mod accept;
pub mod body;
mod cluster;
mod idle;
pub mod keys;
pub mod log;
pub mod path;
pub mod status;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::catalog::Catalog;
use crate::metrics::Metrics;

pub use body::Body;

/// `Content-Type` of values when none is configured: values are opaque
/// bytes. (sequins sets none and lets Go sniff one from the first bytes.)
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// How the sidecar behaves; [`HttpOptions::default`] gives the daemon's
/// defaults.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// `Content-Type` of values; empty means [`DEFAULT_CONTENT_TYPE`].
    pub content_type: String,
    /// Per-database `Content-Type`, overriding `content_type`.
    pub content_types: BTreeMap<String, String>,
    /// A client must send a complete request head within this time, counted
    /// from the connection's start or the arrival of its previous request;
    /// the connection is closed otherwise. This bounds slowloris-style
    /// clients and clients that stop reading their responses, and is also
    /// how long an idle keep-alive connection is kept.
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers) accepted; larger
    /// ones get 431. hyper's minimum is 8 KiB; the default leaves room for
    /// long binary keys spelled with `%XX` escapes.
    pub max_header_bytes: usize,
    /// Where to write the request log; `None` is off (sequins' default).
    pub request_log: Option<log::RequestLogTarget>,
    /// On shutdown, how long connections get to finish the request in
    /// flight before they are dropped. sequins waits one second.
    pub shutdown_grace: Duration,
    /// Worker threads of the sidecar's own runtime (see [`spawn_dedicated`]).
    pub threads: usize,
    /// Told of every request, for `--idle-poll` (see [`crate::wakeup`]).
    pub activity: Option<crate::wakeup::Activity>,
    /// This node's cluster, in cluster mode (see [`cluster`]).
    pub cluster: Option<Arc<crate::cluster::ClusterNode>>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            content_type: String::new(),
            content_types: BTreeMap::new(),
            // hyper's default; long enough for any real client on a slow
            // link, short enough that idle or stalled connections don't pile up.
            header_read_timeout: Duration::from_secs(30),
            max_header_bytes: 32 * 1024,
            request_log: None,
            shutdown_grace: Duration::from_secs(1),
            // One thread answers about 120,000 requests per second on a
            // 2-core VM with p99 under 0.2 ms while the clients share its
            // cores; two threads there gave about the same throughput with
            // p99 near 3 ms (a worker descheduled while holding runnable
            // connections). Raise it when clients are remote and one core
            // is not enough.
            threads: 1,
            activity: None,
            cluster: None,
        }
    }
}

/// Runs [`serve`] on a thread of its own, on a runtime with
/// `options.threads` workers, and returns a handle to join it. A runtime of
/// its own keeps request latency independent of engine work (refreshes,
/// loads) and bounds the cores the sidecar uses. `listener` is a bound
/// listener of any runtime (or none); `shutdown` may complete on another
/// runtime.
pub fn spawn_dedicated(
    listener: std::net::TcpListener,
    catalog: Arc<Catalog>,
    options: HttpOptions,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<std::thread::JoinHandle<io::Result<()>>> {
    // Bad options fail here, before any thread starts.
    let sidecar = Arc::new(Sidecar::new(catalog, &options, metrics)?);
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.threads.max(1))
        .thread_name("sequinsfs-http")
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("sequinsfs-http".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener)?;
                run(listener, sidecar, &options, shutdown).await
            })
        })
}

/// Serves HTTP on `listener` until `shutdown` completes, then stops/// Serves HTTP on `listener` until `shutdown` completes, then stops
/// accepting, lets connections finish their request in flight (up to
/// `options.shutdown_grace`) and returns.
///
/// Fails at once on options that cannot work (an invalid Content-Type, an
/// unwritable request log file); never fails because of a client.
pub async fn serve(
    listener: TcpListener,
    catalog: Arc<Catalog>,
    options: HttpOptions,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let sidecar = Arc::new(Sidecar::new(catalog, &options, metrics)?);
    run(listener, sidecar, &options, shutdown).await
}

/// The accept loop of [`serve`], for a sidecar already set up.
async fn run(
    listener: TcpListener,
    sidecar: Arc<Sidecar>,
    options: &HttpOptions,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(true)
        // A client may shut down its sending side right after its request
        // (`nc -N`, some scripts); it still gets its answer.
        .half_close(true)
        // hyper's own header timeout arms a timer per request; the
        // connection's deadline (see `idle`) does the same job with one
        // timer per connection. Without a timer hyper arms none.
        .header_read_timeout(None)
        // Answers to pipelined requests (a peer's proxy sends them so, see
        // `cluster::pipeline`) leave in one write rather than one each.
        .pipeline_flush(true)
        // Below hyper's minimum the builder panics; never pass it.
        .max_buf_size(options.max_header_bytes.max(8192));
    let request_timeout = options.header_read_timeout;

    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Typically EMFILE: too many open connections. Back off
                    // briefly instead of spinning; existing connections keep
                    // being served.
                    tracing::warn!("http: accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Responses are small and written in one go: don't let Nagle hold
        // them back waiting for an ACK.
        let _ = stream.set_nodelay(true);
        let sidecar = Arc::clone(&sidecar);
        let activity = idle::Activity::new(tokio::time::Instant::now());
        let arrivals = activity.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let now = tokio::time::Instant::now();
            arrivals.request_arrived(now);
            let handled = sidecar.handle(&req, now.into_std());
            async move {
                Ok::<_, Infallible>(match handled {
                    Handled::Now(response) => response,
                    Handled::Later(answer) => answer.await,
                })
            }
        });
        let conn = http.serve_connection(TokioIo::new(activity.track(stream)), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            tokio::select! {
                // The connection first: it is what wakes this task.
                biased;
                // Errors here are clients going away or sending garbage;
                // hyper has already answered what deserved an answer (400,
                // 431).
                ended = conn => if let Err(err) = ended {
                    tracing::debug!("http: connection ended: {err}");
                },
                // Dropping the connection closes it.
                () = activity.expired(request_timeout) => {
                    tracing::debug!("http: closing a connection with no request for {request_timeout:?}");
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(options.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::info!("http: shutdown grace period over; dropping open connections");
    }
    Ok(())
}

/// Everything a request needs, shared by all connections.
pub(crate) struct Sidecar {
    catalog: Arc<Catalog>,
    metrics: Arc<Metrics>,
    content_type: HeaderValue,
    content_types: BTreeMap<String, HeaderValue>,
    request_log: Option<log::RequestLog>,
    activity: Option<crate::wakeup::Activity>,
    /// This node's cluster, in cluster mode: keys of partitions it does not
    /// hold are asked of peers.
    cluster: Option<Arc<crate::cluster::ClusterNode>>,
}

/// A request's answer: ready now, or once a peer has answered.
enum Handled {
    Now(Response<Body>),
    Later(std::pin::Pin<Box<dyn Future<Output = Response<Body>> + Send>>),
}

impl Sidecar {
    fn new(
        catalog: Arc<Catalog>,
        options: &HttpOptions,
        metrics: Arc<Metrics>,
    ) -> io::Result<Self> {
        let parse = |value: &str| {
            HeaderValue::from_str(value).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("invalid content type {value:?}"),
                )
            })
        };
        let content_type = if options.content_type.is_empty() {
            HeaderValue::from_static(DEFAULT_CONTENT_TYPE)
        } else {
            parse(&options.content_type)?
        };
        let content_types = options
            .content_types
            .iter()
            .map(|(db, ct)| Ok((db.clone(), parse(ct)?)))
            .collect::<io::Result<_>>()?;
        let request_log = match &options.request_log {
            Some(target) => Some(log::RequestLog::open(target)?),
            None => None,
        };
        Ok(Sidecar {
            catalog,
            metrics,
            content_type,
            content_types,
            request_log,
            activity: options.activity.clone(),
            cluster: options.cluster.clone(),
        })
    }

    /// Answers one request that arrived at `started`, records it in the
    /// metrics and the request log. Answered at once, unless a peer must be
    /// asked (cluster mode).
    fn handle(self: &Arc<Self>, req: &Request<Incoming>, started: Instant) -> Handled {
        if let Some(activity) = &self.activity {
            activity.touch();
        }
        let head = req.method() == Method::HEAD;
        let (answer, logged_path) = self.route(req);
        match answer {
            keys::Answer::Now(response) => {
                Handled::Now(self.finish(response, head, started, logged_path))
            }
            keys::Answer::Remote { version, key } => {
                let Some(node) = self.cluster.clone() else {
                    // Partial versions exist only in cluster mode.
                    let response = empty(StatusCode::INTERNAL_SERVER_ERROR);
                    return Handled::Now(self.finish(response, head, started, logged_path));
                };
                let this = Arc::clone(self);
                let path = req.uri().path().to_string();
                Handled::Later(Box::pin(async move {
                    let response = cluster::proxied(&node, &version, &path, key, head).await;
                    this.finish(response, head, started, logged_path)
                }))
            }
            keys::Answer::Listing {
                db,
                version,
                partition,
            } => {
                let this = Arc::clone(self);
                let catalog = Arc::clone(&self.catalog);
                Handled::Later(Box::pin(async move {
                    let response = cluster::listing(catalog, &db, version, partition, head).await;
                    this.finish(response, head, started, logged_path)
                }))
            }
        }
    }

    /// Records a response in the metrics and the request log.
    fn finish(
        &self,
        response: Response<Body>,
        head: bool,
        started: Instant,
        logged_path: Option<Vec<u8>>,
    ) -> Response<Body> {
        let body_len = if head {
            0
        } else {
            hyper::body::Body::size_hint(response.body())
                .exact()
                .unwrap_or(0)
        };
        self.metrics
            .record_request(response.status().as_u16(), started.elapsed(), body_len);
        if let (Some(log), Some(path)) = (&self.request_log, logged_path) {
            log.write(&path, response.status().as_u16());
        }
        response
    }

    /// sequins' handler order. Returns the response and, for requests that
    /// sequins logs (those naming a key, `/<db>/...`), the decoded path.
    fn route(&self, req: &Request<Incoming>) -> (keys::Answer, Option<Vec<u8>>) {
        use keys::Answer::Now;
        let head = match *req.method() {
            Method::GET => false,
            Method::HEAD => true,
            // sequins answers 400 to anything but GET; 405 with `Allow` says
            // what is wrong.
            _ => {
                let mut r = empty(StatusCode::METHOD_NOT_ALLOWED);
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
                return (Now(r), None);
            }
        };
        let raw_path = req.uri().path();
        match raw_path {
            "/" => {
                return (
                    Now(status::global(
                        &self.catalog,
                        self.cluster.as_deref(),
                        req.headers(),
                        head,
                    )),
                    None,
                );
            }
            "/healthz" => {
                return (
                    Now(status::healthz(
                        &self.catalog,
                        self.cluster.as_deref(),
                        head,
                    )),
                    None,
                );
            }
            "/metrics" => {
                let text = self.metrics.render(&self.catalog);
                return (
                    Now(with_body(
                        StatusCode::OK,
                        "text/plain; version=0.0.4; charset=utf-8",
                        text.into(),
                        head,
                    )),
                    None,
                );
            }
            _ => {}
        }
        let Ok(decoded) = path::percent_decode(raw_path) else {
            return (Now(empty(StatusCode::BAD_REQUEST)), None);
        };
        let Some(route) = path::split(&decoded) else {
            return (Now(empty(StatusCode::BAD_REQUEST)), None);
        };
        let proxy = path::proxy_param(req.uri().query());
        if let (Some(pinned), Some(_), Some(db)) =
            (&proxy, &self.cluster, std::str::from_utf8(route.db).ok())
        {
            // A peer still reads this version: keep it while it does.
            self.catalog
                .extend_retirement(db, pinned, crate::cluster::node::PEER_RETENTION);
        }
        let logged = match (route.key, &proxy, &self.request_log) {
            (Some(_), None, Some(_)) => decoded.get(1..).map(<[u8]>::to_vec),
            _ => None,
        };
        if route.db.is_empty() {
            return (Now(empty(StatusCode::BAD_REQUEST)), logged);
        }
        // A name that is not UTF-8 cannot be a database.
        let db = std::str::from_utf8(route.db).ok();
        let response = match route.key {
            Some(key) if !key.is_empty() => {
                let content_type = db
                    .and_then(|db| self.content_types.get(db))
                    .unwrap_or(&self.content_type);
                keys::answer(
                    &self.catalog,
                    db,
                    key,
                    proxy.as_deref(),
                    req.headers(),
                    content_type,
                    head,
                )
            }
            // A peer asks for a partition's keys (cluster mode).
            _ if self.cluster.is_some()
                && path::query_param(
                    req.uri().query(),
                    crate::cluster::directory::LISTING_PARAM,
                )
                .is_some() =>
            {
                keys::Answer::Listing {
                    db: db.unwrap_or_default().to_string(),
                    version: proxy.clone(),
                    partition: path::query_param(
                        req.uri().query(),
                        crate::cluster::directory::LISTING_PARAM,
                    ),
                }
            }
            // `/<db>` and `/<db>/`: the database's status page.
            _ => match db {
                Some(db) if self.catalog.database_names().iter().any(|n| n == db) => {
                    Now(status::database(
                        &self.catalog,
                        self.cluster.as_deref(),
                        db,
                        req.headers(),
                        head,
                    ))
                }
                _ => Now(empty(StatusCode::NOT_FOUND)),
            },
        };
        (response, logged)
    }
}

/// A response with no body.
pub(crate) fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(Body::default());
    *r.status_mut() = status;
    r
}

/// A response with a body (left out, with its length kept, for HEAD).
pub(crate) fn with_body(
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
    head: bool,
) -> Response<Body> {
    let mut r = if head {
        let mut r = empty(status);
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        r
    } else {
        let mut r = Response::new(Body::new(body));
        *r.status_mut() = status;
        r
    };
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

pub use log::RequestLogTarget;

impl From<&crate::config::Config> for HttpOptions {
    /// The sidecar's options from the config file: Content-Types and the
    /// request log (`[debug] request_log_enable` / `request_log_file`).
    fn from(config: &crate::config::Config) -> Self {
        let request_log =
            config
                .debug
                .request_log_enable
                .then(|| match config.debug.request_log_file.as_str() {
                    "" | "stdout" => RequestLogTarget::Stdout,
                    file => RequestLogTarget::File(PathBuf::from(file)),
                });
        HttpOptions {
            content_type: config.content_type.clone(),
            content_types: config.content_types.clone(),
            request_log,
            ..HttpOptions::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn options_from_config() {
        let config = Config::from_toml(
            "content_type = \"text/plain\"\n[content_types]\nimages = \"image/png\"\n\
             [debug]\nrequest_log_enable = true\nrequest_log_file = \"/var/log/r.log\"\n",
        )
        .unwrap();
        let options = HttpOptions::from(&config);
        assert_eq!(options.content_type, "text/plain");
        assert_eq!(options.content_types["images"], "image/png");
        assert_eq!(
            options.request_log,
            Some(RequestLogTarget::File("/var/log/r.log".into()))
        );
        let options =
            HttpOptions::from(&Config::from_toml("[debug]\nrequest_log_enable = true\n").unwrap());
        assert_eq!(options.request_log, Some(RequestLogTarget::Stdout));
        assert_eq!(HttpOptions::from(&Config::default()).request_log, None);
    }
}
