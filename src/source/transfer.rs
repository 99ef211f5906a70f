//! Reading file contents out of a source: a resumable, ETag-pinned,
//! bandwidth-limited stream of chunks from an object store; its bridge to a
//! blocking [`Read`]; and the plain-file fast path for local sources.
//!
//! A read is pinned to the object the listing saw: the listed ETag is sent as
//! `If-Match` on every request (and for local files the inode, mtime and size
//! are compared), so an object replaced while it is being read fails with
//! [`SourceError::Changed`] instead of mixing bytes of two versions.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore};
use tokio::io::AsyncWriteExt;
use tokio::runtime::{Handle, Runtime};
use tokio::sync::mpsc;

use super::SourceError;
use super::bandwidth::BandwidthLimiter;

/// Chunks buffered between the download task and a blocking reader. Network
/// chunks are at most a few hundred KiB (hyper's read buffer), so a reader
/// that stops reading holds at most a few MiB.
const PREFETCH_CHUNKS: usize = 16;

/// First pause before resuming a failed read; doubled after every failure
/// in a row, up to [`MAX_RESUME_BACKOFF`].
const FIRST_RESUME_BACKOFF: Duration = Duration::from_millis(100);
const MAX_RESUME_BACKOFF: Duration = Duration::from_secs(10);

/// Copy granularity for local downloads: large enough that the kernel copy
/// (copy_file_range) runs at full speed, small enough for useful progress.
const LOCAL_COPY_CHUNK: u64 = 16 * 1024 * 1024;
/// Copy granularity for local downloads under a bandwidth limit.
const LIMITED_COPY_CHUNK: u64 = 256 * 1024;

/// One file being read from an object store, as a sequence of chunks.
///
/// object_store already retries each request and resumes a broken body
/// within one request's retry budget; on top of that this resumes from the
/// last byte received with a *new* request, so a multi-GiB download that
/// outlives one request's budget still completes. It gives up after
/// `max_attempts` failures in a row without a byte of progress.
pub(crate) struct RemoteRead {
    store: Arc<dyn ObjectStore>,
    location: ObjectPath,
    /// The file as users see it, for errors.
    display: String,
    size: u64,
    etag: Option<String>,
    position: u64,
    stream: Option<BoxStream<'static, object_store::Result<Bytes>>>,
    opened: bool,
    failures_in_a_row: u32,
    max_attempts: u32,
    limiter: Option<Arc<BandwidthLimiter>>,
}

