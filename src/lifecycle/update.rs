//! Conditional updates of a database's state object (`<db>/_state.json`):
//! a read-modify-write whose write only succeeds if the object is still the
//! one that was read, so two `sequinsfs db` commands can never overwrite
//! each other's change.
//!
//! - Object stores (S3, in-memory): the write is `PutMode::Update` with the
//!   ETag/version read (`PutMode::Create` when there was no object). A
//!   precondition failure means someone else changed it in between: re-read
//!   and apply the change again, a bounded number of times with jitter.
//! - Local roots: object_store's local store has no `PutMode::Update`, so
//!   the whole read-modify-write runs under an exclusive `flock` on
//!   `<db>/.state.lock` (a hidden name, never a version) and the new
//!   document replaces the old by an atomic rename of a synced temporary
//!   file, followed by a sync of the directory.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};

use super::state::{DatabaseState, MAX_STATE_LEN, STATE_FILE};
use crate::source::Source;

/// Attempts of a conditional write before giving up. Each conflict means
/// another command's change landed in between; ten in a row only happen
/// under a storm of concurrent changes, which deserves a report rather than
/// an endless loop.
pub const MAX_ATTEMPTS: u32 = 10;

/// The lock file of a local database's state, inside `<db>/`. Starts with
/// `.` so the source's name rules never take it for a version.
pub const LOCK_FILE: &str = ".state.lock";

/// A successful update.
#[derive(Debug, Clone)]
pub struct Updated {
    /// The state as written.
    pub state: DatabaseState,
    /// How many attempts it took (1 without conflicts).
    pub attempts: u32,
}

/// Why an update did not happen.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// The change does not apply to the current state (e.g. pinning a
    /// version that does not exist); nothing was written.
    #[error("{location}: {reason}")]
    Refused { location: String, reason: String },
    /// Every attempt lost to another change.
    #[error(
        "{location}: gave up after {attempts} attempts, each conflicting with a concurrent change; \
         the latest was {latest}"
    )]
    Conflict {
        location: String,
        attempts: u32,
        latest: String,
    },
    /// Reading or writing the state failed.
    #[error("{location}: {message}")]
    Store { location: String, message: String },
}

/// Who makes a change: `$USER@hostname`.
pub fn who() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("{user}@{}", hostname())
}

fn hostname() -> String {
    let mut name = [0u8; 256];
    // SAFETY: gethostname writes at most `name.len()` bytes into the buffer
    // we own and pass with its length.
    let rc = unsafe { libc::gethostname(name.as_mut_ptr().cast(), name.len()) };
    if rc != 0 {
        return "unknown-host".into();
    }
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    String::from_utf8_lossy(&name[..end]).into_owned()
}

/// Applies `change` to the state of `db` and writes it back conditionally.
///
/// `change` gets the current state (the default one when there is no
/// object) to modify, and returns a short description of the change
/// (`offline`, `pin 3`) or a refusal. It may be called again on a fresher
/// state after a conflict. The update then counts the change (`changes`
/// + 1) and records who made it, when, and its description.
pub async fn update<F>(source: &Source, db: &str, mut change: F) -> Result<Updated, UpdateError>
where
    F: FnMut(&mut DatabaseState) -> Result<String, String>,
{
    let location = format!("{}/{STATE_FILE}", source.display_path(db, None));
    match source.local_root() {
        Some(root) => update_local(&root.join(db), &location, &mut change).await,
        None => update_store(source, db, &location, &mut change).await,
    }
}

/// Stamps a changed state with the change's bookkeeping.
fn stamp(state: &mut DatabaseState, description: String) {
    state.changes += 1;
    state.changed_by = Some(who());
    state.changed_at =
        Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    state.last_change = Some(description);
}

/// How the latest change is described in a conflict report.
fn describe_latest(state: &DatabaseState) -> String {
    format!(
        "change {} ({}) by {} at {}",
        state.changes,
        state.last_change.as_deref().unwrap_or("?"),
        state.changed_by.as_deref().unwrap_or("?"),
        state.changed_at.as_deref().unwrap_or("?"),
    )
}

