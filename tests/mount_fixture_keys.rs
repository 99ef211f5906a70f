//! Real binary keys (from the `bytes_bytes__none.seq` fixture, as Hadoop's
//! own reader returned them) served as a database: every key reachable by
//! its encoded name, listed exactly once, and decoding every listed name
//! gives back every key. Plus a mutation fuzz of the naming and listing
//! rules seeded with those keys, driven through the filesystem core.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::{TestMount, can_mount, fixtures_dir, publish_version, read, version, walk_keys};
use proptest::prelude::*;
use sequinsfs::catalog::{Catalog, InMemoryVersionData, Version};
use sequinsfs::fs::inode;
use sequinsfs::fs::{CoreOptions, DirEntry, Entry, FileKind, FsCore};
use sequinsfs::naming;

/// The (key, value) pairs of the fixture, BytesWritable wrappers removed.
fn fixture_pairs() -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    let dir = fixtures_dir()?;
    let path = dir.join("seqfile/bytes_bytes__none.seq.expected.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let unwrap = |hex: &str| -> Vec<u8> {
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        // A BytesWritable is a 4-byte big-endian length and the bytes.
        bytes[4..].to_vec()
    };
    let records = json["records"].as_array().unwrap();
    Some(
        records
            .iter()
            .map(|r| {
                (
                    unwrap(r[0].as_str().unwrap()),
                    unwrap(r[1].as_str().unwrap()),
                )
            })
            .collect(),
    )
}

#[test]
fn fixture_binary_keys_through_a_real_mount() {
    let Some(pairs) = fixture_pairs() else { return };
    if !can_mount() {
        return;
    }
    let catalog = Catalog::new();
    // Sorted, and the last of duplicate keys wins, as in a version.
    let expected: Vec<(Vec<u8>, Vec<u8>)> = pairs
        .iter()
        .cloned()
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .collect();
    publish_version(
        &catalog,
        version("bytes", "1", expected.clone()),
        Duration::from_secs(60),
    );
    let m = TestMount::new(catalog);
    let dir = m.path().join("bytes");
    let listed = walk_keys(&dir);
    let listed_keys: Vec<&Vec<u8>> = listed.iter().map(|(k, _)| k).collect();
    let unique: BTreeSet<&Vec<u8>> = listed_keys.iter().copied().collect();
    assert_eq!(unique.len(), listed_keys.len(), "a key was listed twice");
    let reachable: BTreeSet<&Vec<u8>> = expected
        .iter()
        .map(|(k, _)| k)
        .filter(|k| naming::is_reachable(k))
        .collect();
    assert_eq!(unique, reachable);
    assert!(
        reachable.len() + 1 >= expected.len(),
        "only the empty key may be unreachable"
    );
    for (key, value) in &expected {
        if naming::is_reachable(key) {
            assert_eq!(&read(&dir.join(naming::flat_name(key))), value, "{key:x?}");
        }
    }
    for (key, path) in &listed {
        let value = &expected.iter().find(|(k, _)| k == key).unwrap().1;
        assert_eq!(&read(path), value, "{}", path.display());
    }
    m.unmount();
}

/// Structural mutations of a key set: bit flips, truncations, inserted
/// bytes (favouring the bytes the rules care about), duplicated prefixes.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit { key: usize, at: usize, bit: u8 },
    Truncate { key: usize, len: usize },
    Insert { key: usize, at: usize, byte: u8 },
    ExtendAsChild { key: usize, suffix: Vec<u8> },
    Long { key: usize, len: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let special = prop_oneof![
        Just(b'/'),
        Just(b'.'),
        Just(b'%'),
        Just(0u8),
        Just(0xff),
        Just(b'\n'),
        any::<u8>()
    ];
    prop_oneof![
        (any::<usize>(), any::<usize>(), 0u8..8).prop_map(|(key, at, bit)| Mutation::FlipBit {
            key,
            at,
            bit
        }),
        (any::<usize>(), 0usize..8).prop_map(|(key, len)| Mutation::Truncate { key, len }),
        (any::<usize>(), any::<usize>(), special.clone())
            .prop_map(|(key, at, byte)| Mutation::Insert { key, at, byte }),
        (any::<usize>(), proptest::collection::vec(special, 0..4))
            .prop_map(|(key, suffix)| Mutation::ExtendAsChild { key, suffix }),
        (any::<usize>(), 200usize..400).prop_map(|(key, len)| Mutation::Long { key, len }),
    ]
}

fn apply(keys: &mut Vec<Vec<u8>>, m: &Mutation) {
    if keys.is_empty() {
        return;
    }
    let n = keys.len();
    match m {
        Mutation::FlipBit { key, at, bit } => {
            let k = &mut keys[key % n];
            if !k.is_empty() {
                let i = at % k.len();
                k[i] ^= 1 << bit;
            }
        }
        Mutation::Truncate { key, len } => {
            let k = &mut keys[key % n];
            k.truncate(*len);
        }
        Mutation::Insert { key, at, byte } => {
            let k = &mut keys[key % n];
            let i = at % (k.len() + 1);
            k.insert(i, *byte);
        }
        Mutation::ExtendAsChild { key, suffix } => {
            let mut child = keys[key % n].clone();
            child.push(b'/');
            child.extend_from_slice(suffix);
            keys.push(child);
        }
        Mutation::Long { key, len } => {
            let mut long = keys[key % n].clone();
            long.resize(*len, b'x');
            keys.push(long);
        }
    }
}

