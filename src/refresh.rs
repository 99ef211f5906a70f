//! Refresh: the one routine that brings the catalog in line with the source
//! root, and the triggers that start it (startup, period, SIGHUP, `.refresh`).
//! (Being built; the trigger handle below is the API front ends use.)

use std::sync::Arc;

use tokio::sync::Notify;

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
