//! Pre-warming, the kernel-free part: which keys of each version the kernel
//! holds, and what a pre-warming run did.
//!
//! Warm reads never reach the daemon; cold ones cost two round trips
//! (LOOKUP, READ). A switch gives every key a new inode number (a new
//! generation, `fs::inode`), so without help every key is cold again after
//! it. The mount therefore remembers, per version, which keys the kernel
//! looked up and still holds: one bit per key ordinal ([`KeySet`]), set by
//! LOOKUP (an atomic OR, only when the bit is clear) and cleared by FORGET
//! (the kernel dropped the inode). The memory is flat: a version's set is
//! allocated once, at its first key LOOKUP (1.25 MiB for 10 M keys), and
//! nothing is allocated per lookup. Sets of versions that are gone are
//! dropped when the next set is made.
//!
//! Before a switch, `fs::fuse::prewarm` takes a copy of the serving
//! version's set and warms the same keys of the new version (see there);
//! [`PrewarmStats`] is what `.status` shows of it.
//!
//! Imprecision, by design: a LOOKUP racing with the FORGET of the same
//! inode may leave its bit clear (that key is then cold after the next
//! switch), and a key reached only by its flat name is warmed under the
//! path the listing shows (`fs::listing::path_of`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use serde::Serialize;

use crate::catalog::Version;

/// Versions with more keys than this are not tracked (their set would
/// take more than 512 MiB); they are simply not pre-warmed.
pub const MAX_TRACKED_KEYS: u64 = 1 << 32;

/// One bit per key ordinal of one version: whether the kernel holds the
/// key's inode.
pub struct KeySet {
    version_id: u64,
    version: Weak<Version>,
    /// Number of keys (bits in use).
    keys: u64,
    words: Box<[AtomicU64]>,
}

