//! Names inside a version directory: lookup of one name and the listing of
//! a (nested) directory, over the version's sorted key index.
//!
//! This is where the placement rules of `docs/NAMING.md` live (`naming` only transforms
//! bytes). A directory stands for a key prefix `P` (empty at the version
//! root, always ending in `/` below it). Its listing walks the keys that start
//! with `P` in ascending order and shows, exactly once each:
//! - a key `P + R` with no `/` in `R`: the file `encode(R)`;
//! - keys `P + C + "/" + ...`: one directory `encode(C)`, listed at the first
//!   of those keys (below the root the walk then jumps past them with one
//!   `lower_bound`, so a listing costs O(children × log keys));
//! - if `P + C` is itself a key (the exact key wins), the keys under it are
//!   files in flat form relative to `P` (`a%2Fb`);
//! - keys that cannot be paths (see [`naming::is_pathable`]) only at the
//!   version root, in flat form.
//! - a name longer than NAME_MAX is never listed (it could not be looked
//!   up): such keys are unreachable through the mount. Finding those needs a scan, so the root
//!   listing visits every key once (resumable, so still O(keys) in total).
//!
//! A listing position is a [`Cursor`]: the ordinal of the next key to visit
//! plus one bit saying that the directory starting at that key was already
//! listed (at the root a key can yield a directory and its own flat name).
//! Versions are immutable, so a cursor means the same thing forever and a
//! listing can resume from any position.

use crate::catalog::{LookupError, VersionData};
use crate::naming::{self, NAME_MAX};

/// What a name in a version directory stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Child {
    /// The key at this ordinal.
    File { ordinal: u64 },
    /// The prefix directory whose first key is at `first`, with `depth`
    /// slashes in its prefix.
    Dir { first: u64, depth: u64 },
}

/// A position in a directory listing; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cursor {
    pub ordinal: u64,
    pub dir_listed: bool,
}

impl Cursor {
    /// As a number (for readdir offsets): `2 × ordinal + dir_listed`.
    pub fn to_u64(self) -> u64 {
        self.ordinal.saturating_mul(2) | u64::from(self.dir_listed)
    }
    pub fn from_u64(n: u64) -> Cursor {
        Cursor {
            ordinal: n / 2,
            dir_listed: n % 2 == 1,
        }
    }
}

/// One listed name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub child: Child,
    /// Where the listing continues after this entry.
    pub next: Cursor,
}

/// Resolves a decoded name in the directory for `prefix` (`docs/NAMING.md`, decoding
/// rule 3): the exact key wins, else a directory if some key continues with
/// `/`, else nothing.
pub fn lookup(
    keys: &dyn VersionData,
    prefix: &[u8],
    decoded: &[u8],
) -> Result<Option<Child>, LookupError> {
    let mut candidate = Vec::with_capacity(prefix.len() + decoded.len() + 1);
    candidate.extend_from_slice(prefix);
    candidate.extend_from_slice(decoded);
    if let Some(ordinal) = find_exact(keys, &candidate)? {
        return Ok(Some(Child::File { ordinal }));
    }
    candidate.push(b'/');
    let first = keys.lower_bound(&candidate)?;
    if first < keys.key_count() && keys.key_at(first)?.starts_with(&candidate) {
        let depth = slash_count(&candidate);
        return Ok(Some(Child::Dir { first, depth }));
    }
    Ok(None)
}

/// The prefix a directory stands for: its first key cut after its
/// `depth`-th `/`.
pub fn dir_prefix(keys: &dyn VersionData, first: u64, depth: u64) -> Result<Vec<u8>, LookupError> {
    let key = keys.key_at(first)?;
    let mut seen = 0;
    for (i, &b) in key.iter().enumerate() {
        if b == b'/' {
            seen += 1;
            if seen == depth {
                return Ok(key[..=i].to_vec());
            }
        }
    }
    Err(LookupError::new(format!(
        "directory inode names key {first} at depth {depth}, which it does not have"
    )))
}