/// An independent model of where NAMING lists a key, if anywhere: keys that
/// cannot be paths in flat form at the version root; others in the deepest
/// directory reachable without passing through a component that is itself a
/// key (the exact key wins), named by the rest of the key in flat form. A
/// name longer than NAME_MAX cannot be listed (nor looked up).
fn listed_somewhere(key: &[u8], keys: &BTreeSet<Vec<u8>>) -> bool {
    if key.is_empty() {
        return false;
    }
    if !naming::is_pathable(key) {
        return naming::flat_name(key).len() <= naming::NAME_MAX;
    }
    let mut dir_end = 0;
    for (i, &b) in key.iter().enumerate() {
        if b == b'/' {
            if keys.contains(&key[..i]) {
                break;
            }
            dir_end = i + 1;
        }
    }
    naming::encode(&key[dir_end..]).len() <= naming::NAME_MAX
}

/// The inode of `.versions/<db>/<version>`, looked up through the core.
fn version_root(core: &FsCore, version: &Version) -> u64 {
    let found = |entry| match entry {
        Entry::Found { attr, .. } => attr.ino,
        Entry::Negative { .. } => panic!("{version:?} not found"),
    };
    let versions = found(core.lookup(inode::ROOT, b".versions").unwrap());
    let db = found(core.lookup(versions, version.db().as_bytes()).unwrap());
    found(core.lookup(db, version.name().as_bytes()).unwrap())
}

fn list(core: &FsCore, ino: u64) -> Vec<DirEntry> {
    let mut out = Vec::new();
    core.readdir(ino, 0, |e| {
        out.push(e);
        true
    })
    .unwrap();
    out
}

/// Walks a version through the core (lookup of every listed name must give
/// the listed inode) and returns the keys of the listed files.
fn walk_core(core: &FsCore, version: &Version) -> Vec<Vec<u8>> {
    fn go(core: &FsCore, version: &Version, ino: u64, prefix: &[u8], out: &mut Vec<Vec<u8>>) {
        for e in list(core, ino) {
            if e.name == "."
                || e.name == ".."
                || (prefix.is_empty() && e.name == naming::VERSION_FILE)
            {
                continue;
            }
            assert!(
                e.name.len() <= naming::NAME_MAX && !e.name.starts_with('.'),
                "{:?}",
                e.name
            );
            match core.lookup(ino, e.name.as_bytes()).unwrap() {
                Entry::Found { attr, .. } => assert_eq!(attr.ino, e.attr.ino, "{:?}", e.name),
                Entry::Negative { .. } => panic!("listed {:?} not found", e.name),
            }
            let decoded = naming::decode(e.name.as_bytes());
            let key = [prefix, &decoded[..]].concat();
            match e.attr.kind {
                FileKind::Directory => {
                    go(core, version, e.attr.ino, &[&key[..], b"/"].concat(), out)
                }
                _ => {
                    let value = core.read(e.attr.ino, 0, 1 << 20, |b| b.to_vec()).unwrap();
                    assert_eq!(
                        Some(value),
                        version.get(&key).unwrap().map(|v| v.into_owned())
                    );
                    out.push(key);
                }
            }
        }
    }
    let root = version_root(core, version);
    let mut out = Vec::new();
    go(core, version, root, b"", &mut out);
    out
}

proptest! {
    // Small by default so CI stays fast; PROPTEST_CASES raises it.
    #![proptest_config(ProptestConfig { cases: common::mutate::cases(64), ..ProptestConfig::default() })]

    #[test]
    fn mutated_fixture_keys_keep_every_naming_rule(
        mutations in proptest::collection::vec(mutation(), 0..24)
    ) {
        let Some(pairs) = fixture_pairs() else { return Ok(()) };
        let mut keys: Vec<Vec<u8>> = pairs.into_iter().map(|(k, _)| k).collect();
        for m in &mutations {
            apply(&mut keys, m);
        }
        let data = InMemoryVersionData::new(keys.iter().enumerate().map(|(i, k)| (k.clone(), i.to_le_bytes().to_vec())));
        let version = Version::new("fuzz", "1", std::time::SystemTime::UNIX_EPOCH, "fuzz", 1, Box::new(data));
        let catalog = Catalog::new();
        catalog.publish(Arc::clone(&version), "fuzz".into(), Duration::from_secs(60));
        let core = FsCore::new(catalog, || {}, CoreOptions::default());
        let mut listed = walk_core(&core, &version);
        let n = listed.len();
        listed.sort();
        listed.dedup();
        prop_assert_eq!(listed.len(), n, "a key was listed twice");
        let distinct: BTreeSet<Vec<u8>> = keys.iter().cloned().collect();
        let expected: BTreeSet<Vec<u8>> =
            distinct.iter().filter(|k| listed_somewhere(k, &distinct)).cloned().collect();
        let root = version_root(&core, &version);
        for key in &expected {
            let flat = naming::flat_name(key);
            if flat.len() <= naming::NAME_MAX {
                let found = core.lookup(root, flat.as_bytes()).unwrap();
                prop_assert!(matches!(found, Entry::Found { .. }), "flat name of {:x?} not found", key);
            }
        }
        let listed_set: BTreeSet<Vec<u8>> = listed.into_iter().collect();
        prop_assert_eq!(listed_set, expected);
    }
}
