//! The control files: `.status` (the catalog's status as JSON), `.refresh`
//! (touch it to look for new data) and `.version` (which version a version
//! directory is).
//!
//! What a refresh is belongs to the daemon, not to the mount: the mount
//! only holds a [`RefreshTrigger`] to call.

use crate::catalog::{Catalog, Version};

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
    let status = serde_json::json!({ "databases": catalog.status() });
    let mut text = serde_json::to_string_pretty(&status).unwrap_or_default();
    text.push('\n');
    text
}
