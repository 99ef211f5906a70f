//! The HTTP/1.1 client that asks peers: a few kept-alive connections per
//! peer, with the requests that arrive together pipelined on them.
//!
//! Why not a pooled one-request-per-connection client: under load, every
//! proxied request then costs this node a `write` and a `read`, the peer a
//! `read` and a `write`, and loopback TCP two segments and two wake-ups
//! across processes, for a few hundred bytes. Pipelined, the requests that
//! are ready at the same moment leave in one `write`, the peer answers them
//! with one `write` (its server aggregates pipelined responses) and the
//! answers come back in one `read`: the cost of the hop per request falls as
//! the load rises, which is when it matters.
//!
//! Pipelining is plain HTTP/1.1 (RFC 9112 §9.3): servers answer pipelined
//! requests in order, Go's `net/http` included, so a Go sequins peer is
//! asked the same way. Only GETs are sent, which are idempotent: requests a
//! connection closed before answering are sent again on a new connection,
//! once.
//!
//! Each connection is a task (a *lane*) that owns the socket. It takes
//! requests from a channel, writes them in batches and reads the answers in
//! order. An answer whose body is at most [`BUFFERED_BODY`] bytes is read
//! whole before it is handed over, so the requester wakes once; a longer one
//! is streamed through a small channel, and the lane takes no new requests
//! while it streams, so none queue behind a large value.
//!
//! Lanes belong to the runtime that asked for them: each runtime that
//! proxies (the HTTP sidecar's, the engine's) has connections of its own,
//! so a request never waits on another runtime's threads.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use hyper::body::{Frame, SizeHint};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

/// Bodies up to this size are read whole before the answer is handed over;
/// longer ones are streamed. A megabyte covers every READ of the mount and
/// the values of most datasets, and bounds what one answer buffers.
pub const BUFFERED_BODY: usize = 1024 * 1024;

/// Requests in flight on a lane before another lane is opened to the same
/// peer. Eight keeps batches large enough to pay for the hop while a Go
/// peer, which answers one connection's requests one after another, still
/// gets a connection per core or so under heavy load.
const LANE_DEPTH: usize = 8;

/// Times a request is sent again because its connection was closed by a
/// peer that answered the requests before it.
const MAX_RESENDS: u32 = 64;

/// Lanes per peer at most; beyond this, requests go to the least busy lane.
const MAX_LANES: usize = 8;

/// A response head larger than this is refused (a peer's heads are a few
/// hundred bytes).
const MAX_HEAD: usize = 64 * 1024;

/// Headers of a response head at most.
const MAX_HEADERS: usize = 64;

/// A peer's answer.
pub type PeerResponse = Response<PeerBody>;

/// Why a request to a peer got no answer.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("connecting: {0}")]
    Connect(io::Error),
    #[error("connecting: no connection within {0:?}")]
    ConnectTimeout(Duration),
    /// The connection ended before this request's answer began.
    #[error("connection closed before the answer")]
    Unanswered,
    /// The peer closed the connection after answering the requests before
    /// this one (as HTTP/1.0 peers and `Connection: close` answers do): not
    /// a failure of the peer, and the request is sent again.
    #[error("connection closed by the peer after earlier answers")]
    ClosedAfterAnswers,
    #[error("{0}")]
    Io(io::Error),
    /// The peer's bytes are not an HTTP/1.1 response.
    #[error("bad response at byte {offset} of the connection: {reason}")]
    Protocol { offset: u64, reason: String },
}

/// Kept-alive, pipelined connections to peers; see the module docs.
pub struct PeerClient {
    connect_timeout: Duration,
    /// Lanes by runtime, then by peer.
    lanes: Mutex<HashMap<tokio::runtime::Id, HashMap<String, Vec<Lane>>>>,
}

