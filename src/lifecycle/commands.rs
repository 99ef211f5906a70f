//! `sequinsfs db ...`: what a database's publisher or operator does to it
//! in the source root — list databases, show one's versions and state,
//! take it offline or online, pin or unpin a version, delete it. Every
//! state change goes through [`update`](super::update::update), so
//! concurrent commands never overwrite each other. Also parses the
//! `SOURCE/<db>[/<version>]` arguments these commands and `publish` take.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, bail};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;

use super::state::{DatabaseState, STATE_FILE};
use super::update::{Updated, update};
use crate::source::names::{SUCCESS_FILE, is_valid_name};
use crate::source::{Source, SourceOptions};

/// Splits `SOURCE/<a>/<b>` into the source root and its last `n` path
/// segments (`s3://bucket/prefix/db/3` with n = 2: `s3://bucket/prefix`,
/// `["db", "3"]`). Each segment must follow the source's name rules.
pub fn split_target(arg: &str, n: usize, what: &[&str]) -> anyhow::Result<(String, Vec<String>)> {
    let usage = || {
        format!(
            "{arg:?}: expected SOURCE/{}",
            what.iter()
                .map(|w| format!("<{w}>"))
                .collect::<Vec<_>>()
                .join("/")
        )
    };
    let trimmed = arg.trim_end_matches('/');
    // The part after `scheme://` holds the bucket (or host); segments are
    // only taken from what follows it, so `s3://bucket` is never split.
    let body_start = trimmed.find("://").map(|i| i + 3).unwrap_or(0);
    let mut rest = trimmed;
    let mut segments = Vec::with_capacity(n);
    for _ in 0..n {
        let slash = rest.rfind('/').filter(|&i| i >= body_start);
        let Some(slash) = slash else {
            bail!("{}", usage());
        };
        segments.push(rest[slash + 1..].to_string());
        rest = rest[..slash].trim_end_matches('/');
        if rest.len() < body_start || (rest.is_empty() && !arg.starts_with('/')) {
            bail!("{}", usage());
        }
    }
    segments.reverse();
    for (segment, what) in segments.iter().zip(what) {
        if !is_valid_name(segment) {
            bail!("invalid {what} name {segment:?} in {arg:?} (names must match [A-Za-z0-9_-]+)");
        }
    }
    let root = if rest.is_empty() { "/" } else { rest };
    Ok((root.to_string(), segments))
}

/// Opens the source root of a command. Every version directory counts,
/// with or without `_SUCCESS`: the commands see what is there.
pub fn open_source(uri: &str) -> anyhow::Result<Source> {
    Ok(Source::open(uri, SourceOptions::default())?)
}

/// Fails unless `db` exists in the source (has a directory there).
async fn require_database(source: &Source, db: &str) -> anyhow::Result<()> {
    if source.list_databases().await?.iter().any(|d| d == db) {
        Ok(())
    } else {
        bail!("{}: no such database", source.display_path(db, None))
    }
}

/// What a state change does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Offline,
    Online,
    Pin(String),
    Unpin,
}

impl Change {
    /// Applies the change; the description recorded in `last_change`.
    fn apply(&self, state: &mut DatabaseState) -> String {
        match self {
            Change::Offline => {
                state.online = false;
                "offline".into()
            }
            Change::Online => {
                state.online = true;
                "online".into()
            }
            Change::Pin(version) => {
                state.pinned = Some(version.clone());
                format!("pin {version}")
            }
            Change::Unpin => {
                state.pinned = None;
                "unpin".into()
            }
        }
    }
}

/// Changes the state of `db` (which must exist; a pinned version must
/// exist in it) and returns the state written.
pub async fn change_state(source: &Source, db: &str, change: Change) -> anyhow::Result<Updated> {
    require_database(source, db).await?;
    if let Change::Pin(version) = &change {
        let versions = source.list_versions(db).await?;
        if !versions.contains(version) {
            bail!(
                "{}: no such version to pin (versions: {})",
                source.display_path(db, Some(version)),
                if versions.is_empty() {
                    "none".to_string()
                } else {
                    versions.join(", ")
                }
            );
        }
    }
    Ok(update(source, db, |state| Ok(change.apply(state))).await?)
}

/// One line per database: its versions and its state.
pub async fn list(source: &Source) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    for db in source.list_databases().await? {
        let versions = source.list_versions(&db).await?;
        let state = source.database_state(&db).await?.unwrap_or_default();
        lines.push(format!(
            "{db}: {} version(s) [{}]; {}",
            versions.len(),
            versions.join(", "),
            state.summary()
        ));
    }
    Ok(lines)
}

