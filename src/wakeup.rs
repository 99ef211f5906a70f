//! Idle polling while requests arrive (`--idle-poll`): keeps idle CPUs
//! from halting, so waking the thread that answers a request, and the
//! reader waiting for the answer, costs no hypervisor round trip.
//!
//! A cold `cat` through the mount is two FUSE round trips, and an HTTP
//! request on one connection is two wake-ups (server, then client). On a
//! virtual machine whose idle vCPUs halt (a `haltpoll` guest with polling
//! off, as many cloud images ship), each wake-up of a halted vCPU costs
//! 15-30 µs, several times the work it waits for. The kernel's answer is
//! the CPU latency PM QoS request: while a process holds
//! `/dev/cpu_dma_latency` open with a limit of 0 µs, cpuidle only picks
//! the polling idle state, and a woken thread starts within a microsecond.
//! Measured on a 2-core VM, a cold pass over 100,000 keys went from
//! 0.05-0.07 to 0.13-0.14 of tmpfs, and one HTTP connection from about
//! 10,000-16,000 to 29,000-31,000 requests/s (docs/PERFORMANCE.md).
//!
//! The price is CPU time: idle CPUs spin instead of sleeping, for the whole
//! machine, so this is off by default and held only while requests arrive.
//! Request paths call [`Activity::touch`] (one relaxed load in the common
//! case); a manager thread takes the PM QoS request at the first touch after
//! a quiet spell and gives it back once a whole [`LINGER`] passed without
//! one. Closing the file is what releases the request, so a daemon that
//! dies releases it too.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The kernel's CPU latency PM QoS interface.
pub const DEVICE: &str = "/dev/cpu_dma_latency";

/// How long the request is held after the last request seen (it is given
/// back between one and two lingers after it). A tenth of a second keeps a
/// steady trickle of requests polled, while a quiet daemon stops spinning
/// almost at once; taking the request again costs nothing the next request
/// waits for (the manager does it in the background).
pub const LINGER: Duration = Duration::from_millis(100);

/// Owns the manager thread; dropping it releases the request and stops.
pub struct IdlePoll {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// What request paths hold: a cheap handle to signal activity.
#[derive(Clone)]
pub struct Activity(Arc<Shared>);

impl std::fmt::Debug for Activity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Activity")
            .field("device", &self.0.device)
            .finish_non_exhaustive()
    }
}

struct Shared {
    device: PathBuf,
    linger: Duration,
    /// A request arrived since the manager last looked.
    seen: AtomicBool,
    /// The manager sleeps until the next request (it must be woken).
    sleeping: AtomicBool,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    stop: bool,
    /// The PM QoS request is held now, since then.
    held_since: Option<Instant>,
    /// How long it was held before `held_since`.
    held_before: Duration,
    /// How many times it was taken.
    takes: u64,
}

impl State {
    fn holding(&self) -> bool {
        self.held_since.is_some()
    }

    fn held_total(&self) -> Duration {
        self.held_before
            + self
                .held_since
                .map_or(Duration::ZERO, |since| since.elapsed())
    }
}

impl IdlePoll {
    /// Starts the manager for the kernel's [`DEVICE`]. Fails at once if the
    /// device cannot be opened for writing (it needs root, or a udev rule
    /// granting the daemon's user access).
    pub fn start() -> io::Result<IdlePoll> {
        IdlePoll::start_with(Path::new(DEVICE), LINGER)
    }

