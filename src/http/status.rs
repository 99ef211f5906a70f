//! The status document (`GET /`, `GET /<db>`) and `GET /healthz`, with
//! sequins' JSON field names so existing tooling keeps parsing them.
//!
//! Global: `{"dbs": {<db>: {"versions": {<version>: VersionStatus}}},
//! "shard_id": ""}`; per database: `{"versions": {...}}`. A version lists
//! its nodes; standalone there is one, `localhost`, holding every partition.
//! A node of a cluster names itself by its address and shard ID, lists the
//! partitions it holds, and adds a `cluster` object to the global document
//! (session, peers) that sequins does not have.
//!
//! Differences from sequins, on purpose: replication figures are those of a
//! standalone node (target 1, so a healthy version is not reported as
//! under-replicated as sequins does with its default target of 2), and
//! `missing_partitions` counts partitions no usable node holds (sequins
//! always says 0). Each node also reports `num_keys`, `progress` and
//! `error`, which sequins does not have.
//!
//! `/healthz` is 200 when any version is ACTIVE or BUILDING, else 404, with
//! the body `{<db>: {<version>: NodeVersionStatus}}` (dbs with no versions
//! are left out).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use bytes::Bytes;
use hyper::{HeaderMap, Response, StatusCode};
use serde::Serialize;

use super::{Body, accept, with_body};
use crate::catalog::{Catalog, DatabaseStatus, VersionState, VersionStatus};
use crate::cluster::ClusterNode;
use crate::status_json::{ProgressJson, rfc3339};

/// The one node of a standalone daemon, named as sequins names it.
const NODE_NAME: &str = "localhost";
/// What sequins prints for a time that never happened (Go's zero time).
const NEVER: &str = "0001-01-01T00:00:00Z";

#[derive(Serialize)]
struct GlobalStatus<'a> {
    dbs: BTreeMap<String, DbStatusJson<'a>>,
    shard_id: &'a str,
    /// What is wrong with the source root as a whole (not in sequins).
    #[serde(skip_serializing_if = "Option::is_none")]
    source_problem: Option<String>,
    /// This node in its cluster (not in sequins).
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<crate::cluster::node::NodeStatus>,
}

/// Who this node is on the status pages: `localhost` with no shard ID
/// standalone, its address and shard ID in a cluster.
#[derive(Clone, Copy)]
struct Me<'a> {
    name: &'a str,
    shard_id: &'a str,
}

impl<'a> Me<'a> {
    fn of(cluster: Option<&'a ClusterNode>) -> Me<'a> {
        match cluster {
            Some(node) => Me {
                name: node.address(),
                shard_id: node.shard_id(),
            },
            None => Me {
                name: NODE_NAME,
                shard_id: "",
            },
        }
    }
}

#[derive(Serialize)]
struct DbStatusJson<'a> {
    versions: BTreeMap<String, VersionJson<'a>>,
    /// Its state in the source root (online, pinned, who changed it; not
    /// in sequins), when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<crate::lifecycle::DatabaseState>,
}

#[derive(Serialize)]
struct VersionJson<'a> {
    path: String,
    num_partitions: u32,
    target_replication: u32,
    replication_histogram: BTreeMap<String, u32>,
    average_replication: f64,
    missing_partitions: u32,
    underreplicated_partitions: u32,
    overreplicated_partitions: u32,
    nodes: BTreeMap<&'a str, NodeJson<'a>>,
}

#[derive(Serialize)]
struct NodeJson<'a> {
    name: &'a str,
    created_at: String,
    active_at: String,
    current: bool,
    state: String,
    partitions: Vec<u32>,
    shard_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    num_keys: Option<u64>,
    progress: ProgressJson,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn node<'a>(v: &VersionStatus, me: Me<'a>) -> NodeJson<'a> {
    NodeJson {
        name: me.name,
        created_at: rfc3339(v.created_at),
        active_at: v.active_at.map_or_else(|| NEVER.to_string(), rfc3339),
        current: v.current,
        state: v.state.to_string(),
        partitions: v
            .held_partitions
            .clone()
            .unwrap_or_else(|| (0..v.num_partitions).collect()),
        shard_id: me.shard_id,
        num_keys: v.num_keys,
        progress: ProgressJson::from(&v.progress),
        error: v.error_text(),
    }
}

