//! Asking peers for what this node does not hold: one request raced over
//! the peers that hold a partition, with backup requests, as sequins does
//! (reference section 5.5), and a memory of which peers failed lately.
//!
//! The peers are tried in a random order (spreading load over replicas),
//! except that peers that failed or timed out recently go last. The first
//! attempt starts at once; every `stage_timeout` without an answer starts a
//! backup attempt against the next peer, and an attempt that fails (a
//! network error, or a status other than 200 and 404) starts the next one
//! at once. The first 200 or 404 wins and the other attempts are dropped
//! (which cancels them). `timeout` bounds the whole exchange up to the
//! winner's response head; the body is then streamed through unbounded, so
//! a large value is not cut off.
//!
//! A peer that failed is penalised for a while (1 s, doubling with every
//! failure in a row, up to a minute): it is tried only after the others, so
//! a dead peer costs a request at most one stage timeout, and only while
//! there is no better peer.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use std::sync::Arc;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hyper::StatusCode;

use super::pipeline::{PeerClient, PeerError, PeerResponse};

/// How an exchange with the peers of a partition ended.
#[derive(Debug)]
pub enum ProxyOutcome {
    /// A peer answered 200 or 404; its response, body not yet read.
    Answered {
        peer: String,
        response: PeerResponse,
    },
    /// No peer holds the partition, or every peer failed: 502.
    NoPeers,
    /// `timeout` passed without an answer: 504.
    TimedOut,
}

/// The proxy of one node: pipelined connections to the peers (see
/// [`super::pipeline`]) and the peers' health.
pub struct Proxy {
    client: Arc<PeerClient>,
    timeout: Duration,
    stage_timeout: Duration,
    health: PeerHealth,
}

impl Proxy {
    /// A proxy that gives up after `timeout` and starts a backup attempt
    /// every `stage_timeout` (sequins' `proxy_timeout` and
    /// `proxy_stage_timeout`).
    pub fn new(timeout: Duration, stage_timeout: Duration) -> Proxy {
        // A peer that does not accept a connection within the stage timeout
        // is as good as dead for this request.
        let client = Arc::new(PeerClient::new(stage_timeout.max(Duration::from_millis(1))));
        Proxy {
            client,
            timeout,
            stage_timeout,
            health: PeerHealth::default(),
        }
    }

    /// Sends `GET http://<peer><path_and_query>` to the `peers` (addresses
    /// `host:port`) as described in the module docs.
    pub async fn fetch(&self, peers: &[String], path_and_query: &str) -> ProxyOutcome {
        self.fetch_range(peers, path_and_query, None).await
    }

