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
        let payload = self.data().get(payload_range).unwrap_or_default();
        let decompress_err =
            |codec: &'static str, message: String| self.decompress_err(offset, codec, message);
        match self.header.compression {
            CompressionType::None => {
                return Err(self.corrupt(offset, "an uncompressed log has no blocks"));
            }
            CompressionType::Snappy => {
                let claimed = self.snappy_len(offset, payload)?;
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
                let content_size = self.zstd_len(offset, payload)?;
                // No size in the frame: at most a whole block.
                let capacity =
                    content_size.unwrap_or(u64::from(self.header.compression_block_size));
                let zstd = self.zstd_context(offset, decoder)?;
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

    /// The decoded length a snappy block's preamble states, refused if it is
    /// over the block size or more than snappy can expand the payload to.
    fn snappy_len(&self, offset: u64, payload: &[u8]) -> FormatResult<u64> {
        let claimed = snap::raw::decompress_len(payload)
            .map_err(|e| self.decompress_err(offset, "snappy", e.to_string()))?
            as u64;
        let block_size = u64::from(self.header.compression_block_size);
        if claimed > block_size {
            return Err(self.block_too_large(offset, claimed));
        }
        let compressed_len = payload.len() as u64;
        if claimed > compressed_len.saturating_mul(SNAPPY_MAX_EXPANSION) {
            return Err(self.decompress_err(
                offset,
                "snappy",
                format!("claims {claimed} bytes from {compressed_len}"),
            ));
        }
        Ok(claimed)
    }

    /// The decoded length a zstd block's frame header states, if it states
    /// one (zstd's own compressor always does), refused if over the block
    /// size.
    fn zstd_len(&self, offset: u64, payload: &[u8]) -> FormatResult<Option<u64>> {
        let content_size = zstd::zstd_safe::get_frame_content_size(payload)
            .map_err(|_| self.decompress_err(offset, "zstd", "bad frame header".into()))?;
        match content_size {
            Some(size) if size > u64::from(self.header.compression_block_size) => {
                Err(self.block_too_large(offset, size))
            }
            size => Ok(size),
        }
    }

    fn block_too_large(&self, offset: u64, length: u64) -> FormatError {
        self.err(
            offset,
            FormatErrorKind::TooLarge {
                what: "decompressed block",
                length,
                limit: u64::from(self.header.compression_block_size),
            },
        )
    }

    /// `decoder`'s zstd context, created on first use.
    fn zstd_context<'d>(
        &self,
        offset: u64,
        decoder: &'d mut BlockDecoder,
    ) -> FormatResult<&'d mut zstd::bulk::Decompressor<'static>> {
        match &mut decoder.zstd {
            Some(zstd) => Ok(zstd),
            slot @ None => Ok(slot.insert(
                zstd::bulk::Decompressor::new()
                    .map_err(|e| self.decompress_err(offset, "zstd", e.to_string()))?,
            )),
        }
    }

    /// Where the block at `offset` is and how long it is decoded, from its
    /// length prefix and the codec's stated length, without decompressing
    /// it (except a zstd frame that does not state its size, which is
    /// decoded into `spare` to learn it).
    pub(crate) fn block_info(
        &self,
        offset: u64,
        decoder: &mut BlockDecoder,
        spare: &mut Vec<u8>,
    ) -> FormatResult<BlockInfo> {
        let payload = self.block_payload(offset)?;
        let src = self.data().get(payload.clone()).unwrap_or_default();
        let decoded_len = match self.header.compression {
            CompressionType::None => {
                return Err(self.corrupt(offset, "an uncompressed log has no blocks"));
            }
            CompressionType::Snappy => self.snappy_len(offset, src)?,
            CompressionType::Zstd => match self.zstd_len(offset, src)? {
                Some(len) => len,
                None => {
                    self.read_block(offset, spare, decoder)?;
                    spare.len() as u64
                }
            },
        };
        Ok(BlockInfo {
            offset,
            payload_start: payload.start,
            payload_end: payload.end,
            // At most `compression_block_size` (2^30), checked above.
            decoded_len: decoded_len as usize,
        })
    }

    /// Decodes the block `info` describes into `out[at..]`, leaving
    /// `out[..at]` alone: a snappy block only until its first `want` bytes
    /// exist (decoding stops at an element boundary, so a few more may), a
    /// zstd block whole. `out` is grown, if it is shorter, to `at` plus the
    /// block's checked decoded length (plus 64 bytes of slack for snappy);
    /// it is never shrunk.
    pub(crate) fn decode_block_at(
        &self,
        info: &BlockInfo,
        out: &mut Vec<u8>,
        at: usize,
        want: usize,
        decoder: &mut BlockDecoder,
    ) -> FormatResult<()> {
        let offset = info.offset;
        let src = self
            .data()
            .get(info.payload_start..info.payload_end)
            .unwrap_or_default();
        let too_short = |decoded: usize| {
            self.decompress_err(
                offset,
                self.header.compression.name(),
                format!("decoded {decoded} bytes, header said {}", info.decoded_len),
            )
        };
        match self.header.compression {
            CompressionType::None => Err(self.corrupt(offset, "an uncompressed log has no blocks")),
            CompressionType::Snappy => {
                let snappy_err = |e: super::snappy::SnappyError| {
                    self.decompress_err(offset, "snappy", e.to_string())
                };
                // `info.decoded_len` was checked against the block size and
                // the expansion limit; the preamble is read again here.
                let mut decoder =
                    PrefixDecoder::start_at(src, info.decoded_len, out, at).map_err(snappy_err)?;
                if decoder.claimed() != info.decoded_len {
                    return Err(too_short(decoder.claimed()));
                }
                let want = want.min(info.decoded_len);
                let decoded = decoder
                    .decode_to(src, out.get_mut(at..).unwrap_or_default(), want)
                    .map_err(snappy_err)?;
                if decoded < want {
                    return Err(too_short(decoded));
                }
                Ok(())
            }
            CompressionType::Zstd => {
                let end = at + info.decoded_len;
                if out.len() < end {
                    out.reserve_exact(end - out.len());
                    out.resize(end, 0);
                }
                let zstd = self.zstd_context(offset, decoder)?;
                let target = out.get_mut(at..end).unwrap_or_default();
                let written = zstd
                    .decompress_to_buffer(src, target)
                    .map_err(|e| self.decompress_err(offset, "zstd", e.to_string()))?;
                if written != info.decoded_len {
                    return Err(too_short(written));
                }
                Ok(())
            }
        }
    }
}

/// A block's place in the log and its decoded length, as
/// [`LogFile::block_info`] reads them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BlockInfo {
    /// File offset of the block's length prefix.
    pub offset: u64,
    /// The compressed bytes, in [`LogFile::data`].
    pub payload_start: usize,
    pub payload_end: usize,
    /// Bytes the block decodes to (at most `compression_block_size`).
    pub decoded_len: usize,
}

impl BlockInfo {
    /// File offset of the block after this one.
    pub(crate) fn next(&self) -> u64 {
        self.payload_end as u64
    }
}