async fn update_store<F>(
    source: &Source,
    db: &str,
    location: &str,
    change: &mut F,
) -> Result<Updated, UpdateError>
where
    F: FnMut(&mut DatabaseState) -> Result<String, String>,
{
    let (store, root) = source.object_store();
    let path = root.clone().join(db).join(STATE_FILE);
    let store_err = |what: &str, e: object_store::Error| UpdateError::Store {
        location: location.to_string(),
        message: format!("{what}: {e}"),
    };
    for attempt in 1..=MAX_ATTEMPTS {
        let (current, version) = read_store(store.as_ref(), &path, location).await?;
        let mut next = current.clone().unwrap_or_default();
        let description = change(&mut next).map_err(|reason| UpdateError::Refused {
            location: location.to_string(),
            reason,
        })?;
        stamp(&mut next, description);
        let mode = match version {
            Some(version) => PutMode::Update(version),
            None => PutMode::Create,
        };
        let payload = PutPayload::from(next.to_json().into_bytes());
        match store.put_opts(&path, payload, PutOptions::from(mode)).await {
            Ok(_) => {
                return Ok(Updated {
                    state: next,
                    attempts: attempt,
                });
            }
            Err(object_store::Error::Precondition { .. })
            | Err(object_store::Error::AlreadyExists { .. }) => {
                tracing::debug!("{location}: conflicting change, attempt {attempt}");
                if attempt < MAX_ATTEMPTS {
                    tokio::time::sleep(jitter(attempt)).await;
                }
            }
            Err(e) => return Err(store_err("cannot write", e)),
        }
    }
    let (latest, _) = read_store(store.as_ref(), &path, location).await?;
    Err(UpdateError::Conflict {
        location: location.to_string(),
        attempts: MAX_ATTEMPTS,
        latest: latest
            .as_ref()
            .map(describe_latest)
            .unwrap_or_else(|| "a deletion of the state".into()),
    })
}

/// The state object and the version to make the write conditional on;
/// `(None, None)` when there is none.
async fn read_store(
    store: &dyn object_store::ObjectStore,
    path: &ObjectPath,
    location: &str,
) -> Result<(Option<DatabaseState>, Option<UpdateVersion>), UpdateError> {
    let store_err = |e: object_store::Error| UpdateError::Store {
        location: location.to_string(),
        message: format!("cannot read: {e}"),
    };
    let object = match store.get(path).await {
        Ok(object) => object,
        Err(object_store::Error::NotFound { .. }) => return Ok((None, None)),
        Err(e) => return Err(store_err(e)),
    };
    if object.meta.size > MAX_STATE_LEN {
        return Err(UpdateError::Store {
            location: location.to_string(),
            message: format!("{} bytes is too large for a state object", object.meta.size),
        });
    }
    let version = UpdateVersion {
        e_tag: object.meta.e_tag.clone(),
        version: object.meta.version.clone(),
    };
    let bytes = object.bytes().await.map_err(store_err)?;
    let state = DatabaseState::parse(&bytes, location).map_err(|e| UpdateError::Store {
        location: location.to_string(),
        message: e.message,
    })?;
    Ok((Some(state), Some(version)))
}

/// A pause before retrying after the `attempt`-th conflict: growing with
/// the attempt, with random jitter so that two contenders who collided do
/// not collide again in lockstep.
fn jitter(attempt: u32) -> Duration {
    let base_ms = 5 * u64::from(attempt);
    // Jitter from the clock's low bits and the pid: no RNG crate needed for
    // de-synchronising a handful of processes.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let noise = u64::from(nanos ^ std::process::id().wrapping_mul(2_654_435_761)) % (base_ms * 4);
    Duration::from_millis(base_ms + noise)
}

