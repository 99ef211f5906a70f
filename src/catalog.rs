//! The catalog: which databases exist, which version of each is being served,
//! and the state of every version the daemon knows about.
//!
//! This is the one place both front ends (the FUSE mount and the HTTP
//! sidecar) read from. A lookup is: `catalog.current(db)` (an atomic pointer
//! load, no lock) and then [`Version::get`] on the returned handle. Holding the
//! `Arc<Version>` pins that version's data: it stays readable, unchanged, until
//! the last handle is dropped, however many switches happen meanwhile.
//!
//! The refresh machinery is the only writer: it reports progress through
//! [`Catalog::set_state`], publishes a loaded version with
//! [`Catalog::publish`] (the atomic switch), and retires old versions with
//! [`Catalog::remove_database`] and [`Catalog::take_expired`]. Every change is
//! announced to listeners registered with [`Catalog::on_change`], called after
//! all catalog locks are released, so a listener may call back into the
//! catalog (the mount uses this to invalidate the kernel's cached entry for a
//! database from outside its request threads).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;

/// Read access to the data of one loaded version.
///
/// Keys are arbitrary byte strings. Besides point lookups, a version keeps its
/// keys in a sorted index so that the mount can list them in order and find
/// the keys under a prefix in logarithmic time (see `docs/NAMING.md`).
/// Ordinals are positions in that sorted order, `0..key_count()`.
///
/// Values are read in two steps: find where a value is ([`ValueRef`]), by
/// key or by ordinal, then read any range of it. A large value is read in
/// chunks (FUSE reads, HTTP bodies) without looking its key up again and
/// without decoding more of it than each chunk covers.
pub trait VersionData: Send + Sync + 'static {
    /// Where the value of `key` is, if `key` is in the version.
    fn locate(&self, key: &[u8]) -> Result<Option<ValueRef>, LookupError>;
    /// Where the value of the key at `ordinal` is.
    fn locate_ordinal(&self, ordinal: u64) -> Result<ValueRef, LookupError>;
    /// Bytes `[offset, offset + len)` of a value (clipped to its end):
    /// borrowed from the data where it is stored as is (`Some`), else
    /// decoded into `scratch` (`None`).
    fn read_value<'a>(
        &'a self,
        value: &ValueRef,
        offset: u64,
        len: usize,
        scratch: &mut Vec<u8>,
    ) -> Result<Option<&'a [u8]>, LookupError>;
    /// Number of distinct keys.
    fn key_count(&self) -> u64;
    /// The key at `ordinal` in ascending byte order.
    fn key_at(&self, ordinal: u64) -> Result<&[u8], LookupError>;
    /// Length of the value of the key at `ordinal` (what `stat` reports).
    fn value_len_at(&self, ordinal: u64) -> Result<u64, LookupError>;
    /// The first ordinal whose key is `>= key` (`key_count()` if none).
    fn lower_bound(&self, key: &[u8]) -> Result<u64, LookupError>;
    /// The local directory holding this data and its inode number, if the
    /// data lives in the local store: lets the janitor delete exactly this
    /// copy and never a rebuilt one that took its place.
    fn local_dir(&self) -> Option<(std::path::PathBuf, u64)> {
        None
    }
}

/// Where a value is in a version's data: which table, where in it, and how
/// long the value is. Only meaningful to the data that handed it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueRef {
    pub table: u32,
    pub address: u64,
    pub len: u64,
}

/// A lookup failed because the stored data is unreadable (for example a local
/// file was damaged after it was validated). Never "key not found".
///
/// The data layer's error (which names the file and byte offset) is kept as
/// the typed source; [`Version`] adds the database and version.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{db} version {version}: stored data is unreadable")]
pub struct LookupError {
    pub db: String,
    pub version: String,
    #[source]
    pub cause: Arc<dyn std::error::Error + Send + Sync>,
}

impl LookupError {
    /// An error of the data layer (or a message), without the db/version
    /// context, which [`Version`] fills in.
    pub fn new(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        LookupError {
            db: String::new(),
            version: String::new(),
            cause: Arc::from(cause.into()),
        }
    }
}

/// Process-wide counter giving every loaded version an id that is never
/// reused while the process lives (64 bits: it cannot run out).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// One loaded, servable version of one database. Immutable.
pub struct Version {
    db: String,
    name: String,
    id: u64,
    created_at: SystemTime,
    source_path: String,
    num_partitions: u32,
    /// By partition, whether this node holds it; `None`: all of them (a
    /// node of a cluster holds its own and asks peers for the others).
    held: Option<Vec<bool>>,
    data: Box<dyn VersionData>,
    /// Every key of a partial version, with value lengths but no values
    /// (see `cluster::directory`): what the mount of a cluster node lists
    /// and looks names up in. `None`: `data` has every key shown.
    directory: Option<Box<dyn VersionData>>,
}

/// Where a key that this node does not hold lives: its partition and, for
/// the keys sequins routes two ways, the alternate one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteKey {
    pub partition: u32,
    pub alternate: Option<u32>,
}

impl Version {
    /// Wraps loaded data. `created_at` is when the version was created on the
    /// source (or loaded, when the source has no time); `source_path` is how
    /// the status page shows where it came from.
    pub fn new(
        db: impl Into<String>,
        name: impl Into<String>,
        created_at: SystemTime,
        source_path: impl Into<String>,
        num_partitions: u32,
        data: Box<dyn VersionData>,
    ) -> Arc<Self> {
        Version::build(
            db,
            name,
            created_at,
            source_path,
            num_partitions,
            None,
            data,
            None,
        )
    }