impl PeerClient {
    /// A client whose connection attempts give up after `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> PeerClient {
        PeerClient {
            connect_timeout,
            lanes: Mutex::new(HashMap::new()),
        }
    }

    /// `GET <path_and_query>` from `peer` (`host:port`), with a `Range`
    /// header when `range` is given. Returns once the answer's head (and,
    /// for a body up to [`BUFFERED_BODY`], the body) has arrived.
    pub async fn get(
        &self,
        peer: &str,
        path_and_query: &str,
        range: Option<&str>,
    ) -> Result<PeerResponse, PeerError> {
        let head = request_head(peer, path_and_query, range);
        let mut resent = false;
        // A peer that closes after every answer makes progress one request
        // per connection; this bounds the resends that costs.
        let mut closed_after_answers = 0;
        loop {
            let lane = self.lane_to(peer);
            let (reply, answer) = oneshot::channel();
            lane.state.in_flight.fetch_add(1, Ordering::Relaxed);
            let job = Job {
                head: head.clone(),
                reply,
            };
            if lane.jobs.send(job).is_err() {
                // The lane ended between choosing it and sending (or its
                // runtime shut down): the next choice opens another.
                lane.state.closed.store(true, Ordering::Relaxed);
                lane.state.in_flight.fetch_sub(1, Ordering::Relaxed);
                continue;
            }
            match answer.await {
                Ok(Ok(response)) => return Ok(response),
                Ok(Err(PeerError::ClosedAfterAnswers)) if closed_after_answers < MAX_RESENDS => {
                    closed_after_answers += 1;
                }
                Ok(Err(PeerError::Unanswered)) | Err(_) if !resent => resent = true,
                Ok(Err(err)) => return Err(err),
                Err(_) => return Err(PeerError::Unanswered),
            }
        }
    }

    /// The lane a request to `peer` goes on: the first open one with room,
    /// a new one while there are fewer than [`MAX_LANES`], else the least
    /// busy.
    fn lane_to(&self, peer: &str) -> Lane {
        let runtime = tokio::runtime::Handle::current().id();
        let mut all = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        let all = all.entry(runtime).or_default();
        let lanes = match all.get_mut(peer) {
            Some(lanes) => lanes,
            None => all.entry(peer.to_string()).or_default(),
        };
        lanes.retain(|lane| !lane.state.closed.load(Ordering::Relaxed));
        let open = |lane: &&Lane| !lane.state.streaming.load(Ordering::Relaxed);
        if let Some(lane) = lanes
            .iter()
            .filter(open)
            .find(|lane| lane.state.in_flight.load(Ordering::Relaxed) < LANE_DEPTH)
        {
            return lane.clone();
        }
        if lanes.len() < MAX_LANES {
            let lane = Lane::spawn(peer.to_string(), self.connect_timeout);
            lanes.push(lane.clone());
            return lane;
        }
        lanes
            .iter()
            .min_by_key(|lane| {
                (
                    lane.state.streaming.load(Ordering::Relaxed),
                    lane.state.in_flight.load(Ordering::Relaxed),
                )
            })
            .cloned()
            .expect("MAX_LANES > 0")
    }

    /// Open connections to `peer`, for tests.
    #[cfg(test)]
    fn open_lanes(&self, peer: &str) -> usize {
        self.count_lanes(peer, |l| !l.closed.load(Ordering::Relaxed))
    }

    /// Connections to `peer` streaming a long answer, for tests.
    #[cfg(test)]
    fn streaming_lanes(&self, peer: &str) -> usize {
        self.count_lanes(peer, |l| l.streaming.load(Ordering::Relaxed))
    }

    #[cfg(test)]
    fn count_lanes(&self, peer: &str, which: impl Fn(&LaneState) -> bool) -> usize {
        let all = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        let runtime = tokio::runtime::Handle::current().id();
        all.get(&runtime)
            .and_then(|a| a.get(peer))
            .map_or(0, |lanes| lanes.iter().filter(|l| which(&l.state)).count())
    }
}

