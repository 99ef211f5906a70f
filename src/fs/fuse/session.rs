//! The mount's lifecycle: mount options, mounting (the fuser session and
//! its threads, the catalog listener, the sweep thread) and unmounting,
//! lazily when the mount is busy.
//!
//! Apart from the adapter, as in mountpoint-s3: the adapter only answers
//! requests; this owns the threads and the kernel connection they share.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use fuser::{BackgroundSession, Config, MountOption, Notifier, Session, SessionACL};

use crate::catalog::Catalog;
use crate::fs::attr::CoreOptions;
use crate::fs::control::RefreshTrigger;
use crate::fs::core::FsCore;
use crate::fs::counters::RequestCounters;
use crate::fs::fuse::adapter::FuseAdapter;
use crate::fs::fuse::invalidate::{self, Stop};
use crate::fs::fuse::mountpoint::{MountError, check_mount_point, lazy_unmount};
use crate::fs::fuse::prewarm::Prewarmer;
use crate::fs::fuse::uring::dispatch::Dispatcher;
use crate::fs::fuse::uring::queue::{DEFAULT_DEPTH, Queues};
use crate::fs::fuse::uring::{self, FuseTransport, UringOffer};
use crate::fs::remote::RemoteReadsHandle;
use crate::wakeup::Activity;

/// How the mount is presented and run.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Owner of every file; the daemon's user if `None`.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Let other users read the mount (`allow_other`; needs
    /// `user_allow_other` in /etc/fuse.conf when not root).
    pub allow_other: bool,
    /// Session threads. Four keeps a slow page fault on a cold mapping from
    /// stalling other requests, with a thread free for FORGET bursts;
    /// mountpoint-s3 found no gain beyond a few on small machines.
    pub threads: usize,
    /// How often the invalidation thread asks the kernel to drop cached
    /// entries of versions that are no longer current, so that their pins
    /// are released and the catalog can delete them once their grace period
    /// ends. Ten seconds is short next to the default one-minute grace.
    pub retired_sweep_interval: Duration,
    /// Mount read-only in the kernel (`ro`). The kernel then stops marking a
    /// file's access time stale after each first read, so a warm `cat`
    /// (which `fstat`s) sends no request at all instead of one GETATTR; but
    /// it also refuses `touch .refresh` itself, before the daemon sees it.
    /// Off by default because `.refresh` is part of the interface.
    pub kernel_read_only: bool,
    /// Told of every request, for `--idle-poll` (see [`crate::wakeup`]).
    pub activity: Option<Activity>,
    /// Where READs of keys held by peers go, on a node of a cluster.
    pub remote_reads: Option<RemoteReadsHandle>,
    /// /dev/fuse (fuser's session threads) or io_uring per-CPU queues.
    /// /dev/fuse by default here, for library users and tests; the `mount`
    /// command asks for `auto` (see `cli::mount`).
    pub transport: FuseTransport,
    /// With `auto` or `uring`, turn on the fuse module's `enable_uring` if
    /// it is off, once the mount point has been checked (see
    /// `uring::turn_on_in_kernel`). Off by default: it is the machine's
    /// setting, and only the `mount` command turns it on unless told not to.
    pub turn_on_kernel_uring: bool,
    /// Pre-warm switches (see `fs::fuse::prewarm`): how long a switch may
    /// wait for the keys the kernel holds to be warm in the new version,
    /// before it goes ahead anyway (warming goes on after it). `None`:
    /// no pre-warming, and no tracking of looked-up keys.
    pub prewarm_limit: Option<Duration>,
}

/// The default `--prewarm-limit`: five seconds. Warming costs about one
/// LOOKUP round trip per key (the value push is a write to the FUSE device),
/// so this covers a working set of about 100,000 keys on a small VM (see
/// docs/PERFORMANCE.md), while a refresh is never held up for long: most
/// refreshes are minutes apart, and a switch is a background event.
pub const DEFAULT_PREWARM_LIMIT: Duration = Duration::from_secs(5);

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            uid: None,
            gid: None,
            allow_other: false,
            threads: 4,
            retired_sweep_interval: Duration::from_secs(10),
            kernel_read_only: false,
            activity: None,
            remote_reads: None,
            transport: FuseTransport::Dev,
            turn_on_kernel_uring: false,
            prewarm_limit: Some(DEFAULT_PREWARM_LIMIT),
        }
    }
}

