//! [`ZkCoordinator`]: the [`Coordinator`] over a ZooKeeper session
//! (`zookeeper-client`), in sequins' layout under `/<cluster_name>/v1`:
//!
//! ```text
//! nodes/<shard_id>@<host:port>                          ephemeral, one per node
//! partitions/<db>/<version>/<%05d>@<host:port>          ephemeral, one per built partition
//! id_assignment_lock/                                   the client's lock recipe
//! ```
//!
//! One background task, the driver, owns the session. The trait's methods
//! only change a description of what should exist (this node's entry, its
//! advertisements, the versions watched) and wake the driver, which makes
//! ZooKeeper match it whenever it can: at once when connected, after the
//! reconnection when disconnected, and from scratch (new session, every
//! ephemeral and watch re-created) after an expiry. Connecting never gives
//! up: while ZooKeeper is unreachable, at start or later, the driver retries
//! with capped backoff and reports the state, and the process goes on
//! serving. ZooKeeper is treated as hostile input: names that do not parse
//! are skipped with a warning, and an entry of ours left by a dead session
//! is replaced.
//!
//! Watches are one-shot children watches armed by the same request that
//! lists (`get_and_watch_children`), so no change between a listing and
//! the next watch is missed; within a session the client re-arms them on
//! reconnection, and the server fires those whose node changed meanwhile.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, watch};
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use zookeeper_client::{
    Acls, Client, CreateMode, CreateOptions, EventType, LockOptions, LockPrefix,
    SessionState as ZkState,
};

use crate::cluster::coordinator::{
    CoordinatorStatus, ID_ASSIGNMENT_QUIET_MAX, check_component, check_shard_id, choose_shard_id,
    holders_from_children, log_peer_changes, node_name, partition_name, peers_from_children,
    wait_quiet,
};
use crate::cluster::{
    ClusterConfig, Coordinator, CoordinatorError, PartitionHolders, Peer, SessionState,
};

type VersionKey = (String, String);

/// First wait before reconnecting or retrying a failed change.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest wait between attempts: an attempt costs one TCP connection, and
/// this bounds how long after ZooKeeper comes back a node notices.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The longest wait for a closing session to be confirmed. Closing takes
/// milliseconds when ZooKeeper is reachable; when it is not, waiting longer
/// would only delay shutdown (the session then times out by itself).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// Advertisements created or deleted at once (requests are pipelined on the
/// one connection).
const PIPELINE: usize = 64;

/// A [`Coordinator`] backed by ZooKeeper. Must be created inside a tokio
/// runtime. Dropping it without [`Coordinator::close`] also ends the
/// session, in the background.
pub struct ZkCoordinator {
    shared: Arc<Shared>,
    driver: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

struct Shared {
    config: ClusterConfig,
    address: String,
    /// `/<cluster_name>/v1`.
    root: String,
    wanted: Mutex<Wanted>,
    /// Wakes the driver after `wanted` changed.
    wake: Notify,
    shutdown: CancellationToken,
    status: watch::Sender<CoordinatorStatus>,
    peers: watch::Sender<Vec<Peer>>,
    /// Number of the last session whose `nodes/` listing has arrived (0:
    /// none yet).
    listed: watch::Sender<u64>,
    /// The current session's client and number, while there is one.
    client: watch::Sender<Option<(u64, Client)>>,
    /// One automatic ID assignment at a time in this process.
    assigning: tokio::sync::Mutex<()>,
    /// Set when a `nodes/` listing lacks this node's entry: someone deleted
    /// it, and the driver must create it again.
    node_missing: AtomicBool,
}

/// What should exist in ZooKeeper for this node.
#[derive(Default)]
struct Wanted {
    closed: bool,
    /// `nodes/` entry name.
    node: Option<String>,
    advertised: BTreeSet<(String, String, u32)>,
    /// Watched versions, each with a number telling a re-created channel
    /// from the one a running watch feeds.
    watches: BTreeMap<VersionKey, (u64, watch::Sender<PartitionHolders>)>,
    next_watch: u64,
}

impl ZkCoordinator {
    /// Starts coordinating as `address` (`host:port`, how peers reach this
    /// node). Returns at once: connecting happens in the background, and
    /// goes on until it succeeds, however long ZooKeeper is unreachable.
    pub fn start(config: ClusterConfig, address: &str) -> ZkCoordinator {
        let shared = Arc::new(Shared {
            root: config.root(),
            config,
            address: address.to_string(),
            wanted: Mutex::new(Wanted::default()),
            wake: Notify::new(),
            shutdown: CancellationToken::new(),
            status: watch::channel(CoordinatorStatus::START).0,
            peers: watch::channel(Vec::new()).0,
            listed: watch::channel(0).0,
            client: watch::channel(None).0,
            assigning: tokio::sync::Mutex::new(()),
            node_missing: AtomicBool::new(false),
        });
        let driver = tokio::spawn(drive(shared.clone()));
        ZkCoordinator {
            shared,
            driver: tokio::sync::Mutex::new(Some(driver)),
        }
    }

