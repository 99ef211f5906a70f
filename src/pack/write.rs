//! The output of `pack`: one Sparkey table per partition, as sequins reads
//! Sparkey input: `part-NNNNN.spl` (a snappy-compressed log, keys in byte
//! order) and `part-NNNNN.spi.sz` (its hash index in framed snappy; the
//! uncompressed `.spi` is removed). Duplicate keys are resolved here, as
//! the sorted records go by.

use std::fs::File;
use std::path::Path;

use anyhow::{Context, bail};

use super::sort::{Merge, Record};
use crate::format::sparkey::{Compression, LogWriter, framed};

/// Uncompressed size of a log block: 8 KiB, what sequins' own example
/// producer (`WordCountSparkey.java`) uses; larger than libsparkey's 4 KiB
/// default so that small records compress better, small enough that a
/// lookup decompresses little.
pub const BLOCK_SIZE: u32 = 8192;

/// The file stem of partition `p`.
pub fn stem(p: u32) -> String {
    format!("part-{p:05}")
}

/// What to do with a key seen more than once.
pub struct Duplicates<'a> {
    pub last_wins: bool,
    /// Names the input(s) of a record from its ordinal, for the error.
    pub describe: &'a (dyn Fn(u64) -> String + Sync),
}

/// What was written for one partition.
#[derive(Debug, Default, Clone, Copy)]
pub struct Written {
    pub keys: u64,
    pub duplicates: u64,
}

/// A key for an error message: as text when it is printable UTF-8, else hex.
pub fn show_key(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(s) if !s.chars().any(char::is_control) => format!("{s:?}"),
        _ => {
            let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
            format!("0x{hex}")
        }
    }
}

/// Writes partition `p` from `merge` into `dir`, syncing both files.
pub fn write_partition(
    dir: &Path,
    p: u32,
    mut merge: Merge<'_>,
    dups: &Duplicates<'_>,
) -> anyhow::Result<Written> {
    let log_path = dir.join(format!("{}.spl", stem(p)));
    let index_path = dir.join(format!("{}.spi", stem(p)));
    let framed_path = dir.join(format!("{}.spi.sz", stem(p)));
    let mut log = LogWriter::create(&log_path, Compression::Snappy, BLOCK_SIZE)?;
    // Fixed identifiers, so the same input always packs to the same bytes
    // (re-packs can be compared by checksum). The hash seed only spreads
    // keys over the index; the keys are the producer's own.
    log.set_identifiers(0x5e90_0000 ^ p, 0x9ac4_0000 ^ p)?;
    let mut written = Written::default();
    let mut pending = Record::default();
    let mut next = Record::default();
    let mut have = merge.next_into(&mut pending)?;
    while have {
        let more = merge.next_into(&mut next)?;
        if more && next.key == pending.key {
            written.duplicates += 1;
            if !dups.last_wins {
                bail!(
                    "duplicate key {} (in {} and {}); pass --last-wins to keep the last",
                    show_key(&next.key),
                    (dups.describe)(pending.seq),
                    (dups.describe)(next.seq)
                );
            }
            // Sorted by (key, input order): the later record replaces.
            std::mem::swap(&mut pending, &mut next);
            continue;
        }
        log.put(&pending.key, &pending.value)?;
        written.keys += 1;
        std::mem::swap(&mut pending, &mut next);
        have = more;
    }
    log.finish_with_index(&index_path)?;
    framed::encode_file(&index_path, &framed_path)?;
    std::fs::remove_file(&index_path).with_context(|| index_path.display().to_string())?;
    for path in [&log_path, &framed_path] {
        File::open(path)
            .and_then(|f| f.sync_all())
            .with_context(|| path.display().to_string())?;
    }
    Ok(written)
}