fn version_json<'a>(v: &VersionStatus, me: Me<'a>) -> VersionJson<'a> {
    // sequins counts replicas on nodes that are BUILDING, ACTIVE or
    // REMOVING; an ERROR node holds nothing usable.
    let holds = v.state != VersionState::Error;
    let n = v.num_partitions;
    let mut histogram = BTreeMap::new();
    if holds && n > 0 {
        histogram.insert("1".to_string(), n);
    }
    VersionJson {
        path: v.path.clone(),
        num_partitions: n,
        target_replication: 1,
        replication_histogram: histogram,
        average_replication: if holds && n > 0 { 1.0 } else { 0.0 },
        missing_partitions: if holds { 0 } else { n },
        underreplicated_partitions: 0,
        overreplicated_partitions: 0,
        nodes: BTreeMap::from([(me.name, node(v, me))]),
    }
}

fn db_json<'a>(db: &DatabaseStatus, me: Me<'a>) -> DbStatusJson<'a> {
    DbStatusJson {
        versions: db
            .versions
            .iter()
            .map(|v| (v.version.clone(), version_json(v, me)))
            .collect(),
        state: db.state.clone(),
    }
}

/// `GET /`: every database.
pub(crate) fn global(
    catalog: &Catalog,
    cluster: Option<&ClusterNode>,
    request: &HeaderMap,
    head: bool,
) -> Response<Body> {
    let status = catalog.status();
    let me = Me::of(cluster);
    if accept::prefers_json(request) {
        let doc = GlobalStatus {
            dbs: status
                .iter()
                .map(|db| (db.name.clone(), db_json(db, me)))
                .collect(),
            shard_id: me.shard_id,
            source_problem: catalog.source_problem(),
            cluster: cluster.map(ClusterNode::describe),
        };
        json(StatusCode::OK, &doc, head)
    } else {
        html(&render_html("sequinsfs", &status), head)
    }
}

/// `GET /<db>`: one database (known to the catalog).
pub(crate) fn database(
    catalog: &Catalog,
    cluster: Option<&ClusterNode>,
    db: &str,
    request: &HeaderMap,
    head: bool,
) -> Response<Body> {
    let status = catalog.database_status(db).unwrap_or(DatabaseStatus {
        name: db.to_string(),
        current: None,
        versions: Vec::new(),
        offline: false,
        state: None,
    });
    if accept::prefers_json(request) {
        json(StatusCode::OK, &db_json(&status, Me::of(cluster)), head)
    } else {
        html(&render_html(&format!("sequinsfs: {db}"), &[status]), head)
    }
}

/// `GET /healthz`.
pub(crate) fn healthz(
    catalog: &Catalog,
    cluster: Option<&ClusterNode>,
    head: bool,
) -> Response<Body> {
    let status = catalog.status();
    let me = Me::of(cluster);
    let healthy = status
        .iter()
        .flat_map(|db| &db.versions)
        .any(|v| matches!(v.state, VersionState::Active | VersionState::Building));
    let doc: BTreeMap<&str, BTreeMap<&str, NodeJson>> = status
        .iter()
        .filter(|db| !db.versions.is_empty())
        .map(|db| {
            (
                db.name.as_str(),
                db.versions
                    .iter()
                    .map(|v| (v.version.as_str(), node(v, me)))
                    .collect(),
            )
        })
        .collect();
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    let mut response = json(code, &doc, head);
    if let Some(node) = cluster
        && let Ok(id) = hyper::header::HeaderValue::from_str(node.shard_id())
    {
        // sequins' header, for tools that poll nodes' health.
        response.headers_mut().insert(X_SEQUINS_SHARD_ID, id);
    }
    if let Some(node) = cluster {
        // Ours: the body keeps sequins' shape, so the session goes here.
        response.headers_mut().insert(
            X_SEQUINSFS_CLUSTER_SESSION,
            hyper::header::HeaderValue::from_static(node.session().state.as_str()),
        );
    }
    response
}