/// Lists the directory for `prefix` from `cursor`, calling `emit` for each
/// entry in order until it returns `false` (the reply buffer is full) or the
/// directory ends.
pub fn list(
    keys: &dyn VersionData,
    prefix: &[u8],
    cursor: Cursor,
    mut emit: impl FnMut(Listed) -> bool,
) -> Result<(), LookupError> {
    let at_root = prefix.is_empty();
    let count = keys.key_count();
    let mut cursor = cursor;
    // Cursors count from the start of the key index: begin at the prefix.
    let start = keys.lower_bound(prefix)?;
    if cursor.ordinal < start {
        cursor = Cursor {
            ordinal: start,
            dir_listed: false,
        };
    }
    // The last group `C` whose "is `P + C` a key" question was answered.
    let mut last_group: Option<(Vec<u8>, bool)> = None;
    while cursor.ordinal < count {
        let ordinal = cursor.ordinal;
        let dir_listed = cursor.dir_listed;
        let key = keys.key_at(ordinal)?;
        if !key.starts_with(prefix) {
            return Ok(());
        }
        let rest = &key[prefix.len()..];
        let after = Cursor {
            ordinal: ordinal + 1,
            dir_listed: false,
        };
        cursor = after;
        let file = |name: String| {
            (name.len() <= NAME_MAX).then_some(Listed {
                name,
                child: Child::File { ordinal },
                next: after,
            })
        };
        let entry = match rest.iter().position(|&b| b == b'/') {
            Some(slash) => {
                let component = &rest[..slash];
                let component_is_key = match &last_group {
                    Some((c, is_key)) if c.as_slice() == component => *is_key,
                    _ => {
                        let is_key = find_exact(keys, &key[..prefix.len() + slash])?.is_some();
                        last_group = Some((component.to_vec(), is_key));
                        is_key
                    }
                };
                if naming::is_valid_component(component) && !component_is_key {
                    let group = &key[..=prefix.len() + slash];
                    let first_of_group =
                        ordinal == 0 || !keys.key_at(ordinal - 1)?.starts_with(group);
                    if first_of_group && !dir_listed {
                        let next = if at_root {
                            // Come back to this key: it may need its flat name.
                            Cursor {
                                ordinal,
                                dir_listed: true,
                            }
                        } else {
                            let mut past = group.to_vec();
                            if let Some(last) = past.last_mut() {
                                *last = b'/' + 1;
                            }
                            Cursor {
                                ordinal: keys.lower_bound(&past)?.max(ordinal + 1),
                                dir_listed: false,
                            }
                        };
                        Some(Listed {
                            name: naming::encode(component),
                            child: Child::Dir {
                                first: ordinal,
                                depth: slash_count(group),
                            },
                            next,
                        })
                    } else if at_root && !naming::is_pathable(key) {
                        file(naming::flat_name(key))
                    } else {
                        None
                    }
                } else if at_root || naming::is_pathable(key) {
                    // The key cannot go below this level: flat form here.
                    file(naming::encode(rest))
                } else {
                    None
                }
            }
            None if rest.is_empty() => None,
            None if at_root || naming::is_pathable(key) => file(naming::encode(rest)),
            None => None,
        };
        if let Some(entry) = entry {
            cursor = entry.next;
            if !emit(entry) {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The path, relative to the version root and `/`-separated, under which
/// the listing shows `key`: nested directories where the key is pathable,
/// the rest in flat form from the level where a prefix of it is itself a
/// key, its flat name at the root otherwise. `None` if `key` is not in
/// `keys` or cannot be reached through the mount.
pub fn path_of(keys: &dyn VersionData, key: &[u8]) -> Result<Option<String>, LookupError> {
    if find_exact(keys, key)?.is_none() {
        return Ok(None);
    }
    let flat = |path: String, rest: &[u8]| {
        let name = naming::encode(rest);
        (name.len() <= NAME_MAX).then(|| path + &name)
    };
    if key.is_empty() {
        return Ok(None);
    }
    if !naming::is_pathable(key) {
        return Ok(flat(String::new(), key));
    }
    let mut path = String::new();
    let mut start = 0;
    for (i, &b) in key.iter().enumerate() {
        if b != b'/' {
            continue;
        }
        // The exact key wins over the directory: what follows is flat here.
        if find_exact(keys, &key[..i])?.is_some() {
            return Ok(flat(path, &key[start..]));
        }
        path.push_str(&naming::encode(&key[start..i]));
        path.push('/');
        start = i + 1;
    }
    Ok(flat(path, &key[start..]))
}

/// The ordinal of exactly `key`, if it is a key.
pub fn find_exact(keys: &dyn VersionData, key: &[u8]) -> Result<Option<u64>, LookupError> {
    let at = keys.lower_bound(key)?;
    if at < keys.key_count() && keys.key_at(at)? == key {
        Ok(Some(at))
    } else {
        Ok(None)
    }
}

fn slash_count(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'/').count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::InMemoryVersionData;
    use proptest::prelude::*;

    fn data(keys: &[&[u8]]) -> InMemoryVersionData {
        InMemoryVersionData::new(keys.iter().map(|k| (k.to_vec(), b"v".to_vec())))
    }

    fn names(keys: &InMemoryVersionData, prefix: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        list(keys, prefix, Cursor::default(), |e| {
            out.push(e.name);
            true
        })
        .unwrap();
        out
    }

    /// Every key reachable by walking the listing from the root, with the
    /// key each listed file stands for (decoded from the names on the way).
    fn walk(keys: &InMemoryVersionData) -> Vec<Vec<u8>> {
        fn go(keys: &InMemoryVersionData, prefix: &[u8], out: &mut Vec<Vec<u8>>) {
            let mut entries = Vec::new();
            list(keys, prefix, Cursor::default(), |e| {
                entries.push(e);
                true
            })
            .unwrap();
            for e in entries {
                let decoded = naming::decode(e.name.as_bytes());
                let looked_up = lookup(keys, prefix, &decoded).unwrap();
                assert_eq!(looked_up, Some(e.child), "lookup of listed {:?}", e.name);
                match e.child {
                    Child::File { ordinal } => {
                        let key = [prefix, &decoded[..]].concat();
                        assert_eq!(keys.key_at(ordinal).unwrap(), key.as_slice());
                        out.push(key);
                    }
                    Child::Dir { first, depth } => {
                        let sub = dir_prefix(keys, first, depth).unwrap();
                        assert_eq!(sub, [prefix, &decoded[..], b"/"].concat());
                        go(keys, &sub, out);
                    }
                }
            }
        }
        let mut out = Vec::new();
        go(keys, b"", &mut out);
        out
    }

    #[test]
    fn nested_directories_and_files() {
        let keys = data(&[b"1880/boy", b"1880/girl", b"1881/boy", b"top"]);
        assert_eq!(names(&keys, b""), ["1880", "1881", "top"]);
        assert_eq!(names(&keys, b"1880/"), ["boy", "girl"]);
        assert_eq!(
            lookup(&keys, b"", b"1881/boy").unwrap(),
            Some(Child::File { ordinal: 2 })
        );
        assert_eq!(
            lookup(&keys, b"", b"1881").unwrap(),
            Some(Child::Dir { first: 2, depth: 1 })
        );
        assert_eq!(lookup(&keys, b"", b"1882").unwrap(), None);
        assert_eq!(
            lookup(&keys, b"1880/", b"boy").unwrap(),
            Some(Child::File { ordinal: 0 })
        );
    }

    #[test]
    fn exact_key_wins_over_prefix_and_children_go_flat() {
        let keys = data(&[b"a", b"a/b", b"a/c/d", b"b"]);
        assert_eq!(names(&keys, b""), ["a", "a%2Fb", "a%2Fc%2Fd", "b"]);
        assert_eq!(
            lookup(&keys, b"", b"a").unwrap(),
            Some(Child::File { ordinal: 0 })
        );
        let keys = data(&[b"x/a", b"x/a/b"]);
        assert_eq!(names(&keys, b"x/"), ["a", "a%2Fb"]);
    }

    #[test]
    fn keys_that_cannot_be_paths_are_flat_at_the_root() {
        let keys = data(&[b"/lead", b"x/a", b"x/b//c", b"x/d", b"trail/", b"..", b"."]);
        assert_eq!(
            names(&keys, b""),
            [
                "%2E",
                "%2E.",
                "%2Flead",
                "trail",
                "trail%2F",
                "x",
                "x%2Fb%2F%2Fc"
            ]
        );
        // `trail` is a directory (a key starts with `trail/`), listing nothing.
        assert_eq!(names(&keys, b"trail/"), Vec::<String>::new());
        assert_eq!(names(&keys, b"x/"), ["a", "b", "d"]);
        assert_eq!(names(&keys, b"x/b/"), Vec::<String>::new());
    }

    #[test]
    fn first_key_of_a_group_can_also_be_flat() {
        let keys = data(&[b"x//y", b"x/z"]);
        assert_eq!(names(&keys, b""), ["x", "x%2F%2Fy"]);
        let mut walked = walk(&keys);
        walked.sort();
        assert_eq!(walked, vec![b"x//y".to_vec(), b"x/z".to_vec()]);
    }

    #[test]
    fn paths_follow_the_listing() {
        let keys = data(&[b"1881/boy", b"a", b"a/b", b"x//y", b"p/q/r"]);
        let path = |k: &[u8]| path_of(&keys, k).unwrap();
        assert_eq!(path(b"1881/boy").as_deref(), Some("1881/boy"));
        assert_eq!(path(b"a/b").as_deref(), Some("a%2Fb"));
        assert_eq!(path(b"x//y").as_deref(), Some("x%2F%2Fy"));
        assert_eq!(path(b"p/q/r").as_deref(), Some("p/q/r"));
        assert_eq!(path(b"1881"), None);
    }

    #[test]
    fn empty_and_overlong_keys_are_not_listed() {
        let long_flat = vec![0u8; 90];
        let keys = data(&[b"", &long_flat, b"ok"]);
        assert_eq!(names(&keys, b""), ["ok"]);
    }

    #[test]
    fn listing_resumes_from_every_cursor() {
        let keys = data(&[b"a/1", b"a/2", b"b", b"c//d", b"c/e", b"f/g/h"]);
        let mut all = Vec::new();
        list(&keys, b"", Cursor::default(), |e| {
            all.push(e);
            true
        })
        .unwrap();
        for (i, e) in all.iter().enumerate() {
            let mut rest = Vec::new();
            list(&keys, b"", Cursor::from_u64(e.next.to_u64()), |e| {
                rest.push(e);
                true
            })
            .unwrap();
            assert_eq!(rest, all[i + 1..]);
        }
    }

    fn key_strategy() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                Just(b'/'),
                Just(b'.'),
                Just(b'a'),
                Just(b'b'),
                Just(0u8),
                Just(0xff),
                Just(b'%')
            ],
            0..8,
        )
    }

    proptest! {
        #[test]
        fn every_reachable_key_is_listed_exactly_once(
            keys in proptest::collection::btree_set(key_strategy(), 0..24)
        ) {
            let data = InMemoryVersionData::new(keys.iter().map(|k| (k.clone(), vec![])));
            let mut listed = walk(&data);
            let n = listed.len();
            listed.sort();
            listed.dedup();
            prop_assert_eq!(listed.len(), n, "a key was listed twice");
            let expected: Vec<Vec<u8>> =
                keys.iter().filter(|k| naming::is_reachable(k)).cloned().collect();
            prop_assert_eq!(listed, expected);
        }

        #[test]
        fn the_path_of_every_reachable_key_resolves_to_it(
            keys in proptest::collection::btree_set(key_strategy(), 1..24)
        ) {
            let data = InMemoryVersionData::new(keys.iter().map(|k| (k.clone(), vec![])));
            for key in &keys {
                let path = path_of(&data, key).unwrap();
                prop_assert_eq!(path.is_some(), naming::is_reachable(key), "{:?}", key);
                let Some(path) = path else { continue };
                let mut prefix = Vec::new();
                let components: Vec<&str> = path.split('/').collect();
                for (i, name) in components.iter().enumerate() {
                    let child = lookup(&data, &prefix, &naming::decode(name.as_bytes())).unwrap();
                    match child {
                        Some(Child::Dir { first, depth }) if i + 1 < components.len() => {
                            prefix = dir_prefix(&data, first, depth).unwrap();
                        }
                        Some(Child::File { ordinal }) if i + 1 == components.len() => {
                            prop_assert_eq!(data.key_at(ordinal).unwrap(), key.as_slice());
                        }
                        other => prop_assert!(false, "{:?} at {:?} of {:?}: {:?}", key, name, path, other),
                    }
                }
            }
            prop_assert_eq!(path_of(&data, b"not a key").unwrap(), None);
        }

        #[test]
        fn every_reachable_key_resolves_by_flat_name_from_the_root(
            keys in proptest::collection::btree_set(key_strategy(), 1..24)
        ) {
            let data = InMemoryVersionData::new(keys.iter().map(|k| (k.clone(), vec![])));
            for key in keys.iter().filter(|k| naming::is_reachable(k)) {
                let flat = naming::flat_name(key);
                let found = lookup(&data, b"", &naming::decode(flat.as_bytes())).unwrap();
                let is_file = matches!(found, Some(Child::File { .. }));
                prop_assert!(is_file, "flat name of {:?} not found", key);
            }
        }
    }
}
