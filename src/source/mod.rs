//! The source root: where batch jobs publish `<root>/<db>/<version>/<files>`,
//! on local disk, S3 or HDFS, read through `object_store`.
//!
//! [`Source`] lists databases, versions and data files under sequins' naming
//! rules (see [`names`]), and reads files either as a blocking stream (for
//! the SequenceFile loader) or by downloading them (for Sparkey inputs).
//! Everything that depends on the backend stays in here: the rest of the
//! daemon sees names, [`SourceFile`]s and [`SourceError`]s.
//!
//! Differences from sequins, on purpose: version listings use a prefix
//! ending in `/` (version `1` never sees the files of `10`); listings follow
//! pagination past 1000 entries; a bucket root (`s3://bucket`) works; `_SUCCESS`
//! is checked with HEAD, not GET; subdirectories of a version are ignored,
//! not flattened; reads are pinned to the listed ETag.

mod bandwidth;
mod error;
mod hdfs;
pub mod names;
mod s3;
mod transfer;
mod uri;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ListResult, ObjectStore, ObjectStoreExt};

pub use bandwidth::{BandwidthLimiter, Clock, MonotonicClock};
pub use error::SourceError;

use crate::config::{Config, S3Config};
use names::{SUCCESS_FILE, SYMLINK_FILE, is_data_file_name, is_valid_name};
use uri::SourceUri;

/// `_SUCCESS` checks in flight at once when listing versions. A HEAD takes
/// tens of milliseconds on S3; 16 at a time checks a thousand versions in
/// about a second without hammering the endpoint.
const SUCCESS_CHECK_CONCURRENCY: usize = 16;
/// A `_SYMLINK` holds one version name; anything longer is refused before
/// it is read.
const MAX_SYMLINK_LEN: u64 = 1024;

/// How a [`Source`] talks to its backend.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// A version counts only once its `_SUCCESS` file exists.
    pub require_success_file: bool,
    /// Credentials, region and endpoint for `s3://` sources; empty fields
    /// fall back to the `AWS_*` environment.
    pub s3: S3Config,
    /// Cap on the bandwidth of all reads from this source together, MiB/s;
    /// 0 is off.
    pub max_download_bandwidth_mb_per_second: u64,
    /// A network read that receives nothing for this long fails (and is
    /// resumed). There is deliberately no timeout on whole requests: a large
    /// file may take as long as it takes while bytes keep arriving.
    pub read_timeout: Duration,
    /// Time allowed to establish a connection.
    pub connect_timeout: Duration,
    /// Failed reads resumed in a row, without progress, before giving up.
    pub max_resume_attempts: u32,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            require_success_file: false,
            s3: S3Config::default(),
            max_download_bandwidth_mb_per_second: 0,
            // Half a minute without a single byte means the connection is
            // dead, not slow; S3 itself closes idle connections after 20 s.
            read_timeout: Duration::from_secs(30),
            // object_store's default; a healthy endpoint connects in ms.
            connect_timeout: Duration::from_secs(5),
            // Five resumes with backoff 0.1, 0.2, 0.4, 0.8, 1.6 s, each after
            // object_store's own request retries: a blip never fails a load,
            // an outage fails it within minutes and the next refresh retries.
            max_resume_attempts: 5,
        }
    }
}

impl SourceOptions {
    /// The options a daemon configuration asks for.
    pub fn from_config(config: &Config) -> SourceOptions {
        SourceOptions {
            require_success_file: config.require_success_file,
            s3: config.s3.clone(),
            max_download_bandwidth_mb_per_second: config.max_download_bandwidth_mb_per_second,
            ..SourceOptions::default()
        }
    }
}

/// A data file of a version, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub db: String,
    pub version: String,
    /// The file name inside the version directory.
    pub name: String,
    pub size: u64,
    /// The ETag the listing reported, if the backend has them (S3 and
    /// local do); reads are pinned to it.
    pub etag: Option<String>,
    pub last_modified: Option<SystemTime>,
    location: ObjectPath,
}

#[cfg(test)]
impl SourceFile {
    /// A listing entry for unit tests of code that only looks at names.
    pub(crate) fn for_tests(db: &str, version: &str, name: &str, size: u64) -> SourceFile {
        SourceFile {
            db: db.into(),
            version: version.into(),
            name: name.into(),
            size,
            etag: None,
            last_modified: None,
            location: ObjectPath::from(format!("{db}/{version}/{name}")),
        }
    }
}

/// An open source root. Cheap to clone; clones share the connection pool
/// and the bandwidth limit.
#[derive(Debug, Clone)]
pub struct Source {
    inner: Arc<SourceInner>,
}

