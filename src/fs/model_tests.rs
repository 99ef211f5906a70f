//! A stateful model test of the core over a real catalog, without a mount:
//! random sequences of catalog changes (publishes of small random key sets,
//! keys with `/` included; database removals; expiry and deletion of
//! retired versions) and kernel-like requests (lookups along paths, reads,
//! attributes, listings resumed at random offsets, READDIRPLUS, `.status`,
//! FORGET), each checked against a plain model:
//! - what an inode shows (values, sizes, listings) always comes from the
//!   version it was looked up in, however many versions came since, and
//!   even when generations are reused (the table is tiny here);
//! - listings are complete (a walk finds every reachable key once), in key
//!   order, resumable from any offset, and every listed name looks up to
//!   the listed inode;
//! - a retired version is deleted exactly when nothing references it any
//!   more, and after every reference is forgotten everything can be;
//! - numbering a version fails (EOVERFLOW) exactly when every generation
//!   numbers a version still held or referenced.
//!
//! Cases are few by default so CI stays fast; `PROPTEST_CASES` raises them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use proptest::prelude::*;

use crate::catalog::{Catalog, InMemoryVersionData};
use crate::fs::attr::{CoreOptions, FileKind};
use crate::fs::core::{DirEntry, Entry, FsCore};
use crate::fs::generations::Generations;
use crate::fs::inode;
use crate::naming;

const DBS: usize = 2;

/// Default number of cases (well under a second in all); each runs up to
/// 80 steps.
const DEFAULT_CASES: u32 = 64;

fn cases() -> u32 {
    crate::test_support::proptest_cases(DEFAULT_CASES)
}

/// Which name a lookup in a directory asks for.
#[derive(Debug, Clone)]
enum Name {
    /// The n-th name the directory lists.
    Listed(usize),
    /// The flat name of the n-th key under the directory.
    Key(usize),
    /// Arbitrary bytes (percent escapes included).
    Raw(Vec<u8>),
}

#[derive(Debug, Clone)]
enum Step {
    Publish {
        db: usize,
        keys: BTreeSet<Vec<u8>>,
    },
    RemoveDb {
        db: usize,
    },
    Expire,
    LookupSymlink {
        db: usize,
    },
    LookupVersion {
        db: usize,
        pick: usize,
    },
    LookupChild {
        dir: usize,
        name: Name,
    },
    Read {
        file: usize,
        offset: u64,
        size: u32,
    },
    Getattr {
        handle: usize,
    },
    Readdir {
        dir: usize,
        resume: usize,
        plus: bool,
    },
    ListRoot {
        plus: bool,
    },
    ListDb {
        db: usize,
        plus: bool,
    },
    Walk {
        dir: usize,
    },
    Status,
    Forget {
        handle: usize,
    },
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![Just(b'a'), Just(b'b'), Just(b'/'), Just(b'.'), Just(b'%')],
        0..6,
    )
}

fn name() -> impl Strategy<Value = Name> {
    prop_oneof![
        any::<usize>().prop_map(Name::Listed),
        any::<usize>().prop_map(Name::Key),
        proptest::collection::vec(
            prop_oneof![
                Just(b'a'),
                Just(b'b'),
                Just(b'.'),
                Just(b'%'),
                Just(b'2'),
                Just(b'F'),
            ],
            1..6
        )
        .prop_map(Name::Raw),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..DBS, proptest::collection::btree_set(key(), 0..7))
            .prop_map(|(db, keys)| Step::Publish { db, keys }),
        1 => (0..DBS).prop_map(|db| Step::RemoveDb { db }),
        2 => Just(Step::Expire),
        3 => (0..DBS).prop_map(|db| Step::LookupSymlink { db }),
        3 => (0..DBS, any::<usize>()).prop_map(|(db, pick)| Step::LookupVersion { db, pick }),
        8 => (any::<usize>(), name()).prop_map(|(dir, name)| Step::LookupChild { dir, name }),
        3 => (any::<usize>(), 0..8u64, 0..8u32)
            .prop_map(|(file, offset, size)| Step::Read { file, offset, size }),
        2 => any::<usize>().prop_map(|handle| Step::Getattr { handle }),
        3 => (any::<usize>(), any::<usize>(), any::<bool>())
            .prop_map(|(dir, resume, plus)| Step::Readdir { dir, resume, plus }),
        1 => any::<bool>().prop_map(|plus| Step::ListRoot { plus }),
        1 => (0..DBS, any::<bool>()).prop_map(|(db, plus)| Step::ListDb { db, plus }),
        1 => any::<usize>().prop_map(|dir| Step::Walk { dir }),
        1 => Just(Step::Status),
        4 => any::<usize>().prop_map(|handle| Step::Forget { handle }),
    ]
}