/// The request as sent: a GET with `Host` and, for a range, `Range`.
fn request_head(peer: &str, path_and_query: &str, range: Option<&str>) -> Bytes {
    let mut head = Vec::with_capacity(64 + path_and_query.len() + peer.len());
    head.extend_from_slice(b"GET ");
    head.extend_from_slice(path_and_query.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    head.extend_from_slice(peer.as_bytes());
    if let Some(range) = range {
        head.extend_from_slice(b"\r\nRange: ");
        head.extend_from_slice(range.as_bytes());
    }
    head.extend_from_slice(b"\r\n\r\n");
    Bytes::from(head)
}

/// One request handed to a lane.
struct Job {
    head: Bytes,
    reply: oneshot::Sender<Result<PeerResponse, PeerError>>,
}

/// A lane as the client sees it: where to send requests, and its load.
#[derive(Clone)]
struct Lane {
    jobs: mpsc::UnboundedSender<Job>,
    state: Arc<LaneState>,
}

#[derive(Default)]
struct LaneState {
    /// Requests sent and not yet answered (or failed).
    in_flight: AtomicUsize,
    /// A long body is being streamed: requests would wait behind it.
    streaming: AtomicBool,
    /// The lane has ended; it takes no more requests.
    closed: AtomicBool,
}

/// Requests written in one batch at most.
const BATCH: usize = 64;

impl Lane {
    fn spawn(peer: String, connect_timeout: Duration) -> Lane {
        let (jobs, incoming) = mpsc::unbounded_channel();
        let state = Arc::new(LaneState::default());
        let lane = Lane {
            jobs,
            state: Arc::clone(&state),
        };
        tokio::spawn(async move {
            let mut run = LaneRun {
                state,
                incoming,
                waiting: VecDeque::new(),
                parser: ResponseParser::default(),
            };
            let ended = run.run(&peer, connect_timeout).await;
            if let Err(err) = &ended {
                tracing::debug!(peer, "proxy: connection to peer ended: {err}");
            }
            run.close(ended.err()).await;
        });
        lane
    }
}

/// The lane's task: the connection, and the requests waiting for answers
/// in the order they were written.
struct LaneRun {
    state: Arc<LaneState>,
    incoming: mpsc::UnboundedReceiver<Job>,
    waiting: VecDeque<oneshot::Sender<Result<PeerResponse, PeerError>>>,
    parser: ResponseParser,
}

impl LaneRun {
    /// Connects, then writes requests and reads answers until the peer
    /// closes, the connection fails, or the client is gone.
    async fn run(&mut self, peer: &str, connect_timeout: Duration) -> Result<(), PeerError> {
        let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(peer)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => return Err(PeerError::Connect(err)),
            Err(_) => return Err(PeerError::ConnectTimeout(connect_timeout)),
        };
        // Requests are small and written in one go: no Nagle delay.
        stream.set_nodelay(true).map_err(PeerError::Io)?;
        let (mut reader, mut writer) = stream.into_split();
        let mut buf = BytesMut::with_capacity(16 * 1024);
        let mut batch = Vec::with_capacity(BATCH);
        let mut out = Vec::new();
        loop {
            // Room for a good read; `read_buf` alone would grow the buffer
            // 64 bytes at a time once it is full.
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(16 * 1024);
            }
            tokio::select! {
                read = reader.read_buf(&mut buf), if buf.len() < MAX_HEAD + BUFFERED_BODY => {
                    if read.map_err(PeerError::Io)? == 0 {
                        return self.parser.at_eof(&mut buf, &mut self.waiting, &self.state).await;
                    }
                    if !self.parser.answer(&mut buf, &mut self.waiting, &self.state).await? {
                        // The peer asked to close after its last answer.
                        return Ok(());
                    }
                }
                received = self.incoming.recv_many(&mut batch, BATCH) => {
                    if received == 0 {
                        // Every client handle is gone.
                        return Ok(());
                    }
                    // Let the other requests that are ready now join this
                    // batch: they are queued behind this task.
                    tokio::task::yield_now().await;
                    while batch.len() < BATCH {
                        match self.incoming.try_recv() {
                            Ok(job) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                    out.clear();
                    for job in batch.drain(..) {
                        out.extend_from_slice(&job.head);
                        self.waiting.push_back(job.reply);
                    }
                    writer.write_all(&out).await.map_err(PeerError::Io)?;
                }
            }
        }
    }

    /// Ends the lane. A broken answer gets the error; the requests after it
    /// fail with [`PeerError::Unanswered`] (the client sends them again,
    /// once), or with the connection error when there never was a
    /// connection.
    async fn close(&mut self, error: Option<PeerError>) {
        self.state.closed.store(true, Ordering::Relaxed);
        self.incoming.close();
        let connect_failed = matches!(
            error,
            Some(PeerError::Connect(_) | PeerError::ConnectTimeout(_))
        );
        let mut unanswered: Vec<_> = self.waiting.drain(..).collect();
        while let Ok(job) = self.incoming.try_recv() {
            unanswered.push(job.reply);
        }
        let mut broken = self.parser.current.take();
        // A response that could not be parsed belongs to the oldest request.
        if broken.is_none()
            && let (Some(PeerError::Protocol { .. }), false) = (&error, unanswered.is_empty())
        {
            let reply = unanswered.remove(0);
            self.state.in_flight.fetch_sub(1, Ordering::Relaxed);
            let _ = reply.send(Err(duplicate(error.as_ref())));
        }
        for reply in unanswered {
            self.state.in_flight.fetch_sub(1, Ordering::Relaxed);
            let failure = if connect_failed {
                duplicate(error.as_ref())
            } else if self.parser.answered > 0 {
                PeerError::ClosedAfterAnswers
            } else {
                PeerError::Unanswered
            };
            let _ = reply.send(Err(failure));
        }
        match broken.take().map(|progress| progress.sink) {
            Some(BodySink::Buffering { reply, .. }) => {
                let _ = reply.send(Err(duplicate(error.as_ref())));
            }
            Some(BodySink::Streaming(Some(pieces))) => {
                let message = duplicate(error.as_ref()).to_string();
                let _ = pieces.send(Err(io::Error::other(message))).await;
            }
            Some(BodySink::Streaming(None)) | None => {}
        }
    }
}

/// A copy of a lane's error for each request it fails (`io::Error` is not
/// `Clone`); no error is [`PeerError::Unanswered`].
fn duplicate(error: Option<&PeerError>) -> PeerError {
    match error {
        Some(PeerError::Connect(e)) => PeerError::Connect(io::Error::new(e.kind(), e.to_string())),
        Some(PeerError::ConnectTimeout(t)) => PeerError::ConnectTimeout(*t),
        Some(PeerError::Io(e)) => PeerError::Io(io::Error::new(e.kind(), e.to_string())),
        Some(PeerError::Protocol { offset, reason }) => PeerError::Protocol {
            offset: *offset,
            reason: reason.clone(),
        },
        Some(PeerError::ClosedAfterAnswers) => PeerError::ClosedAfterAnswers,
        Some(PeerError::Unanswered) | None => PeerError::Unanswered,
    }
}

/// Reads the answers of one connection in order; the state between reads
/// is the answer in progress.
#[derive(Default)]
struct ResponseParser {
    /// Bytes of the connection consumed so far, for error offsets.
    consumed: u64,
    /// Answers read whole so far.
    answered: u64,
    current: Option<InProgress>,
}

/// An answer whose head has been read and whose body has not ended.
struct InProgress {
    framing: Framing,
    /// Close the connection after this answer.
    close: bool,
    sink: BodySink,
}

enum BodySink {
    /// Collected until the body ends (or grows past [`BUFFERED_BODY`]).
    Buffering {
        head: hyper::http::response::Parts,
        collected: BytesMut,
        reply: oneshot::Sender<Result<PeerResponse, PeerError>>,
    },
    /// Handed over; the rest goes through the channel (dropped when the
    /// requester has gone).
    Streaming(Option<mpsc::Sender<Result<Bytes, io::Error>>>),
}

/// How the end of a body is known (RFC 9112 §6.3).
enum Framing {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
}

/// Where a chunked body's decoding is.
#[derive(Clone, Copy)]
enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// After the last chunk, in the trailer section.
    Trailers,
}

