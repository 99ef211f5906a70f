//! The control files: `.status` (the catalog's status as JSON), `.refresh`
//! (touch it to look for new data) and `.version` (which version a version
//! directory is).
//!
//! `.status` changes while it is read, yet a reader must get one whole
//! document. The session answers OPEN with ENOSYS (what keeps warm reads
//! free of requests), so there is no per-open handle to freeze it in.
//! Instead every LOOKUP of `.status` (its entry TTL is zero, so every path
//! walk looks it up) yields an inode of its own whose content is serialized
//! once, then; GETATTR and READ of that inode serve exactly those bytes, so
//! the size the kernel reads up to always matches them. A snapshot with the
//! same content as the newest one is that one (an unchanged catalog keeps
//! one inode, and its cached pages). A snapshot lives while the kernel
//! references its inode (FORGET releases it); at most
//! [`MAX_STATUS_SNAPSHOTS`] are kept, and the oldest beyond that is
//! dropped: a reader still holding it open then gets ESTALE, and the next
//! `cat` gets a new snapshot.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;

use crate::catalog::{Catalog, Version, VersionStatus};
use crate::fs::inode::MAX_STATUS_SEQUENCE;
use crate::status_json::{ProgressJson, rfc3339};

/// Asks the daemon to look for new data (what `touch .refresh` does). It
/// must return at once: it is called on a FUSE request thread.
pub trait RefreshTrigger: Send + Sync + 'static {
    fn trigger(&self);
}

impl<F: Fn() + Send + Sync + 'static> RefreshTrigger for F {
    fn trigger(&self) {
        self()
    }
}

/// The content of `.version`.
pub fn version_file(version: &Version) -> String {
    format!("{}\n", version.name())
}

/// `.status`: every database with its versions, states, progress and
/// errors, as pretty JSON with a trailing newline.
pub fn status_json(catalog: &Catalog) -> String {
    status_json_with(catalog, None)
}

/// [`status_json`] of a node of a cluster: `cluster` describes the node
/// (shard ID, session, peers), and each version lists the partitions this
/// node holds.
pub fn status_json_with(catalog: &Catalog, cluster: Option<serde_json::Value>) -> String {
    status_json_full(catalog, cluster, None)
}

/// [`status_json_with`] of a mount, with what its pre-warming did
/// (`prewarm`, see `fs::prewarm`).
pub fn status_json_full(
    catalog: &Catalog,
    cluster: Option<serde_json::Value>,
    prewarm: Option<serde_json::Value>,
) -> String {
    let store = catalog.store_status();
    let doc = StatusDoc {
        cluster,
        prewarm,
        store: (store.format != 0).then(|| StoreDoc::from(&store)),
        source_problem: catalog.source_problem(),
        databases: catalog
            .status()
            .iter()
            .map(|db| DatabaseDoc {
                name: db.name.clone(),
                current: db.current.clone(),
                online: !db.offline,
                state: db.state.clone(),
                versions: db.versions.iter().map(VersionDoc::from).collect(),
            })
            .collect(),
    };
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    text.push('\n');
    text
}

/// The `.status` document.
#[derive(Serialize)]
struct StatusDoc {
    /// This node in its cluster, in cluster mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<serde_json::Value>,
    /// The local store's format and migration.
    #[serde(skip_serializing_if = "Option::is_none")]
    store: Option<StoreDoc>,
    /// What is wrong with the source root as a whole, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    source_problem: Option<String>,
    /// What the mount's pre-warming of switches did, when it is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    prewarm: Option<serde_json::Value>,
    databases: Vec<DatabaseDoc>,
}

#[derive(Serialize)]
struct StoreDoc {
    format: u32,
    /// The format it had when this process opened it, if it was migrated.
    #[serde(skip_serializing_if = "Option::is_none")]
    migrated_from: Option<u32>,
    /// The background conversion running now, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    migration: Option<MigrationDoc>,
}

#[derive(Serialize)]
struct MigrationDoc {
    step: &'static str,
    db: String,
    version: String,
    keys_done: u64,
    keys_total: u64,
    versions_left: usize,
}

impl From<&crate::catalog::StoreStatus> for StoreDoc {
    fn from(s: &crate::catalog::StoreStatus) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        StoreDoc {
            format: s.format,
            migrated_from: (s.opened_format != s.format).then_some(s.opened_format),
            migration: s.migration.as_ref().map(|m| MigrationDoc {
                step: m.step,
                db: m.db.clone(),
                version: m.version.clone(),
                keys_done: m.progress.keys_done.load(Relaxed),
                keys_total: m.progress.keys_total.load(Relaxed),
                versions_left: m.versions_left,
            }),
        }
    }
}

#[derive(Serialize)]
struct DatabaseDoc {
    name: String,
    /// The version served (none while offline).
    current: Option<String>,
    /// False while taken offline through its state.
    online: bool,
    /// Its state in the source root (`<db>/_state.json`: online, pinned,
    /// who changed it and when), when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<crate::lifecycle::DatabaseState>,
    versions: Vec<VersionDoc>,
}

