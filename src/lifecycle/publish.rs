//! `sequinsfs publish DIR SOURCE/<db>/<version>`: uploads a version
//! directory into a source root so that daemons see either nothing or the
//! complete version, and two publishers can never mix their files.
//!
//! 1. The version must sort after every other version of the database
//!    (sequins never rolls back to a smaller name) unless `--force`.
//! 2. The publisher claims the version by creating `<version>/_PUBLISHED_BY`
//!    with a conditional create: of two publishers racing for one version,
//!    exactly one gets it, and the other stops before writing anything.
//! 3. Every data file is uploaded with a conditional create too (defence in
//!    depth: a file that exists is never overwritten).
//! 4. `_SUCCESS` is created last, so `require_success_file` daemons only
//!    ever see complete versions.
//!
//! `--resume` continues an interrupted publish: objects already there are
//! read back and must match the local file (size and CRC32C), and are then
//! skipped.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};
use serde::{Deserialize, Serialize};

use super::update::who;
use crate::source::Source;
use crate::source::names::{SUCCESS_FILE, is_data_file_name};

/// The claim a publisher creates first in the version directory. Its name
/// starts with `_`, so it is never taken for data; it stays after the
/// publish to say who published the version and when.
pub const CLAIM_FILE: &str = "_PUBLISHED_BY";

/// Files up to this size go to object stores in one conditional PUT
/// (`PutMode::Create`, atomic); larger ones in a multipart upload, which
/// object_store cannot make conditional (see [`upload_multipart`]). 64 MiB
/// bounds the memory a publish holds (one file's bytes at a time) while
/// keeping typical Sparkey and SequenceFile parts atomic.
pub const DEFAULT_MULTIPART_THRESHOLD: u64 = 64 * 1024 * 1024;

/// Smallest multipart part: S3 refuses smaller parts except the last.
const MIN_PART_SIZE: usize = 8 * 1024 * 1024;
/// S3 allows 10,000 parts per upload; stay below with room to spare.
const MAX_PARTS: u64 = 9_000;
/// Read size when streaming local files (checksums, local copies).
const READ_CHUNK: usize = 1024 * 1024;

/// How to publish.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// Continue an interrupted publish of this version.
    pub resume: bool,
    /// Publish even if the version does not sort after the newest one.
    pub force: bool,
    /// Files larger than this use a multipart upload (object stores only).
    pub multipart_threshold: u64,
}

impl Default for PublishOptions {
    fn default() -> Self {
        PublishOptions {
            resume: false,
            force: false,
            multipart_threshold: DEFAULT_MULTIPART_THRESHOLD,
        }
    }
}

/// What a publish did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishReport {
    /// Data files uploaded now.
    pub uploaded: Vec<String>,
    /// Data files found already there (with `--resume`), verified.
    pub verified: Vec<String>,
    pub bytes_uploaded: u64,
}

/// The claim's content.
#[derive(Debug, Serialize, Deserialize)]
struct Claim {
    by: String,
    at: String,
    pid: u32,
}

/// A file of the directory to publish.
struct LocalFile {
    name: String,
    path: PathBuf,
    size: u64,
}

/// The data files of `dir`: regular files whose names do not start with
/// `_` or `.` (so a `_SUCCESS` already in `dir` is not copied; it is
/// written last), sorted by name. Subdirectories are not part of a version.
fn data_files(dir: &Path) -> anyhow::Result<Vec<LocalFile>> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            bail!("{}: file name is not UTF-8", path.display());
        };
        if !is_data_file_name(&name) {
            continue;
        }
        let meta = std::fs::metadata(&path).with_context(|| path.display().to_string())?;
        if meta.is_dir() {
            eprintln!(
                "skipping directory {} (a version holds files only)",
                path.display()
            );
            continue;
        }
        if !meta.is_file() {
            bail!("{}: not a regular file", path.display());
        }
        files.push(LocalFile {
            name,
            path,
            size: meta.len(),
        });
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    if files.is_empty() {
        bail!("{}: no data files to publish", dir.display());
    }
    Ok(files)
}

