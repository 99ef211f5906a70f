//! A token bucket that caps the bandwidth of all downloads from one source
//! (`max_download_bandwidth_mb_per_second`).
//!
//! Callers *reserve* bytes they have just received and then wait for the
//! returned duration before asking for more. A reservation may drive the
//! bucket into debt; the debt is what later callers wait for, so several
//! concurrent downloads share the limit between them instead of each getting
//! the full rate. The clock is injectable so the accounting can be tested
//! exactly, without timing anything.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Monotonic time since an arbitrary origin.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> Duration;
}

/// The real clock: [`Instant`] since the limiter was created.
#[derive(Debug)]
pub struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    pub fn new() -> Self {
        MonotonicClock {
            origin: Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A shared bandwidth cap. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct BandwidthLimiter {
    bytes_per_second: f64,
    burst_bytes: f64,
    clock: Arc<dyn Clock>,
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    /// Bytes that may pass without waiting; negative while in debt.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    updated_at: Duration,
}

/// The least burst allowed, so that very low limits still let a typical
/// network chunk through without a wait per chunk.
const MIN_BURST_BYTES: u64 = 64 * 1024;

impl BandwidthLimiter {
    /// A limiter for `mib_per_second` MiB/s (sequins' "MB" is MiB), or `None`
    /// when the limit is 0 (off).
    pub fn from_mib_per_second(mib_per_second: u64) -> Option<BandwidthLimiter> {
        if mib_per_second == 0 {
            return None;
        }
        Some(BandwidthLimiter::new(
            mib_per_second.saturating_mul(1024 * 1024),
            Arc::new(MonotonicClock::new()),
        ))
    }

    /// A limiter of `bytes_per_second` (> 0) reading time from `clock`.
    pub fn new(bytes_per_second: u64, clock: Arc<dyn Clock>) -> BandwidthLimiter {
        let bytes_per_second = bytes_per_second.max(1);
        // A quarter of a second of traffic may pass without waiting: enough
        // to absorb the jitter of chunk sizes, small enough that the rate
        // over any window of a second or more stays close to the limit.
        let burst_bytes = (bytes_per_second / 4).max(MIN_BURST_BYTES);
        let now = clock.now();
        BandwidthLimiter {
            bytes_per_second: bytes_per_second as f64,
            burst_bytes: burst_bytes as f64,
            clock,
            state: Mutex::new(BucketState {
                tokens: burst_bytes as f64,
                updated_at: now,
            }),
        }
    }

    /// The configured rate in bytes per second.
    pub fn bytes_per_second(&self) -> u64 {
        self.bytes_per_second as u64
    }

    /// Accounts for `bytes` just transferred and returns how long the caller
    /// must wait before transferring more (zero when within the limit).
    pub fn reserve(&self, bytes: u64) -> Duration {
        // A poisoned lock only means another thread panicked mid-update of
        // two plain numbers; the numbers are still usable.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.clock.now();
        let elapsed = now.saturating_sub(state.updated_at).as_secs_f64();
        state.tokens = (state.tokens + elapsed * self.bytes_per_second).min(self.burst_bytes);
        state.updated_at = now;
        state.tokens -= bytes as f64;
        if state.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-state.tokens / self.bytes_per_second)
        }
    }

    /// [`reserve`](Self::reserve), then wait asynchronously.
    pub async fn acquire(&self, bytes: u64) {
        let wait = self.reserve(bytes);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// [`reserve`](Self::reserve), then block the calling thread.
    pub fn acquire_blocking(&self, bytes: u64) {
        let wait = self.reserve(bytes);
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[derive(Debug, Default)]
    struct ManualClock {
        nanos: AtomicU64,
    }

    impl ManualClock {
        fn advance(&self, by: Duration) {
            self.nanos.fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> Duration {
            Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
        }
    }

    const MIB: u64 = 1024 * 1024;

    fn limiter(rate: u64) -> (Arc<ManualClock>, BandwidthLimiter) {
        let clock = Arc::new(ManualClock::default());
        let limiter = BandwidthLimiter::new(rate, clock.clone());
        (clock, limiter)
    }

    fn assert_close(actual: Duration, expected: Duration) {
        let diff = actual.abs_diff(expected);
        assert!(
            diff < Duration::from_micros(10),
            "{actual:?} != {expected:?}"
        );
    }

    #[test]
    fn zero_limit_is_off() {
        assert!(BandwidthLimiter::from_mib_per_second(0).is_none());
        let limiter = BandwidthLimiter::from_mib_per_second(4).unwrap();
        assert_eq!(limiter.bytes_per_second(), 4 * MIB);
    }

    #[test]
    fn burst_passes_then_debt_is_paid_at_the_rate() {
        let (_clock, limiter) = limiter(4 * MIB);
        // The burst is a quarter second of traffic.
        assert_eq!(limiter.reserve(MIB), Duration::ZERO);
        // 1 MiB more at 4 MiB/s: a quarter second of debt.
        assert_close(limiter.reserve(MIB), Duration::from_millis(250));
        // Debt accumulates for the next caller.
        assert_close(limiter.reserve(2 * MIB), Duration::from_millis(750));
    }

    #[test]
    fn time_refills_the_bucket() {
        let (clock, limiter) = limiter(4 * MIB);
        assert_eq!(limiter.reserve(MIB), Duration::ZERO);
        assert_close(limiter.reserve(2 * MIB), Duration::from_millis(500));
        // After waiting as told, the debt is paid and nothing is owed.
        clock.advance(Duration::from_millis(500));
        assert_eq!(limiter.reserve(0), Duration::ZERO);
        // Half a second later half a second's worth (capped by the burst of
        // 1 MiB) is available again.
        clock.advance(Duration::from_millis(500));
        assert_eq!(limiter.reserve(MIB), Duration::ZERO);
        assert_close(limiter.reserve(MIB / 2), Duration::from_millis(125));
    }

    #[test]
    fn idle_time_does_not_bank_more_than_the_burst() {
        let (clock, limiter) = limiter(4 * MIB);
        clock.advance(Duration::from_secs(3600));
        assert_eq!(limiter.reserve(MIB), Duration::ZERO);
        assert_close(limiter.reserve(4 * MIB), Duration::from_secs(1));
    }

    #[test]
    fn total_wait_matches_bytes_over_rate_for_many_callers() {
        // Eight "downloads" of 1 MiB each, interleaved in 64 KiB chunks,
        // each waiting as told: the whole transfer takes 8 MiB / 4 MiB/s
        // minus the initial burst, whoever does the waiting.
        let (clock, limiter) = limiter(4 * MIB);
        let chunk = 64 * 1024;
        for _ in 0..(8 * MIB / chunk) {
            let wait = limiter.reserve(chunk);
            clock.advance(wait);
        }
        let burst = Duration::from_millis(250);
        assert_close(clock.now(), Duration::from_secs(2) - burst);
    }

    #[test]
    fn tiny_rates_keep_a_usable_burst() {
        let (_clock, limiter) = limiter(1);
        assert_eq!(limiter.reserve(MIN_BURST_BYTES), Duration::ZERO);
        assert_close(limiter.reserve(1), Duration::from_secs(1));
    }
}
