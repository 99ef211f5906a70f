//! Reading a value by the index address of its entry, a range at a time:
//! [`Reader::locate`], [`Reader::read_value`], [`Reader::value_len_at`].
//!
//! A file server reads a large value in chunks (a FUSE READ is 128 KiB), so
//! reading bytes `[offset, offset + len)` must cost about `len`, not
//! `offset`. In an uncompressed log the range is a slice of the mapping. In
//! a compressed log the value is the tail of its entry's first block and
//! as many following blocks as it spans; a read decodes only the blocks
//! that cover the range, and finds the first of them by:
//!
//! 1. a checkpoint: each reader keeps the last few places where reads of
//!    large values ended ([`Checkpoints`]). A sequential reader (`cat`,
//!    from one thread or many) starts each chunk exactly where the previous
//!    one ended, so the next read finds its block in O(1);
//! 2. otherwise, from the nearest earlier checkpoint of that value (or the
//!    value's start), stepping over whole blocks by their headers alone,
//!    without decompressing (a few nanoseconds per block).

use std::sync::Mutex;

use super::Reader;
use super::header::CompressionType;
use super::lookup::{Located, Scratch, with_scratch};
use super::stream::StreamPos;
use crate::format::FormatResult;

/// Where a live value is: the index address of its entry and the value's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueLocation {
    pub address: u64,
    pub len: u64,
}

impl Reader {
    /// Looks `key` up in the hash index; the value's location if live. Does
    /// not decode or copy the value.
    pub fn locate(&self, key: &[u8]) -> FormatResult<Option<ValueLocation>> {
        if self.log.header.compression == CompressionType::None {
            let hash = self.index.hash(key);
            self.index.probe(hash, |address| {
                let value = self.plain_value_at(address, key)?;
                Ok(value.map(|value| ValueLocation {
                    address,
                    len: value.len() as u64,
                }))
            })
        } else {
            self.block_lookup(key, |_, address, located| {
                Ok(ValueLocation {
                    address,
                    len: located.len(),
                })
            })
        }
    }

    /// Bytes `[offset, offset + len)` of the value of the Put entry at index
    /// address `address`, clipped to the value's end (empty if `offset` is
    /// at or past it). Borrowed from the mapping for uncompressed logs; for
    /// compressed logs decoded into `scratch` (reused, grown to at most
    /// about `len` plus one block) and borrowed from it.
    ///
    /// Decodes only the blocks that cover the range, and finds the first of
    /// them without decoding the blocks before it (see the module doc), so
    /// reading a large value in sequential chunks costs O(chunk) per chunk,
    /// from any thread. An address that does not point at a Put entry is an
    /// error naming the file and offset.
    pub fn read_value<'a>(
        &'a self,
        address: u64,
        offset: u64,
        len: usize,
        scratch: &'a mut Vec<u8>,
    ) -> FormatResult<&'a [u8]> {
        match self.read_value_into(address, offset, len, scratch)? {
            Some(mapped) => Ok(mapped),
            None => Ok(scratch.as_slice()),
        }
    }

    /// [`Reader::read_value`] for callers that keep the bytes longer than
    /// the scratch buffer's borrow: an uncompressed value's bytes are
    /// borrowed from the mapping for as long as the reader lives (`Some`);
    /// a compressed value's are decoded into `scratch` (`None`).
    pub fn read_value_into<'a>(
        &'a self,
        address: u64,
        offset: u64,
        len: usize,
        scratch: &mut Vec<u8>,
    ) -> FormatResult<Option<&'a [u8]>> {
        if self.log.header.compression == CompressionType::None {
            let (_, value) = self.plain_entry(address, false)?;
            let start = usize::try_from(offset).map_or(value.len(), |o| o.min(value.len()));
            let end = start + len.min(value.len() - start);
            return Ok(Some(value.get(start..end).unwrap_or_default()));
        }
        with_scratch(|s| self.read_block_value(s, address, offset, len, scratch))?;
        Ok(None)
    }

    /// The length of the value of the Put entry at `address` (validating it
    /// as [`Reader::read_value`] does).
    pub fn value_len_at(&self, address: u64) -> FormatResult<u64> {
        if self.log.header.compression == CompressionType::None {
            let (_, value) = self.plain_entry(address, false)?;
            return Ok(value.len() as u64);
        }
        if let Some(checkpoint) = self.checkpoints.find(address, u64::MAX) {
            return Ok(checkpoint.value_len);
        }
        with_scratch(|s| Ok(self.block_value_at(s, address)?.len()))
    }

    /// [`Reader::read_value`] for a compressed log: fills `out` with the
    /// bytes.
    fn read_block_value(
        &self,
        scratch: &mut Scratch,
        address: u64,
        offset: u64,
        len: usize,
        out: &mut Vec<u8>,
    ) -> FormatResult<()> {
        let checkpoint = match self.checkpoints.find(address, offset) {
            Some(checkpoint) => checkpoint,
            None => match self.block_value_at(scratch, address)? {
                Located::InBlock { start, end } => {
                    // The whole value is in the block just decoded for its
                    // head: no checkpoint needed.
                    let value_len = (end - start) as u64;
                    let from = start + offset.min(value_len) as usize;
                    let to = from + len.min(end - from);
                    let block = scratch.block.prefix(&self.log, to)?;
                    out.clear();
                    out.extend_from_slice(block.get(from..to).unwrap_or_default());
                    return Ok(());
                }
                Located::Spilled { len: value_len, at } => {
                    let start = Checkpoint {
                        address,
                        value_len,
                        offset: 0,
                        at,
                    };
                    self.checkpoints.insert(start);
                    start
                }
            },
        };
        let value_len = checkpoint.value_len;
        if offset >= value_len {
            out.clear();
            return Ok(());
        }
        // Less than `len`, so fits in a usize.
        let n = (value_len - offset).min(len as u64) as usize;
        let from = self.log.advance(
            checkpoint.at,
            offset - checkpoint.offset,
            &mut scratch.stream,
        )?;
        let end = self.log.read_stream(from, n, out, &mut scratch.stream)?;
        let read_to = offset + n as u64;
        if read_to < value_len {
            self.checkpoints.insert(Checkpoint {
                address,
                value_len,
                offset: read_to,
                at: end,
            });
        }
        Ok(())
    }
}

