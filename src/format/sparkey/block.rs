//! Compressed blocks of a snappy or zstd log: locating a block's payload
//! from its length prefix, decoding it whole ([`LogFile::read_block`], for
//! iteration) or lazily as far as a lookup needs ([`LookupBlock`]).
//!
//! Every block length and decoded length is checked against the log data
//! and the header's `compression_block_size` before anything is allocated.

use std::ops::Range;

use super::header::CompressionType;
use super::header::LOG_HEADER_SIZE;
use super::log_file::LogFile;
use super::snappy::PrefixDecoder;
use super::vlq::read_vlq;
use crate::format::{FormatError, FormatErrorKind, FormatResult};

/// A raw snappy buffer never expands by more than this factor (its densest
/// element is a 3-byte copy of 64 bytes), so a claimed length beyond
/// `compressed * 22` is corrupt and is rejected before allocating.
const SNAPPY_MAX_EXPANSION: u64 = 22;

/// Decompression state reused across blocks (a zstd context is costly to
/// create, so each thread or cursor keeps one).
#[derive(Default)]
pub(crate) struct BlockDecoder {
    zstd: Option<zstd::bulk::Decompressor<'static>>,
}

/// A snappy block decoded only as far as lookups have needed so far.
struct LazyBlock {
    decoder: PrefixDecoder,
    /// The compressed bytes, in [`LogFile::data`].
    payload: Range<usize>,
    /// File offset of the block's length prefix, for errors.
    offset: u64,
}

/// The block a lookup reads entries from: snappy blocks are decoded only up
/// to the entry looked for (on average half the block) and resumed if a
/// later lookup needs more; zstd blocks are decoded whole.
#[derive(Default)]
pub(crate) struct LookupBlock {
    buf: Vec<u8>,
    /// Valid bytes at the start of `buf`.
    decoded: usize,
    /// Length of the whole decoded block.
    len: usize,
    lazy: Option<LazyBlock>,
    decoder: BlockDecoder,
}

impl LookupBlock {
    /// Makes the block at `offset` of `log` the current one. On error the
    /// block is empty.
    pub(crate) fn load(&mut self, log: &LogFile, offset: u64) -> FormatResult<()> {
        self.lazy = None;
        self.decoded = 0;
        self.len = 0;
        if log.header.compression == CompressionType::Snappy {
            let lazy = log.start_snappy_block(offset, &mut self.buf)?;
            self.len = lazy.decoder.claimed();
            self.lazy = Some(lazy);
        } else {
            log.read_block(offset, &mut self.buf, &mut self.decoder)?;
            self.len = self.buf.len();
            self.decoded = self.len;
        }
        Ok(())
    }

    /// Length of the whole decoded block.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The block's first `want` bytes, or all of it if it is shorter (and
    /// possibly more, as decoding goes element by element).
    #[inline]
    pub(crate) fn prefix(&mut self, log: &LogFile, want: usize) -> FormatResult<&[u8]> {
        if want > self.decoded
            && let Some(lazy) = &mut self.lazy
        {
            let src = log.data().get(lazy.payload.clone()).unwrap_or_default();
            let result = lazy.decoder.decode_to(src, &mut self.buf, want);
            match result {
                Ok(decoded) => self.decoded = decoded,
                Err(e) => {
                    let offset = lazy.offset;
                    self.lazy = None;
                    self.decoded = 0;
                    self.len = 0;
                    return Err(log.decompress_err(offset, "snappy", e.to_string()));
                }
            }
        }
        Ok(self.buf.get(..self.decoded).unwrap_or_default())
    }
}

impl LogFile {
    /// Locates the compressed bytes of the block whose length prefix is at
    /// `offset`: returns their range in [`LogFile::data`].
    fn block_payload(&self, offset: u64) -> FormatResult<Range<usize>> {
        let data = self.data();
        if offset < LOG_HEADER_SIZE || offset >= data.len() as u64 {
            return Err(self.corrupt(
                offset,
                format!(
                    "block offset {offset} is outside the log data (84..{})",
                    data.len()
                ),
            ));
        }
        let start = offset as usize;
        let (compressed_len, payload_start) =
            read_vlq(data, start).map_err(|e| e.into_format(&self.name, offset, "block length"))?;
        let available = (data.len() - payload_start) as u64;
        if compressed_len > available {
            return Err(self.err(
                offset,
                FormatErrorKind::Truncated {
                    what: "compressed block",
                    needed: compressed_len,
                    available,
                },
            ));
        }
        Ok(payload_start..payload_start + compressed_len as usize)
    }

