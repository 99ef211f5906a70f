//! The engine: the running core that front ends sit on. It owns the local
//! store, the catalog and the refresh loop; the mount and the HTTP sidecar
//! take an `Arc<Catalog>` to read from and a [`RefreshHandle`] to ask for
//! refreshes, and know nothing about sources or loading.

use std::sync::Arc;

use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;

use crate::catalog::Catalog;
use crate::cluster::{ClusterNode, SessionState};
use crate::config::{Config, ConfigError};
use crate::load::{LoadOptions, Loader};
use crate::metrics::Metrics;
use crate::refresh::{RefreshHandle, RefreshReport, Refresher};
use crate::source::{Source, SourceError, SourceOptions};
use crate::store::{LocalStore, StoreError};

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("invalid configuration")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The first listing failed and the local store has nothing to serve.
    #[error("cannot list the source root {uri} (and the local store has nothing to serve)")]
    FirstListing {
        uri: String,
        #[source]
        source: SourceError,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

/// A started engine. Dropping it stops refreshes; call [`Engine::shutdown`]
/// to also wait for the loop to stop cleanly.
pub struct Engine {
    catalog: Arc<Catalog>,
    refresh: RefreshHandle,
    refresher: Arc<Refresher>,
    metrics: Arc<Metrics>,
    stop: Arc<Notify>,
    task: Option<JoinHandle<()>>,
    /// Databases whose first load the start-up refresh began.
    first_loads: Vec<String>,
}

impl Engine {
    /// Locks and opens the local store, serves the versions already published
    /// there, runs the startup refresh (waiting for the first load of every
    /// database not served yet; newer versions of served databases load in
    /// the background), and starts the refresh loop.
    ///
    /// A source that cannot be listed is fatal only when the local store has
    /// nothing to serve (sequins always exits); otherwise the daemon serves
    /// what it has and keeps retrying at every refresh.
    pub async fn start(config: Config) -> Result<Engine, EngineError> {
        Engine::start_with_metrics(config, Metrics::new()).await
    }

    /// [`Engine::start`], reporting loads, refreshes and local store size
    /// into `metrics` (which the HTTP sidecar exports).
    pub async fn start_with_metrics(
        config: Config,
        metrics: Arc<Metrics>,
    ) -> Result<Engine, EngineError> {
        let engine = Engine::launch(config, metrics).await?;
        engine.ready().await;
        Ok(engine)
    }

    /// [`Engine::start_with_metrics`] without waiting for the first loads:
    /// the daemon races [`Engine::ready`] against its stop signals, so that
    /// a SIGTERM during a long first load stops it (and the process) at once
    /// instead of after the load.
    pub async fn launch(config: Config, metrics: Arc<Metrics>) -> Result<Engine, EngineError> {
        Engine::launch_in(config, metrics, None).await
    }

    /// [`Engine::launch`] as a node of a cluster (`Some`), which builds
    /// only its partitions of each version and serves a version once the
    /// cluster agrees on it; see [`crate::cluster`].
    pub async fn launch_in(
        config: Config,
        metrics: Arc<Metrics>,
        cluster: Option<Arc<ClusterNode>>,
    ) -> Result<Engine, EngineError> {
        config.validate()?;
        for key in config.unsupported_keys() {
            tracing::warn!("config: {key} is accepted for compatibility with sequins but not used");
        }
        // The source first: a bad source must fail before the local store is
        // created.
        let source = Arc::new(Source::open(
            &config.source,
            SourceOptions::from_config(&config),
        )?);
        let store = {
            let root = config.local_store.clone();
            tokio::task::spawn_blocking(move || LocalStore::open(&root))
                .await
                .map_err(|e| EngineError::Internal(format!("store open task failed: {e}")))??
        };
        let store = Arc::new(store);
        let catalog = Catalog::new();
        let loader = Loader::new(
            Arc::clone(&store),
            Arc::clone(&source),
            Arc::new(Semaphore::new(config.parallel_loads())),
            LoadOptions {
                compression: config.storage.compression,
                block_size: config.storage.block_size,
                in_place: config.storage.in_place,
                throttle: config.throttle_loads,
            },
        );
        let refresher = Refresher::new(
            Arc::clone(&source),
            store,
            Arc::clone(&catalog),
            loader,
            config.version_grace_period,
            Arc::clone(&metrics),
        );
        if let Some(node) = cluster {
            let _ = refresher.cluster.set(node);
        }
        let restored = {
            let r = Arc::clone(&refresher);
            tokio::task::spawn_blocking(move || r.restore())
                .await
                .map_err(|e| EngineError::Internal(format!("restore task failed: {e}")))??
        };
        // A node of a cluster serves its local store at once, but asks peers
        // for the partitions it lacks: it needs their advertisements first.
        if let Some(node) = refresher.cluster.get() {
            // One bound for all of them; none at all without a session (the
            // listings come once it is established).
            let deadline = tokio::time::Instant::now() + node.config().time_to_converge;
            let never_connected = node.session().state == SessionState::NeverConnected;
            for version in catalog.served() {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if version.held_partitions().is_some()
                    && !never_connected
                    && !node.wait_listed(version.db(), version.name(), left).await
                {
                    tracing::warn!(
                        db = version.db(),
                        version = version.name(),
                        "peers' partitions not listed yet; keys of other partitions fail until they are"
                    );
                }
            }
        }
        refresher.resume_agreements();
        refresher.resume_migrations();
        // The startup refresh, in the foreground for databases seen for the
        // first time (so a fresh mount shows data at once, as sequins does
        // before it opens its port); newer versions of databases restored
        // from the local store load in the background while those serve.
        let report = refresher.run().await;
        if let Some(e) = report.listing_failed {
            if restored == 0 {
                return Err(EngineError::FirstListing {
                    uri: config.source.clone(),
                    source: e,
                });
            }
            tracing::warn!(
                "cannot list the source root, serving the local store: {}",
                crate::error_chain::ErrorChain(&e)
            );
        }
        let refresh = refresher.handle.clone();
        let stop = Arc::new(Notify::new());
        let task =
            tokio::spawn(Arc::clone(&refresher).run_loop(config.refresh_period, Arc::clone(&stop)));
        refresher.update_disk_usage().await;
        Ok(Engine {
            catalog,
            refresh,
            refresher,
            metrics,
            stop,
            task: Some(task),
            first_loads: report.first_loads,
        })
    }

    /// Waits until the first load of every database that had no version
    /// served at start-up has ended (served, or failed).
    pub async fn ready(&self) {
        self.refresher.wait_for(&self.first_loads).await;
    }

    /// Waits until the background conversions of a local store migration
    /// have ended (see [`crate::store::migrate`]).
    pub async fn migrated(&self) {
        self.refresher.wait_for_migrations().await;
    }

    /// What the front ends read.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// Load, refresh and local store figures, for the metrics endpoint.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Asks for refreshes (SIGHUP, `.refresh`).
    pub fn refresh_handle(&self) -> RefreshHandle {
        self.refresh.clone()
    }

    /// Runs a refresh now and waits until it has finished and no build is
    /// in flight (including builds an earlier trigger started). For tests and
    /// tools; the daemon uses [`RefreshHandle::trigger`].
    pub async fn refresh_now(&self) -> RefreshReport {
        let report = self.refresher.run().await;
        self.refresher.wait_idle().await;
        report
    }

    /// Deletes retired versions whose grace period is over and that no
    /// reader holds (the loop also does this every second).
    pub async fn collect_garbage(&self) {
        self.refresher.collect_garbage().await
    }

    /// This node's cluster, in cluster mode.
    pub fn cluster(&self) -> Option<&Arc<ClusterNode>> {
        self.refresher.cluster.get()
    }

    /// Bytes used by the local store's published versions.
    pub fn local_store_bytes(&self) -> u64 {
        self.refresher.store.disk_usage()
    }

    /// Stops the refresh loop and cancels builds in flight, waiting for
    /// both. A cancelled build's staging directory is left under the local
    /// store's `tmp/`, which the next start clears. A node of a cluster
    /// then leaves it: its entries disappear for the peers at once.
    pub async fn shutdown(mut self) {
        self.stop.notify_one();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.refresher.stop_builds().await;
        if let Some(node) = self.refresher.cluster.get() {
            node.close().await;
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
