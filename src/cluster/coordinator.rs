//! The seam between the engine and cluster coordination: the
//! [`Coordinator`] trait, the values it hands out (peers, partition holders,
//! session status), its error type, and the rules for the names it puts in
//! and reads from the coordination service.
//!
//! The trait is shaped so that the coordination service can never stop a
//! node from serving: everything that changes what the cluster sees
//! (joining with a known ID, advertising, withdrawing) only records the wish
//! and returns; the implementation applies it when it can, and again after
//! every new session. Views are `watch` receivers, so readers never wait on
//! the service either. Only choosing a shard ID automatically needs the
//! service to answer, as in sequins.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

/// Another node of the cluster, from its `nodes/` entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Peer {
    /// Not necessarily unique (nodes sharing an ID hold the same partitions)
    /// and not necessarily an integer (a configured ID can be any name).
    pub shard_id: String,
    /// `host:port` of its HTTP server, as it advertises it.
    pub address: String,
}

/// Who advertises each partition of one version: partition number to the
/// addresses (`host:port`, sorted) of the other nodes that have built it.
/// Partition entries name only an address, not a shard ID, in sequins'
/// layout. This node is not included: the engine knows what it built.
pub type PartitionHolders = BTreeMap<u32, Vec<String>>;

/// The state of this node's coordination session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// No session yet: the service has not been reached since start.
    NeverConnected,
    /// A live session; the views are current.
    Connected,
    /// The session is alive but the connection is lost; the views are
    /// frozen and changes wait. Peers still see this node until the session
    /// times out.
    Disconnected,
    /// The session expired (this node's entries are gone for everyone); a
    /// new session is being established, after which every entry and watch
    /// is re-created.
    Recovering,
    /// [`Coordinator::close`] was called.
    Closed,
}

impl SessionState {
    /// A short lowercase name for status pages and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::NeverConnected => "never_connected",
            SessionState::Connected => "connected",
            SessionState::Disconnected => "disconnected",
            SessionState::Recovering => "recovering",
            SessionState::Closed => "closed",
        }
    }
}

impl std::fmt::Display for SessionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// [`SessionState`] plus how many sessions were established so far (1
/// after the first connection; each expiry and recovery adds one), for
/// metrics, `.status` and `/healthz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoordinatorStatus {
    pub state: SessionState,
    pub sessions: u64,
}

impl CoordinatorStatus {
    pub(crate) const START: CoordinatorStatus = CoordinatorStatus {
        state: SessionState::NeverConnected,
        sessions: 0,
    };
}

/// What can go wrong when talking to the coordination layer.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("invalid {what} {name:?}: {reason}")]
    InvalidName {
        what: &'static str,
        name: String,
        reason: &'static str,
    },
    #[error(
        "cannot choose a shard ID: node {node:?} has shard ID {id:?}, which is not an integer \
         (set [sharding] shard_id on every node, or on none)"
    )]
    NonIntegerShardId { node: String, id: String },
    #[error("ZooKeeper {op} {path}: {source}")]
    ZooKeeper {
        op: &'static str,
        path: String,
        #[source]
        source: zookeeper_client::Error,
    },
    #[error("the coordinator is closed")]
    Closed,
}

/// Cluster coordination as the engine uses it. Object-safe
/// (`Arc<dyn Coordinator>`); cheap to call from any task.
#[async_trait]
pub trait Coordinator: Send + Sync {
    /// This node's `host:port`, as advertised to the others.
    fn address(&self) -> &str;

    /// The session state, live.
    fn status(&self) -> watch::Receiver<CoordinatorStatus>;

    /// The other nodes (this node's address excluded), sorted, live.
    /// Available before joining. Frozen while the session is disconnected.
    fn peers(&self) -> watch::Receiver<Vec<Peer>>;

    /// Joins the cluster as `<shard_id>@<address>` and returns the shard ID.
    ///
    /// With `Some(id)` (configured, or persisted by the caller from an
    /// earlier run) this records the wish and returns at once, even while
    /// the service is unreachable; the entry appears when it is reached.
    /// With `None`, it takes the cluster-wide ID-assignment lock, lists the
    /// nodes (without joining) until the list is quiet for
    /// min(time_to_converge, 3 s), picks the smallest free positive integer
    /// and joins under it before releasing the lock; this waits for the
    /// service. The caller should persist the returned ID. Joining again
    /// replaces the entry.
    async fn join(&self, shard_id: Option<&str>) -> Result<String, CoordinatorError>;

    /// Waits until the peer list has been read at least once and has then
    /// not changed for `time_to_converge`; returns it. Waits for the service
    /// if it is unreachable: callers that must not wait bound this.
    async fn converge(&self) -> Vec<Peer>;

    /// Advertises that this node has built `partition` of `db`/`version`.
    fn advertise(&self, db: &str, version: &str, partition: u32) -> Result<(), CoordinatorError>;

    /// Withdraws one advertisement.
    fn withdraw(&self, db: &str, version: &str, partition: u32) -> Result<(), CoordinatorError>;