/// A published version, as the model knows it.
struct ModelVersion {
    db: usize,
    name: String,
    keys: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// What a kernel reference stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum What {
    Symlink,
    Root,
    /// A prefix directory, with its prefix (ending in `/`).
    Dir(Vec<u8>),
    File(Vec<u8>),
    VersionFile,
    /// A `.status` snapshot and the bytes first read from it.
    Status(Vec<u8>),
}

/// One kernel reference (one LOOKUP or READDIRPLUS entry).
#[derive(Debug, Clone)]
struct Handle {
    ino: u64,
    version: Option<usize>,
    what: What,
}

/// What the model says a name in a directory is.
#[derive(Debug, PartialEq, Eq)]
enum Expected {
    VersionFile,
    File(Vec<u8>),
    Dir(Vec<u8>),
    Missing,
}

struct Harness {
    catalog: Arc<Catalog>,
    core: FsCore,
    generations: usize,
    versions: Vec<ModelVersion>,
    current: [Option<usize>; DBS],
    retired: BTreeSet<usize>,
    /// Versions the mount has numbered and that still have their number.
    numbered: BTreeSet<usize>,
    handles: Vec<Handle>,
}

fn db_name(db: usize) -> String {
    format!("db{db}")
}

fn value_of(version: &str, key: &[u8]) -> Vec<u8> {
    format!("{version}:{key:?}").into_bytes()
}

fn found(entry: Entry) -> crate::fs::attr::Attr {
    match entry {
        Entry::Found { attr, .. } => attr,
        Entry::Negative { .. } => panic!("expected an entry"),
    }
}

impl Harness {
    fn new(generations: usize) -> Self {
        let catalog = Catalog::new();
        let core = FsCore::with_generations(
            Arc::clone(&catalog),
            || {},
            CoreOptions { uid: 1, gid: 1 },
            Generations::with_capacity(generations as u64),
        );
        Harness {
            catalog,
            core,
            generations,
            versions: Vec::new(),
            current: [None; DBS],
            retired: BTreeSet::new(),
            numbered: BTreeSet::new(),
            handles: Vec::new(),
        }
    }

    fn held(&self, v: usize) -> bool {
        self.current.contains(&Some(v)) || self.retired.contains(&v)
    }

    fn referenced(&self, v: usize) -> bool {
        self.handles.iter().any(|h| h.version == Some(v))
    }

    /// Whether the mount can number `v` now (and records that it did).
    fn number(&mut self, v: usize) -> bool {
        if self.numbered.contains(&v) {
            return true;
        }
        let live = self
            .numbered
            .iter()
            .filter(|&&n| self.held(n) || self.referenced(n))
            .count();
        if live >= self.generations {
            return false;
        }
        self.numbered.insert(v);
        true
    }

    /// Held versions of `db`, in name order (what `.versions/<db>` lists).
    fn held_of(&self, db: usize) -> Vec<usize> {
        let mut held: Vec<usize> = self
            .current
            .iter()
            .flatten()
            .chain(&self.retired)
            .copied()
            .filter(|&v| self.versions[v].db == db)
            .collect();
        held.sort_by(|&a, &b| self.versions[a].name.cmp(&self.versions[b].name));
        held
    }

