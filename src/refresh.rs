//! Refresh: the one routine that brings the catalog in line with the source
//! root, the triggers that start it, and the janitor that deletes retired
//! versions.
//!
//! A refresh lists the databases, and for each the versions; the greatest
//! valid version name is the target. A target greater than what is served is
//! built in the background (one build per database at a time) while the
//! current version keeps serving, then published with the catalog's atomic
//! switch. A database gone from the source stops being served. Nothing is
//! ever rolled back to an older name, and a failed or empty listing never
//! removes anything.
//!
//! Triggers (startup, `refresh_period`, SIGHUP, `.refresh`) all go through a
//! [`RefreshHandle`]; triggers that arrive during a run coalesce into one more
//! run.

mod migrations;

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use crate::catalog::{Catalog, LoadCounters, Progress, Version};
use crate::cluster::{ClusterNode, directory};
use crate::error_chain::ErrorChain;
use crate::load::{LoadError, LoadErrorKind, Loader};
use crate::metrics::Metrics;
use crate::source::Source;
use crate::store::keyindex::SortedRun;
use crate::store::{LocalStore, LocalVersion, StoreError};

/// A cheap, clonable handle that asks for a refresh. Triggers that arrive
/// while a refresh is pending or running coalesce into one more run.
#[derive(Clone, Default)]
pub struct RefreshHandle {
    wanted: Arc<Notify>,
}

impl RefreshHandle {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks for a refresh and returns at once. Safe to call from any thread,
    /// including FUSE request threads and signal handlers' tasks.
    pub fn trigger(&self) {
        // notify_one stores a single permit when nobody waits: many triggers
        // during a run become exactly one further run.
        self.wanted.notify_one();
    }

    /// Waits for the next trigger (used by the refresh loop).
    pub async fn wanted(&self) {
        self.wanted.notified().await
    }
}

/// How often retired versions are checked for deletion. Deletion is cheap to
/// check (no I/O unless something expired), and a short interval makes
/// `.versions/` reflect the grace period closely.
const JANITOR_INTERVAL: Duration = Duration::from_secs(1);

/// The refresh machinery: source, store, catalog and the builds in flight.
pub struct Refresher {
    pub(crate) source: Arc<Source>,
    pub(crate) store: Arc<LocalStore>,
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) loader: Loader,
    pub(crate) grace: Duration,
    pub(crate) metrics: Arc<Metrics>,
    /// Databases with a build in flight.
    building: Mutex<HashSet<String>>,
    /// Number of builds in flight, to wait for quiescence.
    in_flight: tokio::sync::watch::Sender<usize>,
    /// Serialises refresh runs.
    run_lock: tokio::sync::Mutex<()>,
    /// Serialises garbage collection, so that when one call returns,
    /// every version that had expired by its start is deleted, even if the
    /// janitor's run had taken it first.
    gc_lock: tokio::sync::Mutex<()>,
    /// Builds started and not yet reaped, so shutdown can wait for them.
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Databases a refresh skipped because a build of theirs was in flight:
    /// when that build ends, one more refresh runs, so a version that
    /// appeared meanwhile (or a retry of a failed build) is not left waiting
    /// for the next trigger.
    skipped_while_building: Mutex<HashSet<String>>,
    /// Triggers the refresh loop.
    pub(crate) handle: RefreshHandle,
    /// Cancelled at shutdown; every load runs under a child of it.
    shutdown: CancellationToken,
    /// Versions found in the local store still waiting for the cluster to
    /// agree (see [`Refresher::restore`]).
    pending_agreement: Mutex<Vec<Arc<Version>>>,
    /// Versions built and waiting for the cluster to agree, by database.
    preparing: Mutex<std::collections::HashMap<String, Preparing>>,
    /// This node's cluster, in cluster mode: loads build only this node's
    /// partitions, and a version is served once the cluster agrees.
    pub(crate) cluster: std::sync::OnceLock<Arc<ClusterNode>>,
    /// True once the background conversions of the store's migration have
    /// ended (see [`Refresher::resume_migrations`]).
    migrations_done: tokio::sync::watch::Sender<bool>,
}

/// What one refresh run did, for logs, metrics and tests.
#[derive(Debug, Default)]
pub struct RefreshReport {
    /// The listing failed; nothing changed.
    pub listing_failed: Option<crate::source::SourceError>,
    pub builds_started: Vec<(String, String)>,
    /// Databases among `builds_started` that had no version served: their
    /// first load.
    pub first_loads: Vec<String>,
    pub removed: Vec<String>,
}

