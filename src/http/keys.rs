//! `GET`/`HEAD /<db>/<key>`: a value, with sequins' status codes and headers
//! plus HTTP caching and ranges.
//!
//! sequins' contract:
//! - 200 with the value, `Content-Length`, `X-Sequins-Version` and
//!   `Last-Modified`;
//! - 404 with `X-Sequins-Version` and an empty body for a key missing from a
//!   served database; 404 without it for an unknown database or one with no
//!   servable version;
//! - `?proxy=<version>` pins a version still held (current or in its grace
//!   period), falling back to the current one, and answers 501 when the
//!   database has none (how sequins peers tell "no such database" from "no
//!   such key");
//! - 500 when the stored data cannot be read.
//!
//! Added here: `HEAD`; `Content-Type` from the configuration; a strong
//! `ETag` derived from the database, version and key (a version is
//! immutable, so the value behind an ETag never changes); `If-None-Match`
//! and `If-Modified-Since` answered with 304; single byte ranges (206,
//! `Accept-Ranges: bytes`, 416 for unsatisfiable ranges, `If-Range`).
//! A request for several ranges gets the whole value (200), which RFC 9110
//! allows and which is cheaper for everyone than a multipart body for
//! values this small.
//!
//! `Last-Modified` is when the version was created on the source (sequins
//! uses when the node loaded it, which changes on every restart).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Response, StatusCode};

use super::body::{CHUNK, ValueStream};
use super::{Body, empty};
use crate::catalog::{Catalog, RemoteKey, ValueRef, Version};

/// sequins' header naming the version that answered.
pub const X_SEQUINS_VERSION: HeaderName = HeaderName::from_static("x-sequins-version");

/// What a value request needs: an answer now, or asking a peer (cluster
/// mode, a key of a partition this node does not hold).
pub(crate) enum Answer {
    Now(Response<Body>),
    Remote {
        version: Arc<Version>,
        key: RemoteKey,
    },
    /// A peer asks for the keys of one partition (cluster mode).
    Listing {
        db: String,
        version: Option<String>,
        partition: Option<String>,
    },
}

/// Answers a value request for `key` in `db` (`None` if the name is not
/// UTF-8, hence not a database).
pub(crate) fn answer(
    catalog: &Catalog,
    db: Option<&str>,
    key: &[u8],
    proxy: Option<&str>,
    request: &HeaderMap,
    content_type: &HeaderValue,
    head: bool,
) -> Answer {
    let version = db.and_then(|db| match proxy {
        Some(pinned) => catalog
            .held_version(db, pinned)
            .or_else(|| catalog.current(db)),
        None => catalog.current(db),
    });
    if let Some(version) = &version
        && let Some(remote) = version.remote(key)
    {
        if proxy.is_some() {
            // sequins: a proxied request is never proxied again.
            tracing::warn!(
                db = version.db(),
                version = version.name(),
                partition = remote.partition,
                "http: a peer asked for a partition this node does not have"
            );
            return Answer::Now(empty(StatusCode::INTERNAL_SERVER_ERROR));
        }
        return Answer::Remote {
            version: Arc::clone(version),
            key: remote,
        };
    }
    Answer::Now(local_answer(
        version,
        key,
        proxy,
        request,
        content_type,
        head,
    ))
}