/// Several lines about `db`: its versions (with whether each has
/// `_SUCCESS`), the newest, and the state document.
pub async fn status(source: &Source, db: &str) -> anyhow::Result<String> {
    require_database(source, db).await?;
    let versions = source.list_versions(db).await?;
    let (store, root) = source.object_store();
    let mut out = format!("database {}\n", source.display_path(db, None));
    out.push_str(&format!("versions: {}\n", versions.len()));
    for version in &versions {
        let marker = root
            .clone()
            .join(db)
            .join(version.as_str())
            .join(SUCCESS_FILE);
        let complete = match store.head(&marker).await {
            Ok(_) => "complete",
            Err(object_store::Error::NotFound { .. }) => "no _SUCCESS",
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("{}/{SUCCESS_FILE}", source.display_path(db, Some(version)))
                });
            }
        };
        out.push_str(&format!("  {version} ({complete})\n"));
    }
    out.push_str(&format!(
        "newest: {}\n",
        versions.last().map(String::as_str).unwrap_or("none")
    ));
    match source.database_state(db).await? {
        Some(state) => {
            out.push_str(&format!("state: {}\n", state.summary()));
            out.push_str(&format!("{STATE_FILE}:\n{}", state.to_json()));
        }
        None => out.push_str(&format!(
            "state: {} (no {STATE_FILE})\n",
            DatabaseState::default().summary()
        )),
    }
    Ok(out)
}

/// Every object of `db` in the source (its state object last).
async fn objects_of(source: &Source, db: &str) -> anyhow::Result<Vec<ObjectPath>> {
    let (store, root) = source.object_store();
    let prefix = root.clone().join(db);
    let state = prefix.clone().join(STATE_FILE);
    let mut objects: Vec<ObjectPath> = store
        .list(Some(&prefix))
        .map_ok(|meta| meta.location)
        .try_collect()
        .await
        .with_context(|| format!("cannot list {}", source.display_path(db, None)))?;
    if source.local_root().is_some() {
        // Hidden files of a local root (the state's lock file) are not
        // objects of the database; they go with its directory.
        objects.retain(|o| !o.filename().is_some_and(|n| n.starts_with('.')));
    }
    objects.sort();
    // Data first, the state object last: a delete that stops halfway leaves
    // the database with its state (offline, say) rather than data without it.
    objects.sort_by_key(|o| *o == state);
    Ok(objects)
}

/// Whether a deletion was confirmed.
pub enum Confirmation {
    /// `--force`: no question asked.
    Forced,
    /// Ask on the terminal (stdin must be one).
    Ask,
}

/// Deletes every object of `db`, the state object last; returns how many.
/// Without `--force` it asks on the terminal, and refuses when stdin is not
/// one (a script must say `--force`).
pub async fn delete(
    source: &Source,
    db: &str,
    confirmation: Confirmation,
) -> anyhow::Result<usize> {
    require_database(source, db).await?;
    let objects = objects_of(source, db).await?;
    let location = source.display_path(db, None);
    if let Confirmation::Ask = confirmation {
        if !std::io::stdin().is_terminal() {
            bail!(
                "{location}: refusing to delete without confirmation (stdin is not a terminal); \
                 use --force"
            );
        }
        let versions = source.list_versions(db).await?;
        eprint!(
            "Delete database {location}: {} object(s), versions [{}]? Type the database name to confirm: ",
            objects.len(),
            versions.join(", ")
        );
        std::io::stderr().flush().ok();
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if answer.trim() != db {
            bail!("{location}: not deleted (confirmation did not match)");
        }
    }
    let (store, _) = source.object_store();
    for object in &objects {
        match store.delete(object).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => {
                return Err(e).with_context(|| format!("{location}: cannot delete {object}"));
            }
        }
    }
    if let Some(root) = source.local_root() {
        // Local roots keep empty directories and the hidden lock file,
        // which the object listing does not show; remove what is left.
        let dir = root.join(db);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove {}", dir.display())),
        }
    }
    Ok(objects.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split_into_root_and_names() {
        let split =
            |arg, n| split_target(arg, n, &["db", "version"][..n]).map_err(|e| e.to_string());
        assert_eq!(
            split("s3://bucket/prefix/db/3", 2).unwrap(),
            ("s3://bucket/prefix".into(), vec!["db".into(), "3".into()])
        );
        assert_eq!(
            split("s3://bucket/db/", 1).unwrap(),
            ("s3://bucket".into(), vec!["db".into()])
        );
        assert_eq!(
            split("/srv/root/db", 1).unwrap(),
            ("/srv/root".into(), vec!["db".into()])
        );
        assert_eq!(split("/db", 1).unwrap(), ("/".into(), vec!["db".into()]));
        assert_eq!(
            split("root/db", 1).unwrap(),
            ("root".into(), vec!["db".into()])
        );
        assert!(
            split("s3://bucket", 1)
                .unwrap_err()
                .contains("expected SOURCE/<db>")
        );
        assert!(split("s3://bucket/db", 2).is_err());
        assert!(split("db", 1).is_err());
        assert!(
            split("/root/bad.db", 1)
                .unwrap_err()
                .contains("invalid db name \"bad.db\"")
        );
    }
}
