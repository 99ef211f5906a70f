//! Stateless inode numbers: every number says what it stands for.
//!
//! With entry and attribute TTLs of a hundred years the kernel may keep
//! millions of inodes of a version. A table from inode number to key would
//! grow with every key ever looked up; instead the number itself encodes the
//! version (its generation, see `fs::generations`) and the key's position
//! in that version's sorted key index, so any inode is decoded without a
//! table and FORGET costs nothing per key.
//!
//! Layout of the 64 bits:
//!
//! ```text
//! bit 63 = 0, bit 62 = 0: fixed inodes (1..=15), `.versions/<db>` directories (16 + db id)
//! bit 63 = 0, bit 62 = 1: a `.status` snapshot (payload: its 62-bit sequence number)
//! bit 63 = 1: | generation: 20 | kind: 3 | payload: 40 |
//!   kind 0 symlink `<db>` -> this version        payload 0
//!   kind 1 version root directory                payload 0
//!   kind 2 `.version` of this version            payload 0
//!   kind 3 key file                              payload = ordinal (40 bits)
//!   kind 4 prefix directory                      payload = first ordinal (32) | depth (8)
//! ```
//!
//! A prefix directory (`1881/` in a version with key `1881/boy`) is named by
//! the first key under it and its depth (the number of `/` in the prefix):
//! the prefix is that key cut after its depth-th `/`. Versions are immutable,
//! so the numbers never change meaning while the version exists, and a
//! generation is only reused once the kernel holds no inode of its previous
//! version, so an old version's numbers never alias a new one's.

/// The mount root.
pub const ROOT: u64 = 1;
/// `.versions/`.
pub const VERSIONS_DIR: u64 = 2;
/// `.refresh`.
pub const REFRESH_FILE: u64 = 3;
// 4 was `.status` when it had one inode; it is never handed out now.
/// First number of a `.versions/<db>` directory (plus the db id).
const DB_DIR_BASE: u64 = 16;

const VERSION_BIT: u64 = 1 << 63;
const STATUS_BIT: u64 = 1 << 62;
const GENERATION_BITS: u32 = 20;
const KIND_BITS: u32 = 3;
const PAYLOAD_BITS: u32 = 40;
const ORDINAL_BITS_IN_DIR: u32 = 32;
const DEPTH_BITS: u32 = 8;

/// Largest generation an inode can carry: at most this many versions can be
/// visible through the mount at once (generations start at 1).
pub const MAX_GENERATION: u64 = (1 << GENERATION_BITS) - 1;
/// Largest key ordinal a file inode can carry.
pub const MAX_FILE_ORDINAL: u64 = (1 << PAYLOAD_BITS) - 1;
/// Largest first-key ordinal of a prefix directory.
pub const MAX_DIR_ORDINAL: u64 = (1 << ORDINAL_BITS_IN_DIR) - 1;
/// Deepest prefix directory.
pub const MAX_DEPTH: u64 = (1 << DEPTH_BITS) - 1;
/// Largest `.status` snapshot sequence number.
pub const MAX_STATUS_SEQUENCE: u64 = STATUS_BIT - 1;

/// What an inode number stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Inode {
    Root,
    VersionsDir,
    RefreshFile,
    /// One frozen `.status` document (see `fs::control`).
    StatusSnapshot(u64),
    /// `.versions/<db>` for the db with this id (see `fs::core`).
    DbDir(u32),
    /// The per-database symlink while it points at this version.
    Symlink {
        generation: u64,
    },
    VersionRoot {
        generation: u64,
    },
    VersionFile {
        generation: u64,
    },
    Key {
        generation: u64,
        ordinal: u64,
    },
    PrefixDir {
        generation: u64,
        first: u64,
        depth: u64,
    },
}

/// An inode that cannot be represented (a field is too large).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("inode field out of range")]
pub struct InodeOverflow;

impl Inode {
    /// The number the kernel sees.
    pub fn number(self) -> Result<u64, InodeOverflow> {
        let versioned = |generation: u64, kind: u64, payload: u64| {
            if generation > MAX_GENERATION || payload > MAX_FILE_ORDINAL {
                return Err(InodeOverflow);
            }
            Ok(VERSION_BIT
                | generation << (KIND_BITS + PAYLOAD_BITS)
                | kind << PAYLOAD_BITS
                | payload)
        };
        match self {
            Inode::Root => Ok(ROOT),
            Inode::VersionsDir => Ok(VERSIONS_DIR),
            Inode::RefreshFile => Ok(REFRESH_FILE),
            Inode::StatusSnapshot(sequence) if sequence <= MAX_STATUS_SEQUENCE => {
                Ok(STATUS_BIT | sequence)
            }
            Inode::StatusSnapshot(_) => Err(InodeOverflow),
            Inode::DbDir(id) => Ok(DB_DIR_BASE + u64::from(id)),
            Inode::Symlink { generation } => versioned(generation, 0, 0),
            Inode::VersionRoot { generation } => versioned(generation, 1, 0),
            Inode::VersionFile { generation } => versioned(generation, 2, 0),
            Inode::Key {
                generation,
                ordinal,
            } => versioned(generation, 3, ordinal),
            Inode::PrefixDir {
                generation,
                first,
                depth,
            } => {
                if first > MAX_DIR_ORDINAL || depth > MAX_DEPTH {
                    return Err(InodeOverflow);
                }
                versioned(generation, 4, first << DEPTH_BITS | depth)
            }
        }
    }

