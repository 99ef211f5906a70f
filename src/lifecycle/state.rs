//! The state of a database, kept in the source root beside its versions as
//! `<db>/_state.json`: whether it is online, which version it is pinned
//! to, and who changed it last. Every daemon reads it at each refresh and
//! honours it (see `refresh`); `sequinsfs db` changes it.
//!
//! A database without the object is online and unpinned. The name starts
//! with `_`, so the source's name rules never take it for a version.
//!
//! The document (all fields optional when read):
//!
//! ```json
//! {"online": false, "pinned": "20240102", "changes": 7,
//!  "changed_by": "alice@build-3", "changed_at": "2026-12-07T08:00:00Z",
//!  "last_change": "offline"}
//! ```

use serde::{Deserialize, Serialize};

/// The state object's name inside `<db>/`.
pub const STATE_FILE: &str = "_state.json";

/// Largest state object read: the document is a few hundred bytes; a
/// larger object is refused rather than read into memory.
pub const MAX_STATE_LEN: u64 = 64 * 1024;

/// The state of one database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DatabaseState {
    /// Offline: not served (the mount hides it, HTTP answers 404) while
    /// each daemon keeps its local data, so going online is instant.
    pub online: bool,
    /// Serve this version even if newer ones exist (a rollback).
    pub pinned: Option<String>,
    /// How many changes were made: every update increments it.
    pub changes: u64,
    /// Who made the last change (`user@host`).
    pub changed_by: Option<String>,
    /// When (RFC 3339).
    pub changed_at: Option<String>,
    /// What it was (`offline`, `pin 3`, ...).
    pub last_change: Option<String>,
}

impl Default for DatabaseState {
    fn default() -> Self {
        DatabaseState {
            online: true,
            pinned: None,
            changes: 0,
            changed_by: None,
            changed_at: None,
            last_change: None,
        }
    }
}

/// A state object that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{location}: {message}")]
pub struct StateError {
    pub location: String,
    pub message: String,
}

impl DatabaseState {
    /// Parses the object read from `location` (for errors).
    pub fn parse(bytes: &[u8], location: &str) -> Result<DatabaseState, StateError> {
        serde_json::from_slice(bytes).map_err(|e| StateError {
            location: location.to_string(),
            message: format!(
                "not a database state: {e} (line {}, column {})",
                e.line(),
                e.column()
            ),
        })
    }

    /// The state in one line, as the `db` commands print it:
    /// `offline, pinned 3 (change 7: pin 3 by alice@build-3 at ...)`.
    pub fn summary(&self) -> String {
        let mut text = String::from(if self.online { "online" } else { "offline" });
        match &self.pinned {
            Some(version) => text.push_str(&format!(", pinned {version}")),
            None => text.push_str(", unpinned"),
        }
        if self.changes > 0 {
            text.push_str(&format!(
                " (change {}: {} by {} at {})",
                self.changes,
                self.last_change.as_deref().unwrap_or("?"),
                self.changed_by.as_deref().unwrap_or("?"),
                self.changed_at.as_deref().unwrap_or("?")
            ));
        }
        text
    }

    /// The document as written.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_fields_take_their_defaults_and_bad_json_names_the_object() {
        let state = DatabaseState::parse(br#"{"pinned": "3"}"#, "db/_state.json").unwrap();
        assert!(state.online);
        assert_eq!(state.pinned.as_deref(), Some("3"));
        let round = DatabaseState::parse(state.to_json().as_bytes(), "x").unwrap();
        assert_eq!(round, state);
        let err = DatabaseState::parse(b"{", "s3://b/db/_state.json").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("s3://b/db/_state.json: not a database state"),
            "{err}"
        );
    }
}