    /// The decoding rules of `docs/NAMING.md`, written out plainly.
    fn expect(&self, v: usize, prefix: &[u8], name: &[u8]) -> Expected {
        if prefix.is_empty() && name == naming::VERSION_FILE.as_bytes() {
            return Expected::VersionFile;
        }
        let keys = &self.versions[v].keys;
        let candidate = [prefix, &naming::decode(name)].concat();
        if keys.contains_key(&candidate) {
            return Expected::File(candidate);
        }
        let dir = [&candidate[..], b"/"].concat();
        match keys.range(dir.clone()..).next() {
            Some((k, _)) if k.starts_with(&dir) => Expected::Dir(dir),
            _ => Expected::Missing,
        }
    }

    fn content(&self, handle: &Handle) -> Option<Vec<u8>> {
        let v = handle.version.map(|v| &self.versions[v]);
        match (&handle.what, v) {
            (What::File(key), Some(v)) => Some(v.keys[key].clone()),
            (What::VersionFile, Some(v)) => Some(format!("{}\n", v.name).into_bytes()),
            (What::Status(bytes), _) => Some(bytes.clone()),
            _ => None,
        }
    }

    fn pick(&self, n: usize, filter: impl Fn(&Handle) -> bool) -> Option<Handle> {
        let matching: Vec<&Handle> = self.handles.iter().filter(|h| filter(h)).collect();
        (!matching.is_empty()).then(|| matching[n % matching.len()].clone())
    }

    fn pick_dir(&self, n: usize) -> Option<(Handle, usize, Vec<u8>)> {
        let handle = self.pick(n, |h| matches!(h.what, What::Root | What::Dir(_)))?;
        let prefix = match &handle.what {
            What::Dir(prefix) => prefix.clone(),
            _ => Vec::new(),
        };
        Some((handle.clone(), handle.version?, prefix))
    }

    fn list(&self, ino: u64, offset: u64) -> Vec<DirEntry> {
        let mut out = Vec::new();
        self.core
            .readdir(ino, offset, |e| {
                out.push(e);
                true
            })
            .unwrap();
        out
    }