    /// Changes what should exist, then wakes the driver.
    fn change(&self, f: impl FnOnce(&mut Wanted)) -> Result<(), CoordinatorError> {
        {
            let mut wanted = self.shared.wanted();
            if wanted.closed {
                return Err(CoordinatorError::Closed);
            }
            f(&mut wanted);
        }
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Takes the lock, lists, picks and joins, within one session.
    async fn assign_in_session(&self, client: &Client, session: u64) -> Result<String, Failure> {
        let shared = &self.shared;
        let lock_dir = format!("{}/id_assignment_lock", shared.root);
        let lock_error = |e| Failure::zk("lock", &lock_dir, e);
        let prefix = LockPrefix::new_curator(&lock_dir, "lock-").map_err(lock_error)?;
        let options = LockOptions::new(Acls::anyone_all())
            .with_ancestor_options(persistent())
            .map_err(lock_error)?;
        let _lock = client
            .lock(prefix, b"", options)
            .await
            .map_err(lock_error)?;
        // The peer list of this session, then quiet.
        let mut listed = shared.listed.subscribe();
        tokio::select! {
            r = listed.wait_for(|n| *n >= session) => { r.map_err(|_| Failure::Closed)?; }
            _ = shared.shutdown.cancelled() => return Err(Failure::Closed),
        }
        let quiet = shared.config.time_to_converge.min(ID_ASSIGNMENT_QUIET_MAX);
        let mut peers = shared.peers.subscribe();
        let peers = wait_quiet(&mut peers, quiet).await;
        let id = choose_shard_id(&peers).map_err(Failure::Final)?;
        let name = node_name(&id, &shared.address);
        let path = format!("{}/nodes/{name}", shared.root);
        self.change(|w| w.node = Some(name))
            .map_err(|_| Failure::Closed)?;
        // Visible to the next assigner before the lock is released.
        ensure_ephemeral(client, &path).await?;
        tracing::info!(shard_id = %id, "chose shard ID");
        Ok(id)
    }
}

impl Drop for ZkCoordinator {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

impl Shared {
    fn wanted(&self) -> MutexGuard<'_, Wanted> {
        // Plain data: a panic elsewhere while holding it leaves it usable.
        self.wanted.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_state(&self, state: SessionState) {
        self.status.send_if_modified(|s| {
            let changed = s.state != state;
            s.state = state;
            changed
        });
    }

    fn path_of_node(&self, name: &str) -> String {
        format!("{}/nodes/{name}", self.root)
    }

    fn path_of_version(&self, db: &str, version: &str) -> String {
        format!("{}/partitions/{db}/{version}", self.root)
    }