impl Refresher {
    pub fn new(
        source: Arc<Source>,
        store: Arc<LocalStore>,
        catalog: Arc<Catalog>,
        loader: Loader,
        grace: Duration,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Refresher {
            source,
            store,
            catalog,
            loader,
            grace,
            metrics,
            building: Mutex::new(HashSet::new()),
            in_flight: tokio::sync::watch::Sender::new(0),
            run_lock: tokio::sync::Mutex::new(()),
            gc_lock: tokio::sync::Mutex::new(()),
            tasks: Mutex::new(Vec::new()),
            skipped_while_building: Mutex::new(HashSet::new()),
            handle: RefreshHandle::new(),
            shutdown: CancellationToken::new(),
            pending_agreement: Mutex::new(Vec::new()),
            migrations_done: tokio::sync::watch::Sender::new(false),
            preparing: Mutex::new(Default::default()),
            cluster: std::sync::OnceLock::new(),
        })
    }

    /// Serves what the local store already holds: per database, the newest
    /// published version. Older published versions are deleted, versions that
    /// fail to open are deleted (they will be rebuilt).
    ///
    /// A node of a cluster serves a version of its partitions only once the
    /// cluster agreed on it (it is marked so in the store): a newer one that
    /// was still waiting for the cluster when the node stopped waits again,
    /// see [`Refresher::resume_agreements`], while the newest agreed one
    /// below it is served.
    pub fn restore(&self) -> Result<usize, StoreError> {
        let published = self.store.published()?;
        let mut by_db: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for (db, version) in published {
            by_db.entry(db).or_default().push(version);
        }
        let mut restored = 0;
        for (db, mut versions) in by_db {
            let mut served = false;
            // The version the database is pinned to first (see
            // `LocalStore::set_pinned`), then newest first.
            if let Some(at) = versions.iter().position(|v| self.store.is_pinned(&db, v)) {
                let pinned = versions.remove(at);
                versions.push(pinned);
            }
            while let Some(version) = versions.pop() {
                let dir = self.store.version_dir(&db, &version);
                let local = match LocalVersion::open(&dir) {
                    Ok(local) => local,
                    // Not ours to rebuild or delete (see store::format).
                    Err(e @ StoreError::NewerFormat { .. }) => return Err(e),
                    Err(e) => {
                        tracing::warn!(
                            db,
                            version,
                            "local version unreadable, will rebuild: {}",
                            ErrorChain(&e)
                        );
                        self.store.delete_version(&db, &version)?;
                        continue;
                    }
                };
                let progress = manifest_progress(local.manifest());
                let v = wrap(&db, &version, local);
                if let Some(node) = self.cluster.get() {
                    let held = v
                        .held_partitions()
                        .unwrap_or_else(|| (0..v.num_partitions()).collect());
                    if let Err(e) = node.advertise(&db, &version, &held) {
                        tracing::warn!(db, version, "cannot advertise: {e}");
                    }
                    let lacks_directory = needs_directory(node, &v);
                    if v.held_partitions().is_some()
                        && (!self.store.is_agreed(&db, &version) || lacks_directory)
                    {
                        tracing::info!(
                            db,
                            version,
                            "local version still waits for the cluster to agree \
                             (or for its key directory)"
                        );
                        self.pending_agreement
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(v);
                        continue;
                    }
                }
                tracing::info!(db, version, "serving version from the local store");
                self.catalog.publish_reused(v, self.grace, progress);
                restored += 1;
                served = true;
                break;
            }
            if served {
                for version in versions {
                    tracing::info!(db, version, "deleting superseded local version");
                    self.store.delete_version(&db, &version)?;
                }
            }
        }
        Ok(restored)
    }

    /// Starts waiting again for the cluster to agree on the versions
    /// [`Refresher::restore`] found waiting: each is advertised and
    /// answers peers, and becomes current once every partition has enough
    /// copies (or is dropped when a newer version replaces it).
    pub fn resume_agreements(self: &Arc<Self>) {
        let pending = std::mem::take(
            &mut *self
                .pending_agreement
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for version in pending {
            let this = Arc::clone(self);
            self.spawn_unless_building(&Arc::clone(&version), async move {
                this.resume_agreement(version).await;
            });
        }
    }

    async fn resume_agreement(&self, version: Arc<Version>) {
        let Some(node) = self.cluster.get() else {
            return;
        };
        let (db, name) = (version.db().to_string(), version.name().to_string());
        let path = version.source_path().to_string();
        let counters = Arc::new(LoadCounters::default());
        self.catalog
            .start_load(&db, &name, path.clone(), Arc::clone(&counters));
        let started = Instant::now();
        let cancel = self.shutdown.child_token();
        let agreed = async {
            self.agree(node, &version, &cancel).await?;
            self.with_directory(node, version, &cancel).await
        }
        .await
        .map_err(|kind| LoadError::new(&db, &name, kind));
        self.finish_load(&db, &name, path, started, &counters, agreed)
            .await;
    }

    /// One refresh: list, plan, start builds, remove vanished databases.
    /// Returns the builds it started so callers may wait for them.
    pub async fn run(self: &Arc<Self>) -> RefreshReport {
        let _serial = self.run_lock.lock().await;
        let mut report = RefreshReport::default();
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|t| !t.is_finished());
        let mut builds = Vec::new();
        let dbs = match self.source.list_databases().await {
            Ok(dbs) => dbs,
            Err(e) => {
                tracing::warn!("refresh: cannot list databases: {}", ErrorChain(&e));
                self.catalog.set_source_problem(Some(format!(
                    "cannot list the source root: {}",
                    ErrorChain(&e)
                )));
                report.listing_failed = Some(e);
                self.metrics.record_refresh(false);
                return report;
            }
        };
        self.metrics.record_refresh(true);
        for db in &dbs {
            let Some(target) = self.plan(db).await else {
                continue;
            };
            let current = self.catalog.active(db);
            if !self.claim_build(db) {
                self.supersede_prepared(db, &target);
                self.skipped_while_building
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(db.clone());
                continue;
            }
            report.builds_started.push((db.clone(), target.clone()));
            if current.is_none() {
                report.first_loads.push(db.clone());
            }
            let db = db.clone();
            builds.push(self.spawn_load(db, target));
        }

        // Databases gone from the source. An empty listing is far more likely
        // a misconfigured or half-written source than a wish to drop
        // everything, so it removes nothing.
        let listed: BTreeSet<&String> = dbs.iter().collect();
        let problem = dbs.is_empty().then(|| {
            format!(
                "the source root {} holds nothing that looks like <db>/<version>/",
                self.source.display_path("", None).trim_end_matches('/')
            )
        });
        if let Some(problem) = &problem {
            tracing::warn!("refresh: {problem}");
        }
        self.catalog.set_source_problem(problem);
        if dbs.is_empty() && !self.catalog.database_names().is_empty() {
            tracing::warn!("refresh: the source lists no databases; keeping everything served");
        } else {
            for db in self.catalog.database_names() {
                if !listed.contains(&db) && self.catalog.active(&db).is_some() {
                    tracing::info!(db, "database removed from the source; no longer served");
                    self.catalog.remove_database(&db, self.grace);
                    report.removed.push(db);
                }
            }
        }
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(builds);
        report
    }

    /// Reads `db`'s state from the source (see `lifecycle::state`), applies
    /// it to the catalog (offline or online at once), and returns the
    /// version to build, if any: the pinned one when it is pinned and not
    /// served, else the newest version above the served one (a smaller
    /// name, for example after the newest was deleted, is never rolled
    /// back to unless pinned).
    async fn plan(&self, db: &str) -> Option<String> {
        let state = match self.source.database_state(db).await {
            Ok(state) => {
                self.catalog.set_state(db, state.clone());
                state.unwrap_or_default()
            }
            Err(e) => {
                // The last state read stays in force.
                tracing::warn!(db, "refresh: cannot read the state: {}", ErrorChain(&e));
                self.catalog.state(db).unwrap_or_default()
            }
        };
        let current = self.catalog.active(db);
        if let Some(pinned) = &state.pinned {
            if current.as_ref().is_some_and(|c| c.name() == pinned) {
                return None;
            }
            return match self.source.list_versions(db).await {
                Ok(versions) if versions.contains(pinned) => {
                    tracing::info!(
                        db,
                        version = pinned,
                        "pinned: switching to the pinned version"
                    );
                    Some(pinned.clone())
                }
                Ok(_) => {
                    tracing::warn!(
                        db,
                        version = pinned,
                        "pinned to a version the source does not have; serving what is served"
                    );
                    None
                }
                Err(e) => {
                    tracing::warn!(db, "refresh: cannot list versions: {}", ErrorChain(&e));
                    None
                }
            };
        }
        let above = current.as_ref().map(|current| current.name());
        match self.source.newest_version(db, above).await {
            Ok(Some(target)) => Some(target),
            Ok(None) => {
                if current.is_none() {
                    tracing::info!(db, "no versions available");
                }
                None
            }
            Err(e) => {
                tracing::warn!(db, "refresh: cannot list versions: {}", ErrorChain(&e));
                None
            }
        }
    }

    /// Marks `db` as having a build in flight; false if it already has
    /// one (the [`InFlight`] guard of [`Refresher::spawn_guarded`] clears
    /// the mark).
    fn claim_build(&self, db: &str) -> bool {
        self.building
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(db.to_string())
    }

    /// Runs `work` on `version` as its database's build in flight, unless
    /// the database already has one (a later check retries).
    fn spawn_unless_building(
        self: &Arc<Self>,
        version: &Version,
        work: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        if !self.claim_build(version.db()) {
            return;
        }
        let task = self.spawn_guarded(version.db().to_string(), version.name().to_string(), work);
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task);
    }

    /// Starts loading `db`/`version` in the background. The bookkeeping of
    /// builds in flight is undone by a guard however the load ends, panics
    /// included: a panicking load is reported as an ERROR of that version
    /// and never leaves its database "building" forever.
    fn spawn_load(self: &Arc<Self>, db: String, version: String) -> JoinHandle<()> {
        let load = {
            let this = Arc::clone(self);
            let (db, version) = (db.clone(), version.clone());
            async move { this.load(&db, &version).await }
        };
        self.spawn_guarded(db, version, load)
    }

    /// Runs `load` for `db`/`version` as a build in flight; see
    /// [`Refresher::spawn_load`].
    fn spawn_guarded(
        self: &Arc<Self>,
        db: String,
        version: String,
        load: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> JoinHandle<()> {
        self.in_flight.send_modify(|n| *n += 1);
        let guard = InFlight {
            refresher: Arc::clone(self),
            db: db.clone(),
        };
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let _guard = guard;
            if let Err(panic) = std::panic::AssertUnwindSafe(load).catch_unwind().await {
                let message = panic_message(&*panic);
                tracing::error!(db, version, "load panicked: {message}");
                let error = LoadError::new(
                    &db,
                    &version,
                    LoadErrorKind::Internal(format!("load panicked: {message}")),
                );
                let path = this.source.display_path(&db, Some(&version));
                this.catalog
                    .load_failed(&db, &version, path, Arc::new(error));
            }
        })
    }

    /// Cancels builds in flight and waits for them to stop (each stage
    /// stops at its next check, within milliseconds; a staging directory
    /// left behind is removed at the next start).
    pub async fn stop_builds(&self) {
        self.shutdown.cancel();
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Waits until none of `dbs` has a build in flight.
    pub async fn wait_for(&self, dbs: &[String]) {
        let mut rx = self.in_flight.subscribe();
        let _ = rx
            .wait_for(|_| {
                let building = self.building.lock().unwrap_or_else(|e| e.into_inner());
                !dbs.iter().any(|db| building.contains(db))
            })
            .await;
    }

    /// Waits until no build is in flight and what failed builds left in
    /// the local store is removed.
    pub async fn wait_idle(&self) {
        let mut rx = self.in_flight.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
        let store = Arc::clone(&self.store);
        let _ = tokio::task::spawn_blocking(move || store.wait_for_removals()).await;
    }

    /// Loads `db`/`version` and switches to it, or records the error.
    async fn load(&self, db: &str, version: &str) {
        let path = self.source.display_path(db, Some(version));
        let counters = Arc::new(LoadCounters::default());
        self.catalog
            .start_load(db, version, path.clone(), Arc::clone(&counters));
        tracing::info!(db, version, "loading version");
        let started = Instant::now();
        let cancel = self.shutdown.child_token();
        let loaded = async {
            let files = tokio::select! {
                biased;
                () = cancel.cancelled() => return Err(LoadError::new(db, version, LoadErrorKind::Cancelled)),
                files = self.source.list_files(db, version) => {
                    files.map_err(|e| LoadError::new(db, version, e))?
                }
            };
            let fail = |kind: LoadErrorKind| LoadError::new(db, version, kind);
            let only = match self.cluster.get() {
                Some(node) => {
                    let n = Loader::partition_count(&files).map_err(fail)?;
                    let only = node
                        .assign(db, version, n)
                        .await
                        .map_err(|e| fail(e.into()))?;
                    tracing::info!(db, version, partitions = ?only, of = n, "building this node's partitions");
                    Some(only)
                }
                None => None,
            };
            let dir = self
                .loader
                .load(db, version, files, only, &counters, &cancel)
                .await?;
            let local = open_blocking(dir).await.map_err(fail)?;
            let v = wrap(db, version, local);
            match self.cluster.get() {
                Some(node) => {
                    self.agree(node, &v, &cancel).await.map_err(fail)?;
                    self.with_directory(node, v, &cancel).await.map_err(fail)
                }
                None => Ok(v),
            }
        }
        .await;
        self.finish_load(db, version, path, started, &counters, loaded)
            .await;
    }

    /// Serves a version that is ready (marked agreed in a cluster), or
    /// records why it is not: cancelled, replaced while waiting for the
    /// cluster (then deleted), or failed.
    async fn finish_load(
        &self,
        db: &str,
        version: &str,
        path: String,
        started: Instant,
        counters: &LoadCounters,
        loaded: Result<Arc<Version>, LoadError>,
    ) {
        let done = counters.snapshot();
        self.metrics.record_load(
            db,
            version,
            started.elapsed(),
            done.bytes_done,
            done.records_done,
            loaded.is_ok(),
        );
        match loaded {
            Ok(v) => {
                let keys = v.local_keys().key_count();
                let bytes = done.bytes_done;
                let previous = self.catalog.active(db).map(|p| p.name().to_string());
                if v.held_partitions().is_some() {
                    self.mark_agreed(db, version).await;
                }
                self.record_pin(db, version).await;
                // The mount warms the keys its readers use before the
                // switch, within its `--prewarm-limit` (blocking, so off
                // the runtime's threads).
                let catalog = Arc::clone(&self.catalog);
                let next = Arc::clone(&v);
                if let Err(e) =
                    tokio::task::spawn_blocking(move || catalog.warm_for_switch(&next)).await
                {
                    tracing::warn!(db, version, "pre-warming failed: {e}");
                }
                self.catalog.publish(v, path, self.grace);
                self.update_disk_usage().await;
                tracing::info!(
                    db,
                    version,
                    previous = previous.as_deref().unwrap_or("none"),
                    keys,
                    bytes,
                    seconds = started.elapsed().as_secs_f64(),
                    "switched to new version"
                );
            }
            Err(e) if e.is_cancelled() => {
                tracing::info!(db, version, "load cancelled");
                self.catalog.load_cancelled(db, version);
            }
            Err(e) if matches!(e.kind, LoadErrorKind::Superseded { .. }) => {
                tracing::info!(db, version, "{}", e.kind);
                self.catalog.load_cancelled(db, version);
                if let Some(node) = self.cluster.get() {
                    node.forget(db, version);
                }
                let store = Arc::clone(&self.store);
                let (d, v) = (db.to_string(), version.to_string());
                match tokio::task::spawn_blocking(move || store.delete_version(&d, &v)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(db, version, "cannot delete: {}", ErrorChain(&e)),
                    Err(e) => tracing::warn!(db, version, "deletion task failed: {e}"),
                }
            }
            Err(e) => {
                tracing::error!(db, version, "load failed: {}", ErrorChain(&e));
                self.catalog.load_failed(db, version, path, Arc::new(e));
            }
        }
    }

    /// A node of a cluster: advertises the partitions of `version` it
    /// built, answers peers for it, and waits until every partition has
    /// `min_replication` replicas (sequins' upgrade agreement).
    async fn agree(
        &self,
        node: &ClusterNode,
        version: &Arc<Version>,
        cancel: &CancellationToken,
    ) -> Result<(), LoadErrorKind> {
        let (db, name) = (version.db(), version.name());
        let held = version
            .held_partitions()
            .unwrap_or_else(|| (0..version.num_partitions()).collect());
        node.advertise(db, name, &held)?;
        self.catalog.prepare(Arc::clone(version));
        let superseded = cancel.child_token();
        self.preparing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                db.to_string(),
                Preparing {
                    version: name.to_string(),
                    cancel: superseded.clone(),
                    newer: None,
                },
            );
        let ready = node
            .wait_ready(db, name, version.num_partitions(), &held, &superseded)
            .await;
        let entry = self
            .preparing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(db);
        if ready? {
            return Ok(());
        }
        if cancel.is_cancelled() {
            return Err(LoadErrorKind::Cancelled);
        }
        let newer = entry.and_then(|e| e.newer).unwrap_or_default();
        Err(LoadErrorKind::Superseded { newer })
    }

    /// On a node whose mount lists every key: gives a partial version its
    /// key directory, from the listings of the peers holding the
    /// partitions it lacks (see `cluster::directory`). Other versions are
    /// returned as they are.
    async fn with_directory(
        &self,
        node: &ClusterNode,
        version: Arc<Version>,
        cancel: &CancellationToken,
    ) -> Result<Arc<Version>, LoadErrorKind> {
        if !needs_directory(node, &version) {
            return Ok(version);
        }
        let (db, name) = (version.db().to_string(), version.name().to_string());
        let started = Instant::now();
        let mut listed = SortedRun::new();
        for partition in (0..version.num_partitions()).filter(|&p| !version.holds(p)) {
            let run = self
                .fetch_listing(node, &db, &name, partition, cancel)
                .await?;
            listed.absorb(run, 0);
        }
        let dir = self.store.version_dir(&db, &name);
        let (d, v) = (dir.clone(), Arc::clone(&version));
        let keys = tokio::task::spawn_blocking(move || directory::write(&d, &v, listed))
            .await
            .map_err(|e| LoadErrorKind::Internal(format!("directory task failed: {e}")))?
            .map_err(|e| LoadErrorKind::Directory(e.to_string()))?;
        let local = open_blocking(dir).await?;
        tracing::info!(
            db,
            version = name,
            keys,
            seconds = started.elapsed().as_secs_f64(),
            "key directory built from the peers' listings"
        );
        Ok(wrap(&db, &name, local))
    }

    /// One partition's listing, asked again a few times: the peers have
    /// just advertised the version and one may be restarting.
    async fn fetch_listing(
        &self,
        node: &ClusterNode,
        db: &str,
        version: &str,
        partition: u32,
        cancel: &CancellationToken,
    ) -> Result<SortedRun, LoadErrorKind> {
        // 0.2 s doubling: about six seconds over all attempts.
        const ATTEMPTS: u32 = 5;
        let mut delay = Duration::from_millis(200);
        let mut attempt = 1;
        loop {
            match node.fetch_listing(db, version, partition).await {
                Ok(run) => return Ok(run),
                Err(e) if attempt == ATTEMPTS => {
                    return Err(LoadErrorKind::Directory(e.to_string()));
                }
                Err(e) => {
                    tracing::warn!(db, version, attempt, "{e}; asking again");
                }
            }
            tokio::select! {
                () = cancel.cancelled() => return Err(LoadErrorKind::Cancelled),
                () = tokio::time::sleep(delay) => {}
            }
            delay *= 2;
            attempt += 1;
        }
    }

    /// Records in the store whether `db` is pinned to `version`, which is
    /// about to be served (see [`LocalStore::set_pinned`]); a failure only
    /// costs serving a newer local version for a moment after a restart.
    async fn record_pin(&self, db: &str, version: &str) {
        let pinned = self
            .catalog
            .state(db)
            .and_then(|s| s.pinned)
            .filter(|pinned| pinned == version);
        let store = Arc::clone(&self.store);
        let d = db.to_string();
        match tokio::task::spawn_blocking(move || store.set_pinned(&d, pinned.as_deref())).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(db, version, "cannot record the pin: {}", ErrorChain(&e)),
            Err(e) => tracing::warn!(db, version, "pin task failed: {e}"),
        }
    }

    /// See [`LocalStore::mark_agreed`]; a failure only costs waiting for
    /// the cluster again after a restart.
    async fn mark_agreed(&self, db: &str, version: &str) {
        let store = Arc::clone(&self.store);
        let (d, v) = (db.to_string(), version.to_string());
        match tokio::task::spawn_blocking(move || store.mark_agreed(&d, &v)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(db, version, "cannot mark as agreed: {}", ErrorChain(&e)),
            Err(e) => tracing::warn!(db, version, "marking task failed: {e}"),
        }
    }

    /// Cluster re-replication (see `cluster::rereplicate`): starts
    /// rebuilding each served version that should hold partitions it lacks
    /// (unless its database has a build in flight; the next check retries).
    fn rereplicate(self: &Arc<Self>) {
        let Some(node) = self.cluster.get() else {
            return;
        };
        for (version, take) in node.rereplication(&self.catalog.served()) {
            let (this, node) = (Arc::clone(self), Arc::clone(node));
            self.spawn_unless_building(&Arc::clone(&version), async move {
                node.rereplication_started();
                this.extend(version, take).await;
            });
        }
    }

    /// Rebuilds the served `current` holding `take` too, from the source,
    /// then serves the rebuilt copy in its place and advertises `take`.
    async fn extend(&self, current: Arc<Version>, take: Vec<u32>) {
        let Some(node) = self.cluster.get() else {
            return;
        };
        let (db, version) = (current.db(), current.name());
        tracing::info!(db, version, partitions = ?take, "re-replicating partitions short of copies");
        let started = Instant::now();
        let counters = Arc::new(LoadCounters::default());
        let cancel = self.shutdown.child_token();
        let only: BTreeSet<u32> = current
            .held_partitions()
            .unwrap_or_default()
            .into_iter()
            .chain(take.iter().copied())
            .collect();
        let built = async {
            let files = self
                .source
                .list_files(db, version)
                .await
                .map_err(|e| LoadError::new(db, version, e))?;
            let dir = self
                .loader
                .load(db, version, files, Some(only), &counters, &cancel)
                .await?;
            open_blocking(dir)
                .await
                .map_err(|e| LoadError::new(db, version, e))
        }
        .await;
        let local = match built {
            Ok(local) => local,
            Err(e) => {
                if !e.is_cancelled() {
                    tracing::error!(db, version, "re-replication failed: {}", ErrorChain(&e));
                }
                node.rereplication_finished(db, version, None);
                return;
            }
        };
        // The rebuilt copy only replaces the version it extends; a newer one
        // published meanwhile stays.
        if self.catalog.active(db).is_none_or(|c| c.name() != version) {
            node.rereplication_finished(db, version, None);
            return;
        }
        let rebuilt = match self
            .with_directory(node, wrap(db, version, local), &cancel)
            .await
        {
            Ok(rebuilt) => rebuilt,
            Err(e) => {
                tracing::error!(db, version, "re-replication failed: {e}");
                node.rereplication_finished(db, version, None);
                return;
            }
        };
        if let Err(e) = node.advertise(db, version, &take) {
            tracing::warn!(db, version, "cannot advertise: {e}");
        }
        let path = current.source_path().to_string();
        // The rebuild replaced the directory, marker included.
        self.mark_agreed(db, version).await;
        self.catalog.publish(rebuilt, path, self.grace);
        self.update_disk_usage().await;
        node.rereplication_finished(db, version, Some(&take));
        tracing::info!(
            db,
            version,
            partitions = ?take,
            seconds = started.elapsed().as_secs_f64(),
            bytes = counters.snapshot().bytes_done,
            "re-replicated: now holding and advertising them"
        );
    }

    /// A refresh found `target` for `db` while a build of `db` is in
    /// flight: if that build is a version waiting for the cluster to agree,
    /// the newer version replaces it (it may never be agreed on, for
    /// example while nodes are missing), as in sequins.
    fn supersede_prepared(&self, db: &str, target: &str) {
        let mut preparing = self.preparing.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = preparing.get_mut(db)
            && entry.version.as_str() < target
        {
            entry.newer = Some(target.to_string());
            entry.cancel.cancel();
        }
    }

    /// Deletes the local data of retired versions whose grace period is over
    /// and that no reader holds any more. Runs on a blocking thread so
    /// deletions never hold up lookups.
    pub async fn collect_garbage(&self) {
        let _one_at_a_time = self.gc_lock.lock().await;
        let expired = self.catalog.take_expired(Instant::now());
        for version in expired {
            let (db, name) = (version.db().to_string(), version.name().to_string());
            let local = version.local_keys().local_dir();
            // Our reference was the last: unmap before deleting.
            drop(version);
            if let Some((dir, inode)) = local {
                let store = Arc::clone(&self.store);
                let (d, n) = (db.clone(), name.clone());
                let result = tokio::task::spawn_blocking(move || {
                    store.delete_version_if(&d, &n, &dir, inode)
                })
                .await;
                match result {
                    Ok(Ok(())) => tracing::info!(db, version = name, "deleted retired version"),
                    Ok(Err(e)) => {
                        tracing::warn!(db, version = name, "cannot delete: {}", ErrorChain(&e))
                    }
                    Err(e) => tracing::warn!(db, version = name, "deletion task failed: {e}"),
                }
            }
            if let Some(node) = self.cluster.get() {
                node.forget(&db, &name);
            }
            self.catalog.deleted(&db, &name);
            self.update_disk_usage().await;
        }
    }

    pub(crate) async fn update_disk_usage(&self) {
        let store = Arc::clone(&self.store);
        if let Ok(bytes) = tokio::task::spawn_blocking(move || store.disk_usage()).await {
            self.metrics.set_local_store_bytes(bytes);
        }
    }

    /// Runs refreshes on triggers and the janitor on a timer until `stop`.
    pub async fn run_loop(self: Arc<Self>, period: Duration, stop: Arc<Notify>) {
        let handle = self.handle.clone();
        let mut janitor = tokio::time::interval(JANITOR_INTERVAL);
        let mut periodic = (!period.is_zero()).then(|| {
            let mut i = tokio::time::interval(period);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        loop {
            let next_period = async {
                match periodic.as_mut() {
                    Some(i) => {
                        i.tick().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = stop.notified() => return,
                _ = handle.wanted() => { self.run().await; }
                _ = next_period => { self.run().await; }
                _ = janitor.tick() => {
                    self.collect_garbage().await;
                    self.rereplicate();
                }
            }
        }
    }
}

fn wrap(db: &str, version: &str, local: LocalVersion) -> Arc<Version> {
    let created = local.created_at();
    let path = local.manifest().source_path.clone();
    let n = local.manifest().num_partitions;
    match local.manifest().held_partitions.clone() {
        Some(held) => {
            let directory = local_directory(db, version, &local);
            Version::partial(
                db,
                version,
                created,
                path,
                n,
                &held,
                Box::new(local),
                directory,
            )
        }
        None => Version::new(db, version, created, path, n, Box::new(local)),
    }
}

/// Whether `version` lacks the key directory its node's mount needs: a
/// version missing some partitions, on a node that runs a mount.
fn needs_directory(node: &ClusterNode, version: &Version) -> bool {
    let partial = (0..version.num_partitions()).any(|p| !version.holds(p));
    node.builds_directories() && partial && !version.has_directory()
}

/// The key directory stored with a partial version, if it has one (see
/// `cluster::directory`). A damaged one is deleted: it is built again
/// before the version is served through a mount.
fn local_directory(
    db: &str,
    version: &str,
    local: &LocalVersion,
) -> Option<Box<dyn crate::catalog::VersionData>> {
    let (dir, _) = crate::catalog::VersionData::local_dir(local)?;
    match directory::open(&dir) {
        Ok(found) => found.map(|d| Box::new(d) as Box<dyn crate::catalog::VersionData>),
        Err(e) => {
            tracing::warn!(
                db,
                version,
                "key directory unreadable, will rebuild it: {e}"
            );
            let _ = std::fs::remove_file(dir.join(directory::FILE));
            None
        }
    }
}

async fn open_blocking(dir: PathBuf) -> Result<LocalVersion, LoadErrorKind> {
    tokio::task::spawn_blocking(move || LocalVersion::open(&dir))
        .await
        .map_err(|e| LoadErrorKind::Internal(format!("open task failed: {e}")))?
        .map_err(LoadErrorKind::from)
}

/// The progress of the load that built a version, from its manifest.
fn manifest_progress(manifest: &crate::store::Manifest) -> Progress {
    let files = manifest.source_files.len() as u64;
    Progress {
        files_done: files,
        files_total: files,
        bytes_done: manifest.source_bytes,
        bytes_total: manifest.source_bytes,
        records_done: manifest.num_records,
    }
}

/// Undoes the bookkeeping of a build in flight when its task ends, however
/// it ends.
/// A version waiting for the cluster to agree on it.
struct Preparing {
    version: String,
    /// Cancels the wait when a newer version replaces it.
    cancel: CancellationToken,
    /// The version that replaced it, once one did.
    newer: Option<String>,
}

struct InFlight {
    refresher: Arc<Refresher>,
    db: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let this = &self.refresher;
        this.building
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.db);
        let skipped = this
            .skipped_while_building
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.db);
        if skipped {
            this.handle.trigger();
        }
        this.in_flight.send_modify(|n| *n -= 1);
    }
}

