//! Key bytes <-> file names, the contract of `docs/NAMING.md`.
//!
//! Keys are arbitrary byte strings; file names must be printable UTF-8 without
//! `/` or NUL, at most 255 bytes. Lookups percent-decode a name exactly as
//! sequins decodes its URL paths, so `cat /mnt/sequins/db/%00%2A` and
//! `GET /db/%00%2A` reach the same key. Listings encode the other way, so that
//! every listed name decodes back to its key. This module only transforms
//! bytes; which directory lists which name is decided in `fs::listing`.

/// Longest file name Linux accepts in one path component (NAME_MAX).
pub const NAME_MAX: usize = 255;

/// Control files inside a version directory. A listed key name can never
/// equal one of these, because `encode` escapes a leading `.`.
pub const VERSION_FILE: &str = ".version";

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Encodes key bytes as a file name: `%`, `/`, bytes below 0x20, 0x7F, bytes
/// that are not part of valid UTF-8, and a leading `.` become `%XY`
/// (upper-case hex); everything else is kept. `/` only occurs when encoding a
/// whole key in flat form (a path component never contains one).
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    let mut rest = bytes;
    let mut first = true;
    while !rest.is_empty() {
        let (valid, invalid) = match std::str::from_utf8(rest) {
            Ok(s) => (s, &[][..]),
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                // The prefix up to valid_up_to is valid UTF-8 by definition.
                let valid = std::str::from_utf8(valid).unwrap_or_default();
                let bad_len = e.error_len().unwrap_or(after.len());
                (valid, &after[..bad_len.min(after.len())])
            }
        };
        for ch in valid.chars() {
            let needs_escape = ch == '%'
                || ch == '/'
                || (ch as u32) < 0x20
                || ch == '\u{7f}'
                || (first && ch == '.');
            first = false;
            if needs_escape {
                push_escaped(&mut out, ch as u8);
            } else {
                out.push(ch);
            }
        }
        for &b in invalid {
            first = false;
            push_escaped(&mut out, b);
        }
        rest = &rest[valid.len() + invalid.len()..];
    }
    out
}

fn push_escaped(out: &mut String, byte: u8) {
    out.push('%');
    out.push(HEX[usize::from(byte >> 4)] as char);
    out.push(HEX[usize::from(byte & 0xf)] as char);
}

/// Percent-decodes a file name: every `%XY` with two hex digits (either
/// case) becomes the byte 0xXY; a `%` not followed by two hex digits stays a
/// literal `%`. The result may contain `/` (from `%2F`).
pub fn decode(name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len());
    let mut i = 0;
    while i < name.len() {
        let byte = name[i];
        if byte == b'%'
            && let (Some(hi), Some(lo)) = (
                name.get(i + 1).and_then(|&c| hex_value(c)),
                name.get(i + 2).and_then(|&c| hex_value(c)),
            )
        {
            out.push(hi << 4 | lo);
            i += 3;
            continue;
        }
        out.push(byte);
        i += 1;
    }
    out
}

/// The value of one hex digit (either case). Shared with the HTTP path
/// decoder, which decodes the same escapes.
pub(crate) fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The flat form of a key: every byte that needs it encoded, `/` as `%2F`.
/// Always a single path component; usable from the version root.
pub fn flat_name(key: &[u8]) -> String {
    encode(key)
}

/// Whether a path component (already split at `/`) can be a directory or
/// file name: not empty, not `.` or `..`, and its encoded form fits NAME_MAX.
pub fn is_valid_component(component: &[u8]) -> bool {
    !component.is_empty()
        && component != b"."
        && component != b".."
        && encoded_len(component) <= NAME_MAX
}

/// Whether a key can be reached as a path of nested directories: not empty,
/// no `/` at the start or end, no `//`, no `.`/`..` component, and every
/// component's encoded form at most NAME_MAX bytes. Keys that cannot are
/// listed at the version root in flat form (if that fits in NAME_MAX).
pub fn is_pathable(key: &[u8]) -> bool {
    !key.is_empty() && key.split(|&b| b == b'/').all(is_valid_component)
}

/// Whether the key can be reached through the mount on its own: by path,
/// or by its flat form from the version root. The empty key and keys whose
/// flat form is longer than NAME_MAX cannot (the HTTP sidecar still serves
/// the latter). Other keys can shadow a path: if `a` is a key, `a/b...` is
/// only reachable by a flat name in `a`'s directory (see `fs::listing`).
pub fn is_reachable(key: &[u8]) -> bool {
    !key.is_empty() && (is_pathable(key) || encoded_len(key) <= NAME_MAX)
}