    /// A version of which this node holds only the partitions `held` (a
    /// node of a cluster); `data` answers for those, and `directory`, when
    /// built, lists every key of the version (see [`Version::keys`]).
    #[allow(clippy::too_many_arguments)]
    pub fn partial(
        db: impl Into<String>,
        name: impl Into<String>,
        created_at: SystemTime,
        source_path: impl Into<String>,
        num_partitions: u32,
        held: &[u32],
        data: Box<dyn VersionData>,
        directory: Option<Box<dyn VersionData>>,
    ) -> Arc<Self> {
        let mut flags = vec![false; num_partitions as usize];
        for &p in held {
            if let Some(flag) = flags.get_mut(p as usize) {
                *flag = true;
            }
        }
        Version::build(
            db,
            name,
            created_at,
            source_path,
            num_partitions,
            Some(flags),
            data,
            directory,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        db: impl Into<String>,
        name: impl Into<String>,
        created_at: SystemTime,
        source_path: impl Into<String>,
        num_partitions: u32,
        held: Option<Vec<bool>>,
        data: Box<dyn VersionData>,
        directory: Option<Box<dyn VersionData>>,
    ) -> Arc<Self> {
        Arc::new(Version {
            db: db.into(),
            name: name.into(),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            created_at,
            source_path: source_path.into(),
            num_partitions,
            held,
            data,
            directory,
        })
    }

    /// The partitions this node holds, when not all of them.
    pub fn held_partitions(&self) -> Option<Vec<u32>> {
        self.held.as_ref().map(|flags| {
            (0..flags.len() as u32)
                .filter(|&p| flags[p as usize])
                .collect()
        })
    }

    /// Whether this node holds `partition`.
    pub fn holds(&self, partition: u32) -> bool {
        self.held
            .as_ref()
            .is_none_or(|flags| flags.get(partition as usize).copied().unwrap_or(false))
    }

    /// `None` when this node answers for `key` itself (it holds the key's
    /// partition or its alternate); else where the key lives, for asking a
    /// peer.
    pub fn remote(&self, key: &[u8]) -> Option<RemoteKey> {
        // A version without partitions has no keys: answered here (404).
        if self.held.is_none() || self.num_partitions == 0 {
            return None;
        }
        let (normal, alternate) = crate::partition::partitions(key, self.num_partitions);
        if self.holds(normal) || self.holds(alternate) {
            return None;
        }
        Some(RemoteKey {
            partition: normal,
            alternate: (alternate != normal).then_some(alternate),
        })
    }

    pub fn db(&self) -> &str {
        &self.db
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Unique for the lifetime of the process; see [`NEXT_ID`].
    pub fn id(&self) -> u64 {
        self.id
    }
    pub fn created_at(&self) -> SystemTime {
        self.created_at
    }
    pub fn source_path(&self) -> &str {
        &self.source_path
    }
    pub fn num_partitions(&self) -> u32 {
        self.num_partitions
    }

    /// Looks a key up. `Ok(None)` means the key is not in this version.
    ///
    /// The whole value at once: for small values and tests. Large values
    /// are read in ranges with [`Version::locate`] and
    /// [`Version::read_value`].
    pub fn get(&self, key: &[u8]) -> Result<Option<Cow<'_, [u8]>>, LookupError> {
        let Some(value) = self.locate(key)? else {
            return Ok(None);
        };
        let len = usize::try_from(value.len).unwrap_or(usize::MAX);
        let mut scratch = Vec::new();
        Ok(Some(
            match self.read_value(&value, 0, len, &mut scratch)? {
                Some(bytes) => Cow::Borrowed(bytes),
                None => Cow::Owned(scratch),
            },
        ))
    }

    /// Where the value of `key` is, if `key` is in this version.
    pub fn locate(&self, key: &[u8]) -> Result<Option<ValueRef>, LookupError> {
        self.data.locate(key).map_err(|e| self.context(e))
    }

    /// Where the value of the key at `ordinal` (of [`Version::keys`]) is,
    /// if this node holds it.
    pub fn locate_ordinal(&self, ordinal: u64) -> Result<ValueRef, LookupError> {
        let Some(directory) = &self.directory else {
            return self
                .data
                .locate_ordinal(ordinal)
                .map_err(|e| self.context(e));
        };
        let key = directory.key_at(ordinal).map_err(|e| self.context(e))?;
        match self.data.locate(key) {
            Ok(Some(value)) => Ok(value),
            Ok(None) => Err(self.context(LookupError::new(format!(
                "the key at ordinal {ordinal} is listed but not held by this node"
            )))),
            Err(e) => Err(self.context(e)),
        }
    }

    /// A range of a value; see [`VersionData::read_value`].
    pub fn read_value<'a>(
        &'a self,
        value: &ValueRef,
        offset: u64,
        len: usize,
        scratch: &mut Vec<u8>,
    ) -> Result<Option<&'a [u8]>, LookupError> {
        self.data
            .read_value(value, offset, len, scratch)
            .map_err(|e| self.context(e))
    }

    /// The sorted key index of this version: every key, also those of
    /// partitions held by peers once the version has a directory.
    pub fn keys(&self) -> &dyn VersionData {
        self.directory.as_deref().unwrap_or(self.data.as_ref())
    }

    /// The keys this node holds (all of them outside a cluster).
    pub fn local_keys(&self) -> &dyn VersionData {
        self.data.as_ref()
    }

    /// Whether [`Version::keys`] lists the keys of peers' partitions too.
    pub fn has_directory(&self) -> bool {
        self.directory.is_some()
    }

    /// Whether [`Version::keys`] is every key of the version: it holds
    /// every partition, or has a directory. A mount shows only such
    /// versions, so that a listing is never a subset.
    pub fn lists_every_key(&self) -> bool {
        self.directory.is_some() || (0..self.num_partitions).all(|p| self.holds(p))
    }

    /// Adds this version's db and name to an error from its data.
    pub fn context(&self, mut err: LookupError) -> LookupError {
        if err.db.is_empty() {
            err.db = self.db.clone();
            err.version = self.name.clone();
        }
        err
    }
}

