//! Answering for a key that lives on other nodes (cluster mode): the
//! request goes to the peers holding its partition, and their answer is
//! relayed as sequins relays it (reference section 1.3):
//!
//! - the peer's status (200 or 404), `X-Sequins-Version` and
//!   `Content-Length`, plus `X-Sequins-Proxied-To: <peer>`;
//! - `Last-Modified` of this node's copy of the version;
//! - 502 when no peer holds the partition or every peer failed, 504 when
//!   none answered within `proxy_timeout`.
//!
//! The body is streamed from the peer as it arrives.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Response, StatusCode};

use super::keys::X_SEQUINS_VERSION;
use super::{Body, empty};
use crate::catalog::{RemoteKey, Version};
use crate::cluster::ClusterNode;
use crate::cluster::proxy::ProxyOutcome;

/// sequins' header naming the peer that answered a proxied request.
pub const X_SEQUINS_PROXIED_TO: HeaderName = HeaderName::from_static("x-sequins-proxied-to");

/// Asks the peers holding `key` of `version` (requested as `path`) and
/// relays their answer.
pub(crate) async fn proxied(
    node: &ClusterNode,
    version: &Arc<Version>,
    path: &str,
    key: RemoteKey,
    head: bool,
) -> Response<Body> {
    let outcome = node.fetch(version.db(), version.name(), path, key).await;
    let (peer, answer) = match outcome {
        ProxyOutcome::Answered { peer, response } => (peer, response),
        ProxyOutcome::NoPeers => {
            tracing::warn!(
                db = version.db(),
                version = version.name(),
                partition = key.partition,
                "http: no peer could answer for the partition"
            );
            return empty(StatusCode::BAD_GATEWAY);
        }
        ProxyOutcome::TimedOut => return empty(StatusCode::GATEWAY_TIMEOUT),
    };
    let (parts, incoming) = answer.into_parts();
    let mut response = if head {
        empty(parts.status)
    } else {
        let mut r = Response::new(Body::Peer(incoming));
        *r.status_mut() = parts.status;
        r
    };
    let headers = response.headers_mut();
    for name in [
        X_SEQUINS_VERSION,
        header::CONTENT_LENGTH,
        header::CONTENT_TYPE,
    ] {
        if let Some(value) = parts.headers.get(&name) {
            headers.insert(name, value.clone());
        }
    }
    if let Ok(value) = HeaderValue::from_str(&peer) {
        headers.insert(X_SEQUINS_PROXIED_TO, value);
    }
    if parts.status == StatusCode::OK {
        let seconds = version
            .created_at()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let modified = UNIX_EPOCH + std::time::Duration::from_secs(seconds);
        if let Ok(value) = HeaderValue::from_str(&httpdate::fmt_http_date(modified)) {
            headers.insert(header::LAST_MODIFIED, value);
        }
    }
    response
}

/// The keys of one partition of a held version, for a peer building its
/// key directory (see `cluster::directory`): `GET /<db>/?proxy=<version>&
/// sequinsfs-listing=<partition>`. Exactly the version named, never a
/// fallback (its keys would differ); 503 when this node does not hold it
/// or the partition, so the peer asks the partition's next holder.
pub(crate) async fn listing(
    catalog: Arc<crate::catalog::Catalog>,
    db: &str,
    version: Option<String>,
    partition: Option<String>,
    head: bool,
) -> Response<Body> {
    let (Some(version), Some(Ok(partition))) = (version, partition.map(|p| p.parse::<u32>()))
    else {
        return empty(StatusCode::BAD_REQUEST);
    };
    let Some(held) = catalog
        .held_version(db, &version)
        .filter(|v| v.holds(partition) && partition < v.num_partitions())
    else {
        return empty(StatusCode::SERVICE_UNAVAILABLE);
    };
    let encoded = tokio::task::spawn_blocking(move || {
        crate::cluster::directory::encode_listing(&held, partition)
    })
    .await;
    match encoded {
        Ok(Ok(body)) => super::with_body(
            StatusCode::OK,
            crate::cluster::directory::LISTING_CONTENT_TYPE,
            body.into(),
            head,
        ),
        Ok(Err(err)) => {
            tracing::error!(
                db,
                version,
                partition,
                "http: listing a partition failed: {}",
                crate::error_chain::ErrorChain(&err)
            );
            empty(StatusCode::INTERNAL_SERVER_ERROR)
        }
        Err(err) => {
            tracing::error!(db, version, partition, "http: listing task failed: {err}");
            empty(StatusCode::INTERNAL_SERVER_ERROR)
        }
    }
}
