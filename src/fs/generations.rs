//! Inode generations: the 20-bit number that stands for a version inside
//! its inode numbers (`fs::inode`).
//!
//! The catalog numbers versions with a plain process-unique id
//! ([`Version::id`]); inode numbers have room for only 20 bits of it, so the
//! mount keeps its own table. A version gets a generation the first time
//! the mount shows it (a LOOKUP, a listing, an attribute) and keeps it while
//! it exists. A generation is reused only when both hold:
//! - the version is gone: nothing holds it any more (the table keeps a weak
//!   reference), so the catalog has dropped it and no request in flight can
//!   still hand out inode numbers for it;
//! - the kernel holds no inode of that generation (no pin, `fs::pins`), so
//!   no cached entry, attribute or page can be confused with the new
//!   version's.
//!
//! So at most [`MAX_GENERATION`] (2^20 - 1) versions can be visible at once:
//! held by the catalog, or by the kernel through a file or directory still
//! in use. Past that, showing one more version fails with EOVERFLOW until
//! one is released. Never-used generations are handed out before freed
//! ones, and freed ones oldest first, so a number is reused as late as
//! possible.
//!
//! Released generations are found a few at a time on each assignment (and
//! by a full pass before giving up), so the table stays proportional to the
//! versions visible, not to every version ever shown.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};

use crate::catalog::Version;
use crate::fs::inode::MAX_GENERATION;

/// How many assigned generations each new assignment checks for reuse.
/// More than one, so released versions are found faster than new ones
/// arrive and the table shrinks back to the visible versions.
const CHECKS_PER_ASSIGNMENT: usize = 4;

/// The generation table; see the module docs.
pub struct Generations {
    table: Mutex<Table>,
}

struct Table {
    /// Largest generation handed out (generations start at 1).
    capacity: u64,
    /// Generation by version id.
    by_id: HashMap<u64, u64>,
    /// What each assigned generation stands for.
    slots: HashMap<u64, Slot>,
    /// The next never-used generation.
    next: u64,
    /// Released generations, oldest first.
    free: VecDeque<u64>,
    /// Assigned generations in the order they are checked for release.
    unchecked: VecDeque<u64>,
}

struct Slot {
    id: u64,
    version: Weak<Version>,
}

/// Every generation is in use; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{visible} versions are visible through the mount, the most it can number")]
pub struct GenerationsExhausted {
    pub visible: u64,
}

impl Default for Generations {
    fn default() -> Self {
        Generations::with_capacity(MAX_GENERATION)
    }
}

impl Generations {
    /// A table handing out generations `1..=capacity` (at most
    /// [`MAX_GENERATION`]; smaller only in tests, to reach reuse quickly).
    pub fn with_capacity(capacity: u64) -> Self {
        Generations {
            table: Mutex::new(Table {
                capacity: capacity.clamp(1, MAX_GENERATION),
                by_id: HashMap::new(),
                slots: HashMap::new(),
                next: 1,
                free: VecDeque::new(),
                unchecked: VecDeque::new(),
            }),
        }
    }

    /// The generation of `version`, assigned now if it has none. `pinned`
    /// says whether the kernel still holds an inode of a generation.
    pub fn assign(
        &self,
        version: &Arc<Version>,
        pinned: impl Fn(u64) -> bool,
    ) -> Result<u64, GenerationsExhausted> {
        let mut table = self.lock();
        if let Some(&generation) = table.by_id.get(&version.id()) {
            return Ok(generation);
        }
        table.release(CHECKS_PER_ASSIGNMENT, &pinned);
        let generation = if table.next <= table.capacity {
            table.next += 1;
            table.next - 1
        } else if let Some(generation) = table.free.pop_front() {
            generation
        } else {
            let all = table.unchecked.len();
            table.release(all, &pinned);
            table.free.pop_front().ok_or(GenerationsExhausted {
                visible: table.slots.len() as u64,
            })?
        };
        table.by_id.insert(version.id(), generation);
        table.slots.insert(
            generation,
            Slot {
                id: version.id(),
                version: Arc::downgrade(version),
            },
        );
        table.unchecked.push_back(generation);
        Ok(generation)
    }

    /// The generation of `version`, if it has one.
    pub fn get(&self, version: &Version) -> Option<u64> {
        self.lock().by_id.get(&version.id()).copied()
    }

    /// The version `generation` stands for, if it is assigned and the
    /// version still exists (held by someone: check by whom).
    pub fn version(&self, generation: u64) -> Option<Arc<Version>> {
        self.lock().slots.get(&generation)?.version.upgrade()
    }

    /// Number of generations assigned (versions the table still tracks).
    pub fn assigned(&self) -> usize {
        self.lock().slots.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Table {
    /// Checks up to `count` assigned generations, oldest checked first,
    /// freeing those whose version is gone and that the kernel no longer
    /// references.
    fn release(&mut self, count: usize, pinned: &impl Fn(u64) -> bool) {
        for _ in 0..count.min(self.unchecked.len()) {
            let Some(generation) = self.unchecked.pop_front() else {
                return;
            };
            let gone = self
                .slots
                .get(&generation)
                .is_none_or(|slot| slot.version.strong_count() == 0);
            if gone && !pinned(generation) {
                if let Some(slot) = self.slots.remove(&generation) {
                    self.by_id.remove(&slot.id);
                }
                self.free.push_back(generation);
            } else {
                self.unchecked.push_back(generation);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::InMemoryVersionData;
    use std::time::SystemTime;

    fn version(name: &str) -> Arc<Version> {
        let pairs = [(b"k".to_vec(), b"v".to_vec())];
        InMemoryVersionData::version("db", name, SystemTime::UNIX_EPOCH, pairs)
    }

    #[test]
    fn a_version_keeps_its_generation() {
        let table = Generations::with_capacity(4);
        let v = version("1");
        let g = table.assign(&v, |_| false).unwrap();
        assert_eq!(g, 1);
        assert_eq!(table.assign(&v, |_| false), Ok(1));
        assert_eq!(table.get(&v), Some(1));
        assert!(Arc::ptr_eq(&table.version(1).unwrap(), &v));
    }

    #[test]
    fn generations_are_reused_only_when_the_version_is_gone_and_unpinned() {
        let table = Generations::with_capacity(2);
        let a = version("a");
        let b = version("b");
        assert_eq!(table.assign(&a, |_| false), Ok(1));
        assert_eq!(table.assign(&b, |_| false), Ok(2));
        // Both alive: no third version.
        let c = version("c");
        assert_eq!(
            table.assign(&c, |_| false),
            Err(GenerationsExhausted { visible: 2 })
        );
        // `a` is gone but the kernel still references generation 1.
        drop(a);
        assert!(table.assign(&c, |g| g == 1).is_err());
        // Released: generation 1 now numbers `c`.
        assert_eq!(table.assign(&c, |_| false), Ok(1));
        assert!(Arc::ptr_eq(&table.version(1).unwrap(), &c));
        assert_eq!(table.get(&b), Some(2));
    }

    #[test]
    fn the_table_shrinks_back_to_the_visible_versions() {
        let table = Generations::default();
        let kept = version("kept");
        table.assign(&kept, |_| false).unwrap();
        for i in 0..1000 {
            let v = version(&i.to_string());
            table.assign(&v, |_| false).unwrap();
        }
        // Each assignment checks a few: the dead ones do not pile up.
        assert!(table.assigned() < 10, "{}", table.assigned());
        assert_eq!(table.get(&kept), Some(1));
    }
}