/// Streamed bodies are relayed in pieces of at most this size, through a
/// channel of [`STREAM_CHANNEL`] pieces: what one streaming answer holds.
const STREAM_PIECE: usize = 256 * 1024;
const STREAM_CHANNEL: usize = 4;

impl ResponseParser {
    fn protocol(&self, reason: impl Into<String>) -> PeerError {
        PeerError::Protocol {
            offset: self.consumed,
            reason: reason.into(),
        }
    }

    /// Answers every request whose answer is complete in `buf`. Returns
    /// false when the peer asked to close the connection after an answer.
    async fn answer(
        &mut self,
        buf: &mut BytesMut,
        waiting: &mut VecDeque<oneshot::Sender<Result<PeerResponse, PeerError>>>,
        state: &LaneState,
    ) -> Result<bool, PeerError> {
        loop {
            if self.current.is_none() {
                if buf.is_empty() {
                    return Ok(true);
                }
                if waiting.is_empty() {
                    return Err(self.protocol("an answer to no request"));
                }
                let Some(progress) = self.head(buf, waiting)? else {
                    return Ok(true);
                };
                self.current = Some(progress);
            }
            if !self.body(buf, state).await? {
                // The body continues in the next read.
                return Ok(true);
            }
            let finished = self.current.take().expect("an answer in progress");
            self.answered += 1;
            state.in_flight.fetch_sub(1, Ordering::Relaxed);
            state.streaming.store(false, Ordering::Relaxed);
            if finished.close {
                return Ok(false);
            }
        }
    }