/// Length of `encode(bytes)` without building it.
pub fn encoded_len(bytes: &[u8]) -> usize {
    encode(bytes).len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_names_stay_as_they_are() {
        assert_eq!(encode(b"boy"), "boy");
        assert_eq!(encode("Zoë 🦀".as_bytes()), "Zoë 🦀");
        assert_eq!(encode(b"a.b"), "a.b");
        assert_eq!(encode(b"a b+c"), "a b+c");
    }

    #[test]
    fn escapes_percent_controls_del_and_slash() {
        assert_eq!(encode(b"100%"), "100%25");
        assert_eq!(encode(b"a\nb"), "a%0Ab");
        assert_eq!(encode(&[0, 0, 0, 0x2a]), "%00%00%00*");
        assert_eq!(encode(&[0x1f, 0x20]), "%1F ");
        assert_eq!(encode(&[0x7f]), "%7F");
        assert_eq!(flat_name(b"1881/boy"), "1881%2Fboy");
    }

    #[test]
    fn escapes_invalid_utf8_bytes_only() {
        assert_eq!(encode(&[0xff, b'a', 0xfe]), "%FFa%FE");
        // A truncated multi-byte sequence is invalid byte by byte.
        assert_eq!(encode(&[0xe2, 0x82]), "%E2%82");
        // A valid multi-byte sequence next to invalid bytes is kept.
        assert_eq!(encode(&[0xc3, 0xa9, 0xc3]), "é%C3");
    }

    #[test]
    fn escapes_only_a_leading_dot() {
        assert_eq!(encode(b".version"), "%2Eversion");
        assert_eq!(encode(b".."), "%2E.");
        assert_eq!(encode(b"a.."), "a..");
        assert_eq!(encode(b"."), "%2E");
    }

    #[test]
    fn decode_follows_sequins_url_rules() {
        assert_eq!(decode(b"1881%2Fboy"), b"1881/boy");
        assert_eq!(decode(b"%00%00%00%2A"), [0, 0, 0, 0x2a]);
        assert_eq!(decode(b"%2a%2A"), b"**");
        // A % without two hex digits stays literal.
        assert_eq!(decode(b"100%"), b"100%");
        assert_eq!(decode(b"%4"), b"%4");
        assert_eq!(decode(b"%zz%41"), b"%zzA");
        assert_eq!(decode(b"%%41"), b"%A");
        assert_eq!(decode(b"plain"), b"plain");
    }

    #[test]
    fn pathable_rule() {
        assert!(is_pathable(b"1881/boy"));
        assert!(is_pathable(b"a"));
        assert!(!is_pathable(b""));
        assert!(!is_pathable(b"/a"));
        assert!(!is_pathable(b"a/"));
        assert!(!is_pathable(b"a//b"));
        assert!(!is_pathable(b"a/./b"));
        assert!(!is_pathable(b"../b"));
        assert!(!is_pathable(b"."));
        assert!(is_pathable(&[b'x'; 255]));
        assert!(!is_pathable(&[b'x'; 256]));
        // 86 escaped bytes are 258 encoded bytes.
        assert!(!is_pathable(&[0u8; 86]));
        let long_path = [&[b'x'; 200][..], b"/", &[b'y'; 200][..]].concat();
        assert!(is_pathable(&long_path));
        assert!(!is_reachable(b""));
        assert!(is_reachable(b"/a"));
        assert!(!is_reachable(&[b'/'; 86]));
    }

    proptest! {
        #[test]
        fn decode_inverts_encode(key in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(decode(encode(&key).as_bytes()), key);
        }

        #[test]
        fn decode_inverts_encode_on_text(key in "\\PC{0,20}") {
            prop_assert_eq!(decode(encode(key.as_bytes()).as_bytes()), key.as_bytes());
        }

        #[test]
        fn encoded_names_are_printable_single_components(
            key in proptest::collection::vec(any::<u8>(), 1..64)
        ) {
            let name = encode(&key);
            prop_assert!(!name.starts_with('.'));
            prop_assert!(!name.contains('/'));
            prop_assert!(!name.bytes().any(|b| b < 0x20 || b == 0x7f));
            prop_assert!(name != "." && name != "..");
            prop_assert_eq!(name.len(), encoded_len(&key));
        }

        #[test]
        fn decode_never_panics(name in proptest::collection::vec(any::<u8>(), 0..64)) {
            let decoded = decode(&name);
            prop_assert!(decoded.len() <= name.len());
        }
    }
}