impl RemoteRead {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        store: Arc<dyn ObjectStore>,
        location: ObjectPath,
        display: String,
        size: u64,
        etag: Option<String>,
        max_attempts: u32,
        limiter: Option<Arc<BandwidthLimiter>>,
    ) -> RemoteRead {
        RemoteRead {
            store,
            location,
            display,
            size,
            etag,
            position: 0,
            stream: None,
            opened: false,
            failures_in_a_row: 0,
            max_attempts,
            limiter,
        }
    }

    pub(crate) fn display(&self) -> &str {
        &self.display
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// The next chunk of the file, or `None` at its end.
    pub(crate) async fn next_chunk(&mut self) -> Result<Option<Bytes>, SourceError> {
        loop {
            let Some(stream) = self.stream.as_mut() else {
                if self.opened && self.position == self.size {
                    return Ok(None);
                }
                if let Err(error) = self.open().await {
                    self.pause_or_fail(error).await?;
                }
                continue;
            };
            match stream.next().await {
                // Empty chunks are no progress: skip them, so they neither
                // reach callers nor reset the count of failures in a row.
                Some(Ok(chunk)) if chunk.is_empty() => {}
                Some(Ok(chunk)) => {
                    let len = chunk.len() as u64;
                    let end = self.position.saturating_add(len);
                    if end > self.size {
                        return Err(self
                            .changed(format!("it has more than the {} bytes listed", self.size)));
                    }
                    self.position = end;
                    self.failures_in_a_row = 0;
                    if let Some(limiter) = &self.limiter {
                        limiter.acquire(len).await;
                    }
                    return Ok(Some(chunk));
                }
                Some(Err(source)) => {
                    self.stream = None;
                    let error = self.error(source);
                    self.pause_or_fail(error).await?;
                }
                None => {
                    self.stream = None;
                    if self.position != self.size {
                        let early_end = io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("response ended after byte {}", self.position),
                        );
                        let error = self.error(object_store::Error::Generic {
                            store: "source",
                            source: Box::new(early_end),
                        });
                        self.pause_or_fail(error).await?;
                    }
                }
            }
        }
    }

    /// Starts a request for the rest of the file.
    async fn open(&mut self) -> Result<(), SourceError> {
        // An empty object cannot be requested with a range (S3 answers 416),
        // and the first request needs none anyway.
        let range = (self.position > 0).then_some(GetRange::Offset(self.position));
        let options = GetOptions::new()
            .with_if_match(self.etag.clone())
            .with_range(range);
        let result = self
            .store
            .get_opts(&self.location, options)
            .await
            .map_err(|source| self.error(source))?;
        if result.meta.size != self.size {
            return Err(self.changed(format!(
                "size is now {}, listed as {}",
                result.meta.size, self.size
            )));
        }
        match (&self.etag, &result.meta.e_tag) {
            // Stores that list without ETags (some S3 servers): pin the one
            // the first response carries.
            (None, Some(current)) => self.etag = Some(current.clone()),
            (Some(pinned), Some(current)) if pinned != current => {
                return Err(self.changed(format!("ETag is now {current}, listed as {pinned}")));
            }
            _ => {}
        }
        self.opened = true;
        self.stream = Some(result.into_stream());
        Ok(())
    }

    /// Waits before the next attempt if `error` is worth retrying and
    /// attempts are left; otherwise returns it.
    async fn pause_or_fail(&mut self, error: SourceError) -> Result<(), SourceError> {
        if !error.is_transient() || self.failures_in_a_row >= self.max_attempts {
            return Err(error);
        }
        let backoff = FIRST_RESUME_BACKOFF
            .saturating_mul(1 << self.failures_in_a_row.min(16))
            .min(MAX_RESUME_BACKOFF);
        self.failures_in_a_row += 1;
        tracing::warn!(
            "{}: resuming at byte {} in {:?} (attempt {} of {}): {error}",
            self.display,
            self.position,
            backoff,
            self.failures_in_a_row,
            self.max_attempts
        );
        tokio::time::sleep(backoff).await;
        Ok(())
    }

    fn error(&self, source: object_store::Error) -> SourceError {
        match source {
            object_store::Error::NotFound { .. } => SourceError::NotFound {
                file: self.display.clone(),
                source: Some(source),
            },
            object_store::Error::Precondition { .. } => {
                self.changed("its ETag no longer matches the listing".to_string())
            }
            source => SourceError::Read {
                file: self.display.clone(),
                offset: self.position,
                source,
            },
        }
    }

    fn changed(&self, reason: String) -> SourceError {
        SourceError::Changed {
            file: self.display.clone(),
            reason,
        }
    }
}

/// A blocking [`Read`] over a [`RemoteRead`] running as a task on a tokio
/// runtime. Errors come out as `io::Error`s wrapping the [`SourceError`]
/// (`error.get_ref()` downcasts to it). Dropping the reader stops the
/// download.
pub(crate) struct BlockingRemoteReader {
    chunks: mpsc::Receiver<Result<Bytes, SourceError>>,
    current: Bytes,
    delivered: u64,
    size: u64,
    display: String,
    task: tokio::task::JoinHandle<()>,
}

impl BlockingRemoteReader {
    pub(crate) fn spawn(mut remote: RemoteRead) -> Result<BlockingRemoteReader, SourceError> {
        let handle = io_runtime().ok_or_else(|| SourceError::Io {
            path: remote.display().to_string(),
            source: io::Error::other("cannot start a runtime for downloads"),
        })?;
        let (sender, chunks) = mpsc::channel(PREFETCH_CHUNKS);
        let size = remote.size();
        let display = remote.display().to_string();
        let task = handle.spawn(async move {
            loop {
                let next = remote.next_chunk().await;
                let stop = !matches!(next, Ok(Some(_)));
                let item = match next {
                    Ok(Some(chunk)) => Ok(chunk),
                    Ok(None) => return,
                    Err(error) => Err(error),
                };
                if sender.send(item).await.is_err() || stop {
                    return;
                }
            }
        });
        Ok(BlockingRemoteReader {
            chunks,
            current: Bytes::new(),
            delivered: 0,
            size,
            display,
            task,
        })
    }
}