async fn update_local<F>(
    db_dir: &Path,
    location: &str,
    change: &mut F,
) -> Result<Updated, UpdateError>
where
    F: FnMut(&mut DatabaseState) -> Result<String, String>,
{
    let io_err = |what: &str, path: &Path, e: std::io::Error| UpdateError::Store {
        location: location.to_string(),
        message: format!("{what} {}: {e}", path.display()),
    };
    std::fs::create_dir_all(db_dir).map_err(|e| io_err("cannot create", db_dir, e))?;
    let lock_path = db_dir.join(LOCK_FILE);
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| io_err("cannot open", &lock_path, e))?;
    // Waiting for the lock blocks; do it off the async runtime so other
    // tasks (another update in the same process) keep running meanwhile.
    let lock = tokio::task::spawn_blocking(move || {
        // SAFETY: flock on a file descriptor we own (the file lives in the
        // closure until it is returned); no memory is involved.
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(lock)
        }
    })
    .await
    .map_err(|e| UpdateError::Store {
        location: location.to_string(),
        message: format!("lock task failed: {e}"),
    })?
    .map_err(|e| io_err("cannot lock", &lock_path, e))?;

    let state_path = db_dir.join(STATE_FILE);
    let current = match std::fs::read(&state_path) {
        Ok(bytes) => {
            if bytes.len() as u64 > MAX_STATE_LEN {
                return Err(UpdateError::Store {
                    location: location.to_string(),
                    message: format!("{} bytes is too large for a state object", bytes.len()),
                });
            }
            DatabaseState::parse(&bytes, location).map_err(|e| UpdateError::Store {
                location: location.to_string(),
                message: e.message,
            })?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => DatabaseState::default(),
        Err(e) => return Err(io_err("cannot read", &state_path, e)),
    };
    let mut next = current;
    let description = change(&mut next).map_err(|reason| UpdateError::Refused {
        location: location.to_string(),
        reason,
    })?;
    stamp(&mut next, description);
    write_atomically(db_dir, &state_path, next.to_json().as_bytes())
        .map_err(|(path, e)| io_err("cannot write", &path, e))?;
    // The lock is released when `lock` is dropped, after the rename.
    drop(lock);
    Ok(Updated {
        state: next,
        attempts: 1,
    })
}

