//! From a request target to a database name and key bytes, as sequins does
//! it: the whole path is percent-decoded first (so `%2F` becomes a `/` that
//! can end up in the key, and `%00` a NUL byte), then split at the first `/`
//! after the leading one.
//!
//! Unlike file names in the mount (where a `%` not followed by two hex
//! digits stays a literal `%`, see `docs/NAMING.md`), a malformed escape in a URL is a
//! bad request: Go's URL parser rejects it and sequins answers 400, and so
//! do we.

use crate::naming::hex_value;

/// A `%` not followed by two hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidEscape {
    /// Byte offset of the `%` in the raw path.
    pub offset: usize,
}

/// Decodes every `%XY` (hex digits in either case) into the byte 0xXY.
/// Everything else is kept as it is; `+` is not a space in a path.
pub fn percent_decode(raw: &str) -> Result<Vec<u8>, InvalidEscape> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = bytes.get(i + 1).and_then(|&c| hex_value(c));
            let lo = bytes.get(i + 2).and_then(|&c| hex_value(c));
            match (hi, lo) {
                (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                _ => return Err(InvalidEscape { offset: i }),
            }
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Ok(out)
}

/// A decoded path split into its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route<'a> {
    /// Before the first `/` (may be empty: `//x` is a bad request).
    pub db: &'a [u8],
    /// After the first `/`: `None` for `/<db>`, empty for `/<db>/`.
    pub key: Option<&'a [u8]>,
}

/// Splits a decoded path. `None` if it does not start with `/` (only an
/// asterisk or authority request target can do that).
pub fn split(decoded: &[u8]) -> Option<Route<'_>> {
    let rest = decoded.strip_prefix(b"/")?;
    Some(match rest.iter().position(|&b| b == b'/') {
        Some(slash) => Route {
            db: rest.get(..slash).unwrap_or_default(),
            key: rest.get(slash + 1..),
        },
        None => Route {
            db: rest,
            key: None,
        },
    })
}

/// The value of a non-empty `proxy` query parameter (sequins' peer
/// protocol, also usable to pin a held version). Decoded as a form value.
pub fn proxy_param(query: Option<&str>) -> Option<String> {
    query_param(query, "proxy")
}

/// The value of the first non-empty query parameter `name`, decoded as a
/// form value.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
        .map(|value| {
            let value = value.replace('+', " ");
            let bytes = percent_decode(&value).unwrap_or_else(|_| value.clone().into_bytes());
            String::from_utf8_lossy(&bytes).into_owned()
        })
        .find(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes_in_either_case() {
        assert_eq!(percent_decode("/db/%00%00%00%2a").unwrap(), b"/db/\0\0\0*");
        assert_eq!(percent_decode("/db/1881%2Fboy").unwrap(), b"/db/1881/boy");
        assert_eq!(percent_decode("/a+b%ff").unwrap(), b"/a+b\xff");
    }

    #[test]
    fn rejects_malformed_escapes_with_their_offset() {
        assert_eq!(percent_decode("/db/%"), Err(InvalidEscape { offset: 4 }));
        assert_eq!(percent_decode("/db/%4"), Err(InvalidEscape { offset: 4 }));
        assert_eq!(percent_decode("/d%zzb"), Err(InvalidEscape { offset: 2 }));
        assert_eq!(percent_decode("/%%41"), Err(InvalidEscape { offset: 1 }));
    }

    #[test]
    fn splits_at_the_first_slash() {
        let r = split(b"/baby-names/1881/boy").unwrap();
        assert_eq!((r.db, r.key), (&b"baby-names"[..], Some(&b"1881/boy"[..])));
        let r = split(b"/baby-names").unwrap();
        assert_eq!((r.db, r.key), (&b"baby-names"[..], None));
        let r = split(b"/baby-names/").unwrap();
        assert_eq!((r.db, r.key), (&b"baby-names"[..], Some(&b""[..])));
        let r = split(b"//x").unwrap();
        assert_eq!((r.db, r.key), (&b""[..], Some(&b"x"[..])));
        assert_eq!(split(b"*"), None);
    }

    #[test]
    fn reads_the_proxy_parameter() {
        assert_eq!(proxy_param(None), None);
        assert_eq!(proxy_param(Some("proxy=")), None);
        assert_eq!(proxy_param(Some("a=1&proxy=v%201")), Some("v 1".into()));
        assert_eq!(proxy_param(Some("proxy=2&proxy=3")), Some("2".into()));
    }
}
