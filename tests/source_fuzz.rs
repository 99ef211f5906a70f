//! Fuzzing the source root's input handling with proptest (cargo-fuzz needs
//! nightly): random source URIs must parse or fail cleanly, and random
//! object trees (odd names, hidden files, nesting, the real sequins fixture
//! keys with mutations) must list without panics and only ever yield names
//! that follow the layout rules.
//!
//! Cases default to a CI-friendly count; `PROPTEST_CASES` raises it.

mod common;

use std::sync::Arc;

use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use proptest::prelude::*;
use sequinsfs::source::names::{is_data_file_name, is_valid_name};
use sequinsfs::source::{Source, SourceOptions};

fn cases(default: u32) -> ProptestConfig {
    ProptestConfig {
        cases: common::mutate::cases(default),
        ..ProptestConfig::default()
    }
}

/// Keys of the real fixture roots, relative to the root, or a small stand-in.
fn seed_keys() -> Vec<String> {
    let mut keys = vec![
        "baby-names/1/part-00000".to_string(),
        "baby-names/1/_SUCCESS".to_string(),
        "test.sequencefile".to_string(),
    ];
    if let Some(fixtures) = std::env::var_os("SEQUINSFS_FIXTURES") {
        let root = std::path::Path::new(&fixtures).join("sequins/partially_healthy");
        let mut pending = vec![root.clone()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    pending.push(path);
                } else if let Ok(relative) = path.strip_prefix(&root) {
                    keys.push(relative.to_string_lossy().into_owned());
                }
            }
        }
    }
    keys
}

/// A mutation of a key: replace, insert or delete characters, or add
/// segments, from an alphabet heavy in the characters that matter.
fn mutate(key: &str, ops: &[(u8, usize, char)]) -> String {
    let mut chars: Vec<char> = key.chars().collect();
    for &(op, at, c) in ops {
        let at = if chars.is_empty() {
            0
        } else {
            at % (chars.len() + 1)
        };
        match op % 4 {
            0 if at < chars.len() => chars[at] = c,
            1 => chars.insert(at, c),
            2 if at < chars.len() => {
                chars.remove(at);
            }
            _ => chars.extend(['/', c]),
        }
    }
    chars.into_iter().collect()
}

fn odd_char() -> impl Strategy<Value = char> {
    prop_oneof![
        Just('/'),
        Just('_'),
        Just('.'),
        Just('-'),
        Just('%'),
        Just(' '),
        Just('{'),
        Just('#'),
        Just('\u{e9}'),
        proptest::char::range('0', '9'),
        proptest::char::range('a', 'c'),
        any::<char>(),
    ]
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn any_uri_parses_or_fails_cleanly(uri in "(s3|s3a|file|hdfs|gs|)(://)?[a-z0-9/._%{} -]{0,30}") {
        if let Ok(source) = Source::open(&uri, SourceOptions::default()) {
            let _ = source.display_path("db", Some("1"));
        }
    }

    #[test]
    fn any_object_tree_lists_by_the_rules(
        picks in proptest::collection::vec(
            (any::<prop::sample::Index>(), proptest::collection::vec((any::<u8>(), any::<usize>(), odd_char()), 0..4)),
            1..40,
        )
    ) {
        let seeds = seed_keys();
        let keys: Vec<String> = picks
            .iter()
            .map(|(index, ops)| mutate(index.get::<String>(&seeds), ops))
            .collect();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let store = Arc::new(InMemory::new());
            let mut stored = Vec::new();
            for key in &keys {
                // Keys object_store cannot represent are not listable anyway;
                // it drops a trailing `/`.
                if let Ok(path) = ObjectPath::parse(key) {
                    store.put(&path, b"data".to_vec().into()).await.unwrap();
                    stored.push(path.to_string());
                }
            }
            let store: Arc<dyn ObjectStore> = store;
            for options in [SourceOptions::default(), SourceOptions { require_success_file: true, ..SourceOptions::default() }] {
                let source = Source::with_store(store.clone(), "", "mem://", options).unwrap();
                let dbs = source.list_databases().await.unwrap();
                prop_assert!(dbs.windows(2).all(|w| w[0] < w[1]));
                for db in &dbs {
                    prop_assert!(is_valid_name(db), "{db:?}");
                    let versions = source.list_versions(db).await.unwrap();
                    prop_assert!(versions.windows(2).all(|w| w[0] < w[1]));
                    for version in &versions {
                        prop_assert!(is_valid_name(version), "{version:?}");
                        for file in source.list_files(db, version).await.unwrap() {
                            prop_assert!(is_data_file_name(&file.name), "{file:?}");
                            let key = format!("{db}/{version}/{}", file.name);
                            prop_assert!(stored.contains(&key), "{key} was never stored");
                        }
                    }
                }
            }
            Ok(())
        })?;
    }
}