/// Value offset `offset` of the value of the entry at `address` is at
/// `at` in the entry stream.
#[derive(Debug, Clone, Copy, Default)]
struct Checkpoint {
    /// 0 for an unused slot (no entry has address 0).
    address: u64,
    value_len: u64,
    offset: u64,
    at: StreamPos,
}

/// Checkpoints kept per reader. A sequential reader needs two (where its
/// last chunk ended, and the value's start for the odd out-of-order
/// chunk); 32 serve a dozen or so values read at once, and a search of
/// them under the lock costs less than decoding a hundred bytes.
const CHECKPOINTS: usize = 32;

/// Where reads of large values in a compressed log left off, shared by all
/// threads of a reader (consecutive chunks of one file often come from
/// different threads). Only values that spill out of their first block are
/// recorded; key lookups ([`Reader::get`], [`Reader::locate`]) never take
/// the lock.
#[derive(Default)]
pub(super) struct Checkpoints {
    slots: Mutex<CheckpointSlots>,
}

#[derive(Default)]
struct CheckpointSlots {
    slots: [(Checkpoint, u64); CHECKPOINTS],
    /// Stamps slots as they are used, to evict the least recently used.
    clock: u64,
}

impl Checkpoints {
    /// The checkpoint of `address` closest before or at value offset
    /// `offset`, if any.
    fn find(&self, address: u64, offset: u64) -> Option<Checkpoint> {
        if address == 0 {
            // Unused slots have address 0.
            return None;
        }
        // A panic elsewhere while holding the lock cannot leave a slot half
        // written (slots are written whole), so a poisoned lock is fine.
        let mut guard = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let state = &mut *guard;
        state.clock += 1;
        let best = state
            .slots
            .iter_mut()
            .filter(|(c, _)| c.address == address && c.offset <= offset)
            .max_by_key(|(c, _)| c.offset)?;
        best.1 = state.clock;
        Some(best.0)
    }

    /// Records `checkpoint`, in place of the least recently used one.
    fn insert(&self, checkpoint: Checkpoint) {
        let mut guard = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let state = &mut *guard;
        state.clock += 1;
        let same = state
            .slots
            .iter()
            .position(|(c, _)| c.address == checkpoint.address && c.offset == checkpoint.offset);
        let victim = same.or_else(|| {
            (0..CHECKPOINTS).min_by_key(|&i| state.slots.get(i).map_or(0, |(_, used)| *used))
        });
        if let Some(slot) = victim.and_then(|i| state.slots.get_mut(i)) {
            *slot = (checkpoint, state.clock);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::sparkey::{Compression, LogWriter};

    /// Sequential chunk reads leave a checkpoint exactly where the next
    /// chunk starts, so that chunk steps over no block headers at all.
    #[test]
    fn sequential_reads_resume_at_their_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let (log, index) = (dir.path().join("t.spl"), dir.path().join("t.spi"));
        let value: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        for compression in [Compression::Snappy, Compression::Zstd { level: 1 }] {
            let mut writer = LogWriter::create(&log, compression, 1024).unwrap();
            writer.put(b"big", &value).unwrap();
            writer.finish_with_index(&index).unwrap();
            let reader = Reader::open(&log, &index).unwrap();
            let address = reader.locate(b"big").unwrap().unwrap().address;
            let mut scratch = Vec::new();
            for start in (0..value.len()).step_by(30_000) {
                let got = reader
                    .read_value(address, start as u64, 30_000, &mut scratch)
                    .unwrap();
                let end = (start + 30_000).min(value.len());
                assert_eq!(got, &value[start..end]);
                if end < value.len() {
                    let next = reader.checkpoints.find(address, end as u64).unwrap();
                    assert_eq!(next.offset, end as u64);
                    assert_eq!(next.value_len, value.len() as u64);
                }
            }
            // The value's start is kept too, for reads out of order.
            assert_eq!(reader.checkpoints.find(address, 10).unwrap().offset, 0);
        }
    }

    #[test]
    fn the_least_recently_used_checkpoint_is_replaced() {
        let checkpoints = Checkpoints::default();
        let at = |address, offset| Checkpoint {
            address,
            value_len: 1 << 20,
            offset,
            at: StreamPos::default(),
        };
        for address in 1..=CHECKPOINTS as u64 {
            checkpoints.insert(at(address, 0));
        }
        // Using address 1 makes address 2 the oldest.
        assert!(checkpoints.find(1, 5).is_some());
        checkpoints.insert(at(100, 0));
        assert!(checkpoints.find(2, 5).is_none());
        assert!(checkpoints.find(1, 5).is_some());
        assert!(checkpoints.find(100, 5).is_some());
        // Re-inserting the same offset updates, and the best is the closest
        // before.
        checkpoints.insert(at(1, 1000));
        assert_eq!(checkpoints.find(1, 999).unwrap().offset, 0);
        assert_eq!(checkpoints.find(1, 5000).unwrap().offset, 1000);
        assert!(checkpoints.find(0, 5).is_none(), "unused slots never match");
    }
}
