//! The background half of a local store migration (see
//! [`crate::store::migrate`]): after the start-up restore, every version
//! served from the store whose files are in an older layout is converted
//! while it keeps serving, then the converted copy is swapped in.
//!
//! Conversions run one at a time (they read and write a whole key index,
//! and serving comes first), each as its database's build in flight: a
//! refresh does not start loading a newer version of that database
//! meanwhile (it retries once the conversion ends), so the swap never
//! races a switch. A database already building when its turn comes is
//! skipped: its new version supersedes the old one, and if that build
//! fails the next start converts the old one.

use std::sync::Arc;
use std::time::Instant;

use crate::catalog::{MigrationStatus, Version};
use crate::error_chain::ErrorChain;
use crate::store::migrate::{self, ConversionProgress};
use crate::store::{LocalVersion, StoreError};

use super::{Refresher, manifest_progress, wrap};

/// What `.status` calls the conversion from format 1 to 2.
const KEY_INDEX_STEP: &str = "key index to format 2 (value locations)";

impl Refresher {
    /// Starts converting, in the background, the versions of the store that
    /// need it. Returns at once.
    pub fn resume_migrations(self: &Arc<Self>) {
        let mut status = self.catalog.store_status();
        status.format = crate::store::format::STORE_FORMAT;
        status.opened_format = self.store.opened_format();
        self.catalog.set_store_status(status);
        let this = Arc::clone(self);
        let driver = tokio::spawn(async move { this.run_migrations().await });
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(driver);
    }

    /// Waits until the conversions [`Refresher::resume_migrations`]
    /// started have ended (converted, failed, skipped or cancelled).
    pub async fn wait_for_migrations(&self) {
        let mut done = self.migrations_done.subscribe();
        let _ = done.wait_for(|done| *done).await;
    }

    async fn run_migrations(self: Arc<Self>) {
        /// Reports the end however the driver ends.
        struct Done<'a>(&'a tokio::sync::watch::Sender<bool>);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.send_replace(true);
            }
        }
        let _done = Done(&self.migrations_done);
        let mut pending = Vec::new();
        for db in self.catalog.database_names() {
            let Some(version) = self.catalog.active(&db) else {
                continue;
            };
            let Some((dir, _)) = version.local_keys().local_dir() else {
                continue;
            };
            let opened = tokio::task::spawn_blocking(move || LocalVersion::open(&dir)).await;
            if let Ok(Ok(local)) = opened
                && migrate::needs_conversion(&local)
            {
                pending.push((version, local));
            }
        }
        if pending.is_empty() {
            return;
        }
        tracing::info!(
            versions = pending.len(),
            "local store: converting {KEY_INDEX_STEP} in the background"
        );
        let total = pending.len();
        for (done, (version, local)) in pending.into_iter().enumerate() {
            if self.shutdown.is_cancelled() {
                break;
            }
            let (db, name) = (version.db().to_string(), version.name().to_string());
            if !self.claim_build(&db) {
                tracing::info!(
                    db,
                    version = name,
                    "conversion skipped: a build is in flight"
                );
                continue;
            }
            let this = Arc::clone(&self);
            let progress = Arc::new(ConversionProgress::default());
            self.catalog.set_migration(Some(MigrationStatus {
                step: KEY_INDEX_STEP,
                db: db.clone(),
                version: name.clone(),
                versions_left: total - done - 1,
                progress: Arc::clone(&progress),
            }));
            let work = async move { this.convert(version, local, progress).await };
            let _ = self.spawn_guarded(db, name, work).await;
        }
        self.catalog.set_migration(None);
    }

    /// Converts one version and switches the copy in.
    async fn convert(
        self: &Arc<Self>,
        version: Arc<Version>,
        local: LocalVersion,
        progress: Arc<ConversionProgress>,
    ) {
        let (db, name) = (version.db().to_string(), version.name().to_string());
        let started = Instant::now();
        let this = Arc::clone(self);
        let cancel = self.shutdown.child_token();
        let converted = tokio::task::spawn_blocking(move || {
            let staging =
                migrate::convert(&this.store, &local, &progress, &|| cancel.is_cancelled())?;
            let Some(staging) = staging else {
                return Ok(None);
            };
            let (db, name) = (&local.manifest().db, &local.manifest().version);
            this.store.exchange(&staging, db, name)?;
            let dir = this.store.version_dir(db, name);
            Ok::<_, StoreError>(Some(LocalVersion::open(&dir)?))
        })
        .await;
        match converted {
            Ok(Ok(Some(new))) => {
                let progress = manifest_progress(new.manifest());
                let converted = wrap(&db, &name, new);
                if self
                    .catalog
                    .publish_converted(converted, version.id(), self.grace, progress)
                {
                    tracing::info!(
                        db,
                        version = name,
                        seconds = started.elapsed().as_secs_f64(),
                        "local store: converted {KEY_INDEX_STEP}"
                    );
                }
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::warn!(
                db,
                version = name,
                "local store conversion failed; the version keeps serving as it is: {}",
                ErrorChain(&e)
            ),
            Err(e) => tracing::warn!(db, version = name, "conversion task failed: {e}"),
        }
    }
}
