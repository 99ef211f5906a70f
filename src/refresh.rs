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

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::catalog::{Catalog, Progress, Version, VersionState, VersionStatus};
use crate::metrics::Metrics;
use crate::source::Source;
use crate::store::build::{BuildProgress, Builder};
use crate::store::{LocalStore, LocalVersion};

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
    pub(crate) builder: Builder,
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
}

/// What one refresh run did, for logs, metrics and tests.
#[derive(Debug, Default)]
pub struct RefreshReport {
    /// The listing failed; nothing changed.
    pub listing_failed: Option<String>,
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
        builder: Builder,
        grace: Duration,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Refresher {
            source,
            store,
            catalog,
            builder,
            grace,
            metrics,
            building: Mutex::new(HashSet::new()),
            in_flight: tokio::sync::watch::Sender::new(0),
            run_lock: tokio::sync::Mutex::new(()),
            gc_lock: tokio::sync::Mutex::new(()),
            tasks: Mutex::new(Vec::new()),
            skipped_while_building: Mutex::new(HashSet::new()),
            handle: RefreshHandle::new(),
        })
    }

    /// Serves what the local store already holds: per database, the newest
    /// published version. Older published versions are deleted, versions that
    /// fail to open are deleted (they will be rebuilt).
    pub fn restore(&self) -> Result<usize, crate::store::StoreError> {
        let published = self.store.published()?;
        let mut newest: std::collections::BTreeMap<String, String> = Default::default();
        for (db, version) in &published {
            newest.insert(db.clone(), version.clone());
        }
        for (db, version) in &published {
            if newest.get(db) != Some(version) {
                tracing::info!(db, version, "deleting superseded local version");
                self.store.delete_version(db, version)?;
            }
        }
        let mut restored = 0;
        for (db, version) in newest {
            let dir = self.store.version_dir(&db, &version);
            match LocalVersion::open(&dir) {
                Ok(local) => {
                    let v = wrap(&db, &version, local);
                    let path = v.source_path().to_string();
                    tracing::info!(db, version, "serving version from the local store");
                    self.catalog.publish(v, path, self.grace);
                    restored += 1;
                }
                Err(e) => {
                    tracing::warn!(db, version, "local version unreadable, will rebuild: {e}");
                    self.store.delete_version(&db, &version)?;
                }
            }
        }
        Ok(restored)
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
                tracing::warn!("refresh: cannot list databases: {e}");
                report.listing_failed = Some(e.to_string());
                self.metrics.record_refresh(false);
                return report;
            }
        };
        self.metrics.record_refresh(true);
        for db in &dbs {
            let current = self.catalog.current(db);
            // Never roll back: only versions above the served one count (a
            // smaller name, for example after the newest was deleted, is
            // ignored).
            let above = current.as_ref().map(|current| current.name());
            let target = match self.source.newest_version(db, above).await {
                Ok(Some(target)) => target,
                Ok(None) => {
                    if current.is_none() {
                        tracing::info!(db, "no versions available");
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(db, "refresh: cannot list versions: {e}");
                    continue;
                }
            };
            if !self
                .building
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(db.clone())
            {
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
            let this = Arc::clone(self);
            let db = db.clone();
            self.in_flight.send_modify(|n| *n += 1);
            builds.push(tokio::spawn(async move {
                this.build(&db, &target).await;
                this.building
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&db);
                let skipped = this
                    .skipped_while_building
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&db);
                if skipped {
                    this.handle.trigger();
                }
                this.in_flight.send_modify(|n| *n -= 1);
            }));
        }

        // Databases gone from the source. An empty listing is far more likely
        // a misconfigured or half-written source than a wish to drop
        // everything, so it removes nothing.
        let listed: BTreeSet<&String> = dbs.iter().collect();
        if dbs.is_empty() && !self.catalog.database_names().is_empty() {
            tracing::warn!("refresh: the source lists no databases; keeping everything served");
        } else {
            for db in self.catalog.database_names() {
                if !listed.contains(&db) && self.catalog.current(&db).is_some() {
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

    /// Cancels builds in flight and waits for them to stop.
    pub async fn stop_builds(&self) {
        self.builder
            .cancelled
            .store(true, std::sync::atomic::Ordering::Relaxed);
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

    /// Waits until no build is in flight.
    pub async fn wait_idle(&self) {
        let mut rx = self.in_flight.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// Builds `db`/`version` and switches to it, or records the error.
    async fn build(&self, db: &str, version: &str) {
        let path = self.source.display_path(db, Some(version));
        let progress = Arc::new(BuildProgress::default());
        let status = |state, error: Option<String>, progress: Progress| VersionStatus {
            version: version.to_string(),
            state,
            path: path.clone(),
            num_partitions: 0,
            created_at: SystemTime::now(),
            active_at: None,
            current: false,
            progress,
            num_keys: None,
            error,
        };
        self.catalog.set_state(
            db,
            status(VersionState::Building, None, Progress::default()),
        );
        tracing::info!(db, version, "building version");
        let started = Instant::now();

        let files = match self.source.list_files(db, version).await {
            Ok(files) => files,
            Err(e) => {
                let msg = format!("cannot list files: {e}");
                tracing::error!(db, version, "{msg}");
                self.catalog.set_state(
                    db,
                    status(VersionState::Error, Some(msg), Progress::default()),
                );
                return;
            }
        };
        // Report progress while the build runs.
        let reporter = {
            let catalog = Arc::clone(&self.catalog);
            let progress = Arc::clone(&progress);
            let (db, version) = (db.to_string(), version.to_string());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(250));
                loop {
                    tick.tick().await;
                    catalog.set_progress(&db, &version, progress.snapshot());
                }
            })
        };
        let built = self
            .builder
            .build(db, version, files, Arc::clone(&progress))
            .await;
        reporter.abort();
        let done = progress.snapshot();
        self.metrics.record_load(
            db,
            version,
            started.elapsed(),
            done.bytes_done,
            done.records_done,
            built.is_ok(),
        );
        let opened = match built {
            Ok(dir) => open_blocking(dir).await,
            Err(e) => Err(e.message),
        };
        match opened {
            Ok(local) => {
                let keys = local.manifest().num_keys;
                let bytes = local.manifest().source_bytes;
                let v = wrap(db, version, local);
                let previous = self.catalog.current(db).map(|p| p.name().to_string());
                self.catalog.publish(v, path.clone(), self.grace);
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
            Err(message) => {
                tracing::error!(db, version, "build failed: {message}");
                self.catalog.set_state(
                    db,
                    status(VersionState::Error, Some(message), progress.snapshot()),
                );
            }
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
            let local = version.keys().local_dir();
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
                    Ok(Err(e)) => tracing::warn!(db, version = name, "cannot delete: {e}"),
                    Err(e) => tracing::warn!(db, version = name, "deletion task failed: {e}"),
                }
            }
            self.catalog.deleted(&db, &name);
            self.update_disk_usage().await;
        }
    }

    async fn update_disk_usage(&self) {
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
                _ = janitor.tick() => { self.collect_garbage().await; }
            }
        }
    }
}

fn wrap(db: &str, version: &str, local: LocalVersion) -> Arc<Version> {
    let created = local.created_at();
    let path = local.manifest().source_path.clone();
    let n = local.manifest().num_partitions;
    Version::new(db, version, created, path, n, Box::new(local))
}

async fn open_blocking(dir: PathBuf) -> Result<LocalVersion, String> {
    tokio::task::spawn_blocking(move || LocalVersion::open(&dir).map_err(|e| e.to_string()))
        .await
        .map_err(|e| format!("open task failed: {e}"))?
}
