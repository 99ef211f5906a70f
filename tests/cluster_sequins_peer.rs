//! A cluster in which one node is Go sequins, as during a migration from
//! sequins to sequinsfs: sequinsfs nodes and a sequins node serve one
//! cluster side by side.
//!
//! Go sequins cannot run here, so the sequins node is a stand-in built from
//! the reference's description of what sequins does on the wire
//! (`sequins-behaviour.md` §1.3 and §5): it joins ZooKeeper in sequins'
//! layout, advertises the partitions sequins' assignment gives its shard
//! ID, and answers `GET /<db>/<key>?proxy=<version>` as sequins does:
//! whole values (it ignores `Range`), `X-Sequins-Version`, a sniffed
//! `Content-Type`, 400 for anything but GET, 500 for a partition it does
//! not hold, and its status page for an empty key (so it cannot list a
//! partition for a mount).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sequinsfs::cluster::assignment::assign_partitions;
use zookeeper_client::{Acls, Client, CreateMode};

use common::cluster::{WordsCluster, assert_serves, stop_all, words};
use common::http::Conn;

const PARTITIONS: u32 = 6;

/// The stand-in for a Go sequins node (see the module docs).
struct SequinsNode {
    address: String,
    /// Every request it got: method, target and `Range` header.
    requests: Arc<Mutex<Vec<String>>>,
    /// Its ZooKeeper session, which owns its ephemeral nodes.
    _session: Client,
}

impl SequinsNode {
    /// Joins `cluster` at `zk` as shard `shard_id` holding `held` of
    /// version 1 of `words`.
    async fn start(
        zk: &str,
        cluster: &str,
        shard_id: &str,
        held: &BTreeSet<u32>,
        pairs: &BTreeMap<Vec<u8>, Vec<u8>>,
    ) -> SequinsNode {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let values: Arc<BTreeMap<Vec<u8>, Vec<u8>>> = Arc::new(
            pairs
                .iter()
                .filter(|(k, _)| held.contains(&sequinsfs::partition::partition(k, PARTITIONS)))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        );
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&requests);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (values, log) = (Arc::clone(&values), Arc::clone(&log));
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let response = answer(&req, &values);
                        let range = req
                            .headers()
                            .get(hyper::header::RANGE)
                            .map(|r| format!(" range {}", r.to_str().unwrap_or("?")))
                            .unwrap_or_default();
                        log.lock()
                            .unwrap()
                            .push(format!("{} {}{range}", req.method(), req.uri()));
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });

        // sequins' layout (reference §5.1): its node, then each built
        // partition, as ephemerals under permanent parents.
        let session = Client::connect(zk).await.unwrap();
        let persistent = CreateMode::Persistent.with_acls(Acls::anyone_all());
        let ephemeral = CreateMode::Ephemeral.with_acls(Acls::anyone_all());
        let root = format!("/{cluster}/v1");
        let partitions = format!("{root}/partitions/words/1");
        for dir in [format!("{root}/nodes"), partitions.clone()] {
            session.mkdir(&dir, &persistent).await.unwrap();
        }
        session
            .create(
                &format!("{root}/nodes/{shard_id}@{address}"),
                b"",
                &ephemeral,
            )
            .await
            .unwrap();
        for p in held {
            session
                .create(&format!("{partitions}/{p:05}@{address}"), b"", &ephemeral)
                .await
                .unwrap();
        }
        SequinsNode {
            address,
            requests,
            _session: session,
        }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// sequins' handler for the database `words` at version 1 (reference