/// [`answer`] from this node's data.
fn local_answer(
    version: Option<Arc<Version>>,
    key: &[u8],
    proxy: Option<&str>,
    request: &HeaderMap,
    content_type: &HeaderValue,
    head: bool,
) -> Response<Body> {
    let Some(version) = version else {
        return empty(if proxy.is_some() {
            StatusCode::NOT_IMPLEMENTED
        } else {
            StatusCode::NOT_FOUND
        });
    };
    let value = match version.locate(key) {
        Ok(Some(value)) => value,
        Ok(None) => {
            let mut r = empty(StatusCode::NOT_FOUND);
            r.headers_mut()
                .insert(X_SEQUINS_VERSION, version_header(&version));
            return r;
        }
        Err(err) => {
            tracing::error!(
                "http: lookup failed: {}",
                crate::error_chain::ErrorChain(&err)
            );
            return empty(StatusCode::INTERNAL_SERVER_ERROR);
        }
    };

    let etag = etag(&version, key);
    let last_modified = whole_seconds(version.created_at());
    let mut headers = HeaderMap::with_capacity(8);
    headers.insert(X_SEQUINS_VERSION, version_header(&version));
    headers.insert(
        header::LAST_MODIFIED,
        header_value(&httpdate::fmt_http_date(last_modified)),
    );
    headers.insert(header::ETAG, header_value(&etag));

    if not_modified(request, &etag, last_modified) {
        let mut r = empty(StatusCode::NOT_MODIFIED);
        *r.headers_mut() = headers;
        return r;
    }

    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::CONTENT_TYPE, content_type.clone());
    let len = value.len;
    let (status, range) = match requested_range(request, &etag, last_modified, len) {
        RangeAnswer::Whole => (StatusCode::OK, 0..len),
        RangeAnswer::Part(range) => {
            headers.insert(
                header::CONTENT_RANGE,
                header_value(&format!(
                    "bytes {}-{}/{len}",
                    range.start,
                    range.end.saturating_sub(1)
                )),
            );
            (StatusCode::PARTIAL_CONTENT, range)
        }
        RangeAnswer::Unsatisfiable => {
            headers.insert(
                header::CONTENT_RANGE,
                header_value(&format!("bytes */{len}")),
            );
            let mut r = empty(StatusCode::RANGE_NOT_SATISFIABLE);
            *r.headers_mut() = headers;
            return r;
        }
    };
    headers.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(range.end - range.start),
    );
    let mut r = if head {
        empty(status)
    } else {
        match body(&version, &value, range) {
            Ok(body) => {
                let mut r = Response::new(body);
                *r.status_mut() = status;
                r
            }
            Err(err) => {
                tracing::error!(
                    "http: reading a value failed: {}",
                    crate::error_chain::ErrorChain(&err)
                );
                return empty(StatusCode::INTERNAL_SERVER_ERROR);
            }
        }
    };
    *r.headers_mut() = headers;
    r
}

/// The body for `range` of a value: read at once if it fits in a chunk,
/// else streamed (see [`super::body`]).
fn body(
    version: &Arc<Version>,
    value: &ValueRef,
    range: std::ops::Range<u64>,
) -> Result<Body, crate::catalog::LookupError> {
    let len = range.end - range.start;
    if len > CHUNK as u64 {
        return Ok(Body::Value(ValueStream::new(
            Arc::clone(version),
            *value,
            range,
        )));
    }
    let mut scratch = Vec::new();
    let bytes = match version.read_value(value, range.start, len as usize, &mut scratch)? {
        Some(mapped) => Bytes::copy_from_slice(mapped),
        None => Bytes::from(scratch),
    };
    Ok(Body::new(bytes))
}

/// The version name as a header value. Version names are directory names;
/// bytes a header cannot carry are percent-encoded.
fn version_header(version: &Version) -> HeaderValue {
    HeaderValue::from_str(version.name()).unwrap_or_else(|_| {
        let mut escaped = String::new();
        for &b in version.name().as_bytes() {
            if (0x20..0x7f).contains(&b) && b != b'%' {
                escaped.push(char::from(b));
            } else {
                escaped.push_str(&format!("%{b:02X}"));
            }
        }
        header_value(&escaped)
    })
}

/// A header value from text we built ourselves (ASCII, no control bytes).
fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A strong ETag: CRC-32C of the database and version, then of those and the
/// key. Different versions give different tags (with overwhelming
/// probability), so a cached value is revalidated after every switch.
pub fn etag(version: &Version, key: &[u8]) -> String {
    let scope = crc32c::crc32c_append(
        crc32c::crc32c_append(crc32c::crc32c(version.db().as_bytes()), b"\0"),
        version.name().as_bytes(),
    );
    let item = crc32c::crc32c_append(scope, key);
    format!("\"{scope:08x}{item:08x}\"")
}

/// HTTP dates have whole seconds; comparisons use the same precision.
fn whole_seconds(t: SystemTime) -> SystemTime {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// RFC 9110 §13.2.2: `If-None-Match` decides when present (weak
/// comparison); otherwise `If-Modified-Since`.
fn not_modified(request: &HeaderMap, etag: &str, last_modified: SystemTime) -> bool {
    if request.contains_key(header::IF_NONE_MATCH) {
        return request
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag);
    }
    request
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .is_some_and(|since| last_modified <= since)
}

enum RangeAnswer {
    Whole,
    Part(std::ops::Range<u64>),
    Unsatisfiable,
}