    fn run(&mut self, step: &Step) {
        match step {
            Step::Publish { db, keys } => {
                let name = format!("v{:03}", self.versions.len());
                let pairs: BTreeMap<Vec<u8>, Vec<u8>> = keys
                    .iter()
                    .map(|k| (k.clone(), value_of(&name, k)))
                    .collect();
                let version = InMemoryVersionData::version(
                    &db_name(*db),
                    &name,
                    SystemTime::UNIX_EPOCH,
                    pairs.clone(),
                );
                self.catalog.publish(version, String::new(), Duration::ZERO);
                self.versions.push(ModelVersion {
                    db: *db,
                    name,
                    keys: pairs,
                });
                if let Some(previous) = self.current[*db].replace(self.versions.len() - 1) {
                    self.retired.insert(previous);
                }
            }
            Step::RemoveDb { db } => {
                self.catalog.remove_database(&db_name(*db), Duration::ZERO);
                if let Some(previous) = self.current[*db].take() {
                    self.retired.insert(previous);
                }
            }
            Step::Expire => self.expire(),
            Step::LookupSymlink { db } => {
                let result = self.core.lookup(inode::ROOT, db_name(*db).as_bytes());
                let current = self.current[*db];
                match current {
                    None => assert_eq!(result.unwrap_err().errno(), libc::ENOENT),
                    Some(v) if !self.number(v) => {
                        assert_eq!(result.unwrap_err().errno(), libc::EOVERFLOW)
                    }
                    Some(v) => {
                        let attr = found(result.unwrap());
                        assert_eq!(attr.kind, FileKind::Symlink);
                        let target =
                            format!(".versions/{}/{}", db_name(*db), self.versions[v].name);
                        assert_eq!(self.core.readlink(attr.ino).unwrap(), target.as_bytes());
                        self.handles.push(Handle {
                            ino: attr.ino,
                            version: Some(v),
                            what: What::Symlink,
                        });
                        // And on, as a path walk through the link does.
                        let held = self.held_of(*db);
                        let pick = held.iter().position(|&h| h == v).unwrap_or_default();
                        self.run(&Step::LookupVersion { db: *db, pick });
                    }
                }
            }
            Step::LookupVersion { db, pick } => {
                let versions = found(self.core.lookup(inode::ROOT, b".versions").unwrap());
                let held = self.held_of(*db);
                let db_dir = self.core.lookup(versions.ino, db_name(*db).as_bytes());
                if held.is_empty() {
                    assert_eq!(db_dir.unwrap_err().errno(), libc::ENOENT);
                    return;
                }
                let db_dir = found(db_dir.unwrap());
                let v = held[pick % held.len()];
                let result = self
                    .core
                    .lookup(db_dir.ino, self.versions[v].name.as_bytes());
                if !self.number(v) {
                    assert_eq!(result.unwrap_err().errno(), libc::EOVERFLOW);
                    return;
                }
                let attr = found(result.unwrap());
                assert_eq!(attr.kind, FileKind::Directory);
                self.handles.push(Handle {
                    ino: attr.ino,
                    version: Some(v),
                    what: What::Root,
                });
            }
            Step::LookupChild { dir, name } => {
                let Some((handle, v, prefix)) = self.pick_dir(*dir) else {
                    return;
                };
                let name: Vec<u8> = match name {
                    Name::Listed(n) => {
                        let listed: Vec<DirEntry> = self.list(handle.ino, 2);
                        if listed.is_empty() {
                            return;
                        }
                        listed[n % listed.len()].name.clone().into_bytes()
                    }
                    Name::Key(n) => {
                        let under: Vec<&Vec<u8>> = self.versions[v]
                            .keys
                            .keys()
                            .filter(|k| k.starts_with(&prefix) && k.len() > prefix.len())
                            .collect();
                        if under.is_empty() {
                            return;
                        }
                        naming::flat_name(&under[n % under.len()][prefix.len()..]).into_bytes()
                    }
                    Name::Raw(bytes) => bytes.clone(),
                };
                if name == b"." || name == b".." || name.len() > naming::NAME_MAX {
                    return; // the kernel never asks for these
                }
                self.lookup_child(&handle, v, &prefix, &name);
            }
            Step::Read { file, offset, size } => {
                let Some(handle) = self.pick(*file, |h| self.content(h).is_some()) else {
                    return;
                };
                let content = self.content(&handle).unwrap_or_default();
                let read = self
                    .core
                    .read(handle.ino, *offset, *size, |b| b.to_vec())
                    .unwrap();
                let start = (*offset as usize).min(content.len());
                let end = (start + *size as usize).min(content.len());
                assert_eq!(read, &content[start..end], "{handle:?}");
            }
            Step::Getattr { handle } => {
                let Some(handle) = self.pick(*handle, |_| true) else {
                    return;
                };
                let (attr, _) = self.core.getattr(handle.ino).unwrap();
                assert_eq!(attr.ino, handle.ino);
                match &handle.what {
                    What::Root | What::Dir(_) => assert_eq!(attr.kind, FileKind::Directory),
                    What::Symlink => assert_eq!(attr.kind, FileKind::Symlink),
                    _ => {
                        let content = self.content(&handle).unwrap_or_default();
                        assert_eq!(attr.size, content.len() as u64, "{handle:?}");
                    }
                }
            }
            Step::Readdir { dir, resume, plus } => {
                let Some((handle, v, prefix)) = self.pick_dir(*dir) else {
                    return;
                };
                let all = self.list(handle.ino, 0);
                self.check_listing(&handle, v, &prefix, &all);
                let i = resume % all.len();
                assert_eq!(self.list(handle.ino, all[i].next), all[i + 1..]);
                if *plus {
                    let mut listed = Vec::new();
                    self.core
                        .readdirplus(handle.ino, 0, |e| {
                            listed.push(e);
                            true
                        })
                        .unwrap();
                    assert_eq!(listed, all);
                    for entry in &all[2..] {
                        let what = match self.expect(v, &prefix, entry.name.as_bytes()) {
                            Expected::VersionFile => What::VersionFile,
                            Expected::File(key) => What::File(key),
                            Expected::Dir(dir) => What::Dir(dir),
                            Expected::Missing => unreachable!("checked by check_listing"),
                        };
                        self.handles.push(Handle {
                            ino: entry.attr.ino,
                            version: Some(v),
                            what,
                        });
                    }
                }
            }
            Step::ListRoot { plus } => self.list_root(*plus),
            Step::ListDb { db, plus } => self.list_db(*db, *plus),
            Step::Walk { dir } => {
                let Some(handle) = self.pick(*dir, |h| h.what == What::Root) else {
                    return;
                };
                let v = handle.version.unwrap_or_default();
                let mut keys = Vec::new();
                self.walk(handle.ino, v, b"", &mut keys);
                let mut sorted = keys.clone();
                sorted.sort();
                sorted.dedup();
                assert_eq!(sorted.len(), keys.len(), "a key was listed twice");
                let expected: Vec<Vec<u8>> = self.versions[v]
                    .keys
                    .keys()
                    .filter(|k| naming::is_reachable(k))
                    .cloned()
                    .collect();
                assert_eq!(sorted, expected);
            }
            Step::Status => {
                let attr = found(self.core.lookup(inode::ROOT, b".status").unwrap());
                let bytes = self
                    .core
                    .read(attr.ino, 0, 1 << 20, |b| b.to_vec())
                    .unwrap();
                assert_eq!(attr.size, bytes.len() as u64);
                let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                let dbs = json["databases"].as_array().unwrap().len();
                let known = self.catalog.database_names().len();
                assert_eq!(dbs, known);
                self.handles.push(Handle {
                    ino: attr.ino,
                    version: None,
                    what: What::Status(bytes),
                });
            }
            Step::Forget { handle } => {
                if self.handles.is_empty() {
                    return;
                }
                let handle = self.handles.swap_remove(handle % self.handles.len());
                self.core.forget(handle.ino, 1);
            }
        }
    }