    /// Withdraws every advertisement of `db`/`version`.
    fn withdraw_version(&self, db: &str, version: &str) -> Result<(), CoordinatorError>;

    /// Who else advertises which partition of `db`/`version`, live. Several
    /// calls share one watch. The first call's receiver is notified once
    /// the first listing has arrived (even if it is empty), so a caller can
    /// tell "nobody holds it" from "not listed yet".
    fn watch_partitions(
        &self,
        db: &str,
        version: &str,
    ) -> Result<watch::Receiver<PartitionHolders>, CoordinatorError>;

    /// Stops watching `db`/`version`: its receivers see the channel closed.
    fn unwatch_partitions(&self, db: &str, version: &str);

    /// Leaves the cluster: this node's entries disappear for everyone at
    /// once (rather than after the session timeout) when the service is
    /// reachable. Bounded in time. Further changes are refused.
    async fn close(&self);
}

/// Upper bound of the quiet period before choosing a shard ID (sequins').
pub(crate) const ID_ASSIGNMENT_QUIET_MAX: Duration = Duration::from_secs(3);

/// Checks a name that becomes one znode path component (a database or
/// version name).
pub(crate) fn check_component(what: &'static str, name: &str) -> Result<(), CoordinatorError> {
    let reason = if name.is_empty() {
        "empty"
    } else if name == "." || name == ".." {
        "not a usable path component"
    } else if name.contains('/') {
        "contains '/'"
    } else if name.chars().any(char::is_control) {
        "contains control characters"
    } else {
        return Ok(());
    };
    Err(CoordinatorError::InvalidName {
        what,
        name: name.to_string(),
        reason,
    })
}

/// Checks a shard ID given to [`Coordinator::join`].
pub(crate) fn check_shard_id(id: &str) -> Result<(), CoordinatorError> {
    crate::cluster::config::check_shard_id(id).map_err(|reason| CoordinatorError::InvalidName {
        what: "shard ID",
        name: id.to_string(),
        reason,
    })
}

/// `nodes/` entry name: `<shard_id>@<host:port>`.
pub(crate) fn node_name(shard_id: &str, address: &str) -> String {
    format!("{shard_id}@{address}")
}

/// `partitions/<db>/<version>/` entry name: `<%05d>@<host:port>`.
pub(crate) fn partition_name(partition: u32, address: &str) -> String {
    format!("{partition:05}@{address}")
}

/// Parses a `nodes/` entry name written by anyone. `None` for names that
/// are not `<shard_id>@<address>` with both parts non-empty and printable.
pub(crate) fn parse_node_name(name: &str) -> Option<Peer> {
    let (shard_id, address) = name.split_once('@')?;
    if shard_id.is_empty() || address.is_empty() || name.chars().any(char::is_control) {
        return None;
    }
    Some(Peer {
        shard_id: shard_id.to_string(),
        address: address.to_string(),
    })
}

/// Parses a partition entry name written by anyone: decimal digits (at most
/// ten, fitting a `u32`), `@`, a non-empty printable address.
pub(crate) fn parse_partition_name(name: &str) -> Option<(u32, &str)> {
    let (number, address) = name.split_once('@')?;
    if number.is_empty()
        || number.len() > 10
        || !number.bytes().all(|b| b.is_ascii_digit())
        || address.is_empty()
        || address.chars().any(char::is_control)
    {
        return None;
    }
    Some((number.parse().ok()?, address))
}

/// Peers from `nodes/` children: parsed, this address left out, sorted,
/// duplicates removed. Unparsable names are returned separately for a
/// warning.
pub(crate) fn peers_from_children<'a>(
    children: impl IntoIterator<Item = &'a str>,
    own_address: &str,
) -> (Vec<Peer>, Vec<&'a str>) {
    let mut peers = Vec::new();
    let mut bad = Vec::new();
    for child in children {
        match parse_node_name(child) {
            Some(peer) if peer.address == own_address => {}
            Some(peer) => peers.push(peer),
            None => bad.push(child),
        }
    }
    peers.sort();
    peers.dedup();
    (peers, bad)
}

/// Holders from `partitions/<db>/<version>/` children, like
/// [`peers_from_children`].
pub(crate) fn holders_from_children<'a>(
    children: impl IntoIterator<Item = &'a str>,
    own_address: &str,
) -> (PartitionHolders, Vec<&'a str>) {
    let mut holders = PartitionHolders::new();
    let mut bad = Vec::new();
    for child in children {
        match parse_partition_name(child) {
            Some((_, address)) if address == own_address => {}
            Some((partition, address)) => holders
                .entry(partition)
                .or_default()
                .push(address.to_string()),
            None => bad.push(child),
        }
    }
    for addresses in holders.values_mut() {
        addresses.sort();
        addresses.dedup();
    }
    (holders, bad)
}

/// Logs joins and departures between two peer lists (sequins' "New peer" /
/// "Lost peer").
pub(crate) fn log_peer_changes(before: &[Peer], after: &[Peer]) {
    for peer in after.iter().filter(|p| !before.contains(p)) {
        tracing::info!(shard_id = %peer.shard_id, address = %peer.address, "new peer");
    }
    for peer in before.iter().filter(|p| !after.contains(p)) {
        tracing::info!(shard_id = %peer.shard_id, address = %peer.address, "lost peer");
    }
}