/// Reads `Range` (and `If-Range`) for a value of `len` bytes. Anything this
/// server does not handle (other units, several ranges, bad syntax, a stale
/// `If-Range`) means the whole value, as RFC 9110 allows.
fn requested_range(
    request: &HeaderMap,
    etag: &str,
    last_modified: SystemTime,
    len: u64,
) -> RangeAnswer {
    let Some(range) = request.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return RangeAnswer::Whole;
    };
    if let Some(if_range) = request.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
        let if_range = if_range.trim();
        let fresh = if if_range.starts_with('"') {
            if_range == etag
        } else {
            httpdate::parse_http_date(if_range).is_ok_and(|t| t == last_modified)
        };
        if !fresh {
            return RangeAnswer::Whole;
        }
    }
    let Some(spec) = range.trim().strip_prefix("bytes=") else {
        return RangeAnswer::Whole;
    };
    if spec.contains(',') {
        return RangeAnswer::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeAnswer::Whole;
    };
    let parse = |s: &str| -> Option<Option<u64>> {
        let s = s.trim();
        if s.is_empty() {
            Some(None)
        } else if s.bytes().all(|b| b.is_ascii_digit()) {
            // Too many digits for u64 saturates: still a valid, huge position.
            Some(Some(s.parse::<u64>().unwrap_or(u64::MAX)))
        } else {
            None
        }
    };
    let (Some(first), Some(last)) = (parse(first), parse(last)) else {
        return RangeAnswer::Whole;
    };
    match (first, last) {
        // `bytes=-N`: the last N bytes.
        (None, Some(suffix)) => {
            if suffix == 0 || len == 0 {
                RangeAnswer::Unsatisfiable
            } else {
                RangeAnswer::Part(len.saturating_sub(suffix)..len)
            }
        }
        (Some(first), last) => {
            if last.is_some_and(|last| last < first) {
                return RangeAnswer::Whole;
            }
            if first >= len {
                return RangeAnswer::Unsatisfiable;
            }
            let end = last.map_or(len, |last| last.saturating_add(1).min(len));
            RangeAnswer::Part(first..end)
        }
        (None, None) => RangeAnswer::Whole,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(spec: &str, len: u64) -> Option<std::ops::Range<u64>> {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_str(spec).unwrap());
        match requested_range(&h, "\"t\"", UNIX_EPOCH, len) {
            RangeAnswer::Whole => Some(0..u64::MAX),
            RangeAnswer::Part(r) => Some(r),
            RangeAnswer::Unsatisfiable => None,
        }
    }

    #[test]
    fn byte_ranges() {
        assert_eq!(range("bytes=0-1", 4), Some(0..2));
        assert_eq!(range("bytes=1-", 4), Some(1..4));
        assert_eq!(range("bytes=2-100", 4), Some(2..4));
        assert_eq!(range("bytes=-3", 4), Some(1..4));
        assert_eq!(range("bytes=-30", 4), Some(0..4));
        assert_eq!(range("bytes=4-", 4), None);
        assert_eq!(range("bytes=-0", 4), None);
        assert_eq!(range("bytes=0-", 0), None);
        assert_eq!(range("bytes=99999999999999999999999-", 4), None);
        // Ignored: whole value.
        assert_eq!(range("bytes=3-1", 4), Some(0..u64::MAX));
        assert_eq!(range("bytes=0-0,2-3", 4), Some(0..u64::MAX));
        assert_eq!(range("items=0-1", 4), Some(0..u64::MAX));
        assert_eq!(range("bytes=a-b", 4), Some(0..u64::MAX));
        assert_eq!(range("bytes=-", 4), Some(0..u64::MAX));
    }

    #[test]
    fn conditional_requests() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h = HeaderMap::new();
        assert!(!not_modified(&h, "\"a\"", t));
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"b\", W/\"a\""),
        );
        assert!(not_modified(&h, "\"a\"", t));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"b\""));
        h.insert(
            header::IF_MODIFIED_SINCE,
            HeaderValue::from_str(&httpdate::fmt_http_date(t)).unwrap(),
        );
        // If-None-Match decides when present.
        assert!(!not_modified(&h, "\"a\"", t));
        h.remove(header::IF_NONE_MATCH);
        assert!(not_modified(&h, "\"a\"", t));
        assert!(!not_modified(&h, "\"a\"", t + Duration::from_secs(1)));
    }
}