/// Replaces `target` with `data`: a temporary file in the same directory
/// (hidden name, never a version or data file), synced, renamed over the
/// target, and the directory synced so the rename survives a crash.
fn write_atomically(
    dir: &Path,
    target: &Path,
    data: &[u8],
) -> Result<(), (PathBuf, std::io::Error)> {
    let tmp = dir.join(format!(".{STATE_FILE}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp).map_err(|e| (tmp.clone(), e))?;
        file.write_all(data).map_err(|e| (tmp.clone(), e))?;
        file.sync_all().map_err(|e| (tmp.clone(), e))?;
        std::fs::rename(&tmp, target).map_err(|e| (target.to_path_buf(), e))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| (dir.to_path_buf(), e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SourceOptions;
    use object_store::PutResult;
    use object_store::memory::InMemory;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn memory_source() -> (Arc<InMemory>, Source) {
        let store = Arc::new(InMemory::new());
        let source = Source::with_store(
            store.clone(),
            "root",
            "mem://root",
            SourceOptions::default(),
        )
        .unwrap();
        (store, source)
    }

    #[tokio::test]
    async fn first_update_creates_and_later_ones_count() {
        let (_, source) = memory_source();
        let first = update(&source, "db", |s| {
            s.online = false;
            Ok("offline".into())
        })
        .await
        .unwrap();
        assert_eq!(first.state.changes, 1);
        assert_eq!(first.attempts, 1);
        let second = update(&source, "db", |s| {
            s.pinned = Some("3".into());
            Ok("pin 3".into())
        })
        .await
        .unwrap();
        let read = source.database_state("db").await.unwrap().unwrap();
        assert_eq!(read, second.state);
        assert!(!read.online);
        assert_eq!(read.pinned.as_deref(), Some("3"));
        assert_eq!(read.changes, 2);
        assert_eq!(read.last_change.as_deref(), Some("pin 3"));
        assert!(read.changed_by.as_deref().unwrap().contains('@'));
        chrono::DateTime::parse_from_rfc3339(read.changed_at.as_deref().unwrap()).unwrap();
    }

    #[tokio::test]
    async fn a_refusal_writes_nothing() {
        let (store, source) = memory_source();
        let err = update(&source, "db", |_| Err("no such version 9".into()))
            .await
            .unwrap_err();
        assert!(matches!(err, UpdateError::Refused { .. }));
        assert_eq!(
            err.to_string(),
            "mem://root/db/_state.json: no such version 9"
        );
        let path = ObjectPath::from("root/db/_state.json");
        assert!(matches!(
            store.head(&path).await,
            Err(object_store::Error::NotFound { .. })
        ));
    }

    /// A change that lands between our read and our write makes the write
    /// fail its precondition; the update re-reads and applies its change on
    /// top of the other one.
    #[tokio::test]
    async fn a_concurrent_change_is_retried_on_top_of_it() {
        let (store, source) = memory_source();
        update(&source, "db", |_| Ok("create".into()))
            .await
            .unwrap();
        let calls = AtomicU32::new(0);
        let path = ObjectPath::from("root/db/_state.json");
        let updated = update(&source, "db", |s| {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                // Someone else's change, written behind our back.
                let mut other = s.clone();
                other.online = false;
                other.changes += 1;
                other.last_change = Some("offline".into());
                let store = store.clone();
                let path = path.clone();
                std::thread::spawn(move || {
                    futures::executor::block_on(
                        store.put(&path, other.to_json().into_bytes().into()),
                    )
                })
                .join()
                .unwrap()
                .map(|_: PutResult| ())
                .unwrap();
            }
            s.pinned = Some("7".into());
            Ok("pin 7".into())
        })
        .await
        .unwrap();
        assert_eq!(updated.attempts, 2);
        let read = source.database_state("db").await.unwrap().unwrap();
        assert!(!read.online, "the other change survives");
        assert_eq!(read.pinned.as_deref(), Some("7"));
        assert_eq!(read.changes, 3);
    }

    /// When every attempt conflicts, the update gives up and says what the
    /// conflicting change was.
    #[tokio::test]
    async fn endless_conflicts_are_reported_with_the_latest_change() {
        let (store, source) = memory_source();
        let path = ObjectPath::from("root/db/_state.json");
        update(&source, "db", |_| Ok("create".into()))
            .await
            .unwrap();
        let err = update(&source, "db", |s| {
            let mut other = s.clone();
            other.changes += 1;
            other.changed_by = Some("bob@elsewhere".into());
            other.changed_at = Some("2026-01-01T00:00:00Z".into());
            other.last_change = Some("online".into());
            let store = store.clone();
            let path = path.clone();
            std::thread::spawn(move || {
                futures::executor::block_on(store.put(&path, other.to_json().into_bytes().into()))
            })
            .join()
            .unwrap()
            .unwrap();
            Ok("offline".into())
        })
        .await
        .unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(
                err,
                UpdateError::Conflict {
                    attempts: MAX_ATTEMPTS,
                    ..
                }
            ),
            "{text}"
        );
        assert!(
            text.contains("(online) by bob@elsewhere at 2026-01-01T00:00:00Z"),
            "{text}"
        );
    }

    /// Many concurrent updates of one in-memory object: none is lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_updates_lose_nothing_in_memory() {
        let (_, source) = memory_source();
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let source = source.clone();
                tokio::spawn(async move {
                    update(&source, "db", |s| {
                        s.pinned = Some(i.to_string());
                        Ok(format!("pin {i}"))
                    })
                    .await
                })
            })
            .collect();
        let mut ok = 0;
        for task in tasks {
            if task.await.unwrap().is_ok() {
                ok += 1;
            }
        }
        let read = source.database_state("db").await.unwrap().unwrap();
        assert_eq!(read.changes, ok);
        assert_eq!(
            read.last_change,
            Some(format!("pin {}", read.pinned.as_deref().unwrap()))
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_local_updates_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let source = Source::open(dir.path().to_str().unwrap(), SourceOptions::default()).unwrap();
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let source = source.clone();
                tokio::spawn(async move {
                    update(&source, "db", |s| {
                        if i % 2 == 0 {
                            s.online = !s.online;
                        } else {
                            s.pinned = Some(i.to_string());
                        }
                        Ok(format!("change {i}"))
                    })
                    .await
                    .unwrap()
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let read = source.database_state("db").await.unwrap().unwrap();
        assert_eq!(read.changes, 20);
        // Ten toggles of `online` from true.
        assert!(read.online);
        assert!(dir.path().join("db").join(LOCK_FILE).exists());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("db"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains("tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