impl std::fmt::Debug for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Version")
            .field("db", &self.db)
            .field("name", &self.name)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The lifecycle states of a version, named as sequins reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionState {
    /// Being downloaded and indexed.
    Building,
    /// Built (this node's partitions of it, in a cluster) and answering
    /// peers, waiting for the cluster to agree before it is served.
    Available,
    /// The version being served.
    Active,
    /// Superseded (or its database is gone); deleted once the grace period
    /// has passed and no reader holds it.
    Removing,
    /// The build failed; the previous version keeps serving.
    Error,
}

impl std::fmt::Display for VersionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VersionState::Building => "BUILDING",
            VersionState::Available => "AVAILABLE",
            VersionState::Active => "ACTIVE",
            VersionState::Removing => "REMOVING",
            VersionState::Error => "ERROR",
        })
    }
}

/// How far a load has got. Totals are known once the source was listed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    pub files_done: u64,
    pub files_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub records_done: u64,
}

/// The live counters of a load in flight. The loader adds to them as it
/// goes; the catalog reads them whenever a status is asked for, so a status
/// is never behind the load (records are added per batch of a few thousand,
/// bytes as they are read).
#[derive(Debug, Default)]
pub struct LoadCounters {
    pub files_total: AtomicU64,
    pub files_done: AtomicU64,
    pub bytes_total: AtomicU64,
    pub bytes_done: AtomicU64,
    pub records_done: AtomicU64,
}

impl LoadCounters {
    pub fn snapshot(&self) -> Progress {
        Progress {
            files_done: self.files_done.load(Ordering::Relaxed),
            files_total: self.files_total.load(Ordering::Relaxed),
            bytes_done: self.bytes_done.load(Ordering::Relaxed),
            bytes_total: self.bytes_total.load(Ordering::Relaxed),
            records_done: self.records_done.load(Ordering::Relaxed),
        }
    }
}

/// Where a served version came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Origin {
    /// Loaded from the source by this process.
    #[default]
    Built,
    /// Found complete in the local store at start-up and served again
    /// without loading anything; its progress is the load that built it.
    Reused,
}

impl Origin {
    /// How status documents name it.
    pub fn name(self) -> &'static str {
        match self {
            Origin::Built => "built",
            Origin::Reused => "reused",
        }
    }
}

/// An error kept for a status page: typed until it is shown.
pub type StatusError = Arc<dyn std::error::Error + Send + Sync>;

/// What the catalog knows about one version of one database, for status
/// pages, `.status` and metrics.
#[derive(Debug, Clone)]
pub struct VersionStatus {
    pub version: String,
    pub state: VersionState,
    /// Where the version lives in the source root.
    pub path: String,
    pub num_partitions: u32,
    /// The partitions this node holds, when not all of them (cluster mode).
    pub held_partitions: Option<Vec<u32>>,
    /// When the version was created on the source.
    pub created_at: SystemTime,
    /// When it became the served version, if it has.
    pub active_at: Option<SystemTime>,
    /// Whether this is the version being served now.
    pub current: bool,
    /// Where it came from (meaningful once it is served).
    pub origin: Origin,
    /// The load's progress: live while BUILDING, final afterwards.
    pub progress: Progress,
    /// Number of keys, once loaded.
    pub num_keys: Option<u64>,
    /// Why the version is in state ERROR.
    pub error: Option<StatusError>,
}

impl VersionStatus {
    /// A version just seen, in `state`, with nothing else known yet.
    pub fn new(version: &str, state: VersionState, path: String) -> Self {
        VersionStatus {
            version: version.to_string(),
            state,
            path,
            num_partitions: 0,
            held_partitions: None,
            created_at: SystemTime::now(),
            active_at: None,
            current: false,
            origin: Origin::Built,
            progress: Progress::default(),
            num_keys: None,
            error: None,
        }
    }