impl Read for BlockingRemoteReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.current.is_empty() {
            // `futures`' executor rather than `blocking_recv`: it works on
            // any thread (blocking_recv panics inside a runtime).
            match futures::executor::block_on(self.chunks.recv()) {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(error)) => return Err(io::Error::other(error)),
                None if self.delivered == self.size => return Ok(0),
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "{}: download stopped at byte {} of {}",
                            self.display, self.delivered, self.size
                        ),
                    ));
                }
            }
        }
        let n = buf.len().min(self.current.len());
        self.current.copy_to_slice(&mut buf[..n]);
        self.delivered += n as u64;
        Ok(n)
    }
}

impl Drop for BlockingRemoteReader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The runtime download tasks run on: the caller's when there is one (the
/// daemon calls from its blocking pool), else a small one of our own.
fn io_runtime() -> Option<Handle> {
    if let Ok(handle) = Handle::try_current() {
        return Some(handle);
    }
    static FALLBACK: OnceLock<Option<Runtime>> = OnceLock::new();
    FALLBACK
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("sequinsfs-source-io")
                .enable_all()
                .build()
                .ok()
        })
        .as_ref()
        .map(|runtime| runtime.handle().clone())
}

/// Opens a local source file, checking that it is still the file the
/// listing saw.
pub(crate) fn open_local(
    path: &Path,
    display: &str,
    size: u64,
    etag: Option<&str>,
) -> Result<File, SourceError> {
    let file = File::open(path).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            SourceError::NotFound {
                file: display.to_string(),
                source: None,
            }
        } else {
            SourceError::Io {
                path: display.to_string(),
                source,
            }
        }
    })?;
    let metadata = file.metadata().map_err(|source| SourceError::Io {
        path: display.to_string(),
        source,
    })?;
    let changed = |reason: String| SourceError::Changed {
        file: display.to_string(),
        reason,
    };
    if metadata.len() != size {
        return Err(changed(format!(
            "size is now {}, listed as {size}",
            metadata.len()
        )));
    }
    if let Some(listed) = etag {
        let current = local_etag(&metadata);
        if current != listed {
            return Err(changed(format!(
                "inode or mtime differ (ETag {current}, listed as {listed})"
            )));
        }
    }
    Ok(file)
}

/// The ETag object_store's local store gives a file (`"inode-mtime-size"`
/// in hex, mtime in microseconds), so that a listing's ETag can be checked
/// against an opened file. A unit test keeps the two in step.
pub(crate) fn local_etag(metadata: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    let mtime = metadata
        .modified()
        .ok()
        .and_then(|mtime| mtime.duration_since(std::time::UNIX_EPOCH).ok())
        .unwrap_or_default()
        .as_micros();
    format!("\"{:x}-{:x}-{:x}\"", metadata.ino(), mtime, metadata.len())
}

/// A local file read through the bandwidth limit.
pub(crate) struct LimitedReader<R> {
    inner: R,
    limiter: Arc<BandwidthLimiter>,
}

impl<R> LimitedReader<R> {
    pub(crate) fn new(inner: R, limiter: Arc<BandwidthLimiter>) -> Self {
        LimitedReader { inner, limiter }
    }
}

impl<R: Read> Read for LimitedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let cap = buf.len().min(LIMITED_COPY_CHUNK as usize);
        let n = self.inner.read(&mut buf[..cap])?;
        self.limiter.acquire_blocking(n as u64);
        Ok(n)
    }
}