/// The message a panic was raised with, if it was text.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::VersionState;
    use crate::load::LoadOptions;

    fn refresher(store_dir: &std::path::Path) -> Arc<Refresher> {
        let source = Arc::new(
            Source::with_store(
                Arc::new(object_store::memory::InMemory::new()),
                "",
                "memory://",
                crate::source::SourceOptions::default(),
            )
            .unwrap(),
        );
        let store = Arc::new(LocalStore::open(store_dir).unwrap());
        let loader = Loader::new(
            Arc::clone(&store),
            Arc::clone(&source),
            Arc::new(tokio::sync::Semaphore::new(2)),
            LoadOptions::default(),
        );
        Refresher::new(
            source,
            store,
            Catalog::new(),
            loader,
            Duration::ZERO,
            Metrics::new(),
        )
    }

    #[tokio::test]
    async fn a_panicking_load_is_an_error_and_never_stays_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let r = refresher(dir.path());
        r.building.lock().unwrap().insert("db".into());
        let task = r.spawn_guarded("db".into(), "7".into(), async {
            panic!("the loader fell over");
        });
        task.await.unwrap();
        // Would hang if the bookkeeping were not undone.
        tokio::time::timeout(Duration::from_secs(10), r.wait_idle())
            .await
            .expect("wait_idle returned");
        assert!(r.building.lock().unwrap().is_empty());
        let status = r.catalog.database_status("db").unwrap();
        let version = &status.versions[0];
        assert_eq!(version.state, VersionState::Error);
        let error = version.error_text().unwrap();
        assert!(error.contains("the loader fell over"), "{error}");
    }
}