    /// Parses the next response head from `buf`, if complete. An interim
    /// (1xx) response is skipped.
    fn head(
        &mut self,
        buf: &mut BytesMut,
        waiting: &mut VecDeque<oneshot::Sender<Result<PeerResponse, PeerError>>>,
    ) -> Result<Option<InProgress>, PeerError> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut parsed = httparse::Response::new(&mut headers);
            let len = match parsed.parse(buf) {
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                    return Err(self.protocol(format!("a head longer than {MAX_HEAD} bytes")));
                }
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(e) => return Err(self.protocol(e.to_string())),
            };
            let code = parsed.code.unwrap_or(0);
            let status =
                StatusCode::from_u16(code).map_err(|_| self.protocol(format!("status {code}")))?;
            if status.is_informational() {
                buf.advance(len);
                self.consumed += len as u64;
                continue;
            }
            let mut response = Response::new(());
            *response.status_mut() = status;
            let mut length: Option<u64> = None;
            let mut chunked = false;
            let mut close = parsed.version == Some(0);
            for header in parsed.headers.iter() {
                let name = HeaderName::from_bytes(header.name.as_bytes())
                    .map_err(|_| self.protocol(format!("header name {:?}", header.name)))?;
                let value = HeaderValue::from_bytes(header.value)
                    .map_err(|_| self.protocol(format!("value of header {name}")))?;
                if name == hyper::header::CONTENT_LENGTH {
                    let n = std::str::from_utf8(header.value)
                        .ok()
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .ok_or_else(|| self.protocol("Content-Length is not a number"))?;
                    if length.is_some_and(|l| l != n) {
                        return Err(self.protocol("two different Content-Lengths"));
                    }
                    length = Some(n);
                } else if name == hyper::header::TRANSFER_ENCODING {
                    chunked = has_token(header.value, b"chunked");
                } else if name == hyper::header::CONNECTION {
                    if has_token(header.value, b"close") {
                        close = true;
                    } else if has_token(header.value, b"keep-alive") {
                        close = false;
                    }
                }
                response.headers_mut().append(name, value);
            }
            buf.advance(len);
            self.consumed += len as u64;
            // Only GETs are sent: every answer but 204 and 304 has a body.
            let framing = if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED
            {
                Framing::Length(0)
            } else if chunked {
                Framing::Chunked(Chunk::Size)
            } else if let Some(n) = length {
                Framing::Length(n)
            } else {
                close = true;
                Framing::UntilClose
            };
            let reply = waiting.pop_front().expect("checked by the caller");
            let (head, ()) = response.into_parts();
            return Ok(Some(InProgress {
                framing,
                close,
                sink: BodySink::Buffering {
                    head,
                    collected: BytesMut::new(),
                    reply,
                },
            }));
        }
    }

    /// Moves the body of the answer in progress out of `buf`. Returns
    /// whether it has ended.
    async fn body(&mut self, buf: &mut BytesMut, state: &LaneState) -> Result<bool, PeerError> {
        loop {
            let (piece, ended) = self.decode(buf)?;
            let more = piece.is_some();
            let progress = self.current.as_mut().expect("an answer in progress");
            match &mut progress.sink {
                BodySink::Buffering { collected, .. } => {
                    if let Some(piece) = piece {
                        if collected.is_empty() && ended {
                            // The whole body in one piece: no copy.
                            *collected = BytesMut::from(piece);
                        } else {
                            collected.extend_from_slice(&piece);
                        }
                    }
                    if ended || collected.len() > BUFFERED_BODY {
                        let BodySink::Buffering {
                            head,
                            collected,
                            reply,
                        } = std::mem::replace(&mut progress.sink, BodySink::Streaming(None))
                        else {
                            unreachable!("matched above")
                        };
                        if ended {
                            let body = PeerBody::full(collected.freeze());
                            let _ = reply.send(Ok(Response::from_parts(head, body)));
                            return Ok(true);
                        }
                        // Too long to hold: hand the answer over and
                        // stream the rest.
                        let (pieces, receiver) = mpsc::channel(STREAM_CHANNEL);
                        let size = match progress.framing {
                            Framing::Length(left) => Some(collected.len() as u64 + left),
                            _ => None,
                        };
                        state.streaming.store(true, Ordering::Relaxed);
                        let body = PeerBody::streaming(receiver, size);
                        if reply.send(Ok(Response::from_parts(head, body))).is_ok()
                            && pieces.send(Ok(collected.freeze())).await.is_ok()
                        {
                            progress.sink = BodySink::Streaming(Some(pieces));
                        }
                    }
                }
                BodySink::Streaming(pieces) => {
                    if let (Some(piece), Some(sender)) = (piece, pieces.as_ref())
                        && sender.send(Ok(piece)).await.is_err()
                    {
                        // The requester has gone. A short rest is read and
                        // dropped, so the connection stays usable; for a
                        // long or unknown one, a new connection is cheaper
                        // (and a peer cannot keep the lane busy).
                        let short_rest = matches!(progress.framing,
                            Framing::Length(left) if left <= BUFFERED_BODY as u64);
                        if !short_rest {
                            return Err(PeerError::Io(io::Error::other(
                                "the requester left a long answer",
                            )));
                        }
                        *pieces = None;
                    }
                    if ended {
                        return Ok(true);
                    }
                }
            }
            if !more {
                // The body continues in the next read.
                return Ok(false);
            }
        }
    }

    /// The next piece of the body in progress that `buf` holds, and
    /// whether the body ends with it.
    fn decode(&mut self, buf: &mut BytesMut) -> Result<(Option<Bytes>, bool), PeerError> {
        let progress = self.current.as_mut().expect("an answer in progress");
        loop {
            match &mut progress.framing {
                Framing::Length(left) => {
                    let take = (*left).min(buf.len() as u64).min(STREAM_PIECE as u64) as usize;
                    *left -= take as u64;
                    self.consumed += take as u64;
                    let piece = (take > 0).then(|| buf.split_to(take).freeze());
                    return Ok((piece, *left == 0));
                }
                Framing::UntilClose => {
                    let take = buf.len().min(STREAM_PIECE);
                    self.consumed += take as u64;
                    let piece = (take > 0).then(|| buf.split_to(take).freeze());
                    return Ok((piece, false));
                }
                Framing::Chunked(chunk) => match *chunk {
                    Chunk::Data(left) => {
                        let take = left.min(buf.len() as u64).min(STREAM_PIECE as u64) as usize;
                        if take == 0 {
                            return Ok((None, false));
                        }
                        *chunk = if left == take as u64 {
                            Chunk::DataEnd
                        } else {
                            Chunk::Data(left - take as u64)
                        };
                        self.consumed += take as u64;
                        return Ok((Some(buf.split_to(take).freeze()), false));
                    }
                    Chunk::Size | Chunk::DataEnd | Chunk::Trailers => {
                        let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
                            if buf.len() > MAX_HEAD {
                                let offset = self.consumed;
                                return Err(PeerError::Protocol {
                                    offset,
                                    reason: "a chunk line without end".into(),
                                });
                            }
                            return Ok((None, false));
                        };
                        let line = buf.split_to(end + 2);
                        let offset = self.consumed;
                        self.consumed += line.len() as u64;
                        let line = &line[..end];
                        match *chunk {
                            Chunk::DataEnd if line.is_empty() => *chunk = Chunk::Size,
                            Chunk::DataEnd => {
                                return Err(PeerError::Protocol {
                                    offset,
                                    reason: "chunk data longer than its size".into(),
                                });
                            }
                            Chunk::Trailers if line.is_empty() => return Ok((None, true)),
                            Chunk::Trailers => {}
                            _ => {
                                let size = chunk_size(line).ok_or_else(|| PeerError::Protocol {
                                    offset,
                                    reason: "a chunk size that is not a hex number".into(),
                                })?;
                                *chunk = if size == 0 {
                                    Chunk::Trailers
                                } else {
                                    Chunk::Data(size)
                                };
                            }
                        }
                    }
                },
            }
        }
    }

    /// The peer closed the connection: a body framed by the close ends
    /// here; anything else in progress broke off.
    async fn at_eof(
        &mut self,
        buf: &mut BytesMut,
        waiting: &mut VecDeque<oneshot::Sender<Result<PeerResponse, PeerError>>>,
        state: &LaneState,
    ) -> Result<(), PeerError> {
        self.answer(buf, waiting, state).await?;
        let Some(progress) = self.current.as_mut() else {
            return Ok(());
        };
        if !matches!(progress.framing, Framing::UntilClose) {
            // Left in progress: the lane's close hands the error to it.
            return Err(self.protocol("the connection closed inside an answer"));
        }
        progress.framing = Framing::Length(0);
        self.body(buf, state).await?;
        self.current = None;
        state.in_flight.fetch_sub(1, Ordering::Relaxed);
        Ok(())
    }
}