/// A live mount. Unmounts on drop.
pub struct MountHandle {
    mountpoint: PathBuf,
    core: Arc<FsCore>,
    session: Option<BackgroundSession>,
    /// What the catalog listener notifies through; emptied on unmount so
    /// the listener (which the catalog keeps) lets go of the connection.
    notifier: Arc<Mutex<Option<Notifier>>>,
    events: mpsc::Sender<Stop>,
    invalidator: Option<JoinHandle<()>>,
    /// The io_uring queue threads, when that transport serves the mount.
    uring: Option<Queues>,
    /// Requests answered over io_uring.
    uring_served: Option<Arc<AtomicU64>>,
    /// Registered with the catalog (weakly) while mounted.
    prewarmer: Option<Arc<Prewarmer>>,
}

/// Mounts `catalog` at `mountpoint` and returns once the kernel has finished
/// INIT (the mount is usable). `refresh` is what `touch .refresh` calls. A
/// stale mount point left by a crashed daemon ("Transport endpoint is not
/// connected") is detached first.
pub fn mount(
    catalog: Arc<Catalog>,
    refresh: impl RefreshTrigger,
    mountpoint: &Path,
    options: MountOptions,
) -> Result<MountHandle, MountError> {
    check_mount_point(mountpoint)?;
    let defaults = CoreOptions::default();
    let mut core = FsCore::new(
        Arc::clone(&catalog),
        refresh,
        CoreOptions {
            uid: options.uid.unwrap_or(defaults.uid),
            gid: options.gid.unwrap_or(defaults.gid),
        },
    );
    if let Some(remote) = &options.remote_reads {
        core = core.with_remote_reads(Arc::clone(&remote.0));
    }
    if let Some(limit) = options.prewarm_limit {
        core = core.with_prewarming(limit);
    }
    let core = Arc::new(core);
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("sequins".into()),
        MountOption::Subtype("sequins".into()),
        // Permission checks in the kernel: no ACCESS requests.
        MountOption::DefaultPermissions,
        MountOption::NoAtime,
        MountOption::NoDev,
        MountOption::NoSuid,
        // Not `ro` unless asked for: with it the kernel refuses `touch
        // .refresh` before the daemon sees it. Every write-like request is
        // answered EROFS here either way.
    ];
    if options.kernel_read_only {
        config.mount_options.push(MountOption::RO);
    }
    config.acl = if options.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(options.threads.max(1));
    // The io_uring queues are ready before INIT can promise them.
    let mut queues = prepare_uring(options.transport, options.turn_on_kernel_uring, mountpoint)?;
    let offer = queues.as_ref().map(|_| Arc::new(UringOffer::default()));
    let adapter = FuseAdapter::new(Arc::clone(&core), options.activity.clone(), offer.clone());
    // Session::new mounts and completes the INIT handshake.
    let session = Session::new(adapter, mountpoint, &config).map_err(MountError::io(mountpoint))?;
    let mut uring_served = None;
    if let (Some(offer), Some(mut ready)) = (offer, queues.take()) {
        match offer.negotiated() {
            Some(payload) => {
                let fd = session
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(MountError::io(mountpoint))?;
                let owner_only = (!options.allow_other).then(geteuid);
                let dispatcher =
                    Dispatcher::new(Arc::clone(&core), options.activity.clone(), owner_only);
                ready.serve(fd, Arc::new(dispatcher), payload);
                tracing::info!(queues = ready.len(), "serving FUSE requests over io_uring");
                uring_served = Some(ready.served());
                queues = Some(ready);
            }
            None if options.transport == FuseTransport::Uring => {
                ready.stop();
                // Dropping the session unmounts.
                drop(session);
                return Err(MountError::Io {
                    path: mountpoint.to_path_buf(),
                    source: std::io::Error::other(
                        "--fuse-transport uring: the kernel did not offer FUSE over io_uring at INIT",
                    ),
                });
            }
            None => {
                ready.stop();
                tracing::info!("FUSE over io_uring not offered at INIT; using /dev/fuse");
            }
        }
    }
    let notifier = session.notifier();
    let session = session.spawn().map_err(MountError::io(mountpoint))?;
    tracing::info!(mountpoint = %mountpoint.display(), "mounted");

    // Catalog changes are pushed to the kernel by the listener itself: the
    // catalog calls it on the publishing (refresh) thread after releasing
    // its locks, which is never a FUSE request thread, so the kernel may
    // take the root's lock for the invalidation without deadlocking, and a
    // switch is visible to every path walk by the time `publish` returns.
    let shared_notifier = Arc::new(Mutex::new(Some(notifier.clone())));
    {
        let core = Arc::clone(&core);
        let shared = Arc::clone(&shared_notifier);
        catalog.on_change(move |event| {
            let notifier = shared.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(notifier) = notifier {
                invalidate::push_change(&core, &notifier, event);
            }
        });
    }
    let prewarmer = options.prewarm_limit.map(|limit| {
        let prewarmer = Arc::new(Prewarmer::new(
            Arc::clone(&core),
            notifier.clone(),
            mountpoint,
            limit,
            options.threads.max(1),
        ));
        let weak = Arc::downgrade(&prewarmer);
        catalog.add_switch_warmer(weak);
        prewarmer
    });
    let (events, received) = mpsc::channel();
    let invalidator = {
        let core = Arc::clone(&core);
        let sweep = options.retired_sweep_interval;
        std::thread::Builder::new()
            .name("sequinsfs-inval".into())
            .spawn(move || invalidate::sweep_loop(&core, &notifier, &received, sweep))
            .map_err(MountError::io(mountpoint))?
    };
    Ok(MountHandle {
        mountpoint: mountpoint.to_path_buf(),
        core,
        notifier: shared_notifier,
        session: Some(session),
        events,
        invalidator: Some(invalidator),
        uring: queues,
        uring_served,
        prewarmer,
    })
}