/// Publishes the files of `dir` as `version` of `db` in `source`.
pub async fn publish(
    dir: &Path,
    source: &Source,
    db: &str,
    version: &str,
    options: &PublishOptions,
) -> anyhow::Result<PublishReport> {
    let files = data_files(dir)?;
    let location = source.display_path(db, Some(version));
    let (store, root) = source.object_store();
    let version_path = root.clone().join(db).join(version);

    // 1. Order: the new version must become the newest.
    let versions = source.list_versions(db).await?;
    if let Some(newest) = versions.iter().filter(|v| *v != version).max()
        && newest.as_str() >= version
        && !options.force
    {
        bail!(
            "{location}: version {version:?} does not sort after the newest version {newest:?} \
             of {db} (byte order; daemons would never switch to it); use --force to publish anyway"
        );
    }

    // 2. Claim the version.
    claim(store.as_ref(), &version_path, &location, options.resume).await?;

    // With --resume, data objects in the version that are not in `dir`
    // mean another file set was being published: refuse to mix them.
    let existing = list_version(store.as_ref(), &version_path, &location).await?;
    if options.resume
        && let Some(stray) = existing
            .iter()
            .filter(|name| is_data_file_name(name))
            .find(|name| !files.iter().any(|f| &f.name == *name))
    {
        bail!(
            "{location}/{stray}: in the source but not in {}; not the same version",
            dir.display()
        );
    }

    // 3. The data files.
    let mut report = PublishReport::default();
    let total = files.len();
    for (i, file) in files.iter().enumerate() {
        let object = version_path.clone().join(file.name.as_str());
        let display = format!("{location}/{}", file.name);
        if options.resume && existing.contains(&file.name) {
            verify(store.as_ref(), &object, file, &display).await?;
            eprintln!("[{}/{total}] {} verified (already there)", i + 1, file.name);
            report.verified.push(file.name.clone());
            continue;
        }
        eprintln!("[{}/{total}] {} ({} bytes)", i + 1, file.name, file.size);
        match source.local_root() {
            Some(local) => {
                let dest = local.join(db).join(version).join(&file.name);
                copy_local_exclusive(&file.path, &dest)
                    .map_err(|e| already_exists_hint(e, &display, options.resume))?;
            }
            None if file.size > options.multipart_threshold => {
                upload_multipart(store.as_ref(), &object, file, &display, options.resume).await?;
            }
            None => upload_whole(store.as_ref(), &object, file, &display, options.resume).await?,
        }
        report.uploaded.push(file.name.clone());
        report.bytes_uploaded += file.size;
    }

    // 4. `_SUCCESS` last.
    let marker = version_path.clone().join(SUCCESS_FILE);
    match store
        .put_opts(
            &marker,
            PutPayload::new(),
            PutOptions::from(PutMode::Create),
        )
        .await
    {
        Ok(_) => {}
        Err(object_store::Error::AlreadyExists { .. }) if options.resume => {}
        Err(e) => {
            return Err(e).with_context(|| format!("{location}/{SUCCESS_FILE}: cannot create"));
        }
    }
    eprintln!(
        "published {location}: {} file(s) uploaded ({} bytes), {} verified, {SUCCESS_FILE} written",
        report.uploaded.len(),
        report.bytes_uploaded,
        report.verified.len()
    );
    Ok(report)
}

/// Creates the claim, or with `resume` accepts an existing one. A claim
/// that exists without `resume` means the version is (being) published by
/// someone else.
async fn claim(
    store: &dyn ObjectStore,
    version_path: &ObjectPath,
    location: &str,
    resume: bool,
) -> anyhow::Result<()> {
    let path = version_path.clone().join(CLAIM_FILE);
    let claim = Claim {
        by: who(),
        at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        pid: std::process::id(),
    };
    let body = serde_json::to_vec(&claim)?;
    match store
        .put_opts(&path, body.into(), PutOptions::from(PutMode::Create))
        .await
    {
        Ok(_) => Ok(()),
        Err(object_store::Error::AlreadyExists { .. }) => {
            let holder = match store.get(&path).await {
                Ok(got) => got
                    .bytes()
                    .await
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Claim>(&b).ok())
                    .map(|c| format!("{} (pid {}) at {}", c.by, c.pid, c.at))
                    .unwrap_or_else(|| "an unknown publisher".into()),
                Err(_) => "an unknown publisher".into(),
            };
            if resume {
                eprintln!("resuming the publish {holder} started");
                return Ok(());
            }
            let complete = store
                .head(&version_path.clone().join(SUCCESS_FILE))
                .await
                .is_ok();
            bail!(
                "{location}: already {} by {holder}{}",
                if complete {
                    "published"
                } else {
                    "being published"
                },
                if complete {
                    ""
                } else {
                    "; if that publish was interrupted, continue it with --resume"
                }
            )
        }
        Err(e) => Err(e).with_context(|| format!("{location}/{CLAIM_FILE}: cannot create")),
    }
}

/// Names of the objects directly in the version.
async fn list_version(
    store: &dyn ObjectStore,
    version_path: &ObjectPath,
    location: &str,
) -> anyhow::Result<Vec<String>> {
    let listing = store
        .list_with_delimiter(Some(version_path))
        .await
        .with_context(|| format!("cannot list {location}"))?;
    Ok(listing
        .objects
        .iter()
        .filter_map(|o| o.location.filename().map(str::to_string))
        .collect())
}

fn already_exists_hint(error: std::io::Error, display: &str, resume: bool) -> anyhow::Error {
    if error.kind() == std::io::ErrorKind::AlreadyExists {
        anyhow::anyhow!(
            "{display}: already exists in the source (another publisher?); nothing was overwritten{}",
            if resume {
                ""
            } else {
                "; to continue an interrupted publish use --resume"
            }
        )
    } else {
        anyhow::anyhow!("{display}: {error}")
    }
}

