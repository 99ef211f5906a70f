//! Migrations of the local store: a store written by an older release is
//! brought to [`STORE_FORMAT`] in place, never downloaded again.
//!
//! Two kinds of step, as Seq 6 did when it changed its storage:
//!
//! - **Start-up steps** ([`upgrade_at_open`]) are cheap (renames, manifest
//!   rewrites) and run when the store is opened, before anything is
//!   served. Each is idempotent, and the format file is written only after
//!   the last one, so a crash at any point leaves a store that the next
//!   start brings over again.
//! - **Background conversions** rewrite data, which takes time. The version
//!   keeps being served in its old layout (every reader of this binary still
//!   reads it) while a converted copy is built under `tmp/`: unchanged files
//!   are hard-linked, the rewritten ones written and fsynced, then the copy
//!   is swapped with the published directory in one `renameat2`
//!   (`RENAME_EXCHANGE`, [`LocalStore::exchange`]) and switched in like any
//!   version. A crash before the swap leaves the old version published and
//!   the copy under `tmp/`, which the next start removes and redoes; after
//!   it, the new version is published. The refresher runs them (see
//!   `Refresher::resume_migrations`); which versions need one is read from
//!   their files ([`needs_conversion`]), so nothing records a half-done
//!   migration.
//!
//! Steps from format 1 to 2:
//!
//! - start-up: every manifest is rewritten as format 2, then `store.json`
//!   records format 2;
//! - background: key indexes of format 1 (the first releases: no value
//!   locations, so every read by position looked its key up in the hash
//!   index again) are rewritten as format 2 with the locations.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::format::{self, STORE_FORMAT};
use super::keyindex::{KeyIndex, WithLocationsError};
use super::manifest::{MANIFEST_FILE, MANIFEST_FORMAT, Manifest};
use super::version::LocalVersion;
use super::{DATA_DIR, LocalStore, StoreError, io_err, sorted_dir_names};
use crate::catalog::VersionData;

const KEY_INDEX_FILE: &str = "keys.idx";

/// One start-up step: brings a store of format `to - 1` to `to`.
struct Step {
    to: u32,
    what: &'static str,
    /// Returns how many versions it changed.
    run: fn(&Path) -> Result<u64, StoreError>,
}

const STEPS: &[Step] = &[Step {
    to: 2,
    what: "manifests rewritten as format 2",
    run: manifests_to_format_2,
}];

/// Runs the start-up steps from `found` (the store's format) to
/// [`STORE_FORMAT`] and records the new format. A fresh store is simply
/// stamped with the current format.
pub(super) fn upgrade_at_open(root: &Path, found: u32) -> Result<(), StoreError> {
    if found == STORE_FORMAT {
        return Ok(());
    }
    for step in STEPS.iter().filter(|s| s.to > found) {
        let started = std::time::Instant::now();
        let changed = (step.run)(root)?;
        tracing::info!(
            store = %root.display(),
            from = step.to - 1,
            to = step.to,
            versions = changed,
            seconds = started.elapsed().as_secs_f64(),
            "local store migrated: {}",
            step.what
        );
    }
    format::write(root, STORE_FORMAT)
}

/// Format 1 to 2: every published manifest says format 2.
fn manifests_to_format_2(root: &Path) -> Result<u64, StoreError> {
    let mut changed = 0;
    for dir in version_dirs(root)? {
        Manifest::remove_leftover(&dir)?;
        if !dir.join(MANIFEST_FILE).is_file() {
            continue; // not published; LocalStore::published removes it
        }
        let mut manifest = match Manifest::read(&dir) {
            Ok(m) => m,
            // Left for the restore, which rebuilds unreadable versions.
            Err(StoreError::Invalid(e)) => {
                tracing::warn!("{e}");
                continue;
            }
            Err(e) => return Err(e),
        };
        if manifest.format < MANIFEST_FORMAT {
            manifest.format = MANIFEST_FORMAT;
            manifest.replace(&dir)?;
            changed += 1;
        }
    }
    Ok(changed)
}