    fn lookup_child(&mut self, handle: &Handle, v: usize, prefix: &[u8], name: &[u8]) {
        let entry = self.core.lookup(handle.ino, name).unwrap();
        let what = match self.expect(v, prefix, name) {
            Expected::Missing => {
                assert!(
                    matches!(entry, Entry::Negative { .. }),
                    "{name:?}: {entry:?}"
                );
                return;
            }
            Expected::VersionFile => What::VersionFile,
            Expected::File(key) => What::File(key),
            Expected::Dir(dir) => What::Dir(dir),
        };
        let attr = found(entry);
        let child = Handle {
            ino: attr.ino,
            version: Some(v),
            what,
        };
        match self.content(&child) {
            Some(content) => {
                assert_eq!(attr.kind, FileKind::File);
                assert_eq!(attr.size, content.len() as u64);
                let read = self
                    .core
                    .read(attr.ino, 0, 1 << 16, |b| b.to_vec())
                    .unwrap();
                assert_eq!(read, content, "{name:?} in {child:?}");
            }
            None => assert_eq!(attr.kind, FileKind::Directory),
        }
        self.handles.push(child);
    }

    /// Checks one full listing of a version directory against the model.
    fn check_listing(&self, handle: &Handle, v: usize, prefix: &[u8], all: &[DirEntry]) {
        assert_eq!(all[0].name, ".");
        assert_eq!(all[1].name, "..");
        let mut names = BTreeSet::new();
        let mut last_key: Option<Vec<u8>> = None;
        for (i, entry) in all.iter().enumerate().skip(2) {
            assert!(
                names.insert(entry.name.clone()),
                "{} listed twice",
                entry.name
            );
            if prefix.is_empty() && i == 2 {
                assert_eq!(entry.name, naming::VERSION_FILE);
                continue;
            }
            assert!(!entry.name.starts_with('.'), "{:?}", entry.name);
            assert!(
                entry.name.chars().all(|c| !c.is_control()),
                "{:?}",
                entry.name
            );
            let keys = &self.versions[v].keys;
            let first_key = match self.expect(v, prefix, entry.name.as_bytes()) {
                Expected::File(key) => {
                    assert_eq!(entry.attr.kind, FileKind::File);
                    assert_eq!(entry.attr.size, keys[&key].len() as u64);
                    key
                }
                Expected::Dir(dir) => {
                    assert_eq!(entry.attr.kind, FileKind::Directory);
                    keys.range(dir.clone()..)
                        .next()
                        .map(|(k, _)| k.clone())
                        .unwrap_or(dir)
                }
                other => panic!("listed {:?} looks up to {other:?}", entry.name),
            };
            // In key order (a directory by its first key).
            if let Some(last) = &last_key {
                assert!(*last <= first_key, "{:?} out of order", entry.name);
            }
            last_key = Some(first_key);
            // The listed name looks up to the listed inode.
            let looked_up = found(self.core.lookup(handle.ino, entry.name.as_bytes()).unwrap());
            assert_eq!(looked_up.ino, entry.attr.ino, "{:?}", entry.name);
            self.core.forget(looked_up.ino, 1);
        }
    }