#[derive(Serialize)]
struct VersionDoc {
    version: String,
    state: String,
    path: String,
    num_partitions: u32,
    /// In cluster mode, the partitions this node holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    held_partitions: Option<Vec<u32>>,
    created_at: String,
    active_at: Option<String>,
    current: bool,
    /// `built` (loaded by this process) or `reused` (from the local store).
    origin: &'static str,
    progress: ProgressJson,
    num_keys: Option<u64>,
    error: Option<String>,
}

impl From<&VersionStatus> for VersionDoc {
    fn from(v: &VersionStatus) -> Self {
        VersionDoc {
            version: v.version.clone(),
            state: v.state.to_string(),
            path: v.path.clone(),
            num_partitions: v.num_partitions,
            held_partitions: v.held_partitions.clone(),
            created_at: rfc3339(v.created_at),
            active_at: v.active_at.map(rfc3339),
            current: v.current,
            origin: v.origin.name(),
            progress: ProgressJson::from(&v.progress),
            num_keys: v.num_keys,
            error: v.error_text(),
        }
    }
}

/// How many `.status` snapshots are kept at most. The kernel references a
/// snapshot only while a reader has it open or between a lookup and the
/// next path walk (which replaces the entry), so a handful are in use at
/// any time; 64 leaves room for many concurrent readers of a long document
/// while bounding memory to 64 copies of it.
pub const MAX_STATUS_SNAPSHOTS: usize = 64;

/// One frozen `.status` document.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Its sequence number (the payload of its inode number).
    pub sequence: u64,
    pub bytes: Arc<[u8]>,
    /// When it was taken: its mtime.
    pub taken: SystemTime,
}

struct Entry {
    snapshot: Snapshot,
    /// Kernel references to its inode.
    references: u64,
}

/// The live `.status` snapshots; see the module docs.
pub struct StatusSnapshots {
    capacity: usize,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    next: u64,
    /// By sequence number: the first is the oldest, the last the newest.
    snapshots: BTreeMap<u64, Entry>,
}

impl Default for StatusSnapshots {
    fn default() -> Self {
        StatusSnapshots::with_capacity(MAX_STATUS_SNAPSHOTS)
    }
}

