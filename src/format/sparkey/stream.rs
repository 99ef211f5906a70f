//! The entry stream of a compressed log: the concatenation of all decoded
//! blocks, in which an entry's key and value may run on from the block its
//! head is in into as many following blocks as they need.
//!
//! A [`StreamPos`] names a byte of that stream by its block and its place
//! in the decoded block. [`LogFile::advance`] steps over whole blocks by
//! their headers alone (length prefix and the codec's stated decoded
//! length), so finding byte `n` of a value spanning thousands of blocks
//! decompresses nothing; [`LogFile::read_stream`] then decodes only the
//! blocks that cover the bytes asked for.

use super::block::{BlockDecoder, BlockInfo};
use super::log_file::LogFile;
use crate::format::{FormatErrorKind, FormatResult};

/// A position in the entry stream of a compressed log: byte `pos` of the
/// decoded block whose length prefix is at file offset `block`. `pos` may
/// equal the block's decoded length: the position just past its last byte,
/// which is also the first byte of the next block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct StreamPos {
    pub block: u64,
    pub pos: usize,
}

/// Decoding state reused by stream reads (a zstd context; a buffer for the
/// rare zstd frame that does not state its decoded size).
#[derive(Default)]
pub(crate) struct StreamScratch {
    decoder: BlockDecoder,
    spare: Vec<u8>,
}

impl LogFile {
    /// The block `at` is in, checking that `at.pos` is within it.
    fn block_holding(&self, at: StreamPos, scratch: &mut StreamScratch) -> FormatResult<BlockInfo> {
        let info = self.block_info(at.block, &mut scratch.decoder, &mut scratch.spare)?;
        if at.pos > info.decoded_len {
            return Err(self.corrupt(
                at.block,
                format!(
                    "position {} is past the block's {} decoded bytes",
                    at.pos, info.decoded_len
                ),
            ));
        }
        Ok(info)
    }

    /// The block after `info`, which an entry still `remaining` bytes long
    /// runs on into.
    fn next_block(&self, info: &BlockInfo, remaining: u64) -> FormatResult<u64> {
        let next = info.next();
        if next >= self.header.data_end {
            return Err(self.err(
                info.offset,
                FormatErrorKind::Truncated {
                    what: "entry spilling past the last block",
                    needed: remaining,
                    available: 0,
                },
            ));
        }
        Ok(next)
    }

    /// The position `n` bytes after `from`, reading block headers only. The
    /// result is in the first block that reaches it, so it may be at the
    /// end of that block. Costs one header read per block stepped over.
    pub(crate) fn advance(
        &self,
        from: StreamPos,
        n: u64,
        scratch: &mut StreamScratch,
    ) -> FormatResult<StreamPos> {
        let mut at = from;
        let mut remaining = n;
        loop {
            let info = self.block_holding(at, scratch)?;
            let here = (info.decoded_len - at.pos) as u64;
            if remaining <= here {
                // `remaining` fits in the block, so in a usize.
                at.pos += remaining as usize;
                return Ok(at);
            }
            remaining -= here;
            at = StreamPos {
                block: self.next_block(&info, remaining)?,
                pos: 0,
            };
        }
    }

    /// Replaces the content of `out` with the `n` bytes of the stream from
    /// `from`, decoding only the blocks that hold them (snappy blocks only
    /// as far as needed), and returns the position just after them. `out`
    /// grows to at most `n` plus one decoded block, and only as blocks
    /// really decode, whatever `n` claims.
    pub(crate) fn read_stream(
        &self,
        from: StreamPos,
        n: usize,
        out: &mut Vec<u8>,
        scratch: &mut StreamScratch,
    ) -> FormatResult<StreamPos> {
        let mut at = from;
        // `out[..filled]` is done; bytes after it are decoding room, kept
        // between blocks so that the buffer is not zeroed again each time.
        let mut filled = 0;
        while filled < n {
            let info = self.block_holding(at, scratch)?;
            if at.pos == info.decoded_len {
                at = StreamPos {
                    block: self.next_block(&info, (n - filled) as u64)?,
                    pos: 0,
                };
                continue;
            }
            let end = info.decoded_len.min(at.pos + (n - filled));
            self.decode_block_at(&info, out, filled, end, &mut scratch.decoder)?;
            if out.len() < filled + end {
                // `decode_block_at` makes room for the whole block.
                return Err(self.corrupt(info.offset, "block decoded short"));
            }
            if at.pos > 0 {
                out.copy_within(filled + at.pos..filled + end, filled);
            }
            filled += end - at.pos;
            at.pos = end;
        }
        out.truncate(filled);
        Ok(at)
    }
}
