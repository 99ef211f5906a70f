//! The per-connection request deadline: a connection must deliver a
//! complete request head within `header_read_timeout` of its start or of
//! its previous request, or it is closed. Writing a response counts as
//! progress too, so a slow client downloading a large value is not cut off:
//! only a connection on which nothing happens for a whole timeout is.
//!
//! This is what bounds slowloris-style clients (a request head sent a byte
//! at a time, or never finished), idle keep-alive connections, and clients
//! that stop reading their responses (nothing can be written to them, and
//! the server reads no new request until the response is out).
//!
//! hyper has the same limit built in, but it arms and disarms a timer for
//! every request: a timer-wheel insertion, a removal and an allocation each
//! time. Here a request only stores the time it arrived in an atomic the
//! connection owns; the one timer of the connection wakes when the deadline
//! that was current when it was armed passes, and only then looks at the
//! last arrival and sleeps again if there was one. A busy connection thus
//! pays one timer wake-up per timeout period rather than two timer
//! operations per request. Writes only set a flag (reading the clock for
//! each would cost as much as the timer); the deadline, finding it set,
//! starts a new timeout from then, so a connection whose client stopped
//! reading mid-response is closed between one and two timeouts after its
//! last successful write.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

// tokio's clock rather than std's: the same in the daemon, and pausable in
// tests.
use tokio::time::Instant;

/// When a connection last received a request; shared between the
/// connection's service (which records arrivals) and its deadline.
#[derive(Debug, Clone)]
pub(crate) struct Activity {
    inner: Arc<ActivityInner>,
}

#[derive(Debug)]
struct ActivityInner {
    /// When the connection was accepted.
    opened: Instant,
    /// Nanoseconds from `opened` to the latest request's arrival (0: none
    /// yet). A u64 of nanoseconds lasts 584 years.
    last_request_nanos: AtomicU64,
    /// Set by every write that sent bytes, cleared by the deadline.
    wrote: AtomicBool,
}

impl Activity {
    /// A connection accepted now.
    pub(crate) fn new(opened: Instant) -> Self {
        Activity {
            inner: Arc::new(ActivityInner {
                opened,
                last_request_nanos: AtomicU64::new(0),
                wrote: AtomicBool::new(false),
            }),
        }
    }

    /// Records that a request head arrived at `now`.
    pub(crate) fn request_arrived(&self, now: Instant) {
        let nanos = now.saturating_duration_since(self.inner.opened).as_nanos();
        // Relaxed: only the connection's own task reads it, and a stale read
        // only delays the check by one timer period.
        self.inner
            .last_request_nanos
            .store(u64::try_from(nanos).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn last_activity(&self) -> Instant {
        let nanos = self.inner.last_request_nanos.load(Ordering::Relaxed);
        self.inner.opened + Duration::from_nanos(nanos)
    }

    fn wrote(&self) {
        // Relaxed, and a load first so that a busy connection does not
        // write the cache line on every response.
        if !self.inner.wrote.load(Ordering::Relaxed) {
            self.inner.wrote.store(true, Ordering::Relaxed);
        }
    }

    /// Completes once `timeout` has passed since the connection opened or
    /// its latest request arrived, whichever is later, with no response
    /// bytes written meanwhile (see the module docs for the precision).
    pub(crate) async fn expired(&self, timeout: Duration) {
        let mut deadline = self.last_activity() + timeout;
        loop {
            tokio::time::sleep_until(deadline).await;
            let next = if self.inner.wrote.swap(false, Ordering::Relaxed) {
                Instant::now() + timeout
            } else {
                self.last_activity() + timeout
            };
            if next <= deadline {
                return;
            }
            deadline = next;
        }
    }

    /// Wraps a connection's socket so that its writes count as activity.
    pub(crate) fn track<T>(&self, io: T) -> Tracked<T> {
        Tracked {
            io,
            activity: self.clone(),
        }
    }
}

/// A socket whose successful writes are recorded in an [`Activity`].
pub(crate) struct Tracked<T> {
    io: T,
    activity: Activity,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result
            && n > 0
        {
            self.activity.wrote();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = result
            && n > 0
        {
            self.activity.wrote();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(30);

    /// Runs `activity.expired(TIMEOUT)` while `client` acts on the
    /// connection, and returns when it expired. Paused tokio time: the clock
    /// jumps to the next timer whenever every task waits, so this takes no
    /// real time and is exact.
    async fn closed_after(client: impl FnOnce(Activity) + Send + 'static) -> Duration {
        let activity = Activity::new(Instant::now());
        let started = Instant::now();
        let acting = activity.clone();
        tokio::spawn(async move { client(acting) });
        activity.expired(TIMEOUT).await;
        started.elapsed()
    }

    /// A task doing `act` every 20 s, five times.
    fn every_20s(activity: Activity, act: fn(&Activity)) {
        tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_secs(20)).await;
                act(&activity);
            }
        });
    }

    #[tokio::test(start_paused = true)]
    async fn requests_keep_a_connection_open_until_a_quiet_timeout() {
        let closed = closed_after(|a| {
            every_20s(a, |a| a.request_arrived(Instant::now()));
        })
        .await;
        // The last request came at 100 s.
        assert_eq!(closed, Duration::from_secs(130));
    }

    #[tokio::test(start_paused = true)]
    async fn writes_count_as_activity() {
        let closed = closed_after(|a| every_20s(a, Activity::wrote)).await;
        // The last write was at 100 s; it is noticed lazily.
        assert!(
            (Duration::from_secs(130)..=Duration::from_secs(160)).contains(&closed),
            "{closed:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_never_sends_expires_from_its_start() {
        assert_eq!(closed_after(|_| {}).await, TIMEOUT);
    }
}