    /// [`Proxy::fetch`] of the byte range `range` of a value (sent as a
    /// `Range` header; a 206 is an answer).
    pub async fn fetch_range(
        &self,
        peers: &[String],
        path_and_query: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> ProxyOutcome {
        self.fetch_judged(peers, path_and_query, range, value_verdict)
            .await
    }

    /// [`Proxy::fetch_range`] where `judge` says which responses are
    /// answers; one it declines makes the next peer be asked at once,
    /// without counting against the peer that sent it.
    pub async fn fetch_judged(
        &self,
        peers: &[String],
        path_and_query: &str,
        range: Option<std::ops::Range<u64>>,
        judge: fn(&PeerResponse) -> Verdict,
    ) -> ProxyOutcome {
        let range = range.map(|r| format!("bytes={}-{}", r.start, r.end.saturating_sub(1)));
        let range = range.as_deref();
        let order = self.health.order(peers);
        if order.is_empty() {
            return ProxyOutcome::NoPeers;
        }
        let now = tokio::time::Instant::now();
        let deadline = tokio::time::sleep_until(now + self.timeout);
        tokio::pin!(deadline);
        let mut attempts: FuturesUnordered<Attempt> = FuturesUnordered::new();
        // The first attempt starts here and now: not through a timer, whose
        // resolution (a millisecond) would be most of a proxied request's
        // time on a local network.
        attempts.push(Box::pin(self.attempt(
            order[0].clone(),
            path_and_query,
            range,
        )));
        let mut next = 1;
        let stage = tokio::time::sleep_until(now + self.stage_timeout);
        tokio::pin!(stage);
        loop {
            tokio::select! {
                biased;
                () = &mut deadline => {
                    // Peers that did not answer in time are as suspect as
                    // peers that failed.
                    for peer in order.iter().take(next) {
                        self.health.failed(peer);
                    }
                    return ProxyOutcome::TimedOut;
                }
                Some((peer, result)) = attempts.next() => {
                    let verdict = result.as_ref().map_or(Verdict::Failed, judge);
                    match (verdict, result) {
                        (Verdict::Answer, Ok(response)) => {
                            self.health.succeeded(&peer);
                            return ProxyOutcome::Answered { peer, response };
                        }
                        (verdict, failed) => {
                            if verdict == Verdict::Declined {
                                tracing::debug!(peer, "proxy: peer declined; asking the next");
                            } else {
                                log_failure(&peer, &failed);
                                self.health.failed(&peer);
                            }
                            if next < order.len() {
                                // Start the next attempt now.
                                stage.as_mut().reset(tokio::time::Instant::now());
                            } else if attempts.is_empty() {
                                return ProxyOutcome::NoPeers;
                            }
                        }
                    }
                }
                () = &mut stage, if next < order.len() => {
                    let peer = order[next].clone();
                    next += 1;
                    attempts.push(Box::pin(self.attempt(peer, path_and_query, range)));
                    stage.as_mut().reset(tokio::time::Instant::now() + self.stage_timeout);
                }
            }
        }
    }

    fn attempt(
        &self,
        peer: String,
        path_and_query: &str,
        range: Option<&str>,
    ) -> impl std::future::Future<Output = (String, Result<PeerResponse, PeerError>)> + use<> {
        let path_and_query = path_and_query.to_string();
        let range = range.map(str::to_string);
        let client = Arc::clone(&self.client);
        async move {
            let result = client.get(&peer, &path_and_query, range.as_deref()).await;
            (peer, result)
        }
    }

    /// Peers currently penalised for failing, for metrics and status.
    pub fn unhealthy_peers(&self) -> Vec<String> {
        self.health.penalised()
    }
}

/// One attempt in flight: the peer and its result.
type Attempt = std::pin::Pin<
    Box<dyn std::future::Future<Output = (String, Result<PeerResponse, PeerError>)> + Send>,
>;

/// What a peer's response is to the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The answer: relayed, the other attempts dropped.
    Answer,
    /// A failure of the peer: the next peer is asked at once, and this one
    /// is tried last for a while.
    Failed,
    /// Not what was asked for, through no fault of the peer (a Go sequins
    /// peer answering a listing request with its status page): the next
    /// peer is asked at once.
    Declined,
}

/// For values: 200 (206 for a range) and 404 are answers; anything else
/// (500, 501, ...) is a failure of that peer and the next one is asked.
pub fn value_verdict(response: &PeerResponse) -> Verdict {
    match response.status() {
        StatusCode::OK | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_FOUND => Verdict::Answer,
        _ => Verdict::Failed,
    }
}

fn log_failure(peer: &str, failed: &Result<PeerResponse, PeerError>) {
    match failed {
        Ok(response) => tracing::debug!(peer, status = %response.status(), "proxy: peer failed"),
        Err(e) => tracing::debug!(peer, "proxy: peer failed: {e}"),
    }
}

/// Recent failures per peer; see the module docs.
#[derive(Default)]
struct PeerHealth {
    failures: Mutex<HashMap<String, Penalty>>,
}

struct Penalty {
    in_a_row: u32,
    until: Instant,
}

/// First penalty; doubled for every further failure in a row.
const FIRST_PENALTY: Duration = Duration::from_secs(1);
const MAX_PENALTY: Duration = Duration::from_secs(60);

impl PeerHealth {
    /// `peers` shuffled, penalised ones last (those in order of their
    /// penalty's end).
    fn order(&self, peers: &[String]) -> Vec<String> {
        let mut keyed: Vec<(Option<Instant>, u64, &String)> = {
            let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            peers
                .iter()
                .map(|p| {
                    let until = failures.get(p).map(|f| f.until).filter(|u| *u > now);
                    (until, random(), p)
                })
                .collect()
        };
        keyed.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        keyed.into_iter().map(|(_, _, p)| p.clone()).collect()
    }