/// A chunk-size line: hex digits, then optional extensions after `;`.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.split(|&b| b == b';').next()?;
    let digits = std::str::from_utf8(digits).ok()?.trim();
    if digits.is_empty() || digits.len() > 15 {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

/// Whether a comma-separated header value lists `token` (case-insensitive).
fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// The body of a peer's answer: whole, or streamed from the lane.
pub struct PeerBody {
    inner: PeerBodyInner,
}

impl std::fmt::Debug for PeerBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            PeerBodyInner::Full(bytes) => {
                write!(
                    f,
                    "PeerBody({} bytes)",
                    bytes.as_ref().map_or(0, Bytes::len)
                )
            }
            PeerBodyInner::Streaming { size, .. } => write!(f, "PeerBody(streaming, {size:?})"),
        }
    }
}

enum PeerBodyInner {
    Full(Option<Bytes>),
    Streaming {
        pieces: mpsc::Receiver<Result<Bytes, io::Error>>,
        size: Option<u64>,
        ended: bool,
    },
}

impl PeerBody {
    fn full(bytes: Bytes) -> PeerBody {
        PeerBody {
            inner: PeerBodyInner::Full((!bytes.is_empty()).then_some(bytes)),
        }
    }

    fn streaming(pieces: mpsc::Receiver<Result<Bytes, io::Error>>, size: Option<u64>) -> PeerBody {
        PeerBody {
            inner: PeerBodyInner::Streaming {
                pieces,
                size,
                ended: false,
            },
        }
    }
}