/// sequins' header naming the shard ID of the node that answered `/healthz`.
pub const X_SEQUINS_SHARD_ID: hyper::header::HeaderName =
    hyper::header::HeaderName::from_static("x-sequins-shard-id");

/// The node's ZooKeeper session on `/healthz` (`connected`,
/// `never_connected`, `disconnected`, `recovering`): anything but
/// `connected` means degraded.
pub const X_SEQUINSFS_CLUSTER_SESSION: hyper::header::HeaderName =
    hyper::header::HeaderName::from_static("x-sequinsfs-cluster-session");

fn json(code: StatusCode, doc: &impl Serialize, head: bool) -> Response<Body> {
    match serde_json::to_vec(doc) {
        Ok(body) => with_body(code, "application/json", Bytes::from(body), head),
        Err(err) => {
            tracing::error!("http: status document: {err}");
            super::empty(StatusCode::INTERNAL_SERVER_ERROR)
        }
    }
}

fn html(page: &str, head: bool) -> Response<Body> {
    with_body(
        StatusCode::OK,
        "text/html; charset=utf-8",
        Bytes::from(page.to_string()),
        head,
    )
}

/// A plain, readable page: one table per database, one row per version.
/// A database's state in a few words: ` (offline, pinned to 3; by alice
/// at ...)`.
fn state_line(state: &crate::lifecycle::DatabaseState) -> String {
    let mut words = Vec::new();
    if !state.online {
        words.push("offline".to_string());
    }
    if let Some(pinned) = &state.pinned {
        words.push(format!("pinned to {pinned}"));
    }
    let by = match (&state.changed_by, &state.changed_at) {
        (Some(who), Some(when)) => format!("; last change by {who} at {when}"),
        _ => String::new(),
    };
    if words.is_empty() {
        words.push("online".to_string());
    }
    format!(" ({}{by})", words.join(", "))
}

fn render_html(title: &str, dbs: &[DatabaseStatus]) -> String {
    let mut page = String::with_capacity(2048);
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin-bottom:2em}}\
         td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}\
         .ACTIVE{{background:#dfd}}.BUILDING{{background:#ffd}}.REMOVING{{background:#eee}}.ERROR{{background:#fdd}}</style>\
         </head><body>\n<h1>{}</h1>\n",
        escape(title),
        escape(title)
    );
    if dbs.is_empty() {
        page.push_str("<p>No databases.</p>\n");
    }
    for db in dbs {
        let _ = writeln!(
            page,
            "<h2>{}</h2>\n<p>Serving: {}{}</p>",
            escape(&db.name),
            db.current.as_deref().map_or("nothing".to_string(), escape),
            db.state
                .as_ref()
                .map_or(String::new(), |state| escape(&state_line(state)))
        );
        page.push_str(
            "<table><tr><th>version</th><th>state</th><th>partitions</th><th>keys</th>\
             <th>created</th><th>active since</th><th>progress</th><th>path</th><th>error</th></tr>\n",
        );
        for v in &db.versions {
            let state = v.state.to_string();
            let progress = if v.state == VersionState::Building {
                format!(
                    "{}/{} files, {}/{} bytes, {} records",
                    v.progress.files_done,
                    v.progress.files_total,
                    v.progress.bytes_done,
                    v.progress.bytes_total,
                    v.progress.records_done
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                page,
                "<tr class=\"{state}\"><td>{}{}</td><td>{state}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&v.version),
                if v.current { " (current)" } else { "" },
                v.num_partitions,
                v.num_keys.map_or(String::new(), |n| n.to_string()),
                rfc3339(v.created_at),
                v.active_at.map_or(String::new(), rfc3339),
                escape(&progress),
                escape(&v.path),
                escape(&v.error_text().unwrap_or_default()),
            );
        }
        page.push_str("</table>\n");
    }
    page.push_str("</body></html>\n");
    page
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