    fn failed(&self, peer: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let entry = failures.entry(peer.to_string()).or_insert(Penalty {
            in_a_row: 0,
            until: Instant::now(),
        });
        let penalty = FIRST_PENALTY
            .saturating_mul(1 << entry.in_a_row.min(16))
            .min(MAX_PENALTY);
        entry.in_a_row = entry.in_a_row.saturating_add(1);
        entry.until = Instant::now() + penalty;
    }

    fn succeeded(&self, peer: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(peer);
    }

    fn penalised(&self) -> Vec<String> {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let mut peers: Vec<String> = failures
            .iter()
            .filter(|(_, f)| f.until > now)
            .map(|(p, _)| p.clone())
            .collect();
        peers.sort();
        peers
    }
}

/// A random number for shuffling (std's per-hasher random keys; no
/// cryptographic quality needed).
fn random() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    //! sequins' proxy_test.go cases, against real HTTP peers on loopback.

    use super::*;
    use std::convert::Infallible;

    use bytes::Bytes;
    use hyper::Response;
    use hyper::body::Incoming;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use http_body_util::{BodyExt, Full};
    use hyper::Request;
    use hyper_util::rt::TokioIo;

    /// A fake peer: answers every request with `status` and `body` after
    /// `delay`, counting requests.
    struct FakePeer {
        addr: String,
        requests: Arc<AtomicU32>,
    }

    async fn peer(status: u16, delay: Duration, body: &'static str) -> FakePeer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(AtomicU32::new(0));
        let counter = Arc::clone(&requests);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_req: Request<Incoming>| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        async move {
                            tokio::time::sleep(delay).await;
                            let mut r = Response::new(Full::new(Bytes::from(body)));
                            *r.status_mut() = StatusCode::from_u16(status).unwrap();
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakePeer { addr, requests }
    }

    fn proxy() -> Proxy {
        Proxy::new(Duration::from_millis(300), Duration::from_millis(100))
    }

    async fn body_of(outcome: ProxyOutcome) -> (String, u16, String) {
        match outcome {
            ProxyOutcome::Answered { peer, response } => {
                let status = response.status().as_u16();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                (peer, status, String::from_utf8(body.to_vec()).unwrap())
            }
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    /// Peers in a fixed order: the proxy shuffles, so the tests that need
    /// an order give every peer but the one under test a penalty first.
    fn in_order(proxy: &Proxy, peers: &[&FakePeer]) -> Vec<String> {
        // Later peers get longer penalties, so they sort after earlier ones.
        for (i, p) in peers.iter().enumerate() {
            for _ in 0..i {
                proxy.health.failed(&p.addr);
            }
        }
        peers.iter().map(|p| p.addr.clone()).collect()
    }

    #[tokio::test]
    async fn single_peer() {
        let good = peer(200, Duration::ZERO, "good").await;
        let proxy = proxy();
        let outcome = proxy
            .fetch(std::slice::from_ref(&good.addr), "/db/key?proxy=1")
            .await;
        assert_eq!(body_of(outcome).await, (good.addr, 200, "good".into()));
    }

    #[tokio::test]
    async fn slow_peer_then_good_peer() {
        let slow = peer(200, Duration::from_secs(1), "slow").await;
        let good = peer(200, Duration::ZERO, "good").await;
        let proxy = proxy();
        let peers = in_order(&proxy, &[&slow, &good]);
        let (_, status, body) = body_of(proxy.fetch(&peers, "/db/key?proxy=1").await).await;
        assert_eq!((status, body.as_str()), (200, "good"));
    }

    #[tokio::test]
    async fn error_peer_then_good_peer_and_the_third_is_never_asked() {
        let error = peer(500, Duration::ZERO, "").await;
        let good = peer(200, Duration::ZERO, "good").await;
        let third = peer(200, Duration::ZERO, "third").await;
        let proxy = proxy();
        let peers = in_order(&proxy, &[&error, &good, &third]);
        let (_, status, body) = body_of(proxy.fetch(&peers, "/db/key?proxy=1").await).await;
        assert_eq!((status, body.as_str()), (200, "good"));
        assert_eq!(third.requests.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn slow_peer_then_error_peer_gives_the_slow_answer() {
        let slow = peer(200, Duration::from_millis(150), "slow").await;
        let error = peer(500, Duration::ZERO, "").await;
        let proxy = proxy();
        let peers = in_order(&proxy, &[&slow, &error]);
        let (_, status, body) = body_of(proxy.fetch(&peers, "/db/key?proxy=1").await).await;
        assert_eq!((status, body.as_str()), (200, "slow"));
        assert_eq!(error.requests.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn slow_peers_time_out_and_the_fourth_is_never_asked() {
        let mut slow = Vec::new();
        for _ in 0..4 {
            slow.push(peer(200, Duration::from_secs(1), "slow").await);
        }
        let proxy = proxy();
        let refs: Vec<&FakePeer> = slow.iter().collect();
        let peers = in_order(&proxy, &refs);
        let outcome = proxy.fetch(&peers, "/db/key?proxy=1").await;
        assert!(matches!(outcome, ProxyOutcome::TimedOut), "{outcome:?}");
        assert_eq!(slow[3].requests.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn every_peer_failing_is_no_available_peers() {
        let a = peer(500, Duration::ZERO, "").await;
        let b = peer(501, Duration::ZERO, "").await;
        let proxy = proxy();
        let outcome = proxy.fetch(&[a.addr.clone(), b.addr.clone()], "/x").await;
        assert!(matches!(outcome, ProxyOutcome::NoPeers), "{outcome:?}");
        assert!(matches!(
            proxy.fetch(&[], "/x").await,
            ProxyOutcome::NoPeers
        ));
    }

    #[tokio::test]
    async fn a_404_is_an_answer() {
        let missing = peer(404, Duration::ZERO, "").await;
        let proxy = proxy();
        let (_, status, _) =
            body_of(proxy.fetch(std::slice::from_ref(&missing.addr), "/x").await).await;
        assert_eq!(status, 404);
    }

    /// A peer whose answer is declined (a Go sequins peer asked for a
    /// listing answers with its status page) is passed over at once, and
    /// not held against it.
    #[tokio::test]
    async fn a_declined_answer_asks_the_next_peer_at_once() {
        let status_page = peer(200, Duration::ZERO, "{\"status\":\"ok\"}").await;
        let lister = peer(201, Duration::ZERO, "listing").await;
        // Only 201 is taken here, so the status page's 200 is declined.
        fn judge(response: &PeerResponse) -> Verdict {
            match response.status() {
                StatusCode::CREATED => Verdict::Answer,
                StatusCode::OK => Verdict::Declined,
                _ => Verdict::Failed,
            }
        }
        // A stage timeout beyond the whole budget: the lister is asked in
        // time only if the status page's answer makes it be asked at once.
        let proxy = Proxy::new(Duration::from_secs(5), Duration::from_secs(60));
        let peers = in_order(&proxy, &[&status_page, &lister]);
        let outcome = proxy.fetch_judged(&peers, "/db/?x", None, judge).await;
        let (peer, status, body) = body_of(outcome).await;
        assert_eq!(
            (peer, status, body.as_str()),
            (lister.addr.clone(), 201, "listing")
        );
        assert_eq!(status_page.requests.load(Ordering::SeqCst), 1);
        assert!(proxy.unhealthy_peers().is_empty());
    }

    /// A peer that failed is tried after the others for a while: here it
    /// is never asked again while a healthy peer answers first.
    #[tokio::test]
    async fn a_failed_peer_is_tried_last_for_a_while() {
        let bad = peer(500, Duration::ZERO, "").await;
        let good = peer(200, Duration::ZERO, "good").await;
        let proxy = proxy();
        let outcome = proxy.fetch(std::slice::from_ref(&bad.addr), "/x").await;
        assert!(matches!(outcome, ProxyOutcome::NoPeers));
        assert_eq!(proxy.unhealthy_peers(), vec![bad.addr.clone()]);
        let peers = vec![bad.addr.clone(), good.addr.clone()];
        for _ in 0..8 {
            let (peer, _, _) = body_of(proxy.fetch(&peers, "/x").await).await;
            assert_eq!(peer, good.addr);
        }
        assert_eq!(bad.requests.load(Ordering::SeqCst), 1);
    }
}