fn geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The io_uring queues `transport` asks for, set up before mounting: `None`
/// for /dev/fuse, and for `auto` when the kernel does not allow io_uring
/// and, with `turn_on`, cannot be made to (logged). `uring` fails the mount
/// instead.
fn prepare_uring(
    transport: FuseTransport,
    turn_on: bool,
    mountpoint: &Path,
) -> Result<Option<Queues>, MountError> {
    let unavailable = |why: String| MountError::Io {
        path: mountpoint.to_path_buf(),
        source: std::io::Error::other(why),
    };
    let allowed = || uring::kernel_enables_uring() || (turn_on && uring::turn_on_in_kernel());
    match transport {
        FuseTransport::Dev => return Ok(None),
        FuseTransport::Auto | FuseTransport::Uring if !allowed() => {
            let why = format!(
                "FUSE over io_uring is off in the kernel ({} is not Y)",
                uring::ENABLE_URING_PARAM
            );
            if transport == FuseTransport::Uring {
                return Err(unavailable(format!("--fuse-transport uring: {why}")));
            }
            tracing::info!("{why}; using /dev/fuse");
            return Ok(None);
        }
        _ => {}
    }
    match Queues::prepare(DEFAULT_DEPTH) {
        Ok(queues) => Ok(Some(queues)),
        Err(err) if transport == FuseTransport::Uring => Err(unavailable(format!(
            "--fuse-transport uring: cannot set up io_uring queues: {err}"
        ))),
        Err(err) => {
            tracing::info!("cannot set up io_uring queues ({err}); using /dev/fuse");
            Ok(None)
        }
    }
}