#[derive(Debug)]
struct SourceInner {
    display_base: String,
    store: Arc<dyn ObjectStore>,
    /// The root's path inside `store`; empty for a store's root.
    root: ObjectPath,
    /// Set for local sources: reads go straight to the files.
    local: Option<Arc<LocalFileSystem>>,
    /// The directory of a local root, for the commands that write to it.
    local_root: Option<PathBuf>,
    options: SourceOptions,
    limiter: Option<Arc<BandwidthLimiter>>,
}

impl Source {
    /// Opens a source root: `/abs/path`, `relative/path` (made absolute),
    /// `file:///path`, `s3://bucket[/prefix]` (`s3a://` too) or
    /// `hdfs://namenode:port/path` (with the `hdfs` feature). Nothing is
    /// listed yet, except that a local root must exist.
    pub fn open(uri: &str, options: SourceOptions) -> Result<Source, SourceError> {
        let parsed = SourceUri::parse(uri)?;
        let display_base = parsed.display_base();
        let open_error = |source| SourceError::Open {
            uri: uri.to_string(),
            source,
        };
        match &parsed {
            SourceUri::Local { root } => {
                // Checked here so that the error says what is wrong in the
                // user's words, before anything else (the local store) is
                // created.
                match std::fs::metadata(root) {
                    Ok(meta) if meta.is_dir() => {}
                    Ok(_) => {
                        return Err(SourceError::LocalRoot {
                            path: root.display().to_string(),
                            problem: "is not a directory",
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(SourceError::LocalRoot {
                            path: root.display().to_string(),
                            problem: "does not exist",
                        });
                    }
                    Err(e) => {
                        return Err(SourceError::Io {
                            path: root.display().to_string(),
                            source: e,
                        });
                    }
                }
                let local = Arc::new(LocalFileSystem::new_with_prefix(root).map_err(|e| {
                    SourceError::InvalidUri {
                        uri: uri.to_string(),
                        reason: format!("cannot open the directory: {e}"),
                    }
                })?);
                let store: Arc<dyn ObjectStore> = local.clone();
                Ok(Source::build(
                    display_base,
                    store,
                    ObjectPath::default(),
                    Some((local, root.clone())),
                    options,
                ))
            }
            SourceUri::S3 { bucket, prefix, .. } => {
                let store = s3::builder(
                    bucket,
                    &options.s3,
                    options.read_timeout,
                    options.connect_timeout,
                    std::env::vars(),
                )
                .build()
                .map_err(open_error)?;
                let root = parse_prefix(uri, prefix)?;
                Ok(Source::build(
                    display_base,
                    Arc::new(store),
                    root,
                    None,
                    options,
                ))
            }
            SourceUri::Hdfs {
                scheme,
                authority,
                path,
            } => {
                let store = hdfs::store(uri, scheme, authority)?;
                let root = parse_prefix(uri, path)?;
                Ok(Source::build(display_base, store, root, None, options))
            }
        }
    }

    /// A source over any object store (an in-memory one in tests, or a
    /// backend built elsewhere), rooted at `prefix` inside it and shown to
    /// users as `display_base`.
    pub fn with_store(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        display_base: &str,
        options: SourceOptions,
    ) -> Result<Source, SourceError> {
        let root = parse_prefix(display_base, prefix.trim_matches('/'))?;
        Ok(Source::build(
            display_base.trim_end_matches('/').to_string(),
            store,
            root,
            None,
            options,
        ))
    }

    fn build(
        display_base: String,
        store: Arc<dyn ObjectStore>,
        root: ObjectPath,
        local: Option<(Arc<LocalFileSystem>, PathBuf)>,
        options: SourceOptions,
    ) -> Source {
        let (local, local_root) = local.unzip();
        let limiter =
            BandwidthLimiter::from_mib_per_second(options.max_download_bandwidth_mb_per_second)
                .map(Arc::new);
        Source {
            inner: Arc::new(SourceInner {
                display_base,
                store,
                root,
                local,
                local_root,
                options,
                limiter,
            }),
        }
    }

    /// The options this source was opened with.
    pub fn options(&self) -> &SourceOptions {
        &self.inner.options
    }

    /// Whether files are read straight from local disk.
    pub fn is_local(&self) -> bool {
        self.inner.local.is_some()
    }

    /// The databases: valid directory names at the root, sorted. Invalid
    /// names are skipped with a log line; files at the root are ignored.
    pub async fn list_databases(&self) -> Result<Vec<String>, SourceError> {
        let listing = self.list_dir(&self.inner.root, None, None).await?;
        Ok(self.valid_child_names(&listing, "database", None))
    }

    /// The valid versions of `db`, sorted as byte strings (the greatest is
    /// the newest). With `require_success_file`, only those with
    /// `_SUCCESS` (for a `_SYMLINK` redirect: whose target has it). A
    /// database with no versions gives an empty list.
    pub async fn list_versions(&self, db: &str) -> Result<Vec<String>, SourceError> {
        check_name("database", db)?;
        let db_path = self.inner.root.clone().join(db);
        let listing = self.list_dir(&db_path, Some(db), None).await?;
        let versions = self.valid_child_names(&listing, "version", Some(db));
        if !self.inner.options.require_success_file {
            return Ok(versions);
        }
        let checks = versions.into_iter().map(|version| async move {
            Ok::<_, SourceError>(self.is_complete(db, &version).await?.then_some(version))
        });
        let with_success: Vec<Option<String>> = futures::stream::iter(checks)
            .buffered(SUCCESS_CHECK_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(with_success.into_iter().flatten().collect())
    }

    /// The version of `db` to serve next: the greatest valid version name
    /// above `above` (the version served now, if any; sequins never rolls
    /// back) that counts, as [`Source::list_versions`] decides. Versions
    /// are checked from the greatest down, a few at a time, so a refresh of
    /// a database with many versions costs one listing and usually one or
    /// two requests, not two per version.
    pub async fn newest_version(
        &self,
        db: &str,
        above: Option<&str>,
    ) -> Result<Option<String>, SourceError> {
        check_name("database", db)?;
        let db_path = self.inner.root.clone().join(db);
        let listing = self.list_dir(&db_path, Some(db), None).await?;
        let mut versions = self.valid_child_names(&listing, "version", Some(db));
        versions.retain(|version| above.is_none_or(|above| version.as_str() > above));
        if !self.inner.options.require_success_file {
            return Ok(versions.pop());
        }
        let checks = versions.into_iter().rev().map(|version| async move {
            Ok::<_, SourceError>(self.is_complete(db, &version).await?.then_some(version))
        });
        let mut newest_first = futures::stream::iter(checks).buffered(SUCCESS_CHECK_CONCURRENCY);
        while let Some(checked) = newest_first.try_next().await? {
            if checked.is_some() {
                return Ok(checked);
            }
        }
        Ok(None)
    }

    /// Whether `version` counts under `require_success_file`: it has
    /// `_SUCCESS`, or its `_SYMLINK` target has.
    async fn is_complete(&self, db: &str, version: &str) -> Result<bool, SourceError> {
        match self.read_symlink(db, version).await {
            // A broken redirect is reported when the version loads.
            Err(SourceError::BadSymlink { .. }) => Ok(true),
            Err(e) => Err(e),
            Ok(Some(target)) => self.has_success_file(db, &target).await,
            Ok(None) => self.has_success_file(db, version).await,
        }
    }

    async fn has_success_file(&self, db: &str, version: &str) -> Result<bool, SourceError> {
        let marker = self.version_path(db, version).join(SUCCESS_FILE);
        match self.inner.store.head(&marker).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(source) => Err(SourceError::List {
                location: format!("{}/{SUCCESS_FILE}", self.display_path(db, Some(version))),
                source,
            }),
        }
    }

    /// The version `version`'s `_SYMLINK` names, if it has one. The name
    /// must be a valid version name other than `version`, and the target
    /// must not redirect again (one level, as in sequins).
    async fn read_symlink(&self, db: &str, version: &str) -> Result<Option<String>, SourceError> {
        let location = format!("{}/{SYMLINK_FILE}", self.display_path(db, Some(version)));
        let bad = |reason: String| SourceError::BadSymlink {
            location: location.clone(),
            reason,
        };
        let path = self.version_path(db, version).join(SYMLINK_FILE);
        let bytes = match self.read_small(&path, &location, MAX_SYMLINK_LEN).await? {
            None => return Ok(None),
            Some(Err(size)) => {
                return Err(bad(format!("{size} bytes is too long for a version name")));
            }
            Some(Ok(bytes)) => bytes,
        };
        let target = std::str::from_utf8(&bytes)
            .map_err(|_| bad("not UTF-8".into()))?
            .trim();
        if !is_valid_name(target) {
            return Err(bad(format!(
                "{target:?} is not a version name (names must match [A-Za-z0-9_-]+)"
            )));
        }
        if target == version {
            return Err(bad("points at its own version".into()));
        }
        let target_link = self.version_path(db, target).join(SYMLINK_FILE);
        match self.inner.store.head(&target_link).await {
            Ok(_) => Err(bad(format!(
                "points at version {target}, which redirects again (one level only)"
            ))),
            Err(object_store::Error::NotFound { .. }) => Ok(Some(target.to_string())),
            Err(source) => Err(SourceError::Read {
                file: location.clone(),
                offset: 0,
                source,
            }),
        }
    }

    /// The state object of `db` (`<db>/_state.json`, see
    /// `lifecycle::state`), if it has one.
    pub async fn database_state(
        &self,
        db: &str,
    ) -> Result<Option<crate::lifecycle::DatabaseState>, SourceError> {
        use crate::lifecycle::state::{DatabaseState, MAX_STATE_LEN, STATE_FILE};
        check_name("database", db)?;
        let location = format!("{}/{STATE_FILE}", self.display_path(db, None));
        let path = self.inner.root.clone().join(db).join(STATE_FILE);
        let bytes = match self.read_small(&path, &location, MAX_STATE_LEN).await? {
            None => return Ok(None),
            Some(Err(size)) => {
                return Err(SourceError::State(crate::lifecycle::state::StateError {
                    location,
                    message: format!("{size} bytes is too large for a state object"),
                }));
            }
            Some(Ok(bytes)) => bytes,
        };
        DatabaseState::parse(&bytes, &location)
            .map(Some)
            .map_err(SourceError::State)
    }

    /// A small object read whole: `None` if it does not exist, `Err(size)`
    /// (nothing read) if it is larger than `max` bytes. `location` names it
    /// in errors.
    async fn read_small(
        &self,
        path: &ObjectPath,
        location: &str,
        max: u64,
    ) -> Result<Option<Result<bytes::Bytes, u64>>, SourceError> {
        let read_err = |source| SourceError::Read {
            file: location.to_string(),
            offset: 0,
            source,
        };
        let object = match self.inner.store.get(path).await {
            Ok(object) => object,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(source) => return Err(read_err(source)),
        };
        if object.meta.size > max {
            return Ok(Some(Err(object.meta.size)));
        }
        Ok(Some(Ok(object.bytes().await.map_err(read_err)?)))
    }

    /// The object store under the source and the root's path in it, for
    /// the commands that write to the source (`publish`, `db`).
    pub fn object_store(&self) -> (&Arc<dyn ObjectStore>, &ObjectPath) {
        (&self.inner.store, &self.inner.root)
    }

    /// The root directory of a local source.
    pub fn local_root(&self) -> Option<std::path::PathBuf> {
        self.inner.local_root.clone()
    }

    fn version_path(&self, db: &str, version: &str) -> ObjectPath {
        self.inner.root.clone().join(db).join(version)
    }

    /// The data files of a version: objects directly inside it whose names
    /// do not start with `_` or `.`, sorted by name. Subdirectories are not
    /// data. A missing or empty version gives an empty list. A version with
    /// a `_SYMLINK` gives the files of the version it names (their
    /// [`SourceFile::version`] is that version).
    pub async fn list_files(
        &self,
        db: &str,
        version: &str,
    ) -> Result<Vec<SourceFile>, SourceError> {
        check_name("database", db)?;
        check_name("version", version)?;
        let version = match self.read_symlink(db, version).await? {
            Some(target) => {
                tracing::info!(
                    "{} redirects to version {target} (_SYMLINK)",
                    self.display_path(db, Some(version))
                );
                target
            }
            None => version.to_string(),
        };
        let version = version.as_str();
        let dir = self.version_path(db, version);
        let listing = self.list_dir(&dir, Some(db), Some(version)).await?;
        let mut files: Vec<SourceFile> = listing
            .objects
            .into_iter()
            // A zero-byte "directory marker" object named like the version
            // itself (some S3 tools create them) is not a file in it.
            .filter(|meta| meta.location != dir)
            .filter_map(|meta| {
                let name = self.file_name(meta.location.filename()?)?;
                is_data_file_name(&name).then(|| SourceFile {
                    db: db.to_string(),
                    version: version.to_string(),
                    name,
                    size: meta.size,
                    etag: meta.e_tag,
                    last_modified: Some(SystemTime::from(meta.last_modified)),
                    location: meta.location,
                })
            })
            .collect();
        files.sort_by(|a, b| a.name.cmp(&b.name));
        // S3 has been seen to list a key twice (sequins PR #46).
        files.dedup_by(|a, b| a.name == b.name);
        Ok(files)
    }

    /// The bytes of `file` as a blocking reader, for loaders running on a
    /// blocking thread. Local sources return the plain file. Object stores
    /// stream in chunks (bounded memory), resume after failures, honour the
    /// bandwidth limit, and fail with [`SourceError::Changed`] (wrapped in
    /// the `io::Error`) if the object is replaced mid-read. The reader must
    /// not be used on an async runtime thread.
    pub fn open_read(&self, file: &SourceFile) -> Result<Box<dyn Read + Send>, SourceError> {
        if let Some(local) = &self.inner.local {
            let handle = self.open_local(local, file)?;
            return Ok(match &self.inner.limiter {
                Some(limiter) => Box::new(transfer::LimitedReader::new(handle, limiter.clone())),
                None => Box::new(handle),
            });
        }
        let reader = transfer::BlockingRemoteReader::spawn(self.remote_read(file))?;
        Ok(Box::new(reader))
    }

    /// Downloads `file` to `dest` (created or truncated; its directory must
    /// exist), streaming with bounded memory. The copy is not fsynced: it
    /// lands in a staging directory, which the store fsyncs as a whole
    /// before publishing it, and a file that is dropped (a framed index
    /// once decoded) need never reach the disk. `progress` is
    /// called with the number of bytes just written (a delta, so parallel
    /// downloads can add into one counter). Returns the size. On error the
    /// partial `dest` is removed.
    pub async fn download(
        &self,
        file: &SourceFile,
        dest: &Path,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<u64, SourceError> {
        if let Some(local) = &self.inner.local {
            let handle = self.open_local(local, file)?;
            let display = self.display_file(file);
            return transfer::download_local(
                handle,
                &display,
                file.size,
                dest,
                self.inner.limiter.clone(),
                progress,
            )
            .await;
        }
        transfer::download_remote(self.remote_read(file), dest, progress).await
    }

    /// Where a database or version is, as status pages show it:
    /// `/src/db/1`, `s3://bucket/prefix/db/1`.
    pub fn display_path(&self, db: &str, version: Option<&str>) -> String {
        match version {
            Some(version) => format!("{}/{db}/{version}", self.inner.display_base),
            None => format!("{}/{db}", self.inner.display_base),
        }
    }

    /// Where a file is, for messages.
    pub fn display_file(&self, file: &SourceFile) -> String {
        format!(
            "{}/{}",
            self.display_path(&file.db, Some(&file.version)),
            file.name
        )
    }

    fn remote_read(&self, file: &SourceFile) -> transfer::RemoteRead {
        transfer::RemoteRead::new(
            self.inner.store.clone(),
            file.location.clone(),
            self.display_file(file),
            file.size,
            file.etag.clone(),
            self.inner.options.max_resume_attempts,
            self.inner.limiter.clone(),
        )
    }

    fn open_local(
        &self,
        local: &LocalFileSystem,
        file: &SourceFile,
    ) -> Result<std::fs::File, SourceError> {
        let display = self.display_file(file);
        let path: PathBuf =
            local
                .path_to_filesystem(&file.location)
                .map_err(|source| SourceError::Read {
                    file: display.clone(),
                    offset: 0,
                    source,
                })?;
        transfer::open_local(&path, &display, file.size, file.etag.as_deref())
    }

    async fn list_dir(
        &self,
        dir: &ObjectPath,
        db: Option<&str>,
        version: Option<&str>,
    ) -> Result<ListResult, SourceError> {
        let prefix = (dir.parts().count() > 0).then_some(dir);
        self.inner
            .store
            .list_with_delimiter(prefix)
            .await
            .map_err(|source| SourceError::List {
                location: match db {
                    Some(db) => self.display_path(db, version),
                    None => self.inner.display_base.clone(),
                },
                source,
            })
    }

    /// The valid names among the subdirectories of a listing, sorted.
    fn valid_child_names(&self, listing: &ListResult, what: &str, db: Option<&str>) -> Vec<String> {
        let mut names: Vec<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|prefix| prefix.filename())
            .filter_map(|name| self.file_name(name))
            .filter(|name| {
                let valid = is_valid_name(name);
                if !valid {
                    let location = match db {
                        Some(db) => self.display_path(db, Some(name)),
                        None => format!("{}/{name}", self.inner.display_base),
                    };
                    tracing::warn!("skipping {what} {location}: names must match [A-Za-z0-9_-]+");
                }
                valid
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// A listed name as the user wrote it. object_store's local store
    /// percent-encodes some characters of file names (`%`, `#`, `{`...);
    /// decode them so names are the ones on disk. Object stores return keys
    /// verbatim. `None` for names that are not UTF-8 after decoding.
    fn file_name(&self, listed: &str) -> Option<String> {
        if self.inner.local.is_none() {
            return Some(listed.to_string());
        }
        percent_encoding::percent_decode_str(listed)
            .decode_utf8()
            .ok()
            .map(|name| name.into_owned())
    }
}

impl SourceFile {
    /// The object's path inside the source's store.
    pub fn location(&self) -> &ObjectPath {
        &self.location
    }
}

fn check_name(what: &'static str, name: &str) -> Result<(), SourceError> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(SourceError::InvalidName {
            what,
            name: name.to_string(),
        })
    }
}

fn parse_prefix(uri: &str, prefix: &str) -> Result<ObjectPath, SourceError> {
    ObjectPath::parse(prefix).map_err(|e| SourceError::InvalidUri {
        uri: uri.to_string(),
        reason: format!("invalid path {prefix:?}: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::{PutPayload, PutPayloadMut};

    async fn put(store: &InMemory, key: &str, data: &[u8]) {
        store
            .put(
                &ObjectPath::parse(key).unwrap(),
                PutPayload::from(data.to_vec()),
            )
            .await
            .unwrap();
    }

    /// A source root with every case of the naming rules in it.
    async fn fixture_store() -> Arc<InMemory> {
        let store = Arc::new(InMemory::new());
        for (key, data) in [
            ("root/stray-file", &b"not a db"[..]),
            ("root/db1/1/part-00000", b"zero"),
            ("root/db1/1/part-00001", b"one!!"),
            ("root/db1/1/_SUCCESS", b""),
            ("root/db1/1/.part-00000.crc", b"crc"),
            ("root/db1/1/_logs/history", b"log"),
            ("root/db1/1/nested/part-9", b"not data"),
            ("root/db1/10/part-a", b"ten"),
            ("root/db1/9/part-0", b"nine"),
            ("root/db1/bad.version/part-0", b"x"),
            ("root/db1/stray-in-db", b"x"),
            ("root/db2/2/_SUCCESS", b""),
            ("root/bad.db/1/part-0", b"x"),
            ("root/only-invalid/x y/part-0", b"x"),
            ("elsewhere/db9/1/part-0", b"outside the root"),
        ] {
            put(&store, key, data).await;
        }
        store
    }

    fn source(store: Arc<InMemory>, options: SourceOptions) -> Source {
        Source::with_store(store, "root", "mem://test/root/", options).unwrap()
    }

    fn names(files: &[SourceFile]) -> Vec<&str> {
        files.iter().map(|f| f.name.as_str()).collect()
    }

    #[tokio::test]
    async fn lists_valid_databases_only() {
        let source = source(fixture_store().await, SourceOptions::default());
        assert_eq!(
            source.list_databases().await.unwrap(),
            ["db1", "db2", "only-invalid"]
        );
    }

    #[tokio::test]
    async fn lists_versions_as_sorted_byte_strings() {
        let source = source(fixture_store().await, SourceOptions::default());
        assert_eq!(source.list_versions("db1").await.unwrap(), ["1", "10", "9"]);
        assert_eq!(source.list_versions("db2").await.unwrap(), ["2"]);
        assert!(
            source
                .list_versions("only-invalid")
                .await
                .unwrap()
                .is_empty()
        );
        assert!(source.list_versions("missing").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn success_file_filters_versions() {
        let options = SourceOptions {
            require_success_file: true,
            ..SourceOptions::default()
        };
        let source = source(fixture_store().await, options);
        assert_eq!(source.list_versions("db1").await.unwrap(), ["1"]);
        assert_eq!(source.list_versions("db2").await.unwrap(), ["2"]);
    }

    #[tokio::test]
    async fn lists_data_files_of_exactly_one_version() {
        let source = source(fixture_store().await, SourceOptions::default());
        let files = source.list_files("db1", "1").await.unwrap();
        assert_eq!(names(&files), ["part-00000", "part-00001"]);
        assert_eq!(files[1].size, 5);
        assert!(files[0].etag.is_some());
        assert!(files[0].last_modified.is_some());
        assert_eq!(
            (files[0].db.as_str(), files[0].version.as_str()),
            ("db1", "1")
        );
        // Version 1 must not pick up the files of version 10.
        assert_eq!(
            names(&source.list_files("db1", "10").await.unwrap()),
            ["part-a"]
        );
        // An empty version (only `_SUCCESS`) and a missing one: no files.
        assert!(source.list_files("db2", "2").await.unwrap().is_empty());
        assert!(source.list_files("db2", "3").await.unwrap().is_empty());
    }

    /// sequins' `_SYMLINK` redirects: a version served from another's files.
    async fn symlink_store() -> Arc<InMemory> {
        let store = Arc::new(InMemory::new());
        for (key, data) in [
            ("root/db/1/part-0", &b"one"[..]),
            ("root/db/1/_SUCCESS", b""),
            ("root/db/2/_SYMLINK", b" 1\n"),
            ("root/db/2/part-ignored", b"own data of a redirect"),
            ("root/db/3/part-0", b"three"),
            ("root/db/4/_SYMLINK", b"3"),
            ("root/db/4/_SUCCESS", b""),
            ("root/db/5/_SYMLINK", b"2"),
            ("root/db/6/_SYMLINK", b"../1"),
            ("root/db/7/_SYMLINK", b"7"),
            ("root/db/8/_SYMLINK", &[b'9'; 2000][..]),
        ] {
            put(&store, key, data).await;
        }
        store
    }

    #[tokio::test]
    async fn a_symlinked_version_lists_its_target_s_files() {
        let source = source(symlink_store().await, SourceOptions::default());
        let files = source.list_files("db", "2").await.unwrap();
        assert_eq!(names(&files), ["part-0"]);
        assert_eq!((files[0].version.as_str(), files[0].size), ("1", 3));
        assert_eq!(
            source.display_file(&files[0]),
            "mem://test/root/db/1/part-0"
        );
        for (version, reason) in [
            ("5", "redirects again"),
            ("6", "not a version name"),
            ("7", "its own version"),
            ("8", "too long"),
        ] {
            let err = source.list_files("db", version).await.unwrap_err();
            assert!(
                matches!(&err, SourceError::BadSymlink { location, reason: r }
                    if location == &format!("mem://test/root/db/{version}/_SYMLINK") && r.contains(reason)),
                "{version}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn a_symlinked_version_is_complete_when_its_target_is() {
        let options = SourceOptions {
            require_success_file: true,
            ..SourceOptions::default()
        };
        let source = source(symlink_store().await, options);
        // 2 -> 1 (complete) counts; 4 -> 3 does not, despite its own
        // `_SUCCESS`; broken redirects are listed so that loading them
        // reports the problem.
        assert_eq!(
            source.list_versions("db").await.unwrap(),
            ["1", "2", "5", "6", "7", "8"]
        );
    }

    /// `newest_version` gives what refresh used to compute from the whole
    /// list: the greatest counting version above the served one.
    #[tokio::test]
    async fn newest_version_is_the_greatest_counting_one_above_the_served() {
        let strict = SourceOptions {
            require_success_file: true,
            ..SourceOptions::default()
        };
        for (store, db) in [
            (fixture_store().await, "db1"),
            (fixture_store().await, "db2"),
            (symlink_store().await, "db"),
        ] {
            for options in [SourceOptions::default(), strict.clone()] {
                let source = source(Arc::clone(&store), options);
                let all = source.list_versions(db).await.unwrap();
                for above in [None, Some("0"), Some("1"), Some("5"), Some("9"), Some("99")] {
                    let expected = all
                        .iter()
                        .rfind(|v| above.is_none_or(|above| v.as_str() > above))
                        .cloned();
                    assert_eq!(
                        source.newest_version(db, above).await.unwrap(),
                        expected,
                        "{db} above {above:?}"
                    );
                }
            }
        }
        let source = source(fixture_store().await, strict);
        assert_eq!(
            source.newest_version("db1", None).await.unwrap().as_deref(),
            Some("1")
        );
        assert_eq!(source.newest_version("db1", Some("1")).await.unwrap(), None);
        assert_eq!(source.newest_version("missing", None).await.unwrap(), None);
    }

    #[tokio::test]
    async fn invalid_names_are_refused() {
        let source = source(fixture_store().await, SourceOptions::default());
        let err = source.list_versions("bad.db").await.unwrap_err();
        assert!(
            matches!(
                err,
                SourceError::InvalidName {
                    what: "database",
                    ..
                }
            ),
            "{err}"
        );
        let err = source.list_files("db1", "../db2").await.unwrap_err();
        assert!(
            matches!(
                err,
                SourceError::InvalidName {
                    what: "version",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn listings_past_a_thousand_entries() {
        let store = Arc::new(InMemory::new());
        for i in 0..1100 {
            put(&store, &format!("big/{i}/part-0"), b"x").await;
            put(&store, &format!("big/7/part-{i:05}"), b"y").await;
        }
        let source = Source::with_store(store, "", "mem://", SourceOptions::default()).unwrap();
        let versions = source.list_versions("big").await.unwrap();
        assert_eq!(versions.len(), 1100);
        let mut expected: Vec<String> = (0..1100).map(|i| i.to_string()).collect();
        expected.sort();
        assert_eq!(versions, expected);
        assert_eq!(versions.last().map(String::as_str), Some("999"));
        let files = source.list_files("big", "7").await.unwrap();
        assert_eq!(files.len(), 1101, "1100 part files plus part-0");
        assert!(files.windows(2).all(|w| w[0].name < w[1].name));
    }

    #[tokio::test]
    async fn display_paths() {
        let source = source(fixture_store().await, SourceOptions::default());
        assert_eq!(source.display_path("db1", None), "mem://test/root/db1");
        assert_eq!(
            source.display_path("db1", Some("1")),
            "mem://test/root/db1/1"
        );
        let file = &source.list_files("db1", "1").await.unwrap()[0];
        assert_eq!(
            source.display_file(file),
            "mem://test/root/db1/1/part-00000"
        );
    }

    async fn read_all(source: &Source, file: &SourceFile) -> std::io::Result<Vec<u8>> {
        let source = source.clone();
        let file = file.clone();
        tokio::task::spawn_blocking(move || {
            let mut reader = source.open_read(&file).map_err(std::io::Error::other)?;
            let mut data = Vec::new();
            reader.read_to_end(&mut data)?;
            Ok(data)
        })
        .await
        .unwrap()
    }

    fn source_error(error: &std::io::Error) -> &SourceError {
        SourceError::in_io(error).unwrap_or_else(|| panic!("not a SourceError: {error}"))
    }

    #[tokio::test]
    async fn open_read_streams_exact_bytes() {
        let store = Arc::new(InMemory::new());
        let mut big = PutPayloadMut::new();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        big.extend_from_slice(&data);
        store
            .put(&ObjectPath::parse("db/1/big").unwrap(), big.freeze())
            .await
            .unwrap();
        put(&store, "db/1/empty", b"").await;
        let source = Source::with_store(store, "", "mem://", SourceOptions::default()).unwrap();
        let files = source.list_files("db", "1").await.unwrap();
        assert_eq!(read_all(&source, &files[0]).await.unwrap(), data);
        assert_eq!(read_all(&source, &files[1]).await.unwrap(), b"");
    }

    #[tokio::test]
    async fn replaced_object_fails_instead_of_mixing_versions() {
        let store = fixture_store().await;
        let source = source(store.clone(), SourceOptions::default());
        let files = source.list_files("db1", "1").await.unwrap();
        put(&store, "root/db1/1/part-00000", b"new!").await;
        let err = read_all(&source, &files[0]).await.unwrap_err();
        let err = source_error(&err);
        assert!(matches!(err, SourceError::Changed { .. }), "{err}");
        assert!(
            err.to_string().contains("mem://test/root/db1/1/part-00000"),
            "{err}"
        );
        assert!(!err.is_transient());
    }

    #[tokio::test]
    async fn vanished_object_is_not_found_naming_the_file() {
        let store = fixture_store().await;
        let source = source(store.clone(), SourceOptions::default());
        let files = source.list_files("db1", "1").await.unwrap();
        store
            .delete(&ObjectPath::parse("root/db1/1/part-00001").unwrap())
            .await
            .unwrap();
        let err = read_all(&source, &files[1]).await.unwrap_err();
        let err = source_error(&err);
        assert!(matches!(err, SourceError::NotFound { .. }), "{err}");
        assert!(err.to_string().contains("db1/1/part-00001"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("part-00001");
        let err = source
            .download(&files[1], &dest, &|_| {})
            .await
            .unwrap_err();
        assert!(matches!(err, SourceError::NotFound { .. }), "{err}");
        assert!(!dest.exists(), "a failed download leaves no partial file");
    }

    #[tokio::test]
    async fn download_writes_the_file_and_reports_progress() {
        let source = source(fixture_store().await, SourceOptions::default());
        let files = source.list_files("db1", "1").await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("copy");
        let seen = std::sync::atomic::AtomicU64::new(0);
        let n = source
            .download(&files[1], &dest, &|delta| {
                seen.fetch_add(delta, std::sync::atomic::Ordering::Relaxed);
            })
            .await
            .unwrap();
        assert_eq!(n, 5);
        assert_eq!(seen.into_inner(), 5);
        assert_eq!(std::fs::read(&dest).unwrap(), b"one!!");
    }

    #[tokio::test]
    async fn local_etag_matches_object_store_listing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("db/1")).unwrap();
        std::fs::write(dir.path().join("db/1/part-0"), b"hello").unwrap();
        let source = Source::open(dir.path().to_str().unwrap(), SourceOptions::default()).unwrap();
        let files = source.list_files("db", "1").await.unwrap();
        let metadata = std::fs::metadata(dir.path().join("db/1/part-0")).unwrap();
        assert_eq!(
            files[0].etag.as_deref(),
            Some(transfer::local_etag(&metadata).as_str())
        );
    }

    #[test]
    fn options_from_config() {
        let config = Config {
            require_success_file: true,
            max_download_bandwidth_mb_per_second: 12,
            ..Config::default()
        };
        let options = SourceOptions::from_config(&config);
        assert!(options.require_success_file);
        assert_eq!(options.max_download_bandwidth_mb_per_second, 12);
        assert_eq!(options.read_timeout, Duration::from_secs(30));
    }

    #[test]
    fn hdfs_without_the_feature_says_so() {
        if cfg!(feature = "hdfs") {
            eprintln!("skipped: built with the hdfs feature");
            return;
        }
        let err = Source::open("hdfs://nn:8020/data", SourceOptions::default()).unwrap_err();
        assert!(err.to_string().contains("--features hdfs"), "{err}");
    }
}
