//! How a load runs its work: on which threads, under which limits, and how
//! it stops when cancelled.
//!
//! - Every file-level worker and every CPU-bound job holds one of the
//!   daemon's worker permits, so `max_parallel_loads` bounds all of them
//!   together, over all databases.
//! - CPU-bound jobs (sorting, hash indexes, the key index merge) also hold
//!   one of the load's own core permits: more jobs than cores would finish
//!   no sooner and hold more memory at once.
//! - Blocking work (file system calls, fsyncs, parsing) runs on blocking
//!   threads, never on the async runtime's workers.
//! - One [`CancellationToken`] per load. Waiting for a permit, downloading
//!   and listing race it; blocking loops poll it at every batch. A cancelled
//!   load ends with [`LoadErrorKind::Cancelled`] and its staging directory is
//!   left for the next start to remove.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::{LoadErrorKind, LoadOptions};
use crate::catalog::LoadCounters;
use crate::source::Source;

/// Everything the stages of one load share.
#[derive(Clone)]
pub(crate) struct LoadContext {
    pub source: Arc<Source>,
    pub options: LoadOptions,
    /// The staging directory the version is built in.
    pub staging: PathBuf,
    pub progress: Arc<LoadCounters>,
    pub cancel: CancellationToken,
    /// The daemon's worker permits (`max_parallel_loads`).
    workers: Arc<Semaphore>,
    /// This load's one-job-per-core limit.
    cores: Arc<Semaphore>,
    /// The partitions to build; `None` builds them all. A node of a cluster
    /// builds only its own (see [`crate::cluster`]).
    pub only: Option<Arc<BTreeSet<u32>>>,
}

impl LoadContext {
    pub fn new(
        source: Arc<Source>,
        options: LoadOptions,
        staging: PathBuf,
        progress: Arc<LoadCounters>,
        cancel: CancellationToken,
        workers: Arc<Semaphore>,
    ) -> Self {
        LoadContext {
            source,
            options,
            staging,
            progress,
            cancel,
            workers,
            cores: Arc::new(Semaphore::new(cores())),
            only: None,
        }
    }

    /// Whether this load builds `partition`.
    pub fn builds(&self, partition: u32) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.contains(&partition))
    }

    /// Fails with `Cancelled` once the load is cancelled.
    pub fn check(&self) -> Result<(), LoadErrorKind> {
        if self.cancel.is_cancelled() {
            Err(LoadErrorKind::Cancelled)
        } else {
            Ok(())
        }
    }

    /// Runs `work` unless the load is cancelled first.
    pub async fn unless_cancelled<T>(
        &self,
        work: impl Future<Output = Result<T, LoadErrorKind>>,
    ) -> Result<T, LoadErrorKind> {
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => Err(LoadErrorKind::Cancelled),
            result = work => result,
        }
    }

    /// One of the daemon's worker permits.
    pub async fn worker(&self) -> Result<OwnedSemaphorePermit, LoadErrorKind> {
        self.unless_cancelled(async {
            Arc::clone(&self.workers)
                .acquire_owned()
                .await
                .map_err(|_| LoadErrorKind::Cancelled)
        })
        .await
    }

    /// As many worker permits as there are cores and are free right now,
    /// and at least one (waited for): for a job that splits itself over
    /// threads.
    pub async fn workers_for_cores(&self) -> Result<Vec<OwnedSemaphorePermit>, LoadErrorKind> {
        let mut permits = vec![self.worker().await?];
        while permits.len() < cores() {
            match Arc::clone(&self.workers).try_acquire_owned() {
                Ok(permit) => permits.push(permit),
                Err(_) => break,
            }
        }
        Ok(permits)
    }

    /// Runs the CPU-bound job `f` on a blocking thread once it holds a core
    /// permit and a worker permit; see the module docs.
    pub fn cpu_job<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, LoadErrorKind> + Send + 'static,
    ) -> impl Future<Output = Result<T, LoadErrorKind>> + Send + 'static {
        let this = self.clone();
        async move {
            let core = this
                .unless_cancelled(async {
                    Arc::clone(&this.cores)
                        .acquire_owned()
                        .await
                        .map_err(|_| LoadErrorKind::Cancelled)
                })
                .await?;
            let worker = this.worker().await?;
            let cancel = this.cancel.clone();
            blocking(move || {
                let _permits = (core, worker);
                // Cancelled while queued: don't start.
                if cancel.is_cancelled() {
                    return Err(LoadErrorKind::Cancelled);
                }
                f()
            })
            .await
        }
    }
}

/// Runs blocking work on a blocking thread. A panic in it becomes an
/// internal error of the load.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, LoadErrorKind> + Send + 'static,
) -> Result<T, LoadErrorKind> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| LoadErrorKind::Internal(format!("load thread failed: {e}")))?
}

/// The result of a task of a `JoinSet`: a panic or abort becomes an
/// internal error of the load.
fn joined<T>(
    joined: Result<Result<T, LoadErrorKind>, tokio::task::JoinError>,
) -> Result<T, LoadErrorKind> {
    joined.map_err(|e| LoadErrorKind::Internal(format!("load task failed: {e}")))?
}

/// The results of every task of `tasks`, in the order they finished. The
/// first error is returned at once and the other tasks are aborted: those
/// already running poll the load's cancellation token, and their output
/// would be discarded anyway.
pub(crate) async fn join_all<T: 'static>(
    mut tasks: tokio::task::JoinSet<Result<T, LoadErrorKind>>,
) -> Result<Vec<T>, LoadErrorKind> {
    let mut results = Vec::with_capacity(tasks.len());
    while let Some(result) = tasks.join_next().await {
        match joined(result) {
            Ok(value) => results.push(value),
            Err(e) => {
                tasks.abort_all();
                return Err(e);
            }
        }
    }
    Ok(results)
}

/// Cores this machine has.
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(workers: usize) -> LoadContext {
        let source = Arc::new(
            Source::with_store(
                Arc::new(object_store::memory::InMemory::new()),
                "",
                "memory://",
                crate::source::SourceOptions::default(),
            )
            .unwrap(),
        );
        LoadContext::new(
            source,
            LoadOptions::default(),
            PathBuf::from("/nonexistent"),
            Arc::default(),
            CancellationToken::new(),
            Arc::new(Semaphore::new(workers)),
        )
    }

    #[tokio::test]
    async fn waiting_for_a_permit_ends_when_cancelled() {
        let ctx = context(1);
        let _held = ctx.worker().await.unwrap();
        let waiter = {
            let ctx = ctx.clone();
            tokio::spawn(async move { ctx.worker().await.map(|_| ()) })
        };
        ctx.cancel.cancel();
        let result = waiter.await.unwrap();
        assert!(matches!(result, Err(LoadErrorKind::Cancelled)));
    }

    #[tokio::test]
    async fn queued_cpu_jobs_do_not_start_after_cancel() {
        let ctx = context(4);
        ctx.cancel.cancel();
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&ran);
        let result = ctx
            .cpu_job(move || {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            })
            .await;
        assert!(matches!(result, Err(LoadErrorKind::Cancelled)));
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_panicking_job_is_an_internal_error() {
        let ctx = context(1);
        let result: Result<(), _> = ctx.cpu_job(|| panic!("boom")).await;
        assert!(matches!(result, Err(LoadErrorKind::Internal(m)) if m.contains("boom")));
        // The permits were released.
        let _permit = ctx.worker().await.unwrap();
    }
}