    /// The ephemeral paths that should exist: this node's entry, and its
    /// advertisements.
    fn wanted_paths(&self) -> (Option<String>, Vec<String>) {
        let wanted = self.wanted();
        let node = wanted.node.as_ref().map(|name| self.path_of_node(name));
        let partitions = wanted
            .advertised
            .iter()
            .map(|(db, version, partition)| {
                format!(
                    "{}/{}",
                    self.path_of_version(db, version),
                    partition_name(*partition, &self.address)
                )
            })
            .collect();
        (node, partitions)
    }
}

/// Why an operation within a session did not complete.
#[derive(Debug)]
enum Failure {
    /// Worth retrying in the same session (or the next one).
    Retry(CoordinatorError),
    /// Will not get better by retrying.
    Final(CoordinatorError),
    /// The session is over (expired or closed).
    SessionOver,
    /// The coordinator is closing.
    Closed,
}

impl Failure {
    fn zk(op: &'static str, path: &str, error: zookeeper_client::Error) -> Failure {
        use zookeeper_client::Error as E;
        let session_over = matches!(
            error,
            E::SessionExpired | E::ClientClosed | E::AuthFailed | E::SessionMoved
        );
        let wrapped = CoordinatorError::ZooKeeper {
            op,
            path: path.to_string(),
            source: error,
        };
        if session_over {
            tracing::debug!("{wrapped}");
            Failure::SessionOver
        } else {
            Failure::Retry(wrapped)
        }
    }
}

fn persistent() -> CreateOptions<'static> {
    CreateMode::Persistent.with_acls(Acls::anyone_all())
}

fn ephemeral() -> CreateOptions<'static> {
    CreateMode::Ephemeral.with_acls(Acls::anyone_all())
}

/// `mkdir -p` of persistent nodes (existing ones are fine).
async fn ensure_path(client: &Client, path: &str) -> Result<(), Failure> {
    client
        .mkdir(path, &persistent())
        .await
        .map_err(|e| Failure::zk("create", path, e))
}

/// Creates the ephemeral `path` for this session, parents as needed. An
/// existing node of that name owned by another session (ours, before an
/// expiry: the name holds our address) is replaced.
async fn ensure_ephemeral(client: &Client, path: &str) -> Result<(), Failure> {
    use zookeeper_client::Error as E;
    let parent = &path[..path.rfind('/').unwrap_or(0)];
    // Each round fixes one obstacle; more than a few means someone keeps
    // interfering, and the caller retries later.
    for _ in 0..4 {
        match client.create(path, b"", &ephemeral()).await {
            Ok(_) => return Ok(()),
            Err(E::NoNode) => ensure_path(client, parent).await?,
            Err(E::NodeExists) => {
                let stat = client
                    .check_stat(path)
                    .await
                    .map_err(|e| Failure::zk("stat", path, e))?;
                match stat {
                    None => continue,
                    Some(stat) if stat.ephemeral_owner == client.session_id().0 => return Ok(()),
                    Some(stat) => {
                        tracing::info!(
                            path,
                            owner = stat.ephemeral_owner,
                            "replacing an entry left by an earlier session"
                        );
                        match client.delete(path, Some(stat.version)).await {
                            Ok(()) | Err(E::NoNode | E::BadVersion) => {}
                            Err(e) => return Err(Failure::zk("delete", path, e)),
                        }
                    }
                }
            }
            Err(e) => return Err(Failure::zk("create", path, e)),
        }
    }
    Err(Failure::Retry(CoordinatorError::ZooKeeper {
        op: "create",
        path: path.to_string(),
        source: E::NodeExists,
    }))
}

async fn delete_ephemeral(client: &Client, path: &str) -> Result<(), Failure> {
    match client.delete(path, None).await {
        Ok(()) | Err(zookeeper_client::Error::NoNode) => Ok(()),
        Err(e) => Err(Failure::zk("delete", path, e)),
    }
}

/// Capped exponential backoff with jitter (so nodes that lost ZooKeeper
/// together do not come back in lockstep).
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff { next: BACKOFF_MIN }
    }

    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }

    fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        // Up to 25% less, from a cheap per-call random source.
        let random = {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(base.as_nanos() as u64);
            h.finish()
        };
        base - base.mul_f64((random % 1000) as f64 / 4000.0)
    }
}

/// The driver: sessions one after another until shutdown.
async fn drive(shared: Arc<Shared>) {
    let mut sessions = 0u64;
    loop {
        let Some(client) = connect(&shared, sessions).await else {
            break;
        };
        sessions += 1;
        tracing::info!(
            session = %client.session_id(),
            timeout_ms = client.session_timeout().as_millis() as u64,
            "ZooKeeper session established"
        );
        shared.status.send_replace(CoordinatorStatus {
            state: SessionState::Connected,
            sessions,
        });
        let over = run_session(&shared, client, sessions).await;
        if over == SessionEnd::Shutdown {
            break;
        }
        tracing::warn!("ZooKeeper session expired; re-creating it and every entry and watch");
        shared.set_state(SessionState::Recovering);
    }
    shared.set_state(SessionState::Closed);
}