fn version_dirs(root: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let data = root.join(DATA_DIR);
    let mut dirs = Vec::new();
    for db in sorted_dir_names(&data)? {
        let db_dir = data.join(&db);
        if db_dir.is_dir() {
            for version in sorted_dir_names(&db_dir)? {
                let dir = db_dir.join(version);
                if dir.is_dir() {
                    dirs.push(dir);
                }
            }
        }
    }
    Ok(dirs)
}

/// Whether a published version waits for a background conversion.
pub fn needs_conversion(version: &LocalVersion) -> bool {
    !version.key_index().has_locations() && !version.key_index().is_empty()
}

/// How far a background conversion is, for `.status`.
#[derive(Debug, Default)]
pub struct ConversionProgress {
    pub keys_done: AtomicU64,
    pub keys_total: AtomicU64,
}

/// Builds the converted copy of `version` under `tmp/` and returns its
/// directory, ready for [`LocalStore::exchange`]; `None` if cancelled (the
/// copy is then discarded). Every file but the key index is hard-linked.
pub fn convert(
    store: &LocalStore,
    version: &LocalVersion,
    progress: &ConversionProgress,
    cancelled: &dyn Fn() -> bool,
) -> Result<Option<PathBuf>, StoreError> {
    let manifest = version.manifest();
    let staging = store.staging_dir(&manifest.db, &manifest.version)?;
    match write_converted(version, &staging, progress, cancelled) {
        Ok(true) => Ok(Some(staging)),
        Ok(false) => {
            store.discard(staging);
            Ok(None)
        }
        Err(e) => {
            store.discard(staging);
            Err(e)
        }
    }
}