    /// The error with its causes, as status pages show it.
    pub fn error_text(&self) -> Option<String> {
        self.error
            .as_deref()
            .map(|e| crate::error_chain::error_chain(e as &(dyn std::error::Error + 'static)))
    }
}

/// The status of one database: all its versions, oldest name first.
#[derive(Debug, Clone)]
pub struct DatabaseStatus {
    pub name: String,
    /// The version served (none while offline).
    pub current: Option<String>,
    pub versions: Vec<VersionStatus>,
    /// Taken offline through its state.
    pub offline: bool,
    /// Its state in the source root, if it has one.
    pub state: Option<crate::lifecycle::DatabaseState>,
}

/// A change announced to [`Catalog::on_change`] listeners.
#[derive(Debug, Clone)]
pub enum CatalogEvent {
    /// A build of `db`/`version` started.
    Building { db: String, version: String },
    /// `db` now serves `version` (its first version, or a switch).
    Switched { db: String, version: String },
    /// `db` is no longer served.
    Removed { db: String },
    /// The data of `db`/`version` was deleted from the local store.
    Deleted { db: String, version: String },
}

type Listener = Box<dyn Fn(&CatalogEvent) + Send + Sync>;

/// Warms a version up before it is switched in: the mount's pre-warming
/// (see `fs::fuse::prewarm`). Called by [`Catalog::warm_for_switch`].
pub trait SwitchWarmer: Send + Sync {
    /// `next` is about to replace `current` (same database); it is held
    /// (and listed under `.versions/`) already. Returns once `next` is
    /// warm or the warmer's own time limit has passed; it may go on
    /// warming in the background.
    fn warm(&self, current: &Arc<Version>, next: &Arc<Version>);
}

/// One database: the pointer to its current version and the versions it
/// still holds.
struct Database {
    current: ArcSwapOption<Version>,
    /// Taken offline through its state (see `lifecycle::state`): hidden
    /// from the front ends, its versions kept.
    offline: std::sync::atomic::AtomicBool,
    inner: Mutex<DatabaseInner>,
}

#[derive(Default)]
struct DatabaseInner {
    /// Status per version name, in name order.
    versions: BTreeMap<String, VersionStatus>,
    /// The live counters of versions being loaded, by name.
    loading: BTreeMap<String, Arc<LoadCounters>>,
    /// Superseded versions kept for their grace period, with the instant it
    /// ends.
    retired: Vec<(Arc<Version>, Instant)>,
    /// A version built and waiting for the cluster to agree on it (see
    /// [`Catalog::prepare`]).
    prepared: Option<Arc<Version>>,
    /// Its state in the source root as last read, if it has one.
    state: Option<crate::lifecycle::DatabaseState>,
}

/// The set of databases; see the module docs.
#[derive(Default)]
pub struct Catalog {
    dbs: RwLock<BTreeMap<String, Arc<Database>>>,
    listeners: RwLock<Vec<Listener>>,
    /// Called before a switch; weak, so an unmounted mount goes away.
    warmers: RwLock<Vec<std::sync::Weak<dyn SwitchWarmer>>>,
    /// What is wrong with the source root as a whole, as of the last
    /// refresh (it cannot be listed, or holds no databases).
    source_problem: Mutex<Option<String>>,
    /// The local store's format and migration, for `.status`.
    store: Mutex<StoreStatus>,
}

/// The local store as `.status` shows it.
#[derive(Debug, Clone, Default)]
pub struct StoreStatus {
    /// The format it has now.
    pub format: u32,
    /// The format it had when this process opened it.
    pub opened_format: u32,
    /// The background conversion running, if one is.
    pub migration: Option<MigrationStatus>,
}

/// A background conversion of the store's migration (see
/// [`crate::store::migrate`]).
#[derive(Debug, Clone)]
pub struct MigrationStatus {
    pub step: &'static str,
    pub db: String,
    pub version: String,
    /// Versions still to convert after this one.
    pub versions_left: usize,
    pub progress: Arc<crate::store::migrate::ConversionProgress>,
}

impl Catalog {
    pub fn new() -> Arc<Self> {
        Arc::new(Catalog::default())
    }

    pub fn set_store_status(&self, status: StoreStatus) {
        *self.store.lock().unwrap_or_else(|e| e.into_inner()) = status;
    }

    pub fn store_status(&self) -> StoreStatus {
        self.store.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sets (or clears) the migration shown in [`Catalog::store_status`].
    pub fn set_migration(&self, migration: Option<MigrationStatus>) {
        self.store
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .migration = migration;
    }

    /// The version of `db` being served now, if any (none while the
    /// database is offline). Lock-free apart from a read lock on the
    /// (rarely written) database table.
    pub fn current(&self, db: &str) -> Option<Arc<Version>> {
        let dbs = self.dbs.read().unwrap_or_else(|e| e.into_inner());
        let database = dbs.get(db)?;
        if database.offline.load(Ordering::Acquire) {
            return None;
        }
        database.current.load_full()
    }

    /// The version of `db` that is current, whether or not the database is
    /// offline: what the refresh machinery plans from.
    pub fn active(&self, db: &str) -> Option<Arc<Version>> {
        self.database(db)?.current.load_full()
    }

    /// Every database that has a version being served, with that version,
    /// in name order (offline databases are not served).
    pub fn served(&self) -> Vec<Arc<Version>> {
        let dbs = self.dbs.read().unwrap_or_else(|e| e.into_inner());
        dbs.values()
            .filter(|d| !d.offline.load(Ordering::Acquire))
            .filter_map(|d| d.current.load_full())
            .collect()
    }

    /// Every version of `db` still held: the current one and those in their
    /// grace period, in name order. None while the database is offline
    /// (see [`Catalog::held_versions_even_offline`]).
    pub fn held_versions(&self, db: &str) -> Vec<Arc<Version>> {
        match self.database(db) {
            Some(database) if !database.offline.load(Ordering::Acquire) => {
                self.held_versions_even_offline(db)
            }
            _ => Vec::new(),
        }
    }

    /// [`Catalog::held_versions`], also while the database is offline.
    pub fn held_versions_even_offline(&self, db: &str) -> Vec<Arc<Version>> {
        let Some(database) = self.database(db) else {
            return Vec::new();
        };
        let mut held: Vec<Arc<Version>> = database.current.load_full().into_iter().collect();
        let inner = database.inner.lock().unwrap_or_else(|e| e.into_inner());
        held.extend(inner.retired.iter().map(|(v, _)| Arc::clone(v)));
        held.extend(inner.prepared.iter().cloned());
        held.sort_by(|a, b| a.name.cmp(&b.name));
        held.dedup_by(|a, b| a.name == b.name);
        held
    }

    /// A held version of `db` by name.
    pub fn held_version(&self, db: &str, version: &str) -> Option<Arc<Version>> {
        self.held_versions(db)
            .into_iter()
            .find(|v| v.name == version)
    }

    /// Records `db`'s state as read from the source root (`None`: it has no
    /// state object, so it is online and unpinned) and takes the database
    /// offline or brings it back online accordingly, at once: the front
    /// ends stop or start showing it, and the mount is told.
    pub fn set_state(&self, db: &str, state: Option<crate::lifecycle::DatabaseState>) {
        let database = self.database_or_insert(db);
        let offline = state.as_ref().is_some_and(|s| !s.online);
        database
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .state = state;
        let was = database.offline.swap(offline, Ordering::AcqRel);
        if was == offline {
            return;
        }
        match (offline, database.current.load_full()) {
            (true, _) => self.notify(&CatalogEvent::Removed { db: db.to_string() }),
            (false, Some(version)) => self.notify(&CatalogEvent::Switched {
                db: db.to_string(),
                version: version.name.clone(),
            }),
            (false, None) => {}
        }
        if offline {
            tracing::info!(db, "database taken offline by its state in the source root");
        } else {
            tracing::info!(db, "database back online by its state in the source root");
        }
    }

    /// `db`'s state as last read from the source (see
    /// [`Catalog::set_state`]); `None` without one.
    pub fn state(&self, db: &str) -> Option<crate::lifecycle::DatabaseState> {
        let database = self.database(db)?;
        let inner = database.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.state.clone()
    }

    /// Whether `db` is offline (see [`Catalog::set_state`]).
    pub fn is_offline(&self, db: &str) -> bool {
        self.database(db)
            .is_some_and(|d| d.offline.load(Ordering::Acquire))
    }

    /// Names of all databases the catalog knows, including those with no
    /// servable version (for example only ERROR versions).
    pub fn database_names(&self) -> Vec<String> {
        let dbs = self.dbs.read().unwrap_or_else(|e| e.into_inner());
        dbs.keys().cloned().collect()
    }

    /// A snapshot of every database's status.
    pub fn status(&self) -> Vec<DatabaseStatus> {
        let dbs: Vec<(String, Arc<Database>)> = {
            let dbs = self.dbs.read().unwrap_or_else(|e| e.into_inner());
            dbs.iter()
                .map(|(k, v)| (k.clone(), Arc::clone(v)))
                .collect()
        };
        dbs.into_iter()
            .map(|(name, db)| {
                let offline = db.offline.load(Ordering::Acquire);
                let current = db.current.load_full().map(|v| v.name.clone());
                let inner = db.inner.lock().unwrap_or_else(|e| e.into_inner());
                let versions = inner
                    .versions
                    .values()
                    .cloned()
                    .map(|mut s| {
                        s.current = current.as_deref() == Some(s.version.as_str());
                        if let Some(live) = inner.loading.get(&s.version) {
                            s.progress = live.snapshot();
                        }
                        s
                    })
                    .collect();
                DatabaseStatus {
                    name,
                    current: current.filter(|_| !offline),
                    versions,
                    offline,
                    state: inner.state.clone(),
                }
            })
            .collect()
    }

    /// The status of one database.
    pub fn database_status(&self, db: &str) -> Option<DatabaseStatus> {
        self.status().into_iter().find(|s| s.name == db)
    }

    /// Records what is wrong with the source root as a whole (`None`: nothing).
    pub fn set_source_problem(&self, problem: Option<String>) {
        *self
            .source_problem
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = problem;
    }

    /// What is wrong with the source root, as of the last refresh.
    pub fn source_problem(&self) -> Option<String> {
        self.source_problem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Registers a listener called after every change, outside catalog locks.
    pub fn on_change(&self, listener: impl Fn(&CatalogEvent) + Send + Sync + 'static) {
        self.listeners
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(listener));
    }

    /// Registers a warmer that [`Catalog::warm_for_switch`] calls; it is
    /// dropped once nothing else holds it.
    pub fn add_switch_warmer(&self, warmer: std::sync::Weak<dyn SwitchWarmer>) {
        self.warmers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(warmer);
    }

    /// Warms `next` up before [`Catalog::publish`] switches it in: makes
    /// it held (state AVAILABLE, listed under `.versions/<db>/`) and calls
    /// every registered [`SwitchWarmer`], each returning within its own
    /// time limit. Returns at once when there is nothing to warm from (no
    /// served version, or `next` is a rebuild of it) or nobody to warm.
    /// Blocks: call it from a thread that may wait (not an async task).
    pub fn warm_for_switch(&self, next: &Arc<Version>) {
        let Some(current) = self.current(&next.db) else {
            return;
        };
        if current.name == next.name {
            return;
        }
        let warmers: Vec<Arc<dyn SwitchWarmer>> = {
            let mut warmers = self.warmers.write().unwrap_or_else(|e| e.into_inner());
            warmers.retain(|w| w.strong_count() > 0);
            warmers
                .iter()
                .filter_map(std::sync::Weak::upgrade)
                .collect()
        };
        if warmers.is_empty() || !self.stage(next) {
            return;
        }
        for warmer in warmers {
            warmer.warm(&current, next);
        }
    }

    /// Holds `next` until it is published, like a prepared version; false
    /// if another version is prepared (a cluster waiting for agreement on
    /// it), which is left alone.
    fn stage(&self, next: &Arc<Version>) -> bool {
        let database = self.database_or_insert(&next.db);
        let mut inner = database.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.prepared.as_ref().is_some_and(|p| p.name != next.name) {
            return false;
        }
        inner.prepared = Some(Arc::clone(next));
        if let Some(status) = inner.versions.get_mut(&next.name)
            && status.state == VersionState::Building
        {
            status.state = VersionState::Available;
        }
        true
    }

    /// The version of `db` held but not served yet (see
    /// [`Catalog::prepare`] and [`Catalog::warm_for_switch`]).
    pub fn prepared(&self, db: &str) -> Option<Arc<Version>> {
        let database = self.database(db)?;
        let inner = database.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.prepared.clone()
    }

    /// Records that `db`/`version` is being loaded, with the load's live
    /// counters. Creates the database entry if new.
    pub fn start_load(&self, db: &str, version: &str, path: String, counters: Arc<LoadCounters>) {
        {
            let database = self.database_or_insert(db);
            let mut inner = database.inner.lock().unwrap_or_else(|e| e.into_inner());
            inner.versions.insert(
                version.to_string(),
                VersionStatus::new(version, VersionState::Building, path),
            );
            inner.loading.insert(version.to_string(), counters);
        }
        self.notify(&CatalogEvent::Building {
            db: db.to_string(),
            version: version.to_string(),
        });
    }

    /// Records that loading `db`/`version` failed: state ERROR with the
    /// error, and the progress it had made. The previous version (if any)
    /// keeps serving.
    pub fn load_failed(&self, db: &str, version: &str, path: String, error: StatusError) {
        let database = self.database_or_insert(db);
        let mut inner = database.inner.lock().unwrap_or_else(|e| e.into_inner());
        let progress = inner
            .loading
            .remove(version)
            .map(|live| live.snapshot())
            .unwrap_or_default();
        let status = inner
            .versions
            .entry(version.to_string())
            .or_insert_with(|| VersionStatus::new(version, VersionState::Error, path.clone()));
        status.state = VersionState::Error;
        status.path = path;
        status.progress = progress;
        status.error = Some(error);
    }

    /// Forgets a load that was cancelled (the daemon is stopping): it is
    /// neither served nor an error.
    pub fn load_cancelled(&self, db: &str, version: &str) {
        if let Some(database) = self.database(db) {
            let mut inner = database.inner.lock().unwrap_or_else(|e| e.into_inner());
            inner.loading.remove(version);
            if inner.prepared.as_ref().is_some_and(|v| v.name == version) {
                inner.prepared = None;
            }
            if matches!(
                inner.versions.get(version).map(|s| s.state),
                Some(VersionState::Building | VersionState::Available)
            ) {
                inner.versions.remove(version);
            }
        }
    }

    /// Holds a built version that is not served yet (state AVAILABLE): a
    /// node of a cluster answers peers' requests naming it (`?proxy=`)
    /// while it waits for every partition to have enough replicas.
    /// [`Catalog::publish`] then serves it; a newer prepared version
    /// replaces it.
    pub fn prepare(&self, version: Arc<Version>) {
        let database = self.database_or_insert(&version.db);
        let mut inner = database.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(status) = inner.versions.get_mut(&version.name) {
            status.state = VersionState::Available;
            status.num_partitions = version.num_partitions;
            status.held_partitions = version.held_partitions();
        }
        if let Some(old) = inner.prepared.replace(version)
            && let Some(status) = inner.versions.get_mut(&old.name)
            && status.state == VersionState::Available
        {
            inner.versions.remove(&old.name.clone());
        }
    }

    /// Makes `version` the served version of its database: the atomic switch.
    /// Readers that already hold the previous version keep it; new lookups see
    /// only the new one. The previous version is retired for `grace`.
    ///
    /// The version's progress becomes its load's final figures (from the
    /// counters given to [`Catalog::start_load`], if it was loaded so).
    pub fn publish(&self, version: Arc<Version>, path: String, grace: Duration) {
        self.publish_with_origin(version, path, grace, Origin::Built, None, None);
    }

    /// [`Catalog::publish`] for a version found complete in the local store
    /// at start-up; `progress` is the load that built it (its manifest).
    pub fn publish_reused(&self, version: Arc<Version>, grace: Duration, progress: Progress) {
        let path = version.source_path().to_string();
        self.publish_with_origin(version, path, grace, Origin::Reused, Some(progress), None);
    }

    /// Switches in `version`, a converted copy of the version with id
    /// `replaced` made by a migration of the local store, if that version
    /// is still its database's current one; returns whether it was.
    pub fn publish_converted(
        &self,
        version: Arc<Version>,
        replaced: u64,
        grace: Duration,
        progress: Progress,
    ) -> bool {
        let path = version.source_path().to_string();
        self.publish_with_origin(
            version,
            path,
            grace,
            Origin::Reused,
            Some(progress),
            Some(replaced),
        )
    }

    /// The switch; with `replacing`, only if the current version has that
    /// id (checked under the database's lock). Returns whether it switched.
    fn publish_with_origin(
        &self,
        version: Arc<Version>,
        path: String,
        grace: Duration,
        origin: Origin,
        progress: Option<Progress>,
        replacing: Option<u64>,
    ) -> bool {
        let database = self.database_or_insert(&version.db);
        {
            let mut inner = database.inner.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(id) = replacing
                && database.current.load().as_ref().map(|c| c.id) != Some(id)
            {
                return false;
            }
            let now = SystemTime::now();
            if inner
                .prepared
                .as_ref()
                .is_some_and(|p| p.name == version.name)
            {
                inner.prepared = None;
            }
            let previous = database.current.swap(Some(Arc::clone(&version)));
            // A rebuild of the served version (a cluster node picking up
            // partitions) replaces it under the same name: its files were
            // replaced already, and readers holding the old copy keep it
            // until they are done. Retiring it would delete the name.
            if let Some(prev) = previous.filter(|prev| prev.name != version.name) {
                if let Some(s) = inner.versions.get_mut(&prev.name) {
                    s.state = VersionState::Removing;
                }
                inner.retired.push((prev, Instant::now() + grace));
            }
            let live = inner.loading.remove(&version.name);
            let status = inner
                .versions
                .entry(version.name.clone())
                .or_insert_with(|| {
                    VersionStatus::new(&version.name, VersionState::Building, String::new())
                });
            status.origin = origin;
            if let Some(progress) = progress.or_else(|| live.map(|l| l.snapshot())) {
                status.progress = progress;
            }
            status.path = path;
            status.num_partitions = version.num_partitions;
            status.held_partitions = version.held_partitions();
            status.created_at = version.created_at;
            status.state = VersionState::Active;
            status.active_at = Some(now);
            status.error = None;
            status.num_keys = Some(version.local_keys().key_count());
        }
        self.notify(&CatalogEvent::Switched {
            db: version.db.clone(),
            version: version.name.clone(),
        });
        true
    }

    /// Stops serving `db` (it is gone from the source). Its current version is
    /// retired for `grace` like a superseded one.
    pub fn remove_database(&self, db: &str, grace: Duration) {
        let Some(database) = self.database(db) else {
            return;
        };
        {
            let mut inner = database.inner.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(prev) = database.current.swap(None) {
                if let Some(s) = inner.versions.get_mut(&prev.name) {
                    s.state = VersionState::Removing;
                }
                inner.retired.push((prev, Instant::now() + grace));
            }
            inner
                .versions
                .retain(|_, s| s.state == VersionState::Removing);
        }
        self.notify(&CatalogEvent::Removed { db: db.to_string() });
    }

    /// Takes the retired versions whose grace period has ended and that no
    /// reader holds any more, forgetting them. The caller deletes their data
    /// (outside any lock) and then calls [`Catalog::deleted`].
    pub fn take_expired(&self, now: Instant) -> Vec<Arc<Version>> {
        let dbs: Vec<(String, Arc<Database>)> = {
            let dbs = self.dbs.read().unwrap_or_else(|e| e.into_inner());
            dbs.iter()
                .map(|(k, v)| (k.clone(), Arc::clone(v)))
                .collect()
        };
        let mut expired = Vec::new();
        for (_, database) in dbs {
            let mut inner = database.inner.lock().unwrap_or_else(|e| e.into_inner());
            let retired = std::mem::take(&mut inner.retired);
            for (version, deadline) in retired {
                // One reference is ours (in `retired`); any other is a reader.
                if deadline <= now && Arc::strong_count(&version) == 1 {
                    inner.versions.remove(&version.name);
                    expired.push(version);
                } else {
                    inner.retired.push((version, deadline));
                }
            }
        }
        expired
    }

    /// Keeps a retired `db`/`version` for at least `keep` from now (a peer
    /// of a cluster still asks for it). Returns whether it was retired.
    pub fn extend_retirement(&self, db: &str, version: &str, keep: Duration) -> bool {
        let Some(database) = self.database(db) else {
            return false;
        };
        // Peers name the current version in nearly every request: nothing
        // to extend, and no lock to take.
        if database
            .current
            .load()
            .as_ref()
            .is_some_and(|v| v.name == version)
        {
            return false;
        }
        let until = Instant::now() + keep;
        let mut inner = database.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut found = false;
        for (retired, deadline) in inner.retired.iter_mut() {
            if retired.name == version {
                *deadline = (*deadline).max(until);
                found = true;
            }
        }
        found
    }

    /// Announces that a version's local data was deleted, and forgets a
    /// database entry that has nothing left to report.
    pub fn deleted(&self, db: &str, version: &str) {
        {
            let mut dbs = self.dbs.write().unwrap_or_else(|e| e.into_inner());
            if let Some(database) = dbs.get(db) {
                let inner = database.inner.lock().unwrap_or_else(|e| e.into_inner());
                let empty = database.current.load().is_none()
                    && inner.retired.is_empty()
                    && inner.versions.is_empty();
                drop(inner);
                if empty {
                    dbs.remove(db);
                }
            }
        }
        self.notify(&CatalogEvent::Deleted {
            db: db.to_string(),
            version: version.to_string(),
        });
    }

    fn database(&self, db: &str) -> Option<Arc<Database>> {
        let dbs = self.dbs.read().unwrap_or_else(|e| e.into_inner());
        dbs.get(db).cloned()
    }

    fn database_or_insert(&self, db: &str) -> Arc<Database> {
        if let Some(d) = self.database(db) {
            return d;
        }
        let mut dbs = self.dbs.write().unwrap_or_else(|e| e.into_inner());
        Arc::clone(dbs.entry(db.to_string()).or_insert_with(|| {
            Arc::new(Database {
                current: ArcSwapOption::empty(),
                offline: std::sync::atomic::AtomicBool::new(false),
                inner: Mutex::new(DatabaseInner::default()),
            })
        }))
    }

    fn notify(&self, event: &CatalogEvent) {
        let listeners = self.listeners.read().unwrap_or_else(|e| e.into_inner());
        for listener in listeners.iter() {
            listener(event);
        }
    }
}

/// Sorted in-memory version data: for tests, examples and tools that build a
/// small database without a local store.
pub struct InMemoryVersionData {
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl InMemoryVersionData {
    /// A whole version of these pairs, created at `created_at`, with one
    /// partition and the source path `mem://<db>/<name>`: for tests,
    /// examples and benchmarks. Later pairs win over earlier ones with the
    /// same key.
    pub fn version(
        db: &str,
        name: &str,
        created_at: SystemTime,
        pairs: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
    ) -> Arc<Version> {
        Version::new(
            db,
            name,
            created_at,
            format!("mem://{db}/{name}"),
            1,
            Box::new(InMemoryVersionData::new(pairs)),
        )
    }

    /// Later pairs win over earlier ones with the same key.
    pub fn new(pairs: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) -> Self {
        let mut map = BTreeMap::new();
        for (k, v) in pairs {
            map.insert(k, v);
        }
        InMemoryVersionData {
            pairs: map.into_iter().collect(),
        }
    }
}

impl VersionData for InMemoryVersionData {
    fn locate(&self, key: &[u8]) -> Result<Option<ValueRef>, LookupError> {
        match self.pairs.binary_search_by(|(k, _)| k.as_slice().cmp(key)) {
            Ok(i) => self.locate_ordinal(i as u64).map(Some),
            Err(_) => Ok(None),
        }
    }
    fn locate_ordinal(&self, ordinal: u64) -> Result<ValueRef, LookupError> {
        Ok(ValueRef {
            table: 0,
            address: ordinal,
            len: self.value_len_at(ordinal)?,
        })
    }
    fn read_value<'a>(
        &'a self,
        value: &ValueRef,
        offset: u64,
        len: usize,
        _scratch: &mut Vec<u8>,
    ) -> Result<Option<&'a [u8]>, LookupError> {
        let bytes = self
            .pairs
            .get(value.address as usize)
            .map(|(_, v)| v.as_slice())
            .ok_or_else(|| LookupError::new(format!("address {} out of range", value.address)))?;
        let start = usize::try_from(offset).map_or(bytes.len(), |o| o.min(bytes.len()));
        let end = start.saturating_add(len).min(bytes.len());
        Ok(Some(&bytes[start..end]))
    }
    fn key_count(&self) -> u64 {
        self.pairs.len() as u64
    }
    fn key_at(&self, ordinal: u64) -> Result<&[u8], LookupError> {
        self.pairs
            .get(ordinal as usize)
            .map(|(k, _)| k.as_slice())
            .ok_or_else(|| LookupError::new(format!("ordinal {ordinal} out of range")))
    }
    fn value_len_at(&self, ordinal: u64) -> Result<u64, LookupError> {
        self.pairs
            .get(ordinal as usize)
            .map(|(_, v)| v.len() as u64)
            .ok_or_else(|| LookupError::new(format!("ordinal {ordinal} out of range")))
    }
    fn lower_bound(&self, key: &[u8]) -> Result<u64, LookupError> {
        Ok(self.pairs.partition_point(|(k, _)| k.as_slice() < key) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(name: &str) -> Arc<Version> {
        InMemoryVersionData::version(
            "db",
            name,
            SystemTime::UNIX_EPOCH,
            [(b"k".to_vec(), name.as_bytes().to_vec())],
        )
    }

    #[test]
    fn a_prepared_version_answers_peers_before_it_is_served() {
        let catalog = Catalog::new();
        catalog.publish(version("1"), String::new(), Duration::ZERO);
        catalog.start_load("db", "2", String::new(), Arc::default());
        catalog.prepare(version("2"));
        assert_eq!(catalog.current("db").unwrap().name(), "1");
        assert!(catalog.held_version("db", "2").is_some());
        let status = catalog.database_status("db").unwrap();
        let two = status.versions.iter().find(|v| v.version == "2").unwrap();
        assert_eq!(two.state, VersionState::Available);

        catalog.publish(version("2"), String::new(), Duration::ZERO);
        assert_eq!(catalog.current("db").unwrap().name(), "2");
        // Cancelled while prepared: forgotten.
        catalog.start_load("db", "3", String::new(), Arc::default());
        catalog.prepare(version("3"));
        catalog.load_cancelled("db", "3");
        assert!(catalog.held_version("db", "3").is_none());
    }

    #[test]
    fn a_peer_reading_a_retired_version_keeps_it() {
        let catalog = Catalog::new();
        catalog.publish(version("1"), String::new(), Duration::ZERO);
        catalog.publish(version("2"), String::new(), Duration::ZERO);
        assert!(catalog.extend_retirement("db", "1", Duration::from_secs(600)));
        assert!(!catalog.extend_retirement("db", "2", Duration::from_secs(600)));
        let now = Instant::now();
        assert!(
            catalog
                .take_expired(now + Duration::from_secs(1))
                .is_empty()
        );
        let expired = catalog.take_expired(now + Duration::from_secs(601));
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].name(), "1");
    }

    /// A rebuild of the served version (a cluster node picking up
    /// partitions) replaces it without retiring anything: retiring the old
    /// copy would later delete the name that the rebuild now serves.
    #[test]
    fn republishing_the_served_version_retires_nothing() {
        let catalog = Catalog::new();
        catalog.publish(version("1"), String::new(), Duration::ZERO);
        let rebuilt = version("1");
        catalog.publish(Arc::clone(&rebuilt), String::new(), Duration::ZERO);
        assert!(Arc::ptr_eq(&catalog.current("db").unwrap(), &rebuilt));
        assert!(catalog.take_expired(Instant::now()).is_empty());
        let status = catalog.database_status("db").unwrap();
        assert_eq!(status.versions.len(), 1);
        assert_eq!(status.versions[0].state, VersionState::Active);
    }
}
