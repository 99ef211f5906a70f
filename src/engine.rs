//! The engine: the running core that front ends sit on. It owns the local
//! store, the catalog and the refresh loop; the mount and the HTTP sidecar
//! take an `Arc<Catalog>` to read from and a [`RefreshHandle`] to ask for
//! refreshes, and know nothing about sources or loading. (Being built: the
//! API below is what front ends use.)

use std::sync::Arc;

use crate::catalog::Catalog;
use crate::config::Config;
use crate::refresh::RefreshHandle;

/// A started engine. Dropping it stops refreshes; call [`Engine::shutdown`]
/// to also wait for in-flight work to stop cleanly.
pub struct Engine {
    catalog: Arc<Catalog>,
    refresh: RefreshHandle,
}

impl Engine {
    /// Locks and opens the local store, serves the versions already published
    /// there, checks that the source can be listed (an error here is fatal,
    /// as in sequins), and starts the refresh loop, whose first run begins
    /// at once in the background.
    pub async fn start(config: Config) -> anyhow::Result<Engine> {
        config.validate()?;
        anyhow::bail!("the engine is not implemented yet")
    }

    /// What the front ends read.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// Asks for refreshes (SIGHUP, `.refresh`).
    pub fn refresh_handle(&self) -> RefreshHandle {
        self.refresh.clone()
    }

    /// Runs a refresh now and waits until it has finished (loads included).
    /// For tests and tools; the daemon uses [`RefreshHandle::trigger`].
    pub async fn refresh_now(&self) -> anyhow::Result<()> {
        anyhow::bail!("the engine is not implemented yet")
    }

    /// Stops the refresh loop and waits for loads in progress to stop.
    pub async fn shutdown(self) {}
}