/// §1.3), over the values of the partitions it holds.
fn answer(req: &Request<Incoming>, values: &BTreeMap<Vec<u8>, Vec<u8>>) -> Response<Full<Bytes>> {
    let respond = |status: StatusCode, body: &[u8], headers: &[(&'static str, &str)]| {
        let mut response = Response::new(Full::new(Bytes::copy_from_slice(body)));
        *response.status_mut() = status;
        for (name, value) in headers {
            response.headers_mut().insert(*name, value.parse().unwrap());
        }
        response
    };
    if req.method() != hyper::Method::GET {
        return respond(StatusCode::BAD_REQUEST, b"", &[]);
    }
    let path = req.uri().path();
    let Some(("words", key)) = path[1..].split_once('/') else {
        return respond(StatusCode::NOT_FOUND, b"", &[]);
    };
    if key.is_empty() {
        // The database's status page, whatever the query.
        return respond(
            StatusCode::OK,
            br#"{"partitions":{}}"#,
            &[("content-type", "application/json")],
        );
    }
    let proxied = req.uri().query().is_some_and(|q| q.contains("proxy="));
    let partition = sequinsfs::partition::partition(key.as_bytes(), PARTITIONS);
    let holds = values
        .keys()
        .any(|k| sequinsfs::partition::partition(k, PARTITIONS) == partition);
    if !holds && proxied {
        // "this server doesn't have the requested partition"
        return respond(StatusCode::INTERNAL_SERVER_ERROR, b"", &[]);
    }
    match values.get(key.as_bytes()) {
        Some(value) => respond(
            StatusCode::OK,
            value,
            &[
                ("x-sequins-version", "1"),
                ("last-modified", "Mon, 07 Dec 2026 12:00:00 GMT"),
                // Go sniffs a type from the first bytes.
                ("content-type", "text/plain; charset=utf-8"),
            ],
        ),
        None => respond(StatusCode::NOT_FOUND, b"", &[("x-sequins-version", "1")]),
    }
}

/// Two mounted sequinsfs nodes (shard IDs 1 and 2) and a sequins node (3),
/// replication 2, `min_replication` 2: the sequinsfs nodes count the sequins
/// node in their assignment and its partitions toward agreement, every key
/// is answered through their mounts and over HTTP (some by the sequins
/// node), the mounts list every key although the sequins node cannot list,
/// and the sequins node's own requests are answered as sequins answers them.
#[test]
fn sequinsfs_nodes_serve_one_cluster_with_a_sequins_node() {
    let Some(cluster) = WordsCluster::new() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let pairs = words("1");
    let assigned = |id| assign_partitions(PARTITIONS, 2, ["1", "2", "3"], id);
    let sequins = runtime.block_on(SequinsNode::start(
        &cluster.zk.address(),
        "nodes-test",
        "3",
        &assigned("3"),
        &pairs,
    ));
    // Started after the sequins node has joined: they assign over 1, 2, 3.
    let mut nodes = cluster.mounted(&["1", "2"], "min_replication = 2\n");
    for (node, id) in nodes.iter().zip(["1", "2"]) {
        let held: Vec<u64> = assigned(id).into_iter().map(u64::from).collect();
        assert_eq!(node.held("words", "1"), held, "shard {id}");
        // Through the mount (listing and every value) and over HTTP.
        assert_serves(node, &pairs);
    }

    // Both directions of the proxy protocol were used with the sequins node:
    // value requests (from the mounts with a Range it ignores, from the
    // sidecars without), and listing requests it answered with its status
    // page, which the nodes passed over for a sequinsfs holder.
    let asked = sequins.requests();
    let values = asked
        .iter()
        .filter(|r| r.contains("?proxy=1") && !r.contains("listing"))
        .count();
    assert!(values > 0, "the sequins node was never asked: {asked:?}");
    assert!(
        asked.iter().all(|r| r.starts_with("GET /words/")),
        "{asked:?}"
    );
    let mut proxied_to_sequins = 0;
    let mut conn = Conn::connect(nodes[0].addr);
    for (key, value) in &pairs {
        let key = std::str::from_utf8(key).unwrap();
        let reply = conn.request("GET", &format!("/words/{key}"), &[]).unwrap();
        assert_eq!((reply.status, &reply.body), (200, value), "{key}");
        assert_eq!(reply.header("x-sequins-version"), Some("1"), "{key}");
        if reply.header("x-sequins-proxied-to") == Some(sequins.address.as_str()) {
            proxied_to_sequins += 1;
        }
    }
    assert!(
        proxied_to_sequins > 0,
        "no key relayed from the sequins node"
    );

    // What the sequins node asks a sequinsfs node: a key of a partition
    // that node holds is answered; one of a partition it does not hold is
    // a 500, as sequins answers.
    let node1 = assigned("1");
    let (mine, not_mine): (Vec<_>, Vec<_>) = pairs
        .keys()
        .partition(|k| node1.contains(&sequinsfs::partition::partition(k, PARTITIONS)));
    let key = std::str::from_utf8(mine[0]).unwrap();
    let reply = conn
        .request("GET", &format!("/words/{key}?proxy=1"), &[])
        .unwrap();
    assert_eq!((reply.status, &reply.body), (200, &pairs[mine[0]]));
    assert_eq!(reply.header("x-sequins-version"), Some("1"));
    assert!(reply.header("x-sequins-proxied-to").is_none());
    let key = std::str::from_utf8(not_mine[0]).unwrap();
    let reply = conn
        .request("GET", &format!("/words/{key}?proxy=1"), &[])
        .unwrap();
    assert_eq!(reply.status, 500, "{key}");
    stop_all(&mut nodes);
}