    /// Every file under a directory, walking listings and lookups, checking
    /// each value.
    fn walk(&self, ino: u64, v: usize, prefix: &[u8], out: &mut Vec<Vec<u8>>) {
        for entry in self.list(ino, 2) {
            if prefix.is_empty() && entry.name == naming::VERSION_FILE {
                continue;
            }
            let attr = found(self.core.lookup(ino, entry.name.as_bytes()).unwrap());
            match self.expect(v, prefix, entry.name.as_bytes()) {
                Expected::File(key) => {
                    let read = self
                        .core
                        .read(attr.ino, 0, 1 << 16, |b| b.to_vec())
                        .unwrap();
                    assert_eq!(read, self.versions[v].keys[&key]);
                    out.push(key);
                }
                Expected::Dir(dir) => self.walk(attr.ino, v, &dir, out),
                other => panic!("listed {:?} looks up to {other:?}", entry.name),
            }
            self.core.forget(attr.ino, 1);
        }
    }

    fn list_root(&mut self, plus: bool) {
        let served: Vec<(usize, usize)> = (0..DBS)
            .filter_map(|db| self.current[db].map(|v| (db, v)))
            .collect();
        let mut listed = Vec::new();
        let result = if plus {
            self.core.readdirplus(inode::ROOT, 0, |e| {
                listed.push(e);
                true
            })
        } else {
            self.core.readdir(inode::ROOT, 0, |e| {
                listed.push(e);
                true
            })
        };
        for &(_, v) in &served {
            if !self.number(v) {
                assert_eq!(result.unwrap_err().errno(), libc::EOVERFLOW);
                return;
            }
        }
        result.unwrap();
        let names: Vec<&str> = listed.iter().map(|e| e.name.as_str()).collect();
        let mut expected = vec![".", "..", ".refresh", ".status", ".versions"];
        let served_names: Vec<String> = served.iter().map(|&(db, _)| db_name(db)).collect();
        expected.extend(served_names.iter().map(String::as_str));
        assert_eq!(names, expected);
        for (entry, &(db, v)) in listed[5..].iter().zip(&served) {
            let target = format!(".versions/{}/{}", db_name(db), self.versions[v].name);
            assert_eq!(
                self.core.readlink(entry.attr.ino).unwrap(),
                target.as_bytes()
            );
            if plus {
                self.handles.push(Handle {
                    ino: entry.attr.ino,
                    version: Some(v),
                    what: What::Symlink,
                });
            }
        }
        let status = &listed[3];
        let bytes = self
            .core
            .read(status.attr.ino, 0, 1 << 20, |b| b.to_vec())
            .unwrap();
        assert_eq!(status.attr.size, bytes.len() as u64);
        if plus {
            self.handles.push(Handle {
                ino: status.attr.ino,
                version: None,
                what: What::Status(bytes),
            });
        }
    }