    /// [`IdlePoll::start`] with another device file and linger (tests use a
    /// regular file).
    fn start_with(device: &Path, linger: Duration) -> io::Result<IdlePoll> {
        // Check access now, so a daemon started with --idle-poll it cannot
        // honour says so at startup instead of in a log line later.
        open_device(device)?;
        let shared = Arc::new(Shared {
            device: device.to_path_buf(),
            linger,
            seen: AtomicBool::new(false),
            sleeping: AtomicBool::new(false),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("sequinsfs-idlepoll".into())
                .spawn(move || manage(&shared))?
        };
        Ok(IdlePoll {
            shared,
            thread: Some(thread),
        })
    }

    /// Its figures for `/metrics`: whether the request is held, how often
    /// it was taken and for how long in all (the time idle CPUs polled).
    pub fn metrics_source(&self) -> Arc<dyn crate::metrics::MetricsSource> {
        Arc::new(IdlePollMetrics(Arc::clone(&self.shared)))
    }

    /// The handle request paths touch.
    pub fn activity(&self) -> Activity {
        Activity(Arc::clone(&self.shared))
    }

    /// Whether the PM QoS request is held now.
    pub fn is_holding(&self) -> bool {
        self.shared.lock().holding()
    }

    /// How many times the request was taken so far.
    pub fn takes(&self) -> u64 {
        self.shared.lock().takes
    }

    /// Waits until the request is (`true`) or is not (`false`) held, at
    /// most `timeout`; returns whether it got there.
    pub fn wait_holding(&self, holding: bool, timeout: Duration) -> bool {
        self.wait_until(timeout, |state| state.holding() == holding)
    }

    /// Waits until the request was taken at least `takes` times in all, at
    /// most `timeout`; returns whether it was.
    pub fn wait_takes(&self, takes: u64, timeout: Duration) -> bool {
        self.wait_until(timeout, |state| state.takes >= takes)
    }

    fn wait_until(&self, timeout: Duration, done: impl Fn(&State) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        while !done(&state) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

impl Drop for IdlePoll {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Activity {
    /// Records that a request arrived. Costs one relaxed load while the
    /// daemon is busy; the first request after a quiet spell also wakes the
    /// manager (it does not wait for the request to be taken).
    #[inline]
    pub fn touch(&self) {
        let shared = &*self.0;
        if shared.seen.load(Ordering::Relaxed) {
            return;
        }
        shared.seen.store(true, Ordering::SeqCst);
        if shared.sleeping.load(Ordering::SeqCst) {
            // Taking the lock orders this notify after the manager's last
            // look at `seen`, so the wake-up cannot be lost.
            drop(shared.lock());
            shared.changed.notify_all();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sleeps until a request arrives; false when told to stop.
    fn wait_for_activity(&self) -> bool {
        let mut state = self.lock();
        self.sleeping.store(true, Ordering::SeqCst);
        while !state.stop && !self.seen.load(Ordering::SeqCst) {
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        self.sleeping.store(false, Ordering::SeqCst);
        !state.stop
    }

    /// Sleeps one linger; false when told to stop.
    fn linger(&self) -> bool {
        let deadline = Instant::now() + self.linger;
        let mut state = self.lock();
        while !state.stop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        false
    }

    fn set_holding(&self, holding: bool) {
        let mut state = self.lock();
        if holding {
            state.held_since = Some(Instant::now());
            state.takes += 1;
        } else if let Some(since) = state.held_since.take() {
            state.held_before += since.elapsed();
        }
        drop(state);
        self.changed.notify_all();
    }
}

struct IdlePollMetrics(Arc<Shared>);

impl crate::metrics::MetricsSource for IdlePollMetrics {
    fn write_prometheus(&self, out: &mut String) {
        use std::fmt::Write as _;
        let (holding, takes, held) = {
            let state = self.0.lock();
            (state.holding(), state.takes, state.held_total())
        };
        let _ = write!(
            out,
            "# HELP sequinsfs_idle_poll_holding 1 while --idle-poll keeps idle CPUs polling.\n\
             # TYPE sequinsfs_idle_poll_holding gauge\n\
             sequinsfs_idle_poll_holding {}\n\
             # HELP sequinsfs_idle_poll_takes_total Times --idle-poll started polling after a quiet spell.\n\
             # TYPE sequinsfs_idle_poll_takes_total counter\n\
             sequinsfs_idle_poll_takes_total {takes}\n\
             # HELP sequinsfs_idle_poll_seconds_total Time --idle-poll kept idle CPUs polling.\n\
             # TYPE sequinsfs_idle_poll_seconds_total counter\n\
             sequinsfs_idle_poll_seconds_total {:.3}\n",
            u8::from(holding),
            held.as_secs_f64()
        );
    }
}

/// The manager thread: take the request at activity, hold it while
/// requests keep arriving, give it back after a quiet linger.
fn manage(shared: &Shared) {
    while shared.wait_for_activity() {
        let held = match open_device(&shared.device) {
            Ok(file) => file,
            Err(err) => {
                // Access was checked at startup; this is unexpected (the
                // device was removed or its mode changed). Serve on without
                // polling, and try again at the next quiet spell's end.
                tracing::warn!("idle polling unavailable: {err}");
                if !shared.linger() {
                    return;
                }
                shared.seen.store(false, Ordering::SeqCst);
                continue;
            }
        };
        shared.set_holding(true);
        tracing::debug!("requests arriving: idle CPUs poll");
        let mut stopping = false;
        loop {
            if !shared.linger() {
                stopping = true;
                break;
            }
            if !shared.seen.swap(false, Ordering::SeqCst) {
                break;
            }
        }
        drop(held);
        shared.set_holding(false);
        tracing::debug!("no requests for {:?}: idle CPUs may sleep", shared.linger);
        if stopping {
            return;
        }
    }
}

/// Opens `device` and writes a 0 µs limit; the request lasts while the
/// file stays open.
fn open_device(device: &Path) -> io::Result<File> {
    let mut file = File::options()
        .write(true)
        .open(device)
        .and_then(|mut file| {
            // The kernel reads the limit as a binary 32-bit integer.
            file.write_all(&0i32.to_ne_bytes())?;
            Ok(file)
        })
        .map_err(|err| {
            io::Error::new(
                err.kind(),
                format!(
                    "cannot hold {} for idle polling (needs root or write access): {err}",
                    device.display()
                ),
            )
        })?;
    file.flush()?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    fn start(linger: Duration) -> (tempfile::NamedTempFile, IdlePoll) {
        let device = tempfile::NamedTempFile::new().unwrap();
        let poll = IdlePoll::start_with(device.path(), linger).unwrap();
        (device, poll)
    }

    #[test]
    fn idle_until_a_request_then_released_after_a_quiet_linger() {
        let (device, poll) = start(Duration::from_millis(20));
        assert!(!poll.is_holding());
        assert_eq!(poll.takes(), 0);
        poll.activity().touch();
        assert!(poll.wait_holding(true, WAIT), "taken at the first request");
        assert_eq!(std::fs::read(device.path()).unwrap(), 0i32.to_ne_bytes());
        // No more requests: given back.
        assert!(poll.wait_holding(false, WAIT), "released when quiet");
        assert_eq!(poll.takes(), 1);
        // And taken again by the next request.
        poll.activity().touch();
        assert!(poll.wait_holding(true, WAIT));
        assert_eq!(poll.takes(), 2);
    }

    #[test]
    fn held_while_requests_keep_arriving() {
        let linger = Duration::from_millis(200);
        let (_device, poll) = start(linger);
        let activity = poll.activity();
        activity.touch();
        assert!(poll.wait_holding(true, WAIT));
        // Requests every 10 ms for five lingers: one take, never released.
        let until = Instant::now() + linger * 5;
        while Instant::now() < until {
            activity.touch();
            assert!(poll.is_holding());
            std::thread::sleep(linger / 20);
        }
        assert_eq!(poll.takes(), 1);
    }

    #[test]
    fn many_threads_touching_lose_no_wake_up() {
        let (_device, poll) = start(Duration::from_millis(5));
        for _ in 0..50 {
            assert!(poll.wait_holding(false, WAIT));
            let before = poll.takes();
            std::thread::scope(|s| {
                for _ in 0..4 {
                    let activity = poll.activity();
                    s.spawn(move || activity.touch());
                }
            });
            assert!(poll.wait_takes(before + 1, WAIT), "taken again");
        }
    }

    #[test]
    fn metrics_say_whether_held_how_often_and_how_long() {
        let (_device, poll) = start(Duration::from_millis(20));
        let render = || {
            let mut out = String::new();
            poll.metrics_source().write_prometheus(&mut out);
            out
        };
        let quiet = render();
        assert!(quiet.contains("sequinsfs_idle_poll_holding 0\n"), "{quiet}");
        assert!(quiet.contains("sequinsfs_idle_poll_takes_total 0\n"));
        assert!(quiet.contains("sequinsfs_idle_poll_seconds_total 0.000\n"));
        poll.activity().touch();
        assert!(poll.wait_holding(true, WAIT));
        let busy = render();
        assert!(busy.contains("sequinsfs_idle_poll_holding 1\n"), "{busy}");
        assert!(busy.contains("sequinsfs_idle_poll_takes_total 1\n"));
        assert!(poll.wait_holding(false, WAIT));
        let after = render();
        assert!(after.contains("sequinsfs_idle_poll_holding 0\n"));
        // Held for at least one linger (20 ms).
        let seconds: f64 = after
            .lines()
            .find_map(|l| l.strip_prefix("sequinsfs_idle_poll_seconds_total "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(seconds >= 0.02, "{after}");
    }

    #[test]
    fn a_device_that_cannot_be_opened_fails_at_start_naming_it() {
        let err = IdlePoll::start_with(Path::new("/nonexistent/cpu_dma_latency"), LINGER)
            .err()
            .unwrap();
        assert!(err.to_string().contains("/nonexistent/cpu_dma_latency"));
    }

    #[test]
    fn dropping_stops_the_manager_while_holding() {
        let (_device, poll) = start(Duration::from_secs(3600));
        poll.activity().touch();
        assert!(poll.wait_holding(true, WAIT));
        drop(poll); // returns: the manager saw the stop during its linger
    }
}