impl StatusSnapshots {
    /// A table keeping at most `capacity` snapshots (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        StatusSnapshots {
            capacity: capacity.max(1),
            table: Mutex::new(Table::default()),
        }
    }

    /// A snapshot of `text`, counting `references` kernel references to it
    /// (one for a LOOKUP; zero for a plain listing, whose inode numbers the
    /// kernel does not keep).
    pub fn take(&self, text: String, references: u64) -> Snapshot {
        let mut table = self.lock();
        if let Some((_, newest)) = table.snapshots.iter_mut().next_back()
            && *newest.snapshot.bytes == *text.as_bytes()
        {
            newest.references += references;
            return newest.snapshot.clone();
        }
        // The newest is replaced: drop it unless the kernel holds it.
        if let Some(entry) = table.snapshots.last_entry()
            && entry.get().references == 0
        {
            entry.remove();
        }
        // 2^62 sequence numbers do not run out (a billion lookups a second
        // for well over a century); the mask only keeps the number valid.
        let sequence = table.next & MAX_STATUS_SEQUENCE;
        table.next = table.next.wrapping_add(1);
        let snapshot = Snapshot {
            sequence,
            bytes: Arc::from(text.into_bytes()),
            taken: SystemTime::now(),
        };
        table.snapshots.insert(
            sequence,
            Entry {
                snapshot: snapshot.clone(),
                references,
            },
        );
        while table.snapshots.len() > self.capacity {
            table.snapshots.pop_first();
        }
        snapshot
    }

    /// The snapshot `sequence`, if it is still kept.
    pub fn get(&self, sequence: u64) -> Option<Snapshot> {
        let table = self.lock();
        table
            .snapshots
            .get(&sequence)
            .map(|entry| entry.snapshot.clone())
    }

    /// The kernel dropped `count` references to snapshot `sequence`; it is
    /// dropped with the last unless it is the newest (which a later lookup
    /// with the same content reuses).
    pub fn forget(&self, sequence: u64, count: u64) {
        let mut table = self.lock();
        let newest = table.snapshots.keys().next_back().copied();
        if let Some(entry) = table.snapshots.get_mut(&sequence) {
            entry.references = entry.references.saturating_sub(count);
            if entry.references == 0 && Some(sequence) != newest {
                table.snapshots.remove(&sequence);
            }
        }
    }

    /// Number of snapshots kept.
    pub fn len(&self) -> usize {
        self.lock().snapshots.len()
    }

    /// Whether no snapshot is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every snapshot: the kernel connection is gone.
    pub fn clear(&self) {
        self.lock().snapshots.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `.status` shows the store's format, the format it was migrated from,
    /// and the background conversion running, with its progress.
    #[test]
    fn status_shows_the_store_format_and_its_migration() {
        use crate::catalog::{MigrationStatus, StoreStatus};
        use std::sync::atomic::Ordering::Relaxed;
        let catalog = Catalog::new();
        let doc: serde_json::Value = serde_json::from_str(&status_json(&catalog)).unwrap();
        assert!(doc.get("store").is_none(), "no store, no store section");
        let progress = Arc::new(crate::store::migrate::ConversionProgress::default());
        progress.keys_total.store(1000, Relaxed);
        progress.keys_done.store(250, Relaxed);
        catalog.set_store_status(StoreStatus {
            format: 2,
            opened_format: 1,
            migration: Some(MigrationStatus {
                step: "key index to format 2",
                db: "db".into(),
                version: "7".into(),
                versions_left: 3,
                progress,
            }),
        });
        let doc: serde_json::Value = serde_json::from_str(&status_json(&catalog)).unwrap();
        let store = &doc["store"];
        assert_eq!(store["format"], 2);
        assert_eq!(store["migrated_from"], 1);
        assert_eq!(store["migration"]["db"], "db");
        assert_eq!(store["migration"]["version"], "7");
        assert_eq!(store["migration"]["keys_done"], 250);
        assert_eq!(store["migration"]["keys_total"], 1000);
        assert_eq!(store["migration"]["versions_left"], 3);
        catalog.set_migration(None);
        let doc: serde_json::Value = serde_json::from_str(&status_json(&catalog)).unwrap();
        assert!(doc["store"].get("migration").is_none());
    }

    /// `.status` says where each version came from, and what is wrong with
    /// the source root as a whole.
    #[test]
    fn status_shows_origin_and_source_problems() {
        use crate::catalog::{InMemoryVersionData, Progress};
        let catalog = Catalog::new();
        let pairs = [(b"k".to_vec(), b"v".to_vec())];
        let v = InMemoryVersionData::version("db", "1", SystemTime::UNIX_EPOCH, pairs);
        let progress = Progress {
            files_done: 2,
            files_total: 2,
            bytes_done: 10,
            bytes_total: 10,
            records_done: 1,
        };
        catalog.publish_reused(v, std::time::Duration::ZERO, progress);
        let doc: serde_json::Value = serde_json::from_str(&status_json(&catalog)).unwrap();
        assert!(doc.get("source_problem").is_none());
        let version = &doc["databases"][0]["versions"][0];
        assert_eq!(version["origin"], "reused");
        assert_eq!(version["state"], "ACTIVE");
        assert_eq!(version["created_at"], "1970-01-01T00:00:00Z");
        assert_eq!(version["progress"]["files_done"], 2);
        assert_eq!(version["progress"]["bytes_total"], 10);
        catalog.set_source_problem(Some("the source root /x holds nothing".into()));
        let doc: serde_json::Value = serde_json::from_str(&status_json(&catalog)).unwrap();
        assert_eq!(doc["source_problem"], "the source root /x holds nothing");
    }

    #[test]
    fn a_snapshot_is_frozen_and_lives_while_referenced() {
        let snapshots = StatusSnapshots::default();
        let a = snapshots.take("a".into(), 1);
        let b = snapshots.take("bb".into(), 1);
        assert_ne!(a.sequence, b.sequence);
        assert_eq!(&*snapshots.get(a.sequence).unwrap().bytes, b"a");
        assert_eq!(&*snapshots.get(b.sequence).unwrap().bytes, b"bb");
        snapshots.forget(a.sequence, 1);
        assert!(snapshots.get(a.sequence).is_none());
        // The newest stays, unreferenced, for a lookup with equal content.
        snapshots.forget(b.sequence, 1);
        assert_eq!(snapshots.take("bb".into(), 1).sequence, b.sequence);
    }

    #[test]
    fn unchanged_content_keeps_its_inode_and_changed_content_gets_a_new_one() {
        let snapshots = StatusSnapshots::default();
        let a = snapshots.take("x".into(), 0);
        assert_eq!(snapshots.take("x".into(), 1).sequence, a.sequence);
        let b = snapshots.take("y".into(), 0);
        assert_ne!(b.sequence, a.sequence);
        // `a` is still referenced once.
        assert!(snapshots.get(a.sequence).is_some());
        // An unreferenced newest is dropped when replaced.
        let c = snapshots.take("z".into(), 0);
        assert!(snapshots.get(b.sequence).is_none());
        assert!(snapshots.get(c.sequence).is_some());
    }

    #[test]
    fn the_oldest_snapshot_beyond_the_bound_is_dropped() {
        let snapshots = StatusSnapshots::with_capacity(3);
        let taken: Vec<Snapshot> = (0..5).map(|i| snapshots.take(i.to_string(), 1)).collect();
        assert_eq!(snapshots.len(), 3);
        assert!(snapshots.get(taken[0].sequence).is_none());
        assert!(snapshots.get(taken[1].sequence).is_none());
        assert!(snapshots.get(taken[4].sequence).is_some());
        // A FORGET of a dropped snapshot is ignored.
        snapshots.forget(taken[0].sequence, 1);
        assert_eq!(snapshots.len(), 3);
    }
}