impl hyper::body::Body for PeerBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match &mut self.get_mut().inner {
            PeerBodyInner::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            PeerBodyInner::Streaming { pieces, ended, .. } => {
                if *ended {
                    return Poll::Ready(None);
                }
                match pieces.poll_recv(cx) {
                    Poll::Ready(Some(piece)) => Poll::Ready(Some(piece.map(Frame::data))),
                    Poll::Ready(None) => {
                        *ended = true;
                        Poll::Ready(None)
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            PeerBodyInner::Full(bytes) => bytes.is_none(),
            PeerBodyInner::Streaming { ended, .. } => *ended,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            PeerBodyInner::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            PeerBodyInner::Streaming {
                size: Some(size), ..
            } => SizeHint::with_exact(*size),
            PeerBodyInner::Streaming { .. } => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Against raw TCP peers that answer with exact bytes, so framing,
    //! pipelining and broken answers are under the test's control.

    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::AtomicU32;
    use tokio::net::TcpListener;

    /// A peer that answers every request head it reads with `answer(n)`
    /// (n counts requests over all connections), writing each answer in
    /// pieces of `piece` bytes; counts connections.
    struct RawPeer {
        addr: String,
        connections: Arc<AtomicU32>,
    }

    async fn raw_peer(
        piece: usize,
        answer: impl Fn(u32) -> Vec<u8> + Send + Sync + 'static,
    ) -> RawPeer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let connections = Arc::new(AtomicU32::new(0));
        let answer = Arc::new(answer);
        let (conns, requests) = (Arc::clone(&connections), Arc::new(AtomicU32::new(0)));
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                conns.fetch_add(1, Ordering::SeqCst);
                let (answer, requests) = (Arc::clone(&answer), Arc::clone(&requests));
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Ok(n) = stream.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        // Every complete head read so far is answered,
                        // all of them in one go.
                        let mut out = Vec::new();
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            out.extend(answer(requests.fetch_add(1, Ordering::SeqCst)));
                        }
                        for part in out.chunks(piece.max(1)) {
                            if stream.write_all(part).await.is_err() {
                                return;
                            }
                            stream.flush().await.ok();
                            if piece < out.len() {
                                tokio::task::yield_now().await;
                            }
                        }
                    }
                });
            }
        });
        RawPeer { addr, connections }
    }

    fn ok(body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    async fn text(response: PeerResponse) -> (u16, String) {
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    fn client() -> Arc<PeerClient> {
        Arc::new(PeerClient::new(Duration::from_secs(1)))
    }

    #[tokio::test]
    async fn concurrent_requests_share_one_connection_in_order() {
        let peer = raw_peer(usize::MAX, |n| ok(&format!("answer {n}"))).await;
        let client = client();
        let requests = (0..LANE_DEPTH).map(|_| {
            let (client, addr) = (Arc::clone(&client), peer.addr.clone());
            tokio::spawn(async move { text(client.get(&addr, "/db/k", None).await.unwrap()).await })
        });
        let mut bodies = Vec::new();
        for request in requests {
            bodies.push(request.await.unwrap().1);
        }
        bodies.sort();
        let mut expected: Vec<String> = (0..LANE_DEPTH).map(|n| format!("answer {n}")).collect();
        expected.sort();
        assert_eq!(bodies, expected);
        assert_eq!(peer.connections.load(Ordering::SeqCst), 1);
        assert_eq!(client.open_lanes(&peer.addr), 1);
    }

    #[tokio::test]
    async fn answers_split_at_every_byte_are_reassembled() {
        let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Sequins-Version: 7\r\n\r\n\
                       5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nTrailer: x\r\n\r\n";
        let answers = [
            chunked.as_bytes().to_vec(),
            b"HTTP/1.1 100 Continue\r\n\r\n"
                .iter()
                .chain(ok("after 100").iter())
                .copied()
                .collect(),
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
            ok(""),
        ];
        let peer = raw_peer(1, move |n| answers[n as usize % 4].clone()).await;
        let client = client();
        let first = client.get(&peer.addr, "/a", None).await.unwrap();
        assert_eq!(first.headers()["x-sequins-version"], "7");
        assert_eq!(text(first).await, (200, "hello world".into()));
        let second = client.get(&peer.addr, "/b", None).await.unwrap();
        assert_eq!(text(second).await, (200, "after 100".into()));
        let third = client.get(&peer.addr, "/c", None).await.unwrap();
        assert_eq!(text(third).await, (404, String::new()));
        let fourth = client.get(&peer.addr, "/d", None).await.unwrap();
        assert_eq!(text(fourth).await, (200, String::new()));
        assert_eq!(peer.connections.load(Ordering::SeqCst), 1);
    }

    /// A peer that closes after each answer: the requests pipelined behind
    /// it are sent again on new connections.
    #[tokio::test]
    async fn requests_a_closed_connection_left_unanswered_are_sent_again() {
        let peer = raw_peer(usize::MAX, |n| {
            format!(
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n{}",
                n % 10
            )
            .into_bytes()
        })
        .await;
        let client = client();
        let requests: Vec<_> = (0..4)
            .map(|_| {
                let (client, addr) = (Arc::clone(&client), peer.addr.clone());
                tokio::spawn(async move { client.get(&addr, "/k", None).await.map(|r| r.status()) })
            })
            .collect();
        for request in requests {
            assert_eq!(request.await.unwrap().unwrap(), StatusCode::OK);
        }
        assert!(peer.connections.load(Ordering::SeqCst) >= 2);
    }

    /// A peer that answers its first request with `answer` and then closes
    /// the connection, or (`hold`) keeps it open for a while, so that what
    /// the client makes of the answer comes from its bytes alone.
    async fn answering_once(answer: &'static str, hold: bool) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf).await;
            stream.write_all(answer.as_bytes()).await.unwrap();
            if hold {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_body_read_until_close() {
        let addr = answering_once("HTTP/1.0 200 OK\r\n\r\nuntil the end", false).await;
        let response = client().get(&addr, "/k", None).await.unwrap();
        assert_eq!(text(response).await, (200, "until the end".into()));
    }

    /// A peer whose first answer is `long` bytes and whose later ones are
    /// `next`.
    async fn long_answer_then(long: usize, next: &'static str) -> RawPeer {
        let answers = [ok(&"x".repeat(long)), ok(next)];
        raw_peer(64 * 1024, move |n| answers[(n as usize).min(1)].clone()).await
    }

    async fn get_text(client: &PeerClient, peer: &RawPeer, path: &str) -> String {
        text(client.get(&peer.addr, path, None).await.unwrap())
            .await
            .1
    }

    #[tokio::test]
    async fn a_long_body_is_streamed_and_the_lane_stays_usable() {
        let long = 3 * BUFFERED_BODY + 17;
        let peer = long_answer_then(long, "short").await;
        let client = client();
        let response = client.get(&peer.addr, "/long", None).await.unwrap();
        let hint = hyper::body::Body::size_hint(response.body());
        assert_eq!(hint.exact(), Some(long as u64));
        let (status, body) = text(response).await;
        assert_eq!((status, body.len()), (200, long));
        assert_eq!(get_text(&client, &peer, "/s").await, "short");
        assert_eq!(peer.connections.load(Ordering::SeqCst), 1);
    }

    /// Asks for a streamed answer of `long` bytes and drops it after its
    /// first piece; once `settled` holds of the client, asks again.
    /// Returns how many connections the peer saw.
    async fn connections_after_dropping(
        long: usize,
        settled: fn(&PeerClient, &str) -> bool,
    ) -> u32 {
        let peer = long_answer_then(long, "next").await;
        let client = client();
        let response = client.get(&peer.addr, "/long", None).await.unwrap();
        let mut body = response.into_body();
        let first = body.frame().await.unwrap().unwrap();
        assert!(first.data_ref().is_some_and(|d| !d.is_empty()));
        drop(body);
        // The lane runs on this test's thread: yielding lets it go on.
        while !settled(&client, &peer.addr) {
            tokio::task::yield_now().await;
        }
        assert_eq!(get_text(&client, &peer, "/n").await, "next");
        peer.connections.load(Ordering::SeqCst)
    }

    /// A requester that drops a streamed answer half-way: a short rest is
    /// read and dropped, and the next request is answered on the same
    /// connection. (The first piece handed over is the first megabyte and
    /// a read's worth, so the rest of two megabytes is under one.)
    #[tokio::test]
    async fn a_dropped_stream_does_not_spoil_the_connection() {
        let settled = |c: &PeerClient, peer: &str| c.streaming_lanes(peer) == 0;
        assert_eq!(
            connections_after_dropping(2 * BUFFERED_BODY, settled).await,
            1
        );
    }

    /// Dropping a streamed answer with a long rest closes its connection
    /// rather than reading the rest; requests go on on a new one.
    #[tokio::test]
    async fn a_dropped_long_stream_closes_its_connection() {
        let settled = |c: &PeerClient, peer: &str| c.open_lanes(peer) == 0;
        assert_eq!(
            connections_after_dropping(8 * BUFFERED_BODY, settled).await,
            2
        );
    }

    #[tokio::test]
    async fn broken_answers_are_errors_naming_the_offset() {
        for (answer, expected) in [
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                "byte 47 of the connection: a chunk size that is not a hex number",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 12x\r\n\r\n",
                "byte 0 of the connection: Content-Length is not a number",
            ),
            ("HTTQ/1.1 200 OK\r\n\r\n", "byte 0 of the connection"),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
                "byte 0 of the connection: Content-Length is not a number",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
                "byte 44 of the connection: the connection closed inside an answer",
            ),
        ] {
            // The last answer is cut short by the close.
            let addr = answering_once(answer, !answer.ends_with("short")).await;
            let result = client().get(&addr, "/k", None).await;
            let err = result.map(|_| ()).unwrap_err().to_string();
            assert!(err.contains(expected), "{answer:?}: {err}");
        }
    }

    #[tokio::test]
    async fn a_peer_that_refuses_connections_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let err = client()
            .get(&addr, "/k", None)
            .await
            .map(|_| ())
            .unwrap_err();
        assert!(matches!(err, PeerError::Connect(_)), "{err:?}");
    }

    #[test]
    fn a_request_is_a_get_with_host_and_range() {
        assert_eq!(
            &request_head("10.0.0.1:9599", "/db/k?proxy=v1", Some("bytes=0-9"))[..],
            b"GET /db/k?proxy=v1 HTTP/1.1\r\nHost: 10.0.0.1:9599\r\nRange: bytes=0-9\r\n\r\n"
        );
    }
}