fn store_create_error(error: object_store::Error, display: &str, resume: bool) -> anyhow::Error {
    match error {
        object_store::Error::AlreadyExists { .. } => already_exists_hint(
            std::io::Error::from(std::io::ErrorKind::AlreadyExists),
            display,
            resume,
        ),
        e => anyhow::Error::new(e).context(format!("{display}: upload failed")),
    }
}

/// One conditional PUT with the whole file.
async fn upload_whole(
    store: &dyn ObjectStore,
    object: &ObjectPath,
    file: &LocalFile,
    display: &str,
    resume: bool,
) -> anyhow::Result<()> {
    let bytes = std::fs::read(&file.path)
        .with_context(|| format!("cannot read {}", file.path.display()))?;
    if bytes.len() as u64 != file.size {
        bail!("{}: changed while publishing", file.path.display());
    }
    store
        .put_opts(object, bytes.into(), PutOptions::from(PutMode::Create))
        .await
        .map_err(|e| store_create_error(e, display, resume))?;
    Ok(())
}

/// A multipart upload for a large file. object_store's multipart API has
/// no `PutMode` (its S3 client completes uploads unconditionally), so the
/// create cannot be made atomic here: the object is checked to be absent
/// first, and exclusivity comes from the version's claim, which only one
/// publisher holds.
async fn upload_multipart(
    store: &dyn ObjectStore,
    object: &ObjectPath,
    file: &LocalFile,
    display: &str,
    resume: bool,
) -> anyhow::Result<()> {
    match store.head(object).await {
        Ok(_) => {
            return Err(store_create_error(
                object_store::Error::AlreadyExists {
                    path: object.to_string(),
                    source: "exists".into(),
                },
                display,
                resume,
            ));
        }
        Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(e).with_context(|| format!("{display}: cannot check")),
    }
    let part_size = (file.size.div_ceil(MAX_PARTS) as usize).max(MIN_PART_SIZE);
    let upload = store
        .put_multipart(object)
        .await
        .with_context(|| format!("{display}: cannot start a multipart upload"))?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, part_size);
    let result: anyhow::Result<()> = async {
        let mut input = std::fs::File::open(&file.path)
            .with_context(|| format!("cannot read {}", file.path.display()))?;
        let mut buf = vec![0u8; READ_CHUNK];
        let mut total = 0u64;
        loop {
            let n = input
                .read(&mut buf)
                .with_context(|| format!("cannot read {}", file.path.display()))?;
            if n == 0 {
                break;
            }
            total += n as u64;
            // Backpressure: at most a few parts in flight.
            writer
                .wait_for_capacity(4)
                .await
                .with_context(|| format!("{display}: upload failed"))?;
            writer.write(&buf[..n]);
        }
        if total != file.size {
            bail!("{}: changed while publishing", file.path.display());
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => {
            writer
                .finish()
                .await
                .with_context(|| format!("{display}: cannot complete the multipart upload"))?;
            Ok(())
        }
        Err(e) => {
            let _ = writer.abort().await;
            Err(e)
        }
    }
}

/// Copies `from` to `dest`, never replacing an existing `dest`: a hidden
/// temporary file in the destination directory, synced, then hard-linked
/// to `dest` (which fails if `dest` exists: an atomic create), then the
/// directory synced. Readers never see a partial file.
fn copy_local_exclusive(from: &Path, dest: &Path) -> std::io::Result<()> {
    let dir = dest.parent().expect("a version file has a directory");
    std::fs::create_dir_all(dir)?;
    let name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.publish-{}", std::process::id()));
    let result = (|| {
        let mut input = std::fs::File::open(from)?;
        let mut output = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        std::io::copy(&mut input, &mut output)?;
        output.sync_all()?;
        std::fs::hard_link(&tmp, dest)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

/// Checks that the object already in the source is this file: same size
/// and same CRC32C of the content (read back: multipart ETags are not
/// content hashes, so they cannot be compared to the local file).
async fn verify(
    store: &dyn ObjectStore,
    object: &ObjectPath,
    file: &LocalFile,
    display: &str,
) -> anyhow::Result<()> {
    let got = store
        .get(object)
        .await
        .with_context(|| format!("{display}: cannot read back"))?;
    if got.meta.size != file.size {
        bail!(
            "{display}: already in the source with {} bytes, but {} has {} bytes; \
             not the same file (delete it or publish another version)",
            got.meta.size,
            file.path.display(),
            file.size
        );
    }
    let mut remote = 0u32;
    let mut stream = got.into_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.with_context(|| format!("{display}: cannot read back"))?;
        remote = crc32c::crc32c_append(remote, &chunk);
    }
    let mut local = 0u32;
    let mut input = std::fs::File::open(&file.path)
        .with_context(|| format!("cannot read {}", file.path.display()))?;
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = input
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", file.path.display()))?;
        if n == 0 {
            break;
        }
        local = crc32c::crc32c_append(local, &buf[..n]);
    }
    if local != remote {
        bail!(
            "{display}: already in the source with different content than {} \
             (CRC32C {remote:08x} vs {local:08x}); not the same file",
            file.path.display()
        );
    }
    Ok(())
}