    fn list_db(&mut self, db: usize, plus: bool) {
        let versions = found(self.core.lookup(inode::ROOT, b".versions").unwrap());
        let held = self.held_of(db);
        let db_dir = self.core.lookup(versions.ino, db_name(db).as_bytes());
        if held.is_empty() {
            assert_eq!(db_dir.unwrap_err().errno(), libc::ENOENT);
            return;
        }
        let db_dir = found(db_dir.unwrap());
        let mut listed = Vec::new();
        let result = if plus {
            self.core.readdirplus(db_dir.ino, 0, |e| {
                listed.push(e);
                true
            })
        } else {
            self.core.readdir(db_dir.ino, 0, |e| {
                listed.push(e);
                true
            })
        };
        for &v in &held {
            if !self.number(v) {
                assert_eq!(result.unwrap_err().errno(), libc::EOVERFLOW);
                return;
            }
        }
        result.unwrap();
        let names: Vec<&str> = listed[2..].iter().map(|e| e.name.as_str()).collect();
        let expected: Vec<&str> = held
            .iter()
            .map(|&v| self.versions[v].name.as_str())
            .collect();
        assert_eq!(names, expected);
        if plus {
            for (entry, &v) in listed[2..].iter().zip(&held) {
                self.handles.push(Handle {
                    ino: entry.attr.ino,
                    version: Some(v),
                    what: What::Root,
                });
            }
        }
    }

    /// Expires retired versions: exactly those nothing references go.
    fn expire(&mut self) {
        let later = Instant::now() + Duration::from_secs(1);
        let mut expired: Vec<(String, String)> = self
            .catalog
            .take_expired(later)
            .iter()
            .map(|v| (v.db().to_string(), v.name().to_string()))
            .collect();
        for (db, name) in &expired {
            self.catalog.deleted(db, name);
        }
        expired.sort();
        let gone: Vec<usize> = self
            .retired
            .iter()
            .copied()
            .filter(|&v| !self.referenced(v))
            .collect();
        let mut expected: Vec<(String, String)> = gone
            .iter()
            .map(|&v| (db_name(self.versions[v].db), self.versions[v].name.clone()))
            .collect();
        expected.sort();
        assert_eq!(expired, expected);
        for v in gone {
            self.retired.remove(&v);
        }
        let live: Vec<usize> = self
            .numbered
            .iter()
            .copied()
            .filter(|&v| self.held(v) || self.referenced(v))
            .collect();
        self.numbered = live.into_iter().collect();
    }

    /// Checks the pins against the handles.
    fn check_pins(&self) {
        let versioned = self.handles.iter().filter(|h| h.version.is_some()).count();
        let counted: i64 = self.core.pin_counts().iter().map(|&(_, n)| n).sum();
        assert_eq!(
            counted,
            versioned as i64,
            "pins {:?}",
            self.core.pin_counts()
        );
        let versions: BTreeSet<usize> = self.handles.iter().filter_map(|h| h.version).collect();
        assert_eq!(self.core.pinned_versions(), versions.len());
    }

    /// Forgets every reference; then everything retired can be deleted,
    /// and so can every database.
    fn finish(&mut self) {
        for handle in std::mem::take(&mut self.handles) {
            self.core.forget(handle.ino, 1);
        }
        self.check_pins();
        assert!(self.core.status_snapshots() <= 1);
        self.expire();
        assert!(self.retired.is_empty());
        for db in 0..DBS {
            self.run(&Step::RemoveDb { db });
        }
        self.expire();
        assert!(self.catalog.database_names().is_empty());
        // Every generation is free again.
        self.numbered.clear();
        for _ in 0..=self.generations {
            self.run(&Step::Publish {
                db: 0,
                keys: BTreeSet::from([b"k".to_vec()]),
            });
            self.run(&Step::LookupSymlink { db: 0 });
            self.run(&Step::Forget { handle: 0 });
            self.expire();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn the_core_agrees_with_a_plain_model(
        generations in 2..6usize,
        steps in proptest::collection::vec(step(), 1..80),
    ) {
        let mut harness = Harness::new(generations);
        for step in &steps {
            harness.run(step);
            harness.check_pins();
        }
        harness.finish();
    }
}
