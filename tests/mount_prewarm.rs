//! Real FUSE mounts: pre-warming a switch. Keys readers held in the
//! kernel's caches before a switch are served after it without a LOOKUP
//! or READ reaching the daemon; without pre-warming each costs both; and a
//! switch waits for warming at most `--prewarm-limit`, then warming goes on.

mod common;

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use common::{TestMount, can_mount, publish_version, read};
use sequinsfs::catalog::{
    Catalog, InMemoryVersionData, LookupError, ValueRef, Version, VersionData,
};
use sequinsfs::fs::{MountOptions, Op};

const KEYS: usize = 600;

/// Keys of version `v`: flat ones and nested ones (`d<n>/k<i>`), so warming
/// walks prefix directories too. Version 2 lacks every tenth key.
fn pairs(v: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..KEYS)
        .filter(|i| v == 1 || i % 10 != 0)
        .map(|i| {
            let key = if i % 2 == 0 {
                format!("k{i:04}")
            } else {
                format!("d{}/k{i:04}", i % 7)
            };
            (key.into_bytes(), format!("{v}:{i}").into_bytes())
        })
        .collect()
}

fn version(name: &str, data: impl VersionData) -> Arc<Version> {
    let created = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    Version::new("db", name, created, "mem", 1, Box::new(data))
}

fn options(limit: Option<Duration>) -> MountOptions {
    MountOptions {
        prewarm_limit: limit,
        ..MountOptions::default()
    }
}

/// The working set: every third key of version 1.
fn working_set() -> Vec<(usize, String)> {
    pairs(1)
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % 3 == 0)
        .map(|(i, (k, _))| (i, String::from_utf8(k).unwrap()))
        .collect()
}

fn requests(m: &TestMount, ops: &[Op]) -> u64 {
    ops.iter().map(|&op| m.handle().counters().get(op)).sum()
}

/// Reads the working set through `db/`, checking each value is version
/// `v`'s; returns the LOOKUPs and READs it caused.
fn read_working_set(m: &TestMount, v: usize) -> (u64, u64) {
    let (lookups, reads) = (
        m.handle().counters().get(Op::Lookup),
        m.handle().counters().get(Op::Read),
    );
    for (i, key) in working_set() {
        if v == 2 && i % 10 == 0 {
            // Not in version 2 (checked by `assert_missing_in_2`).
            continue;
        }
        let value = read(&m.path().join("db").join(&key));
        assert_eq!(value, format!("{v}:{i}").into_bytes(), "{key}");
    }
    (
        m.handle().counters().get(Op::Lookup) - lookups,
        m.handle().counters().get(Op::Read) - reads,
    )
}

fn assert_missing_in_2(m: &TestMount) {
    for (_, key) in working_set().iter().filter(|(i, _)| i % 10 == 0) {
        assert!(!m.path().join("db").join(key).exists(), "{key}");
    }
}

fn status(m: &TestMount) -> serde_json::Value {
    serde_json::from_slice(&read(&m.path().join(".status"))).unwrap()
}

/// A mount of version 1 of `db` with pre-warming limited to `limit`
/// (`None`: off); `None` (after saying why) where FUSE cannot mount.
fn mount_version_1(limit: Option<Duration>) -> Option<TestMount> {
    if !can_mount() {
        return None;
    }
    let catalog = Catalog::new();
    publish_version(
        &catalog,
        version("1", InMemoryVersionData::new(pairs(1))),
        Duration::from_secs(60),
    );
    Some(TestMount::with_options(catalog, options(limit)))
}

#[test]
fn keys_read_before_a_switch_are_served_after_it_without_a_request() {
    let Some(m) = mount_version_1(Some(Duration::from_secs(60))) else {
        return;
    };
    let (lookups, reads) = read_working_set(&m, 1);
    let n = working_set().len() as u64;
    assert!(
        lookups >= n && reads >= n,
        "cold: {lookups} LOOKUPs, {reads} READs"
    );

    let v2 = version("2", InMemoryVersionData::new(pairs(2)));
    m.catalog.warm_for_switch(&v2);
    publish_version(&m.catalog, v2, Duration::from_secs(60));

    let json = status(&m);
    let run = &json["prewarm"]["last_runs"][0];
    let missing = working_set().iter().filter(|(i, _)| i % 10 == 0).count() as u64;
    assert_eq!(run["db"], "db");
    assert_eq!(
        (run["from"].as_str(), run["to"].as_str()),
        (Some("1"), Some("2"))
    );
    assert_eq!(run["keys"], n, "{json}");
    assert_eq!(run["missing"], missing, "{json}");
    assert_eq!(run["warmed"], n - missing, "{json}");
    assert_eq!(run["warmed_before_switch"], n - missing, "{json}");
    assert_eq!(run["failed"], 0);
    assert_eq!(run["done"], true);
    assert!(run["bytes_stored"].as_u64().unwrap() > 0);
    assert_eq!(json["prewarm"]["limit_seconds"], 60.0);

    // Every value of the new version, and not one READ: the values are in
    // the page cache. The LOOKUPs are those of the `<db>` symlink (its
    // entry lives a second), not one per key.
    let (lookups, reads) = read_working_set(&m, 2);
    assert_eq!(reads, 0, "values read from the daemon after the switch");
    assert!(lookups <= 4, "{lookups} LOOKUPs after the switch");
    assert_missing_in_2(&m);
    // A key nobody read before the switch is cold, as ever.
    let before = requests(&m, &[Op::Lookup, Op::Read]);
    assert_eq!(read(&m.path().join("db/k0002")), b"2:2");
    assert!(requests(&m, &[Op::Lookup, Op::Read]) >= before + 2);
    m.unmount();
}