fn write_converted(
    version: &LocalVersion,
    staging: &Path,
    progress: &ConversionProgress,
    cancelled: &dyn Fn() -> bool,
) -> Result<bool, StoreError> {
    let dir = version.dir();
    for name in sorted_dir_names(dir)? {
        if name == KEY_INDEX_FILE {
            continue;
        }
        let (from, to) = (dir.join(&name), staging.join(&name));
        fs::hard_link(&from, &to).map_err(io_err(&to))?;
    }
    let keys = version.key_index();
    progress.keys_total.store(keys.len(), Ordering::Relaxed);
    let out = staging.join(KEY_INDEX_FILE);
    let locate = |ordinal: u64| {
        if ordinal % 4096 == 0 {
            progress.keys_done.fetch_max(ordinal, Ordering::Relaxed);
        }
        let value = version.locate_ordinal(ordinal)?;
        Ok::<_, crate::catalog::LookupError>((value.table, value.address))
    };
    // Every core: the store is being migrated while the version serves from
    // the page cache, and the conversion is mostly waiting on random reads.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let written = keys
        .write_with_locations(&out, &locate, threads, cancelled)
        .map_err(|e| match e {
            WithLocationsError::Io(e) => io_err(&out)(e),
            WithLocationsError::Locate(e) => StoreError::Invalid(format!(
                "{}: {}",
                dir.display(),
                crate::error_chain::ErrorChain(&e)
            )),
        })?;
    if written {
        progress.keys_done.store(keys.len(), Ordering::Relaxed);
        // The converted index must read back as the old one did.
        let check = KeyIndex::open(&out).map_err(|e| StoreError::Invalid(e.to_string()))?;
        if check.len() != keys.len() || !check.has_locations() {
            return Err(StoreError::Invalid(format!(
                "{}: converted key index does not read back",
                out.display()
            )));
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy_dir(from: &Path, to: &Path) {
        fs::create_dir_all(to).unwrap();
        for entry in fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_dir(&entry.path(), &target);
            } else {
                fs::copy(entry.path(), &target).unwrap();
            }
        }
    }

    fn first_release_store() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v1/store");
        copy_dir(&fixture, dir.path());
        dir
    }

    #[test]
    fn opening_a_format_1_store_rewrites_manifests_and_records_the_format() {
        let dir = first_release_store();
        let manifest = dir.path().join("data/colors/1").join(MANIFEST_FILE);
        // A crash of an earlier migration left its temporary manifest.
        fs::write(dir.path().join("data/colors/1/manifest.json.tmp"), b"{").unwrap();
        let before = Manifest::read(manifest.parent().unwrap()).unwrap();
        assert_eq!(before.format, 1);
        let store = LocalStore::open(dir.path()).unwrap();
        assert_eq!(store.opened_format(), 1);
        assert_eq!(format::read(dir.path()).unwrap(), STORE_FORMAT);
        let after = Manifest::read(manifest.parent().unwrap()).unwrap();
        assert_eq!(after.format, MANIFEST_FORMAT);
        assert_eq!(Manifest { format: 1, ..after }, before);
        assert!(!dir.path().join("data/colors/1/manifest.json.tmp").exists());
        drop(store);
        assert_eq!(
            LocalStore::open(dir.path()).unwrap().opened_format(),
            STORE_FORMAT
        );
    }

    #[test]
    fn a_new_store_starts_at_the_current_format() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let store = LocalStore::open(&root).unwrap();
        assert_eq!(store.opened_format(), STORE_FORMAT, "nothing to migrate");
        assert_eq!(format::read(&root).unwrap(), STORE_FORMAT);
    }

    #[test]
    fn a_store_of_a_newer_format_is_refused_and_left_alone() {
        let dir = first_release_store();
        format::write(dir.path(), STORE_FORMAT + 1).unwrap();
        let err = LocalStore::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::NewerFormat { .. }), "{err}");
        // Nothing migrated, nothing removed.
        let manifest = Manifest::read(&dir.path().join("data/colors/1")).unwrap();
        assert_eq!(manifest.format, 1);
    }

    #[test]
    fn a_manifest_of_a_newer_format_is_refused() {
        let dir = first_release_store();
        let version = dir.path().join("data/colors/1");
        let mut manifest = Manifest::read(&version).unwrap();
        manifest.format = MANIFEST_FORMAT + 1;
        manifest.write(&version).unwrap();
        let err = Manifest::read(&version).unwrap_err();
        assert!(matches!(err, StoreError::NewerFormat { .. }), "{err}");
    }

    #[test]
    fn a_format_1_key_index_is_converted_and_swapped_in() {
        let dir = first_release_store();
        let store = LocalStore::open(dir.path()).unwrap();
        let published = store.version_dir("baby-names", "1");
        let old = LocalVersion::open(&published).unwrap();
        assert!(needs_conversion(&old));
        let progress = ConversionProgress::default();
        let staging = convert(&store, &old, &progress, &|| false)
            .unwrap()
            .unwrap();
        store.exchange(&staging, "baby-names", "1").unwrap();
        let new = LocalVersion::open(&published).unwrap();
        assert!(!needs_conversion(&new));
        assert_eq!(progress.keys_done.load(Ordering::Relaxed), old.key_count());
        for ordinal in 0..old.key_count() {
            let (a, b) = (
                old.locate_ordinal(ordinal).unwrap(),
                new.locate_ordinal(ordinal).unwrap(),
            );
            assert_eq!((a.table, a.address, a.len), (b.table, b.address, b.len));
            assert_eq!(old.key_at(ordinal).unwrap(), new.key_at(ordinal).unwrap());
        }
        // The old directory went to tmp/ and is removed there.
        store.wait_for_removals();
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn a_cancelled_conversion_leaves_the_version_as_it_was() {
        let dir = first_release_store();
        let store = LocalStore::open(dir.path()).unwrap();
        let old = LocalVersion::open(&store.version_dir("baby-names", "1")).unwrap();
        let progress = ConversionProgress::default();
        assert!(
            convert(&store, &old, &progress, &|| true)
                .unwrap()
                .is_none()
        );
        store.wait_for_removals();
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        let again = LocalVersion::open(&store.version_dir("baby-names", "1")).unwrap();
        assert!(needs_conversion(&again));
    }
}