impl MountHandle {
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Whether the session is still running (false once the file system
    /// was unmounted from outside, e.g. with `fusermount3 -u`).
    pub fn is_mounted(&self) -> bool {
        self.session
            .as_ref()
            .is_some_and(|session| !session.guard.is_finished())
    }

    /// Requests received per opcode.
    pub fn counters(&self) -> &RequestCounters {
        self.core.counters()
    }

    /// The transport serving the mount's requests: `Uring` or `Dev`
    /// (never `Auto`).
    pub fn transport(&self) -> FuseTransport {
        if self.uring_served.is_some() {
            FuseTransport::Uring
        } else {
            FuseTransport::Dev
        }
    }

    /// Requests answered over io_uring (0 on /dev/fuse).
    pub fn uring_requests(&self) -> u64 {
        self.uring_served
            .as_ref()
            .map_or(0, |served| served.load(Ordering::Relaxed))
    }

    /// Waits until the pre-warming run of `db` (if any) has ended, or
    /// `timeout` passes; returns whether it ended. For tests and
    /// benchmarks: a switch waits for the run only up to the limit.
    pub fn wait_prewarmed(&self, db: &str, timeout: Duration) -> bool {
        self.prewarmer
            .as_ref()
            .is_none_or(|prewarmer| prewarmer.wait(db, timeout))
    }

    /// The filesystem core behind the mount.
    pub fn core(&self) -> &Arc<FsCore> {
        &self.core
    }

    /// Unmounts. If the mount is busy (a process has a file open or its
    /// working directory inside), detaches it lazily instead: it disappears
    /// from the namespace now and goes away when the last user is done.
    pub fn unmount(mut self) -> Result<(), MountError> {
        self.unmount_inner()
    }

    fn unmount_inner(&mut self) -> Result<(), MountError> {
        if let Some(prewarmer) = self.prewarmer.take() {
            prewarmer.stop();
        }
        *self.notifier.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let _ = self.events.send(Stop);
        if let Some(thread) = self.invalidator.take() {
            let _ = thread.join();
        }
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        if session.guard.is_finished() {
            // Unmounted from outside (`umount`, `fusermount3 -u`).
            if let Err(err) = session.join() {
                tracing::debug!("session ended with: {err}");
            }
            if let Some(mut queues) = self.uring.take() {
                queues.stop();
            }
            self.core.unpin_all();
            tracing::info!(mountpoint = %self.mountpoint.display(), "was unmounted from outside");
            return Ok(());
        }
        let result = match session.umount_and_join() {
            Ok(()) => {
                // The unmount ended the connection, and with it every
                // ring entry: the queue threads are ending.
                if let Some(mut queues) = self.uring.take() {
                    queues.stop();
                }
                tracing::info!(mountpoint = %self.mountpoint.display(), "unmounted");
                Ok(())
            }
            Err(err) if err.raw_os_error() == Some(libc::EBUSY) => {
                if let Some(mut queues) = self.uring.take() {
                    queues.detach();
                }
                tracing::warn!(
                    mountpoint = %self.mountpoint.display(),
                    "mount point busy; detaching lazily (it goes away when the last user is done)"
                );
                lazy_unmount(&self.mountpoint).map_err(MountError::io(&self.mountpoint))
            }
            // Not mounted any more: someone unmounted it meanwhile.
            Err(err) if err.raw_os_error() == Some(libc::EINVAL) => {
                if let Some(mut queues) = self.uring.take() {
                    queues.stop();
                }
                Ok(())
            }
            Err(source) => {
                if let Some(mut queues) = self.uring.take() {
                    queues.detach();
                }
                Err(MountError::io(&self.mountpoint)(source))
            }
        };
        self.core.unpin_all();
        result
    }
}

impl Drop for MountHandle {
    fn drop(&mut self) {
        if let Err(err) = self.unmount_inner() {
            tracing::warn!("unmount of {} failed: {err}", self.mountpoint.display());
        }
    }
}
