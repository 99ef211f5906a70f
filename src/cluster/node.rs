//! This node's part in a cluster, as the engine and the HTTP sidecar see
//! it: its shard ID, which partitions of a new version it builds, when a
//! version may be served, and asking peers for the partitions it does not
//! hold. Everything here goes through the [`Coordinator`] trait, so the
//! same code runs over ZooKeeper and over [`super::MemoryCluster`] in tests.
//!
//! The rules are sequins' (reference sections 5.3 to 5.6):
//! - a version's partitions are assigned once, when this node starts
//!   building it, from the peers it knows at that moment;
//! - each partition built is advertised; a version becomes current once
//!   every partition has at least `min_replication` replicas counting this
//!   node's and the peers' advertisements;
//! - a request for a key of a partition this node does not hold is proxied
//!   to the peers advertising it, and to the peers of the key's alternate
//!   partition when those answer 404.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::ClusterConfig;
use super::assignment::{apply_max_replication, assign_partitions};
use super::coordinator::{Coordinator, CoordinatorError, PartitionHolders, Peer, SessionState};
use super::proxy::{Proxy, ProxyOutcome};
use super::rereplicate::{Tracker, View};
use crate::catalog::{RemoteKey, Version};

/// Where a node keeps the shard ID it chose for itself, in its local store
/// (sequins' file name), so a restart rejoins under the same ID.
pub const SELF_ASSIGNED_ID_FILE: &str = "self_assigned_id";

/// How long a superseded version stays after the last request a peer
/// made for it (`?proxy=<version>`): sequins' ten minutes, so that a node
/// that has not switched yet can still ask for it.
pub const PEER_RETENTION: std::time::Duration = std::time::Duration::from_secs(600);

/// This node in its cluster.
pub struct ClusterNode {
    coordinator: Arc<dyn Coordinator>,
    config: ClusterConfig,
    shard_id: String,
    proxy: Proxy,
    /// Partition holders of the versions this node builds or serves, one
    /// watch each.
    holders: Mutex<HashMap<(String, String), Watched>>,
    /// Proxied requests by outcome: answered, no peer, timed out.
    proxied: [AtomicU64; 3],
    /// Re-replication: partitions short of copies and picked up.
    rereplication: Mutex<Tracker>,
    /// Partitions of served versions short of copies, at the last check.
    under_replicated: AtomicU64,
    /// Re-replications by outcome: started, completed, failed.
    rereplications: [AtomicU64; 3],
    /// Whether versions get a key directory before they are served (a
    /// node that runs a mount; see `cluster::directory`).
    directories: AtomicBool,
}

/// The holders of one version's partitions: as listed now, and as last
/// listed when not empty.
struct Watched {
    listed: watch::Receiver<PartitionHolders>,
    /// Proxying falls back on these when nobody is listed: the listing is
    /// empty for a while after a session expires (every node registers
    /// again) and for a node cut off from the service, while the peers
    /// themselves may well be serving. A peer that is really gone fails as
    /// fast as an empty list would.
    last_known: PartitionHolders,
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode")
            .field("shard_id", &self.shard_id)
            .field("address", &self.address())
            .finish_non_exhaustive()
    }
}

/// This node in its cluster, as the status pages and `.status` show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeStatus {
    pub shard_id: String,
    pub address: String,
    /// The coordination session: connected, disconnected, ...
    pub session: &'static str,
    /// Serving without a live session (see [`ClusterNode::degraded`]).
    pub degraded: bool,
    pub peers: Vec<PeerStatus>,
    /// Peers that failed lately, tried last.
    pub unhealthy_peers: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PeerStatus {
    pub shard_id: String,
    pub address: String,
}