impl KeySet {
    fn new(version: &Arc<Version>) -> Option<KeySet> {
        let keys = version.keys().key_count();
        if keys > MAX_TRACKED_KEYS {
            return None;
        }
        let words = usize::try_from(keys.div_ceil(64)).ok()?;
        Some(KeySet {
            version_id: version.id(),
            version: Arc::downgrade(version),
            keys,
            words: (0..words).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    /// The word holding `ordinal` and its bit; `None` past the end.
    fn slot(&self, ordinal: u64) -> Option<(&AtomicU64, u64)> {
        if ordinal >= self.keys {
            return None;
        }
        let word = self.words.get(usize::try_from(ordinal / 64).ok()?)?;
        Some((word, 1 << (ordinal % 64)))
    }

    pub fn insert(&self, ordinal: u64) {
        if let Some((word, bit)) = self.slot(ordinal)
            // Read first: a key looked up again (the common case) costs no
            // write to a cache line other CPUs read.
            && word.load(Ordering::Relaxed) & bit == 0
        {
            word.fetch_or(bit, Ordering::Relaxed);
        }
    }

    pub fn remove(&self, ordinal: u64) {
        if let Some((word, bit)) = self.slot(ordinal)
            && word.load(Ordering::Relaxed) & bit != 0
        {
            word.fetch_and(!bit, Ordering::Relaxed);
        }
    }

    pub fn contains(&self, ordinal: u64) -> bool {
        self.slot(ordinal)
            .is_some_and(|(word, bit)| word.load(Ordering::Relaxed) & bit != 0)
    }

    /// A copy of the bits (64 ordinals a word, ordinal 0 in bit 0 of word 0).
    pub fn snapshot(&self) -> Vec<u64> {
        self.words
            .iter()
            .map(|w| w.load(Ordering::Relaxed))
            .collect()
    }
}

/// The [`KeySet`] of every version the kernel looked keys up in, by
/// generation; see the module docs.
#[derive(Default)]
pub struct LookedUp {
    sets: DashMap<u64, Arc<KeySet>>,
}

impl LookedUp {
    /// The kernel looked up the key at `ordinal` of `version`, which has
    /// `generation`.
    pub fn insert(&self, generation: u64, version: &Arc<Version>, ordinal: u64) {
        if let Some(set) = self.sets.get(&generation)
            && set.version_id == version.id()
        {
            set.insert(ordinal);
            return;
        }
        if let Some(set) = self.create(generation, version) {
            set.insert(ordinal);
        }
    }

    /// The kernel dropped the inode of the key at `ordinal` of the version
    /// numbered `generation`. (It still pins that version, so the set under
    /// `generation` is that version's, or a dead one's.)
    pub fn remove(&self, generation: u64, ordinal: u64) {
        if let Some(set) = self.sets.get(&generation) {
            set.remove(ordinal);
        }
    }

    /// A copy of `version`'s set, if the kernel looked any of its keys up.
    pub fn snapshot(&self, generation: u64, version: &Version) -> Option<Vec<u64>> {
        let set = self.sets.get(&generation)?;
        (set.version_id == version.id()).then(|| set.snapshot())
    }

    /// Number of versions with a set (tests check that dead ones go).
    pub fn tracked(&self) -> usize {
        self.sets.len()
    }

    /// The set of `version`, made now (once per version): the sets of
    /// versions that are gone are dropped first, so the table holds only
    /// versions something still holds.
    fn create(&self, generation: u64, version: &Arc<Version>) -> Option<Arc<KeySet>> {
        self.sets.retain(|_, set| set.version.strong_count() > 0);
        // Made before taking the entry's lock; a racing LOOKUP's copy is
        // dropped (once per version at most).
        let fresh = Arc::new(KeySet::new(version)?);
        let mut entry = self
            .sets
            .entry(generation)
            .or_insert_with(|| Arc::clone(&fresh));
        if entry.version_id != version.id() {
            // The generation numbered a version that is gone.
            *entry.value_mut() = fresh;
        }
        Some(Arc::clone(entry.value()))
    }
}

/// Bits set in a snapshot: the keys a run will warm.
pub fn count(words: &[u64]) -> u64 {
    words.iter().map(|w| u64::from(w.count_ones())).sum()
}

/// One pre-warming run: `db` switching from `from` to `to`. Workers add to
/// the counters as they go; `.status` reads them at any time.
#[derive(Debug)]
pub struct Run {
    pub db: String,
    pub from: String,
    pub to: String,
    /// Keys the kernel held in `from`: what the run warms.
    pub keys: u64,
    started: Instant,
    /// Keys whose entry (and value, if held here) is now in the kernel.
    pub warmed: AtomicU64,
    /// Keys of `from` that `to` does not have (or that it cannot show).
    pub missing: AtomicU64,
    /// Keys whose warming failed (logged at debug level).
    pub failed: AtomicU64,
    /// Value bytes pushed into the page cache.
    pub bytes: AtomicU64,
    /// Keys warmed when the switch went ahead, and how long it waited
    /// (nanoseconds); unset while it waits.
    warmed_before_switch: AtomicU64,
    switch_waited_nanos: AtomicU64,
    switched: AtomicBool,
    /// How long the whole run took (nanoseconds); unset while it runs.
    took_nanos: AtomicU64,
    done: AtomicBool,
}

impl Run {
    pub fn new(db: &str, from: &str, to: &str, keys: u64) -> Run {
        Run {
            db: db.to_string(),
            from: from.to_string(),
            to: to.to_string(),
            keys,
            started: Instant::now(),
            warmed: AtomicU64::new(0),
            missing: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            warmed_before_switch: AtomicU64::new(0),
            switch_waited_nanos: AtomicU64::new(0),
            switched: AtomicBool::new(false),
            took_nanos: AtomicU64::new(0),
            done: AtomicBool::new(false),
        }
    }

    /// Keys done with, whatever the outcome.
    pub fn handled(&self) -> u64 {
        self.warmed.load(Ordering::Relaxed)
            + self.missing.load(Ordering::Relaxed)
            + self.failed.load(Ordering::Relaxed)
    }

    /// The switch goes ahead now (the run may go on after it).
    pub fn switch_goes_ahead(&self) -> Duration {
        let waited = self.started.elapsed();
        self.warmed_before_switch
            .store(self.warmed.load(Ordering::Relaxed), Ordering::Relaxed);
        self.switch_waited_nanos
            .store(nanos(waited), Ordering::Relaxed);
        self.switched.store(true, Ordering::Release);
        waited
    }

    /// Every key is handled (or the run was stopped).
    pub fn finish(&self) -> Duration {
        let took = self.started.elapsed();
        self.took_nanos.store(nanos(took), Ordering::Relaxed);
        self.done.store(true, Ordering::Release);
        took
    }

    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    pub fn warmed_before_switch(&self) -> Option<u64> {
        self.switched
            .load(Ordering::Acquire)
            .then(|| self.warmed_before_switch.load(Ordering::Relaxed))
    }

    fn json(&self) -> RunJson {
        let switched = self.switched.load(Ordering::Acquire);
        let done = self.is_done();
        RunJson {
            db: self.db.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
            keys: self.keys,
            warmed: self.warmed.load(Ordering::Relaxed),
            missing: self.missing.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            bytes_stored: self.bytes.load(Ordering::Relaxed),
            warmed_before_switch: switched
                .then(|| self.warmed_before_switch.load(Ordering::Relaxed)),
            switch_delayed_seconds: switched
                .then(|| secs(self.switch_waited_nanos.load(Ordering::Relaxed))),
            seconds: if done {
                secs(self.took_nanos.load(Ordering::Relaxed))
            } else {
                self.started.elapsed().as_secs_f64()
            },
            done,
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn secs(nanos: u64) -> f64 {
    Duration::from_nanos(nanos).as_secs_f64()
}

/// What the mount's pre-warming did: totals, and the last run of each
/// database (`.status` shows them under `prewarm`).
#[derive(Default)]
pub struct PrewarmStats {
    /// The `--prewarm-limit` in force; `None`: pre-warming is off.
    limit: Mutex<Option<Duration>>,
    runs: Mutex<Vec<Arc<Run>>>,
    pub keys_warmed: AtomicU64,
    pub bytes_stored: AtomicU64,
    /// Time spent warming, over all runs (nanoseconds).
    pub nanos_spent: AtomicU64,
    pub switches_delayed_nanos: AtomicU64,
}

impl PrewarmStats {
    pub fn enable(&self, limit: Duration) {
        *self.limit.lock().unwrap_or_else(|e| e.into_inner()) = Some(limit);
    }

    pub fn limit(&self) -> Option<Duration> {
        *self.limit.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts showing `run` (replacing the last run of its database).
    pub fn started(&self, run: &Arc<Run>) {
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        runs.retain(|r| r.db != run.db);
        runs.push(Arc::clone(run));
        runs.sort_by(|a, b| a.db.cmp(&b.db));
    }

    /// The last run of `db`.
    pub fn last(&self, db: &str) -> Option<Arc<Run>> {
        let runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        runs.iter().find(|r| r.db == db).cloned()
    }

    /// The `prewarm` object of `.status`; `None` when pre-warming is off.
    pub fn json(&self) -> Option<serde_json::Value> {
        let limit = self.limit()?;
        let runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        let doc = StatsJson {
            limit_seconds: limit.as_secs_f64(),
            keys_warmed: self.keys_warmed.load(Ordering::Relaxed),
            bytes_stored: self.bytes_stored.load(Ordering::Relaxed),
            seconds_spent: secs(self.nanos_spent.load(Ordering::Relaxed)),
            switches_delayed_seconds: secs(self.switches_delayed_nanos.load(Ordering::Relaxed)),
            last_runs: runs.iter().map(|r| r.json()).collect(),
        };
        serde_json::to_value(doc).ok()
    }
}

#[derive(Serialize)]
struct StatsJson {
    limit_seconds: f64,
    keys_warmed: u64,
    bytes_stored: u64,
    seconds_spent: f64,
    switches_delayed_seconds: f64,
    last_runs: Vec<RunJson>,
}

#[derive(Serialize)]
struct RunJson {
    db: String,
    from: String,
    to: String,
    keys: u64,
    warmed: u64,
    missing: u64,
    failed: u64,
    bytes_stored: u64,
    warmed_before_switch: Option<u64>,
    switch_delayed_seconds: Option<f64>,
    seconds: f64,
    done: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::InMemoryVersionData;
    use std::time::SystemTime;

    fn version(name: &str, keys: usize) -> Arc<Version> {
        let pairs = (0..keys).map(|i| (format!("k{i:04}").into_bytes(), b"v".to_vec()));
        InMemoryVersionData::version("db", name, SystemTime::UNIX_EPOCH, pairs)
    }

    #[test]
    fn bits_follow_lookups_and_forgets() {
        let v = version("1", 130);
        let looked_up = LookedUp::default();
        for ordinal in [0, 63, 64, 129] {
            looked_up.insert(7, &v, ordinal);
        }
        looked_up.insert(7, &v, 63);
        // Past the end (a hostile or stale ordinal): ignored.
        looked_up.insert(7, &v, 130);
        looked_up.insert(7, &v, u64::MAX);
        let words = looked_up.snapshot(7, &v).unwrap();
        assert_eq!(words.len(), 3);
        assert_eq!(count(&words), 4);
        assert_eq!(words[0], 1 | 1 << 63);
        looked_up.remove(7, 63);
        looked_up.remove(7, u64::MAX);
        assert_eq!(count(&looked_up.snapshot(7, &v).unwrap()), 3);
        // Another version under another generation has a set of its own.
        let other = version("2", 10);
        assert!(looked_up.snapshot(7, &other).is_none());
        assert!(looked_up.snapshot(8, &other).is_none());
    }

    #[test]
    fn sets_of_versions_that_are_gone_are_dropped_and_generations_reused() {
        let looked_up = LookedUp::default();
        let old = version("1", 10);
        looked_up.insert(1, &old, 3);
        let old_id = old.id();
        drop(old);
        // The generation now numbers another version: a fresh set.
        let new = version("2", 10);
        assert_ne!(new.id(), old_id);
        looked_up.insert(1, &new, 5);
        let words = looked_up.snapshot(1, &new).unwrap();
        assert_eq!(words, [1 << 5]);
        let third = version("3", 10);
        looked_up.insert(2, &third, 0);
        assert_eq!(looked_up.tracked(), 2);
        drop(new);
        let fourth = version("4", 10);
        looked_up.insert(3, &fourth, 0);
        assert_eq!(
            looked_up.tracked(),
            2,
            "the dead set of generation 1 is gone"
        );
    }

    #[test]
    fn status_shows_runs_once_enabled() {
        let stats = PrewarmStats::default();
        assert!(stats.json().is_none());
        stats.enable(Duration::from_secs(5));
        let run = Arc::new(Run::new("db", "1", "2", 10));
        stats.started(&run);
        run.warmed.fetch_add(4, Ordering::Relaxed);
        run.switch_goes_ahead();
        run.warmed.fetch_add(6, Ordering::Relaxed);
        run.finish();
        let json = stats.json().unwrap();
        assert_eq!(json["limit_seconds"], 5.0);
        let last = &json["last_runs"][0];
        assert_eq!(last["warmed_before_switch"], 4);
        assert_eq!(last["warmed"], 10);
        assert_eq!(last["done"], true);
    }
}