/// Waits until `rx` has not changed for `quiet`, and returns its value.
/// Returns at once (with the last value) if the sender is gone.
pub(crate) async fn wait_quiet<T: Clone>(rx: &mut watch::Receiver<T>, quiet: Duration) -> T {
    rx.borrow_and_update();
    loop {
        match tokio::time::timeout(quiet, rx.changed()).await {
            Err(_elapsed) => return rx.borrow_and_update().clone(),
            Ok(Ok(())) => continue,
            Ok(Err(_closed)) => return rx.borrow().clone(),
        }
    }
}

/// The smallest free shard ID given the nodes present, with the offending
/// node named when one has a non-integer ID.
pub(crate) fn choose_shard_id(peers: &[Peer]) -> Result<String, CoordinatorError> {
    crate::cluster::assignment::smallest_available_shard_id(
        peers.iter().map(|p| p.shard_id.as_str()),
    )
    .map(|id| id.to_string())
    .map_err(|e| {
        let node = peers
            .iter()
            .find(|p| p.shard_id == e.id)
            .map(|p| node_name(&p.shard_id, &p.address))
            .unwrap_or_default();
        CoordinatorError::NonIntegerShardId { node, id: e.id }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let peer = parse_node_name(&node_name("3", "10.0.0.1:9599")).unwrap();
        assert_eq!(peer.shard_id, "3");
        assert_eq!(peer.address, "10.0.0.1:9599");
        assert_eq!(partition_name(7, "h:1"), "00007@h:1");
        assert_eq!(parse_partition_name("00007@h:1"), Some((7, "h:1")));
        assert_eq!(
            parse_partition_name("123456@h:1"),
            Some((123456, "h:1")),
            "wider than %05d"
        );
    }

    #[test]
    fn hostile_names_are_rejected() {
        for name in ["", "@", "1@", "@h:1", "noat", "1\n@h", "1@h\0"] {
            assert_eq!(parse_node_name(name), None, "{name:?}");
        }
        for name in [
            "",
            "@h:1",
            "1@",
            "+1@h:1",
            "-1@h:1",
            "0x1@h:1",
            "99999999999@h:1",
            "4294967296@h:1",
            "1 @h:1",
            "１@h:1",
            "1@h\n",
        ] {
            assert_eq!(parse_partition_name(name), None, "{name:?}");
        }
        // The first '@' separates: an address may not hide a second one,
        // but nothing breaks if it does.
        assert_eq!(parse_node_name("1@a@b").unwrap().address, "a@b");
    }

    #[test]
    fn views_exclude_self_and_bad_names() {
        let (peers, bad) = peers_from_children(["2@b:1", "1@a:1", "x", "1@me:1", "2@b:1"], "me:1");
        assert_eq!(
            peers,
            [
                Peer {
                    shard_id: "1".into(),
                    address: "a:1".into()
                },
                Peer {
                    shard_id: "2".into(),
                    address: "b:1".into()
                }
            ]
        );
        assert_eq!(bad, ["x"]);
        let (holders, bad) = holders_from_children(
            ["00001@b:1", "00001@a:1", "00000@me:1", "junk", "00002@a:1"],
            "me:1",
        );
        assert_eq!(
            holders,
            PartitionHolders::from([
                (1, vec!["a:1".to_string(), "b:1".to_string()]),
                (2, vec!["a:1".to_string()])
            ])
        );
        assert_eq!(bad, ["junk"]);
    }

    #[test]
    fn components_are_checked() {
        for bad in ["", ".", "..", "a/b", "a\0"] {
            assert!(check_component("database", bad).is_err(), "{bad:?}");
        }
        check_component("database", "baby-names").unwrap();
        check_component("version", "1.2").unwrap();
        assert!(check_shard_id("1@x").is_err());
        check_shard_id("host-a").unwrap();
    }

    #[test]
    fn chosen_id_names_the_offending_node() {
        let peers = [
            Peer {
                shard_id: "1".into(),
                address: "a:1".into(),
            },
            Peer {
                shard_id: "web".into(),
                address: "b:1".into(),
            },
        ];
        let err = choose_shard_id(&peers).unwrap_err().to_string();
        assert!(err.contains("web@b:1"), "{err}");
        assert_eq!(choose_shard_id(&peers[..1]).unwrap(), "2");
    }

    #[tokio::test(start_paused = true)]
    async fn quiet_waits_for_a_pause() {
        let (tx, mut rx) = watch::channel(0);
        let start = tokio::time::Instant::now();
        let writer = tokio::spawn(async move {
            for i in 1..=3 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                tx.send(i).unwrap();
            }
            tokio::time::sleep(Duration::from_secs(10)).await;
        });
        let value = wait_quiet(&mut rx, Duration::from_secs(1)).await;
        assert_eq!(value, 3);
        assert_eq!(start.elapsed(), Duration::from_millis(2500));
        writer.abort();
    }
}