#[test]
fn without_prewarming_every_key_is_cold_after_a_switch() {
    let Some(m) = mount_version_1(None) else {
        return;
    };
    read_working_set(&m, 1);
    let v2 = version("2", InMemoryVersionData::new(pairs(2)));
    m.catalog.warm_for_switch(&v2);
    publish_version(&m.catalog, v2, Duration::from_secs(60));
    let (lookups, reads) = read_working_set(&m, 2);
    let present = working_set().iter().filter(|(i, _)| i % 10 != 0).count() as u64;
    assert!(reads >= present, "{reads} READs for {present} keys");
    assert!(lookups >= present, "{lookups} LOOKUPs for {present} keys");
    assert!(status(&m).get("prewarm").is_none());
    m.unmount();
}

/// Version data whose key search waits until a gate opens: warming cannot
/// finish until the test says so.
struct Gated {
    data: InMemoryVersionData,
    gate: Arc<(Mutex<bool>, Condvar)>,
}

impl Gated {
    fn wait(&self) {
        let (open, signal) = &*self.gate;
        let guard = open.lock().unwrap();
        drop(signal.wait_while(guard, |open| !*open).unwrap());
    }
}

impl VersionData for Gated {
    fn locate(&self, key: &[u8]) -> Result<Option<ValueRef>, LookupError> {
        self.data.locate(key)
    }
    fn locate_ordinal(&self, ordinal: u64) -> Result<ValueRef, LookupError> {
        self.data.locate_ordinal(ordinal)
    }
    fn read_value<'a>(
        &'a self,
        value: &ValueRef,
        offset: u64,
        len: usize,
        scratch: &mut Vec<u8>,
    ) -> Result<Option<&'a [u8]>, LookupError> {
        self.data.read_value(value, offset, len, scratch)
    }
    fn key_count(&self) -> u64 {
        self.data.key_count()
    }
    fn key_at(&self, ordinal: u64) -> Result<&[u8], LookupError> {
        self.data.key_at(ordinal)
    }
    fn value_len_at(&self, ordinal: u64) -> Result<u64, LookupError> {
        self.data.value_len_at(ordinal)
    }
    fn lower_bound(&self, key: &[u8]) -> Result<u64, LookupError> {
        self.wait();
        self.data.lower_bound(key)
    }
}

#[test]
fn a_switch_waits_at_most_the_limit_and_warming_goes_on_after_it() {
    let limit = Duration::from_millis(200);
    let Some(m) = mount_version_1(Some(limit)) else {
        return;
    };
    read_working_set(&m, 1);
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let v2 = version(
        "2",
        Gated {
            data: InMemoryVersionData::new(pairs(2)),
            gate: Arc::clone(&gate),
        },
    );
    // No key of version 2 can be found while the gate is shut: the switch
    // goes ahead at the limit with nothing warmed.
    m.catalog.warm_for_switch(&v2);
    let run = m.handle().core().prewarm_stats().last("db").unwrap();
    assert_eq!(run.warmed_before_switch(), Some(0));
    assert!(!run.is_done());
    let json = status(&m);
    let shown = &json["prewarm"]["last_runs"][0];
    assert_eq!(shown["done"], false);
    assert!(shown["switch_delayed_seconds"].as_f64().unwrap() >= limit.as_secs_f64());
    publish_version(&m.catalog, v2, Duration::from_secs(60));

    // Warming goes on after the switch.
    *gate.0.lock().unwrap() = true;
    gate.1.notify_all();
    assert!(m.handle().wait_prewarmed("db", Duration::from_secs(60)));
    let n = working_set().len() as u64;
    let missing = working_set().iter().filter(|(i, _)| i % 10 == 0).count() as u64;
    assert_eq!(
        run.warmed.load(std::sync::atomic::Ordering::Relaxed),
        n - missing
    );
    let (_, reads) = read_working_set(&m, 2);
    assert_eq!(reads, 0);
    m.unmount();
}
