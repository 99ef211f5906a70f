//! The control files: `.status` (the catalog's status as JSON) and
//! `.version` (which version a version directory is). `.refresh` has no
//! content; touching it is `FsCore::setattr`.

use crate::catalog::{Catalog, Version};

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
