//! Pins: the kernel's references to each version's inodes, and the version
//! they keep alive.
//!
//! Inode numbers are stateless (`fs::inode`), so this is the only per-inode
//! state: per version generation, the number of kernel references (LOOKUP
//! and READDIRPLUS replies minus FORGET counts) to any inode of that
//! version, with an `Arc<Version>` held while it is non-zero. That keeps an
//! old version's data alive (the catalog only deletes a version nobody
//! holds) for as long as the kernel can still send requests for it: a
//! reader with a file open or a working directory in an old version keeps
//! reading it after a switch. It is also what lets a generation be reused
//! (`fs::generations`): no pin, no inode of it in the kernel. The table has
//! one entry per version, never per key.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::catalog::Version;

/// Kernel references to one version's inodes.
///
/// Counts are signed and entries are created by whichever of a reference
/// or its release is seen first: the sum is what matters, and a FORGET for
/// an inode the table never counted (an accounting slip) must not wrap.
struct Pin {
    version: Option<Arc<Version>>,
    references: i64,
}

/// The pin table; see the module docs.
#[derive(Default)]
pub struct Pins {
    pins: DashMap<u64, Pin>,
    /// Signalled whenever a pin is released, for [`Pins::wait`].
    unpinned: (Mutex<()>, Condvar),
}

impl Pins {
    /// Counts `count` kernel references to inodes of `version`, which has
    /// `generation`.
    pub fn add(&self, generation: u64, version: &Arc<Version>, count: u64) {
        let delta = i64::try_from(count).unwrap_or(i64::MAX);
        self.adjust(generation, Some(version), delta);
    }

    /// The kernel dropped `count` references to inodes of `generation`.
    pub fn release(&self, generation: u64, count: u64) {
        let delta = i64::try_from(count).unwrap_or(i64::MAX);
        self.adjust(generation, None, -delta);
    }

    /// Adds `delta` references to `generation`, dropping the entry (and
    /// with it the version) when they sum to zero.
    fn adjust(&self, generation: u64, version: Option<&Arc<Version>>, delta: i64) {
        let mut entry = self.pins.entry(generation).or_insert_with(|| Pin {
            version: None,
            references: 0,
        });
        entry.references = entry.references.saturating_add(delta);
        if entry.version.is_none() {
            entry.version = version.cloned();
        }
        let released = entry.references == 0;
        drop(entry);
        if released {
            self.pins
                .remove_if(&generation, |_, pin| pin.references == 0);
            self.unpinned.1.notify_all();
        }
    }

    /// The version the kernel holds inodes of under `generation`.
    pub fn version(&self, generation: u64) -> Option<Arc<Version>> {
        self.pins.get(&generation)?.version.clone()
    }

    /// Whether any reference to `generation` is counted (or a release that
    /// has not met its reference yet).
    pub fn is_pinned(&self, generation: u64) -> bool {
        self.pins.contains_key(&generation)
    }

    /// Generations the kernel holds references to.
    pub fn generations(&self) -> Vec<u64> {
        self.pins
            .iter()
            .filter(|p| p.references > 0)
            .map(|p| *p.key())
            .collect()
    }

    /// (generation, references) of every entry.
    pub fn counts(&self) -> Vec<(u64, i64)> {
        self.pins.iter().map(|p| (*p.key(), p.references)).collect()
    }

    /// Drops every pin: the kernel connection is gone.
    pub fn clear(&self) {
        self.pins.clear();
        self.unpinned.1.notify_all();
    }

    /// Waits until `done` holds for the pinned generations, or `timeout`
    /// passes (returns whether it held).
    pub fn wait(&self, done: impl Fn(&[u64]) -> bool, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (lock, signal) = &self.unpinned;
        let mut guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if done(&self.generations()) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            // Bounded waits: a release between the check and the wait is
            // seen at the next check instead of being lost.
            let slice = (deadline - now).min(Duration::from_millis(50));
            guard = signal
                .wait_timeout(guard, slice)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}