/// Streams a remote file into `dest` (not fsynced: see `Source::download`).
/// On error the partial file is removed.
pub(crate) async fn download_remote(
    mut remote: RemoteRead,
    dest: &Path,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<u64, SourceError> {
    let result = async {
        let io_error = |source| SourceError::Io {
            path: dest.display().to_string(),
            source,
        };
        let mut out = tokio::fs::File::create(dest).await.map_err(io_error)?;
        let mut written = 0u64;
        while let Some(chunk) = remote.next_chunk().await? {
            out.write_all(&chunk).await.map_err(io_error)?;
            written += chunk.len() as u64;
            progress(chunk.len() as u64);
        }
        out.flush().await.map_err(io_error)?;
        Ok(written)
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(dest).await;
    }
    result
}

/// Copies a local source file into `dest` (the kernel's copy_file_range
/// where possible; not fsynced: see `Source::download`). On error the
/// partial file is removed.
pub(crate) async fn download_local(
    source: File,
    display: &str,
    size: u64,
    dest: &Path,
    limiter: Option<Arc<BandwidthLimiter>>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<u64, SourceError> {
    let dest_error = |source| SourceError::Io {
        path: dest.display().to_string(),
        source,
    };
    let result = async {
        let source = Arc::new(source);
        let out = Arc::new(File::create(dest).map_err(dest_error)?);
        let chunk = if limiter.is_some() {
            LIMITED_COPY_CHUNK
        } else {
            LOCAL_COPY_CHUNK
        };
        let mut copied = 0u64;
        loop {
            let (from, to) = (source.clone(), out.clone());
            let n =
                tokio::task::spawn_blocking(move || io::copy(&mut (&*from).take(chunk), &mut &*to))
                    .await
                    .map_err(|join| SourceError::Io {
                        path: display.to_string(),
                        source: io::Error::other(join),
                    })?
                    .map_err(|source| SourceError::Io {
                        path: format!("copying {display} to {}", dest.display()),
                        source,
                    })?;
            if n == 0 {
                break;
            }
            copied += n;
            progress(n);
            if let Some(limiter) = &limiter {
                limiter.acquire(n).await;
            }
        }
        if copied != size {
            return Err(SourceError::Changed {
                file: display.to_string(),
                reason: format!("copied {copied} bytes, listed as {size}"),
            });
        }
        Ok(copied)
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(dest).await;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::{
        CopyOptions, GetResultPayload, ListResult, MultipartUpload, ObjectMeta, ObjectStoreExt,
        PutMultipartOptions, PutOptions, PutPayload, PutResult,
    };
    use std::sync::Mutex;

    /// An in-memory store whose next `get` response breaks after a given
    /// number of bytes, like a dropped connection.
    #[derive(Debug)]
    struct FlakyStore {
        inner: InMemory,
        break_next_get_after: Mutex<Option<usize>>,
        /// Break every response, forever, after this many bytes.
        break_every_get_after: Mutex<Option<usize>>,
        gets: Mutex<Vec<GetOptions>>,
    }

    impl std::fmt::Display for FlakyStore {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "FlakyStore")
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for FlakyStore {
        async fn put_opts(
            &self,
            location: &ObjectPath,
            payload: PutPayload,
            opts: PutOptions,
        ) -> object_store::Result<PutResult> {
            self.inner.put_opts(location, payload, opts).await
        }

        async fn put_multipart_opts(
            &self,
            location: &ObjectPath,
            opts: PutMultipartOptions,
        ) -> object_store::Result<Box<dyn MultipartUpload>> {
            self.inner.put_multipart_opts(location, opts).await
        }

        async fn get_opts(
            &self,
            location: &ObjectPath,
            options: GetOptions,
        ) -> object_store::Result<object_store::GetResult> {
            self.gets.lock().unwrap().push(options.clone());
            let head = options.head;
            let result = self.inner.get_opts(location, options).await?;
            let always = *self.break_every_get_after.lock().unwrap();
            let armed = self.break_next_get_after.lock().unwrap().take().or(always);
            if let Some(limit) = armed.filter(|_| !head) {
                let body = result.bytes().await?;
                let mut broken = result_like(location, body.slice(..limit.min(body.len())));
                broken.meta.size = self.inner.head(location).await?.size;
                broken.meta.e_tag = self.inner.head(location).await?.e_tag;
                let chunk = body.slice(..limit.min(body.len()));
                let reset = object_store::Error::Generic {
                    store: "flaky",
                    source: Box::new(io::Error::from(io::ErrorKind::ConnectionReset)),
                };
                broken.payload = GetResultPayload::Stream(
                    futures::stream::iter([Ok(chunk), Err(reset)]).boxed(),
                );
                return Ok(broken);
            }
            Ok(result)
        }

        fn delete_stream(
            &self,
            locations: BoxStream<'static, object_store::Result<ObjectPath>>,
        ) -> BoxStream<'static, object_store::Result<ObjectPath>> {
            self.inner.delete_stream(locations)
        }

        fn list(
            &self,
            prefix: Option<&ObjectPath>,
        ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
            self.inner.list(prefix)
        }

        async fn list_with_delimiter(
            &self,
            prefix: Option<&ObjectPath>,
        ) -> object_store::Result<ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }

        async fn copy_opts(
            &self,
            from: &ObjectPath,
            to: &ObjectPath,
            options: CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }

    fn result_like(location: &ObjectPath, body: Bytes) -> object_store::GetResult {
        object_store::GetResult {
            payload: GetResultPayload::Stream(futures::stream::empty().boxed()),
            meta: ObjectMeta {
                location: location.clone(),
                last_modified: chrono::Utc::now(),
                size: body.len() as u64,
                e_tag: None,
                version: None,
            },
            range: 0..body.len() as u64,
            attributes: Default::default(),
            extensions: Default::default(),
        }
    }

    async fn flaky_with(data: &[u8]) -> (Arc<FlakyStore>, ObjectPath, ObjectMeta) {
        let store = Arc::new(FlakyStore {
            inner: InMemory::new(),
            break_next_get_after: Mutex::new(None),
            break_every_get_after: Mutex::new(None),
            gets: Mutex::new(Vec::new()),
        });
        let location = ObjectPath::from("db/1/part-0");
        store.put(&location, data.to_vec().into()).await.unwrap();
        let meta = store.head(&location).await.unwrap();
        (store, location, meta)
    }

    fn remote(store: Arc<FlakyStore>, location: ObjectPath, meta: &ObjectMeta) -> RemoteRead {
        RemoteRead::new(
            store,
            location,
            "mem://db/1/part-0".into(),
            meta.size,
            meta.e_tag.clone(),
            3,
            None,
        )
    }

    async fn collect(remote: &mut RemoteRead) -> Result<Vec<u8>, SourceError> {
        let mut data = Vec::new();
        while let Some(chunk) = remote.next_chunk().await? {
            data.extend_from_slice(&chunk);
        }
        Ok(data)
    }

    #[tokio::test(start_paused = true)]
    async fn broken_response_resumes_from_the_last_byte() {
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let (store, location, meta) = flaky_with(&data).await;
        *store.break_next_get_after.lock().unwrap() = Some(4_000);
        let mut read = remote(store.clone(), location, &meta);
        assert_eq!(collect(&mut read).await.unwrap(), data);
        let gets = store.gets.lock().unwrap();
        let gets: Vec<&GetOptions> = gets.iter().filter(|g| !g.head).collect();
        assert_eq!(gets.len(), 2, "one resume");
        assert_eq!(gets[1].range, Some(GetRange::Offset(4_000)));
        assert_eq!(gets[1].if_match, meta.e_tag, "the resume is pinned");
    }

    #[tokio::test(start_paused = true)]
    async fn object_replaced_before_a_resume_fails_as_changed() {
        let data = vec![7u8; 10_000];
        let (store, location, meta) = flaky_with(&data).await;
        *store.break_next_get_after.lock().unwrap() = Some(4_000);
        let mut read = remote(store.clone(), location.clone(), &meta);
        let first = read.next_chunk().await.unwrap().unwrap();
        assert_eq!(first.len(), 4_000);
        store
            .put(&location, vec![9u8; 10_000].into())
            .await
            .unwrap();
        let err = read.next_chunk().await.unwrap_err();
        assert!(matches!(err, SourceError::Changed { .. }), "{err}");
        assert!(err.to_string().contains("mem://db/1/part-0"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_the_configured_attempts() {
        let data = vec![1u8; 100];
        let (store, location, meta) = flaky_with(&data).await;
        // Every response breaks before its first byte (an empty chunk, then
        // an error): no progress, so the attempts run out.
        *store.break_every_get_after.lock().unwrap() = Some(0);
        let mut read = remote(store.clone(), location, &meta);
        let err = read.next_chunk().await.unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert!(err.to_string().contains("byte 0"), "{err}");
        let gets = store
            .gets
            .lock()
            .unwrap()
            .iter()
            .filter(|g| !g.head)
            .count();
        assert_eq!(gets, 4, "the first request and three resumes");
    }
}