    fn decompress_err(&self, offset: u64, codec: &'static str, message: String) -> FormatError {
        self.err(offset, FormatErrorKind::Decompress { codec, message })
    }

    /// Starts decoding the snappy block at `offset` lazily into `out`,
    /// for lookups that need only a prefix of it.
    fn start_snappy_block(&self, offset: u64, out: &mut Vec<u8>) -> FormatResult<LazyBlock> {
        let payload = self.block_payload(offset)?;
        let src = self.data().get(payload.clone()).unwrap_or_default();
        // A snappy element expands at most `SNAPPY_MAX_EXPANSION` times;
        // refuse larger claims before allocating for them.
        let limit = (u64::from(self.header.compression_block_size))
            .min((src.len() as u64).saturating_mul(SNAPPY_MAX_EXPANSION));
        let decoder = PrefixDecoder::start(src, usize::try_from(limit).unwrap_or(0), out)
            .map_err(|e| self.decompress_err(offset, "snappy", e.to_string()))?;
        Ok(LazyBlock {
            decoder,
            payload,
            offset,
        })
    }

    /// Decompresses the block whose length prefix is at `offset` into `out`
    /// (replacing its content) and returns the offset of the next block.
    pub(crate) fn read_block(
        &self,
        offset: u64,
        out: &mut Vec<u8>,
        decoder: &mut BlockDecoder,
    ) -> FormatResult<u64> {
        let payload_range = self.block_payload(offset)?;
        let payload_end = payload_range.end;
        let compressed_len = payload_range.len() as u64;
        let payload = self.data().get(payload_range).unwrap_or_default();
        let block_size = u64::from(self.header.compression_block_size);
        let decompress_err =
            |codec: &'static str, message: String| self.decompress_err(offset, codec, message);
        let too_large = |length: u64| {
            self.err(
                offset,
                FormatErrorKind::TooLarge {
                    what: "decompressed block",
                    length,
                    limit: block_size,
                },
            )
        };
        match self.header.compression {
            CompressionType::None => {
                return Err(self.corrupt(offset, "an uncompressed log has no blocks"));
            }
            CompressionType::Snappy => {
                let claimed = snap::raw::decompress_len(payload)
                    .map_err(|e| decompress_err("snappy", e.to_string()))?
                    as u64;
                if claimed > block_size {
                    return Err(too_large(claimed));
                }
                if claimed > compressed_len.saturating_mul(SNAPPY_MAX_EXPANSION) {
                    return Err(decompress_err(
                        "snappy",
                        format!("claims {claimed} bytes from {compressed_len}"),
                    ));
                }
                out.clear();
                out.resize(claimed as usize, 0);
                let written = snap::raw::Decoder::new()
                    .decompress(payload, out)
                    .map_err(|e| decompress_err("snappy", e.to_string()))?;
                if written as u64 != claimed {
                    return Err(decompress_err(
                        "snappy",
                        format!("decoded {written} bytes, header said {claimed}"),
                    ));
                }
            }
            CompressionType::Zstd => {
                let content_size = zstd::zstd_safe::get_frame_content_size(payload)
                    .map_err(|_| decompress_err("zstd", "bad frame header".into()))?;
                let capacity = match content_size {
                    Some(size) if size > block_size => return Err(too_large(size)),
                    Some(size) => size,
                    // No size in the frame: at most a whole block.
                    None => block_size,
                };
                let zstd = match &mut decoder.zstd {
                    Some(zstd) => zstd,
                    slot @ None => slot.insert(
                        zstd::bulk::Decompressor::new()
                            .map_err(|e| decompress_err("zstd", e.to_string()))?,
                    ),
                };
                out.clear();
                out.reserve(capacity as usize);
                zstd.decompress_to_buffer(payload, out)
                    .map_err(|e| decompress_err("zstd", e.to_string()))?;
                if content_size.is_some_and(|size| size != out.len() as u64) {
                    return Err(decompress_err(
                        "zstd",
                        format!("decoded {} bytes, frame said {capacity}", out.len()),
                    ));
                }
            }
        }
        Ok(payload_end as u64)
    }
}