/// Why a node could not join.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    Coordinator(#[from] CoordinatorError),
    #[error("{path}: {source}")]
    ShardIdFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ClusterNode {
    /// Joins the cluster under the configured shard ID, else the one this
    /// node chose at an earlier start (kept in the local store), else a new
    /// one chosen under the cluster's lock (which waits for the service,
    /// as in sequins), then waits for the peer list to settle, at most
    /// twice `time_to_converge`: a node whose service is down starts
    /// serving its local store rather than waiting for it.
    pub async fn join(
        coordinator: Arc<dyn Coordinator>,
        config: ClusterConfig,
        local_store: &Path,
    ) -> Result<Arc<ClusterNode>, JoinError> {
        let id_file = local_store.join(SELF_ASSIGNED_ID_FILE);
        let remembered = match std::fs::read_to_string(&id_file) {
            Ok(id) if !id.trim().is_empty() => Some(id.trim().to_string()),
            Ok(_) => None,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(JoinError::ShardIdFile {
                    path: id_file,
                    source,
                });
            }
        };
        let wanted = config.shard_id.clone().or(remembered.clone());
        let shard_id = coordinator.join(wanted.as_deref()).await?;
        if wanted.is_none() {
            write_id_file(&id_file, &shard_id).map_err(|source| JoinError::ShardIdFile {
                path: id_file.clone(),
                source,
            })?;
        }
        tracing::info!(
            shard_id,
            address = coordinator.address(),
            "joined the cluster"
        );
        let bound = config.time_to_converge * 2;
        let waiting = Arc::clone(&coordinator);
        let converged = tokio::time::timeout(bound, waiting.converge());
        tokio::pin!(converged);
        // A node that cannot reach the service at all does not wait the
        // whole bound: after one session timeout without a session it
        // serves its local store, degraded, and joins when the service
        // answers (the session keeps trying in the background).
        let unreachable = tokio::time::sleep(config.session_timeout.min(bound));
        tokio::pin!(unreachable);
        loop {
            tokio::select! {
                converged = &mut converged => {
                    match converged {
                        Ok(peers) => tracing::info!(peers = peers.len(), "cluster membership converged"),
                        Err(_) => tracing::warn!(
                            "cluster membership did not settle within {bound:?}; going on with what is known"
                        ),
                    }
                    break;
                }
                _ = &mut unreachable, if !unreachable.is_elapsed() => {
                    if coordinator.status().borrow().state == SessionState::NeverConnected {
                        break;
                    }
                }
            }
        }
        // Whichever bound ended the wait.
        if coordinator.status().borrow().state == SessionState::NeverConnected {
            tracing::warn!(
                servers = config.connect_string(),
                "degraded: ZooKeeper is unreachable; serving the local store, \
                 without peers, until a session is established"
            );
        }
        let proxy = Proxy::new(config.proxy_timeout, config.proxy_stage_timeout);
        Ok(Arc::new(ClusterNode {
            coordinator,
            config,
            shard_id,
            proxy,
            holders: Mutex::new(HashMap::new()),
            proxied: Default::default(),
            rereplication: Mutex::new(Tracker::default()),
            under_replicated: AtomicU64::new(0),
            rereplications: Default::default(),
            directories: AtomicBool::new(false),
        }))
    }

    /// This node, its session and its peers, for the status pages.
    pub fn describe(&self) -> NodeStatus {
        NodeStatus {
            shard_id: self.shard_id.clone(),
            address: self.address().to_string(),
            session: self.session().state.as_str(),
            degraded: self.degraded(),
            peers: self
                .peers()
                .into_iter()
                .map(|p| PeerStatus {
                    shard_id: p.shard_id,
                    address: p.address,
                })
                .collect(),
            unhealthy_peers: self.unhealthy_peers(),
        }
    }

    /// Asks for a key directory of every partial version before it is
    /// served: a mount lists every key (see `cluster::directory`).
    pub fn build_directories(&self) {
        self.directories.store(true, Ordering::Relaxed);
    }

    /// Whether versions get a key directory (see
    /// [`ClusterNode::build_directories`]).
    pub fn builds_directories(&self) -> bool {
        self.directories.load(Ordering::Relaxed)
    }

    pub fn shard_id(&self) -> &str {
        &self.shard_id
    }

    /// This node's `host:port`, as peers reach it.
    pub fn address(&self) -> &str {
        self.coordinator.address()
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The other nodes, as known now.
    pub fn peers(&self) -> Vec<Peer> {
        self.coordinator.peers().borrow().clone()
    }

    /// The session with the coordination service, now.
    pub fn session(&self) -> super::CoordinatorStatus {
        *self.coordinator.status().borrow()
    }

    /// Whether this node works without a live session: it serves what it
    /// has and proxies to the peers it knew, but nothing that needs the
    /// service (agreeing on a version, seeing peers change) moves.
    pub fn degraded(&self) -> bool {
        self.session().state != SessionState::Connected
    }

    /// Peers that failed lately and are tried last.
    pub fn unhealthy_peers(&self) -> Vec<String> {
        self.proxy.unhealthy_peers()
    }

    /// The partitions of `db`/`version` (of `num_partitions`) this node
    /// builds: sequins' assignment over the peers known now, less those
    /// that already have `max_replication` replicas elsewhere (known once
    /// the version's advertisements have been listed: waited for, at most
    /// `time_to_converge`, as sequins waits for that listing).
    pub async fn assign(
        &self,
        db: &str,
        version: &str,
        num_partitions: u32,
    ) -> Result<BTreeSet<u32>, CoordinatorError> {
        let peers = self.peers();
        let selected = assign_partitions(
            num_partitions,
            self.config.replication,
            peers.iter().map(|p| p.shard_id.as_str()),
            &self.shard_id,
        );
        let Some(max) = self.config.effective_max_replication() else {
            return Ok(selected);
        };
        if !self
            .wait_listed(db, version, self.config.time_to_converge)
            .await
        {
            tracing::warn!(
                db,
                version,
                "other copies not listed yet; max_replication sees none"
            );
        }
        let holders = self.holders(db, version)?.borrow().clone();
        let remote: BTreeMap<u32, usize> = holders
            .iter()
            .map(|(&p, addresses)| (p, addresses.len()))
            .collect();
        Ok(apply_max_replication(
            selected,
            &remote,
            self.config.replication,
            max,
        ))
    }

    /// Advertises the partitions of `db`/`version` this node holds.
    pub fn advertise(
        &self,
        db: &str,
        version: &str,
        partitions: &[u32],
    ) -> Result<(), CoordinatorError> {
        for &p in partitions {
            self.coordinator.advertise(db, version, p)?;
        }
        Ok(())
    }

    /// Waits until every partition of `db`/`version` has `min_replication`
    /// replicas, counting `held` (this node's) and the peers'. Returns
    /// `false` if `cancel` fires first.
    pub async fn wait_ready(
        &self,
        db: &str,
        version: &str,
        num_partitions: u32,
        held: &[u32],
        cancel: &CancellationToken,
    ) -> Result<bool, CoordinatorError> {
        let held: BTreeSet<u32> = held.iter().copied().collect();
        let min = self.config.min_replication.max(1);
        let mut rx = self.holders(db, version)?;
        let ready = |holders: &PartitionHolders| {
            (0..num_partitions).all(|p| {
                let remote = holders.get(&p).map_or(0, Vec::len);
                remote + usize::from(held.contains(&p)) >= min
            })
        };
        let mut logged = false;
        loop {
            if ready(&rx.borrow_and_update()) {
                return Ok(true);
            }
            if !logged {
                tracing::info!(
                    db,
                    version,
                    min_replication = min,
                    "waiting for every partition to have enough replicas"
                );
                logged = true;
            }
            tokio::select! {
                () = cancel.cancelled() => return Ok(false),
                changed = rx.changed() => if changed.is_err() {
                    // The watch was dropped (the version was forgotten).
                    return Ok(false);
                },
            }
        }
    }

    /// Waits (at most `bound`) until the holders of `db`/`version` have
    /// been listed once, so that the first requests for a version served
    /// at start-up find the peers to ask. Returns whether they were.
    pub async fn wait_listed(&self, db: &str, version: &str, bound: std::time::Duration) -> bool {
        let Ok(mut rx) = self.holders(db, version) else {
            return false;
        };
        matches!(tokio::time::timeout(bound, rx.changed()).await, Ok(Ok(())))
    }

    /// Stops advertising and watching `db`/`version` (deleted locally).
    pub fn forget(&self, db: &str, version: &str) {
        if let Err(e) = self.coordinator.withdraw_version(db, version) {
            tracing::warn!(db, version, "cannot withdraw: {e}");
        }
        let removed = self
            .holders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(db.to_string(), version.to_string()));
        if removed.is_some() {
            self.coordinator.unwatch_partitions(db, version);
        }
    }

    /// Asks the peers holding `key`'s partition of `db`/`version` for it:
    /// `GET <path>?proxy=<version>` where `path` is the request's path as
    /// it arrived (percent-encoded). A 404 from the partition's peers is
    /// retried with the alternate partition's peers, if the key has one.
    pub async fn fetch(&self, db: &str, version: &str, path: &str, key: RemoteKey) -> ProxyOutcome {
        let path_and_query = format!("{path}?proxy={}", path_escape(version.as_bytes()));
        self.fetch_from_holders(db, version, &path_and_query, key, None)
            .await
    }

    /// Asks the peers holding `key`'s partition, then (on a 404) those
    /// holding its alternate partition, and counts the outcome.
    async fn fetch_from_holders(
        &self,
        db: &str,
        version: &str,
        path_and_query: &str,
        key: RemoteKey,
        range: Option<std::ops::Range<u64>>,
    ) -> ProxyOutcome {
        let mut outcome = ProxyOutcome::NoPeers;
        for partition in std::iter::once(key.partition).chain(key.alternate) {
            let peers = self.peers_of(db, version, partition);
            outcome = self
                .proxy
                .fetch_range(&peers, path_and_query, range.clone())
                .await;
            // A 404 from the normal partition's peers: try the alternate's.
            if !matches!(&outcome, ProxyOutcome::Answered { response, .. }
                if response.status() == hyper::StatusCode::NOT_FOUND)
            {
                break;
            }
        }
        let slot = match &outcome {
            ProxyOutcome::Answered { .. } => 0,
            ProxyOutcome::NoPeers => 1,
            ProxyOutcome::TimedOut => 2,
        };
        self.proxied[slot].fetch_add(1, Ordering::Relaxed);
        outcome
    }

    /// Asks the peers holding `key`'s partition for bytes `range` of its
    /// value in `db`/`version` (a READ through the mount). The answer is
    /// collected whole: a READ asks for at most a megabyte or so.
    pub async fn fetch_range(
        &self,
        db: &str,
        version: &str,
        key: &[u8],
        at: RemoteKey,
        range: std::ops::Range<u64>,
    ) -> Result<bytes::Bytes, String> {
        use http_body_util::BodyExt;
        let path = format!(
            "/{}/{}?proxy={}",
            path_escape(db.as_bytes()),
            path_escape(key),
            path_escape(version.as_bytes())
        );
        let want = range.end - range.start;
        let outcome = self
            .fetch_from_holders(db, version, &path, at, Some(range.clone()))
            .await;
        let (peer, response) = match outcome {
            ProxyOutcome::Answered { peer, response } => (peer, response),
            ProxyOutcome::NoPeers => {
                return Err(format!(
                    "no peer could answer for partition {}",
                    at.partition
                ));
            }
            ProxyOutcome::TimedOut => {
                return Err(format!(
                    "no peer answered for partition {} within {:?}",
                    at.partition, self.config.proxy_timeout
                ));
            }
        };
        let status = response.status();
        if !matches!(
            status,
            hyper::StatusCode::OK | hyper::StatusCode::PARTIAL_CONTENT
        ) {
            return Err(format!("{peer} answered {status}"));
        }
        // A whole value (a peer that ignores ranges) is cut here; anything
        // longer than asked for is refused before it is buffered.
        let whole = status == hyper::StatusCode::OK;
        let limit = if whole { range.end } else { want };
        let body = http_body_util::Limited::new(response.into_body(), limit as usize)
            .collect()
            .await
            .map_err(|e| format!("{peer}: reading the value: {e}"))?
            .to_bytes();
        if whole {
            let start = (range.start as usize).min(body.len());
            return Ok(body.slice(start..));
        }
        Ok(body)
    }

    /// The keys of `partition` of `db`/`version` as a peer holding it
    /// lists them (see `cluster::directory`).
    pub async fn fetch_listing(
        &self,
        db: &str,
        version: &str,
        partition: u32,
    ) -> Result<crate::store::keyindex::SortedRun, super::directory::DirectoryError> {
        use super::directory::{DirectoryError, LISTING_PARAM, ListingParser};
        use http_body_util::BodyExt;
        let path = format!(
            "/{}/?proxy={}&{LISTING_PARAM}={partition}",
            path_escape(db.as_bytes()),
            path_escape(version.as_bytes())
        );
        let peers = self.peers_of(db, version, partition);
        let unavailable = |reason: String| DirectoryError::Unavailable { partition, reason };
        // A peer that answers with anything but a listing (Go sequins
        // answers with its status page) is passed over for the next.
        let outcome = self
            .proxy
            .fetch_judged(&peers, &path, None, listing_verdict)
            .await;
        let (peer, response) = match outcome {
            ProxyOutcome::Answered { peer, response } => (peer, response),
            ProxyOutcome::NoPeers => {
                return Err(unavailable(
                    "no peer could answer with a listing (Go sequins peers cannot)".into(),
                ));
            }
            ProxyOutcome::TimedOut => return Err(unavailable("no peer answered in time".into())),
        };
        let refused = |message: String| DirectoryError::Listing {
            peer: peer.clone(),
            partition,
            offset: 0,
            message,
        };
        // `listing_verdict` took only a 200 listing.
        let mut parser = ListingParser::new(&peer, partition);
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| refused(format!("reading the listing: {e}")))?;
            if let Some(data) = frame.data_ref() {
                parser.feed(data)?;
            }
        }
        parser.finish()
    }

    /// Re-replication (see `cluster::rereplicate`) over the versions
    /// `served` now: stops advertising picked-up copies that are no longer
    /// needed, and returns the partitions of each version this node should
    /// build now; none while re-replication is off. Nothing at all while
    /// the session is down (the views are frozen then).
    pub fn rereplication(&self, served: &[Arc<Version>]) -> Vec<(Arc<Version>, Vec<u32>)> {
        // Off: partitions short of copies are still counted, never taken.
        let after = self.config.rereplicate_after.unwrap_or(Duration::MAX);
        if self.degraded() {
            return Vec::new();
        }
        let peers = self.peers();
        let now = std::time::Instant::now();
        let mut tracker = self.rereplication.lock().unwrap_or_else(|e| e.into_inner());
        tracker.retain_served(
            &served
                .iter()
                .map(|v| (v.db().to_string(), v.name().to_string()))
                .collect(),
        );
        let mut under_replicated = 0;
        let mut work = Vec::new();
        for version in served {
            let Some(held) = version.held_partitions() else {
                continue;
            };
            let (db, name) = (version.db(), version.name());
            let Ok(holders) = self.holders(db, name) else {
                continue;
            };
            let holders = holders.borrow().clone();
            let held: BTreeSet<u32> = held.into_iter().collect();
            let plan = tracker.plan(
                &View {
                    db,
                    version: name,
                    num_partitions: version.num_partitions(),
                    me: &self.shard_id,
                    held: &held,
                    holders: &holders,
                    peers: &peers,
                    replication: self.config.replication,
                },
                now,
                after,
            );
            under_replicated += plan.under_replicated as u64;
            for p in plan.release {
                tracing::info!(
                    db,
                    version = name,
                    partition = p,
                    "enough copies again; no longer advertising the copy picked up"
                );
                if let Err(e) = self.coordinator.withdraw(db, name, p) {
                    tracing::warn!(db, version = name, partition = p, "cannot withdraw: {e}");
                }
            }
            if !plan.take.is_empty() {
                work.push((Arc::clone(version), plan.take));
            }
        }
        self.under_replicated
            .store(under_replicated, Ordering::Relaxed);
        work
    }

    /// A re-replication of `partitions` of `db`/`version` started.
    pub fn rereplication_started(&self) {
        self.rereplications[0].fetch_add(1, Ordering::Relaxed);
    }

    /// A re-replication ended: on success this node now holds and
    /// advertises `partitions`.
    pub fn rereplication_finished(&self, db: &str, version: &str, partitions: Option<&[u32]>) {
        match partitions {
            Some(partitions) => {
                self.rereplications[1].fetch_add(1, Ordering::Relaxed);
                self.rereplication
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .picked_up(db, version, partitions);
            }
            None => {
                self.rereplications[2].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Leaves the cluster: this node's entries disappear at once.
    pub async fn close(&self) {
        self.coordinator.close().await;
    }

    /// The peers to ask for `partition` of `db`/`version`: those listed
    /// now, else those listed last (see [`Watched::last_known`]).
    fn peers_of(&self, db: &str, version: &str, partition: u32) -> Vec<String> {
        self.with_watched(db, version, |watched| {
            let listed = watched
                .listed
                .borrow()
                .get(&partition)
                .cloned()
                .unwrap_or_default();
            if listed.is_empty() {
                return watched
                    .last_known
                    .get(&partition)
                    .cloned()
                    .unwrap_or_default();
            }
            if watched.last_known.get(&partition) != Some(&listed) {
                watched.last_known.insert(partition, listed.clone());
            }
            listed
        })
        .unwrap_or_default()
    }

    fn holders(
        &self,
        db: &str,
        version: &str,
    ) -> Result<watch::Receiver<PartitionHolders>, CoordinatorError> {
        self.with_watched(db, version, |watched| watched.listed.clone())
    }

    /// Runs `f` on the holders of `db`/`version`, watched from the first
    /// call on.
    fn with_watched<T>(
        &self,
        db: &str,
        version: &str,
        f: impl FnOnce(&mut Watched) -> T,
    ) -> Result<T, CoordinatorError> {
        let mut holders = self.holders.lock().unwrap_or_else(|e| e.into_inner());
        let key = (db.to_string(), version.to_string());
        if let Some(watched) = holders.get_mut(&key) {
            return Ok(f(watched));
        }
        let listed = self.coordinator.watch_partitions(db, version)?;
        let watched = holders.entry(key).or_insert(Watched {
            listed,
            last_known: PartitionHolders::new(),
        });
        Ok(f(watched))
    }
}

impl crate::metrics::MetricsSource for ClusterNode {
    fn write_prometheus(&self, out: &mut String) {
        use std::fmt::Write as _;
        let status = self.session();
        let _ = writeln!(
            out,
            "# HELP sequinsfs_cluster_session 1 for the coordination session's current state.\n\
             # TYPE sequinsfs_cluster_session gauge"
        );
        for state in [
            SessionState::NeverConnected,
            SessionState::Connected,
            SessionState::Disconnected,
            SessionState::Recovering,
            SessionState::Closed,
        ] {
            let _ = writeln!(
                out,
                "sequinsfs_cluster_session{{state=\"{state}\"}} {}",
                u8::from(status.state == state)
            );
        }
        let _ = writeln!(
            out,
            "# HELP sequinsfs_cluster_sessions_total Coordination sessions established (1 + recoveries after expiry).\n\
             # TYPE sequinsfs_cluster_sessions_total counter\n\
             sequinsfs_cluster_sessions_total {}\n\
             # HELP sequinsfs_cluster_peers Other nodes of the cluster, as known now.\n\
             # TYPE sequinsfs_cluster_peers gauge\n\
             sequinsfs_cluster_peers {}\n\
             # HELP sequinsfs_cluster_unhealthy_peers Peers that failed lately and are tried last.\n\
             # TYPE sequinsfs_cluster_unhealthy_peers gauge\n\
             sequinsfs_cluster_unhealthy_peers {}\n\
             # HELP sequinsfs_proxied_requests_total Requests for keys held by peers, by outcome.\n\
             # TYPE sequinsfs_proxied_requests_total counter",
            status.sessions,
            self.coordinator.peers().borrow().len(),
            self.unhealthy_peers().len(),
        );
        for (slot, outcome) in ["answered", "no_peers", "timed_out"].iter().enumerate() {
            let _ = writeln!(
                out,
                "sequinsfs_proxied_requests_total{{outcome=\"{outcome}\"}} {}",
                self.proxied[slot].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP sequinsfs_cluster_under_replicated_partitions Partitions of served versions with fewer than `replication` copies (counting this node's).\n\
             # TYPE sequinsfs_cluster_under_replicated_partitions gauge\n\
             sequinsfs_cluster_under_replicated_partitions {}\n\
             # HELP sequinsfs_cluster_rereplications_total Builds of partitions picked up from lost nodes, by outcome (started, completed, failed); started minus the others are in progress.\n\
             # TYPE sequinsfs_cluster_rereplications_total counter",
            self.under_replicated.load(Ordering::Relaxed)
        );
        for (slot, outcome) in ["started", "completed", "failed"].iter().enumerate() {
            let _ = writeln!(
                out,
                "sequinsfs_cluster_rereplications_total{{outcome=\"{outcome}\"}} {}",
                self.rereplications[slot].load(Ordering::Relaxed)
            );
        }
    }
}

/// Writes the chosen shard ID durably: a temporary file renamed into place.
/// The local store may not exist yet (the engine creates it after the node
/// has joined).
fn write_id_file(path: &Path, id: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, format!("{id}\n"))?;
    std::fs::File::open(&temp)?.sync_all()?;
    std::fs::rename(&temp, path)
}

/// Percent-encodes a version name for a query string (everything but
/// RFC 3986's unreserved characters).
/// `bytes` percent-encoded for a path segment or query value: every byte
/// but the unreserved ones escaped, `/` included.
fn path_escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// For listings: a 200 with the listing content type is the answer; a 200
/// of anything else is declined (a Go sequins peer's status page); other
/// statuses (503: the peer does not hold the partition) are failures.
fn listing_verdict(response: &super::pipeline::PeerResponse) -> super::proxy::Verdict {
    use super::proxy::Verdict;
    let is_listing = response
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        == Some(super::directory::LISTING_CONTENT_TYPE);
    match response.status() {
        hyper::StatusCode::OK if is_listing => Verdict::Answer,
        hyper::StatusCode::OK => Verdict::Declined,
        _ => Verdict::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::MemoryCluster;
    use std::time::Duration;

    fn config() -> ClusterConfig {
        let mut config = ClusterConfig::with_servers(vec!["memory".into()]);
        config.time_to_converge = Duration::from_millis(50);
        config.replication = 2;
        config.min_replication = 2;
        config
    }

    #[tokio::test]
    async fn assignment_readiness_and_the_shard_id_file() {
        let cluster = MemoryCluster::new(Duration::from_millis(50));
        let stores: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let mut nodes = Vec::new();
        for (i, store) in stores.iter().enumerate() {
            let coordinator = Arc::new(cluster.start_node(&format!("127.0.0.1:{}", 9000 + i)));
            nodes.push(
                ClusterNode::join(coordinator, config(), store.path())
                    .await
                    .unwrap(),
            );
        }
        // Shard IDs were chosen 1, 2, 3 and kept in each local store.
        for (i, (node, store)) in nodes.iter().zip(&stores).enumerate() {
            assert_eq!(node.shard_id(), (i + 1).to_string());
            let kept = std::fs::read_to_string(store.path().join(SELF_ASSIGNED_ID_FILE)).unwrap();
            assert_eq!(kept.trim(), node.shard_id());
        }
        // 4 partitions, R=2, 3 nodes: sequins' vector.
        let mut sets: Vec<BTreeSet<u32>> = Vec::new();
        for node in &nodes {
            sets.push(node.assign("db", "1", 4).await.unwrap());
        }
        assert_eq!(
            sets,
            vec![
                BTreeSet::from([0, 1, 3]),
                BTreeSet::from([0, 2, 3]),
                BTreeSet::from([1, 2])
            ]
        );
        // The view of holders is marked listed once it is current.
        assert!(
            nodes[2]
                .wait_listed("db", "1", Duration::from_secs(10))
                .await
        );
        // Not ready until every partition has two replicas.
        let cancel = CancellationToken::new();
        let held0: Vec<u32> = sets[0].iter().copied().collect();
        nodes[0].advertise("db", "1", &held0).unwrap();
        let waiting = {
            let node = Arc::clone(&nodes[0]);
            let cancel = cancel.clone();
            tokio::spawn(async move { node.wait_ready("db", "1", 4, &held0, &cancel).await })
        };
        let held1: Vec<u32> = sets[1].iter().copied().collect();
        nodes[1].advertise("db", "1", &held1).unwrap();
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "partition 1 has one replica");
        let held2: Vec<u32> = sets[2].iter().copied().collect();
        nodes[2].advertise("db", "1", &held2).unwrap();
        let ready = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(ready);
        // Cancelling a wait that cannot end returns false.
        cancel.cancel();
        assert!(
            !nodes[0]
                .wait_ready("db", "2", 4, &[0], &cancel)
                .await
                .unwrap()
        );
    }

    /// While nobody is listed for a partition (every session expired and
    /// its holders have not registered again), a node still proxies to the
    /// peers last listed, which may well be serving.
    #[tokio::test]
    async fn proxying_falls_back_on_the_holders_last_listed() {
        let cluster = MemoryCluster::new(Duration::from_millis(50));
        let (store_a, store_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let coordinator = Arc::new(cluster.start_node("127.0.0.1:9100"));
        let a = ClusterNode::join(coordinator, config(), store_a.path())
            .await
            .unwrap();
        let coordinator = Arc::new(cluster.start_node("127.0.0.1:9101"));
        let b = ClusterNode::join(coordinator, config(), store_b.path())
            .await
            .unwrap();
        assert!(a.wait_listed("db", "1", Duration::from_secs(10)).await);
        let mut listed = a.holders("db", "1").unwrap();
        b.advertise("db", "1", &[3]).unwrap();
        listed.wait_for(|h| h.contains_key(&3)).await.unwrap();
        assert_eq!(a.peers_of("db", "1", 3), ["127.0.0.1:9101"]);
        assert!(a.peers_of("db", "1", 2).is_empty(), "never listed");

        b.forget("db", "1");
        listed.wait_for(|h| h.is_empty()).await.unwrap();
        assert_eq!(a.peers_of("db", "1", 3), ["127.0.0.1:9101"]);
    }

    #[test]
    fn versions_are_escaped_in_the_query() {
        assert_eq!(path_escape(b"2024-01-01T00:00"), "2024-01-01T00%3A00");
        assert_eq!(path_escape(b"v 1&x"), "v%201%26x");
    }
}