/// Connects, retrying until it works; `None` on shutdown.
async fn connect(shared: &Shared, sessions: u64) -> Option<Client> {
    let config = &shared.config;
    let servers = config.connect_string();
    let mut backoff = Backoff::new();
    let mut failures = 0u64;
    loop {
        let attempt = Client::connector()
            .with_session_timeout(config.session_timeout)
            .with_connection_timeout(config.connect_timeout)
            // Report a failure once every server was tried, so that this
            // loop paces retries and watches for shutdown.
            .with_fail_eagerly()
            .connect(&servers);
        let result = tokio::select! {
            r = attempt => r,
            _ = shared.shutdown.cancelled() => return None,
        };
        match result {
            Ok(client) => return Some(client),
            Err(e) => {
                failures += 1;
                // Once on the first failure, then now and then, so a long
                // outage is visible without flooding the log.
                if failures == 1 || failures % 50 == 0 {
                    tracing::warn!(
                        servers = %servers,
                        attempts = failures,
                        "cannot reach ZooKeeper ({e}); serving goes on, retrying"
                    );
                }
                if sessions == 0 {
                    shared.set_state(SessionState::NeverConnected);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = shared.shutdown.cancelled() => return None,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum SessionEnd {
    Expired,
    Shutdown,
}

/// Serves one session: keeps ZooKeeper matching `wanted` and the watches
/// running, until the session ends or shutdown.
async fn run_session(shared: &Arc<Shared>, client: Client, session: u64) -> SessionEnd {
    let mut state = client.state_watcher();
    let mut tasks = JoinSet::new();
    tasks.spawn(forward_state(shared.clone(), client.state_watcher()));
    tasks.spawn(watch_nodes(shared.clone(), client.clone(), session));
    let mut version_watches = HashMap::new();
    shared.client.send_replace(Some((session, client.clone())));
    // Ephemerals this session created (full paths).
    let mut created = BTreeSet::new();
    let mut connected = true;
    let mut dirty = true;
    let mut backoff = Backoff::new();
    let mut retry = None;
    // Whether this session's entries were all created once (logged).
    let mut registered = false;

    let end = loop {
        if dirty {
            // Also while disconnected, so that unwatching closes at once.
            sync_version_watches(shared, &client, &mut tasks, &mut version_watches);
        }
        if connected && dirty {
            dirty = false;
            if shared.node_missing.swap(false, Ordering::Relaxed) {
                // Believed created, listed as absent: create it again (a
                // listing taken before our create completed only costs a
                // check).
                let (node, _) = shared.wanted_paths();
                if let Some(node) = node {
                    created.remove(&node);
                }
            }
            // A session whose requests go unanswered for a whole session
            // timeout is as good as expired (seen with a server that was
            // still starting): a new one is made.
            let bound = shared.config.session_timeout;
            let outcome = tokio::select! {
                r = tokio::time::timeout(bound, reconcile(shared, &client, &mut created)) => match r {
                    Ok(r) => r,
                    Err(_) => {
                        tracing::warn!("ZooKeeper answered no request within {bound:?}; starting a new session");
                        break SessionEnd::Expired;
                    }
                },
                _ = shared.shutdown.cancelled() => break SessionEnd::Shutdown,
            };
            match outcome {
                Ok(()) => {
                    backoff.reset();
                    retry = None;
                    if !registered {
                        registered = true;
                        tracing::info!(
                            entries = created.len(),
                            "registered in ZooKeeper: this node and its partitions"
                        );
                    }
                }
                Err(Failure::SessionOver) => break SessionEnd::Expired,
                Err(Failure::Closed) => break SessionEnd::Shutdown,
                Err(Failure::Retry(e) | Failure::Final(e)) => {
                    let delay = backoff.next_delay();
                    tracing::warn!("{e}; retrying in {delay:?}");
                    retry = Some(tokio::time::Instant::now() + delay);
                }
            }
        }
        tokio::select! {
            _ = shared.shutdown.cancelled() => break SessionEnd::Shutdown,
            _ = shared.wake.notified() => dirty = true,
            new = state.changed() => match new {
                ZkState::SyncConnected | ZkState::ConnectedReadOnly => {
                    connected = true;
                    dirty = true;
                }
                ZkState::Disconnected => connected = false,
                ZkState::Expired | ZkState::Closed | ZkState::AuthFailed => {
                    break SessionEnd::Expired;
                }
            },
            _ = sleep_until(retry), if retry.is_some() => {
                retry = None;
                dirty = true;
            }
            Some(_) = tasks.join_next() => {}
        }
    };

    // Every task holds a client clone; the session closes when the last
    // clone is dropped.
    shared.client.send_replace(None);
    tasks.shutdown().await;
    if end == SessionEnd::Shutdown {
        close_session(client).await;
    }
    end
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Drops the client (sending the close request) and waits, bounded, for
/// the server to confirm: then our ephemerals are already gone.
async fn close_session(client: Client) {
    let mut state = client.state_watcher();
    let session = client.session_id();
    drop(client);
    let closed = tokio::time::timeout(CLOSE_TIMEOUT, async {
        while !state.peek_state().is_terminated() {
            state.changed().await;
        }
    })
    .await;
    match closed {
        Ok(()) => tracing::info!(%session, "ZooKeeper session closed"),
        Err(_) => tracing::warn!(
            %session,
            "ZooKeeper did not confirm closing the session within {CLOSE_TIMEOUT:?}; \
             its entries vanish when it times out"
        ),
    }
}

/// Mirrors the client's connection state into the status.
async fn forward_state(shared: Arc<Shared>, mut state: zookeeper_client::StateWatcher) {
    loop {
        match state.changed().await {
            ZkState::SyncConnected | ZkState::ConnectedReadOnly => {
                shared.set_state(SessionState::Connected)
            }
            ZkState::Disconnected => {
                tracing::warn!("lost the connection to ZooKeeper; serving goes on");
                shared.set_state(SessionState::Disconnected)
            }
            // The driver reports what comes next.
            _ => return,
        }
    }
}

/// Starts and stops the watches of partition holders to match `wanted`.
fn sync_version_watches(
    shared: &Arc<Shared>,
    client: &Client,
    tasks: &mut JoinSet<()>,
    running: &mut HashMap<VersionKey, (u64, AbortHandle)>,
) {
    let wanted = shared.wanted();
    running.retain(|key, (number, handle)| {
        let keep = wanted.watches.get(key).is_some_and(|(n, _)| n == number);
        if !keep {
            handle.abort();
        }
        keep
    });
    for (key, (number, sender)) in &wanted.watches {
        if !running.contains_key(key) {
            let path = shared.path_of_version(&key.0, &key.1);
            let handle = tasks.spawn(watch_holders(
                shared.clone(),
                client.clone(),
                path,
                sender.clone(),
            ));
            running.insert(key.clone(), (*number, handle));
        }
    }
}

/// Makes this session's ephemerals match `wanted`: deletes withdrawn ones,
/// creates missing ones. Idempotent, and safe to cancel at any point.
async fn reconcile(
    shared: &Shared,
    client: &Client,
    created: &mut BTreeSet<String>,
) -> Result<(), Failure> {
    let (node, partitions) = shared.wanted_paths();
    let want: BTreeSet<&String> = node.iter().chain(&partitions).collect();
    let stale: Vec<String> = created
        .iter()
        .filter(|p| !want.contains(p))
        .cloned()
        .collect();
    let mut first_error = None;
    for chunk in stale.chunks(PIPELINE) {
        let mut batch = Vec::with_capacity(chunk.len());
        for path in chunk {
            batch.push(delete_ephemeral(client, path));
        }
        let results = futures::future::join_all(batch).await;
        for (path, result) in chunk.iter().zip(results) {
            match result {
                Ok(()) => {
                    created.remove(path);
                }
                Err(e) => first_error = first_error.or(Some(e)),
            }
        }
    }
    // This node's entry first, so that its advertisements never appear
    // without it.
    if let Some(node) = node.filter(|n| !created.contains(n)) {
        ensure_ephemeral(client, &node).await?;
        created.insert(node);
    }
    let missing: Vec<&String> = partitions
        .iter()
        .filter(|p| !created.contains(*p))
        .collect();
    for chunk in missing.chunks(PIPELINE) {
        let mut batch = Vec::with_capacity(chunk.len());
        for path in chunk {
            batch.push(ensure_ephemeral(client, path));
        }
        let results = futures::future::join_all(batch).await;
        for (path, result) in chunk.iter().zip(results) {
            match result {
                Ok(()) => {
                    created.insert((*path).clone());
                }
                Err(e) => first_error = first_error.or(Some(e)),
            }
        }
    }
    match first_error {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

/// Lists `path`'s children and re-arms the watch on every change, calling
/// `publish` with each listing, until the session ends. Creates `path` when
/// it does not exist (sequins does the same for version paths).
async fn watch_children(client: &Client, path: &str, mut publish: impl FnMut(Vec<String>)) {
    use zookeeper_client::Error as E;
    let mut backoff = Backoff::new();
    loop {
        match client.get_and_watch_children(path).await {
            Ok((children, _stat, watcher)) => {
                backoff.reset();
                publish(children);
                let event = watcher.changed().await;
                if event.event_type == EventType::Session && event.session_state.is_terminated() {
                    return;
                }
            }
            Err(E::NoNode) => match ensure_path(client, path).await {
                Ok(()) => {}
                Err(Failure::SessionOver) => return,
                Err(_) => tokio::time::sleep(backoff.next_delay()).await,
            },
            Err(E::ConnectionLoss) => {
                if !wait_connected(client).await {
                    return;
                }
            }
            Err(E::SessionExpired | E::ClientClosed | E::AuthFailed | E::SessionMoved) => return,
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!("ZooKeeper list {path}: {e}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Waits for the session to be connected again; false once it is over.
async fn wait_connected(client: &Client) -> bool {
    let mut state = client.state_watcher();
    loop {
        match state.peek_state() {
            ZkState::SyncConnected | ZkState::ConnectedReadOnly => return true,
            s if s.is_terminated() => return false,
            _ => {
                state.changed().await;
            }
        }
    }
}

/// Warns once per name about entries that do not parse.
fn warn_bad(path: &str, bad: &[&str], warned: &mut BTreeSet<String>) {
    for name in bad {
        if warned.insert(name.to_string()) {
            tracing::warn!("ignoring the unparsable ZooKeeper entry {path}/{name:?}");
        }
    }
}

async fn watch_nodes(shared: Arc<Shared>, client: Client, session: u64) {
    let path = format!("{}/nodes", shared.root);
    let mut warned = BTreeSet::new();
    watch_children(&client, &path, |children| {
        let (peers, bad) =
            peers_from_children(children.iter().map(String::as_str), &shared.address);
        warn_bad(&path, &bad, &mut warned);
        shared.peers.send_if_modified(|current| {
            if *current == peers {
                return false;
            }
            log_peer_changes(current, &peers);
            *current = peers;
            true
        });
        shared.listed.send_replace(session);
        let own = shared.wanted().node.clone();
        if own.is_some_and(|own| !children.contains(&own)) {
            shared.node_missing.store(true, Ordering::Relaxed);
            shared.wake.notify_one();
        }
    })
    .await;
}

async fn watch_holders(
    shared: Arc<Shared>,
    client: Client,
    path: String,
    sender: watch::Sender<PartitionHolders>,
) {
    let mut warned = BTreeSet::new();
    let mut first = true;
    watch_children(&client, &path, |children| {
        let (holders, bad) =
            holders_from_children(children.iter().map(String::as_str), &shared.address);
        warn_bad(&path, &bad, &mut warned);
        // The first listing always notifies, even when empty: receivers
        // learn that the view is current (see `Coordinator::watch_partitions`).
        let listed = std::mem::take(&mut first);
        sender.send_if_modified(|current| {
            let changed = *current != holders;
            *current = holders;
            changed || listed
        });
    })
    .await;
}

#[async_trait]
impl Coordinator for ZkCoordinator {
    fn address(&self) -> &str {
        &self.shared.address
    }

    fn status(&self) -> watch::Receiver<CoordinatorStatus> {
        self.shared.status.subscribe()
    }

    fn peers(&self) -> watch::Receiver<Vec<Peer>> {
        self.shared.peers.subscribe()
    }

    async fn join(&self, shard_id: Option<&str>) -> Result<String, CoordinatorError> {
        if let Some(id) = shard_id {
            check_shard_id(id)?;
            let name = node_name(id, &self.shared.address);
            self.change(|w| w.node = Some(name))?;
            return Ok(id.to_string());
        }
        let _one_at_a_time = self.shared.assigning.lock().await;
        let mut clients = self.shared.client.subscribe();
        let mut backoff = Backoff::new();
        // The first session to try; after a session ends, the next one.
        let mut from_session = 0;
        loop {
            let wanted_client =
                clients.wait_for(|c| c.as_ref().is_some_and(|(n, _)| *n >= from_session));
            let current = tokio::select! {
                c = wanted_client => c.map_err(|_| CoordinatorError::Closed)?.clone(),
                _ = self.shared.shutdown.cancelled() => return Err(CoordinatorError::Closed),
            };
            let Some((session, client)) = current else {
                continue;
            };
            let attempt = tokio::select! {
                r = self.assign_in_session(&client, session) => r,
                _ = self.shared.shutdown.cancelled() => Err(Failure::Closed),
            };
            // Holding the client would keep a dead session's client alive.
            drop(client);
            match attempt {
                Ok(id) => return Ok(id),
                Err(Failure::Final(e)) => return Err(e),
                Err(Failure::Closed) => return Err(CoordinatorError::Closed),
                Err(Failure::SessionOver) => from_session = session + 1,
                Err(Failure::Retry(e)) => {
                    let delay = backoff.next_delay();
                    tracing::warn!("choosing a shard ID: {e}; retrying in {delay:?}");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.shared.shutdown.cancelled() => return Err(CoordinatorError::Closed),
                    }
                }
            }
        }
    }

    async fn converge(&self) -> Vec<Peer> {
        let mut listed = self.shared.listed.subscribe();
        tokio::select! {
            _ = listed.wait_for(|n| *n > 0) => {}
            _ = self.shared.shutdown.cancelled() => return self.shared.peers.borrow().clone(),
        }
        let mut peers = self.shared.peers.subscribe();
        wait_quiet(&mut peers, self.shared.config.time_to_converge).await
    }

    fn advertise(&self, db: &str, version: &str, partition: u32) -> Result<(), CoordinatorError> {
        check_component("database", db)?;
        check_component("version", version)?;
        self.change(|w| {
            w.advertised
                .insert((db.to_string(), version.to_string(), partition));
        })
    }

    fn withdraw(&self, db: &str, version: &str, partition: u32) -> Result<(), CoordinatorError> {
        self.change(|w| {
            w.advertised
                .remove(&(db.to_string(), version.to_string(), partition));
        })
    }

    fn withdraw_version(&self, db: &str, version: &str) -> Result<(), CoordinatorError> {
        self.change(|w| w.advertised.retain(|(d, v, _)| d != db || v != version))
    }

    fn watch_partitions(
        &self,
        db: &str,
        version: &str,
    ) -> Result<watch::Receiver<PartitionHolders>, CoordinatorError> {
        check_component("database", db)?;
        check_component("version", version)?;
        let mut receiver = None;
        self.change(|w| {
            let number = w.next_watch;
            let (_, sender) = w
                .watches
                .entry((db.to_string(), version.to_string()))
                .or_insert_with(|| (number, watch::channel(PartitionHolders::new()).0));
            receiver = Some(sender.subscribe());
            w.next_watch += 1;
        })?;
        Ok(receiver.expect("set by change"))
    }

    fn unwatch_partitions(&self, db: &str, version: &str) {
        let _ = self.change(|w| {
            w.watches.remove(&(db.to_string(), version.to_string()));
        });
    }

    async fn close(&self) {
        {
            let mut wanted = self.shared.wanted();
            wanted.closed = true;
            // Receivers of partition holders see their channel closed once
            // the watch tasks are stopped.
            wanted.watches.clear();
        }
        self.shared.shutdown.cancel();
        let Some(driver) = self.driver.lock().await.take() else {
            return;
        };
        // The driver's own wait for the close is bounded by CLOSE_TIMEOUT;
        // this is a backstop.
        if tokio::time::timeout(CLOSE_TIMEOUT * 2, driver)
            .await
            .is_err()
        {
            tracing::warn!("the ZooKeeper driver did not stop in time");
        }
        self.shared.set_state(SessionState::Closed);
    }
}