    /// Decodes a number the kernel sent; `None` for numbers this mount never
    /// hands out.
    pub fn from_number(number: u64) -> Option<Inode> {
        if number & VERSION_BIT == 0 {
            if number & STATUS_BIT != 0 {
                return Some(Inode::StatusSnapshot(number & MAX_STATUS_SEQUENCE));
            }
            return match number {
                ROOT => Some(Inode::Root),
                VERSIONS_DIR => Some(Inode::VersionsDir),
                REFRESH_FILE => Some(Inode::RefreshFile),
                n if n >= DB_DIR_BASE => u32::try_from(n - DB_DIR_BASE).ok().map(Inode::DbDir),
                _ => None,
            };
        }
        let generation = (number >> (KIND_BITS + PAYLOAD_BITS)) & MAX_GENERATION;
        let kind = (number >> PAYLOAD_BITS) & ((1 << KIND_BITS) - 1);
        let payload = number & MAX_FILE_ORDINAL;
        match kind {
            0 if payload == 0 => Some(Inode::Symlink { generation }),
            1 if payload == 0 => Some(Inode::VersionRoot { generation }),
            2 if payload == 0 => Some(Inode::VersionFile { generation }),
            3 => Some(Inode::Key {
                generation,
                ordinal: payload,
            }),
            4 => Some(Inode::PrefixDir {
                generation,
                first: payload >> DEPTH_BITS,
                depth: payload & MAX_DEPTH,
            }),
            _ => None,
        }
    }

    /// The version generation this inode belongs to, if any. The kernel's
    /// references to such inodes pin the version (see `fs::core`).
    pub fn generation(self) -> Option<u64> {
        match self {
            Inode::Symlink { generation }
            | Inode::VersionRoot { generation }
            | Inode::VersionFile { generation }
            | Inode::Key { generation, .. }
            | Inode::PrefixDir { generation, .. } => Some(generation),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fixed_numbers() {
        assert_eq!(Inode::Root.number(), Ok(1));
        assert_eq!(Inode::from_number(1), Some(Inode::Root));
        assert_eq!(Inode::from_number(0), None);
        assert_eq!(Inode::from_number(7), None);
        assert_eq!(Inode::from_number(4), None);
        assert_eq!(Inode::from_number(16), Some(Inode::DbDir(0)));
        assert_eq!(
            Inode::from_number(Inode::StatusSnapshot(5).number().unwrap()),
            Some(Inode::StatusSnapshot(5))
        );
    }

    #[test]
    fn overflow_is_an_error_not_a_wrap() {
        let too_new = Inode::VersionRoot {
            generation: MAX_GENERATION + 1,
        };
        assert_eq!(too_new.number(), Err(InodeOverflow));
        let too_far = Inode::PrefixDir {
            generation: 1,
            first: MAX_DIR_ORDINAL + 1,
            depth: 1,
        };
        assert_eq!(too_far.number(), Err(InodeOverflow));
    }

    proptest! {
        #[test]
        fn round_trips(generation in 0..=MAX_GENERATION, ordinal in 0..=MAX_FILE_ORDINAL,
                       first in 0..=MAX_DIR_ORDINAL, depth in 0..=MAX_DEPTH, id in any::<u32>()) {
            for inode in [
                Inode::DbDir(id),
                Inode::StatusSnapshot(ordinal),
                Inode::Symlink { generation },
                Inode::VersionRoot { generation },
                Inode::VersionFile { generation },
                Inode::Key { generation, ordinal },
                Inode::PrefixDir { generation, first, depth },
            ] {
                let number = inode.number().unwrap();
                prop_assert_eq!(Inode::from_number(number), Some(inode));
            }
        }

        #[test]
        fn distinct_inodes_get_distinct_numbers(
            a in (0..=MAX_GENERATION, 0..=MAX_FILE_ORDINAL),
            b in (0..=MAX_GENERATION, 0..=MAX_DIR_ORDINAL, 0..=MAX_DEPTH)
        ) {
            let key = Inode::Key { generation: a.0, ordinal: a.1 }.number().unwrap();
            let dir = Inode::PrefixDir { generation: b.0, first: b.1, depth: b.2 }.number().unwrap();
            prop_assert_ne!(key, dir);
        }
    }
}
