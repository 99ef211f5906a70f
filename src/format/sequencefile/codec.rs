//! Compression codecs of SequenceFiles, chosen by the Java class name in the
//! header, and what a "compressed stream" is for each of them.
//!
//! zlib, gzip, bzip2 and zstd streams are their standard containers. Hadoop's
//! `SnappyCodec` and `Lz4Codec` wrap raw Snappy / LZ4 blocks in Hadoop's own
//! block framing (`BlockCompressorStream`): repeated outer blocks of a
//! big-endian `u32` uncompressed length followed by chunks (`u32` compressed
//! length + one raw compressed buffer) until that length is reached. That
//! framing is not the Snappy framing format, so it is written here on top of
//! `snap::raw` and `lz4_flex::block`.
//!
//! Decompression writes into a caller-owned, reused buffer and keeps the
//! codec state (zlib, Snappy, zstd contexts) between calls, so a reader in
//! steady state does not allocate. Output is capped by a limit and no buffer
//! is sized from a declared length that the compressed input could not
//! possibly produce.

use std::io::Read;

use crate::format::FormatErrorKind;

/// A compression codec of a SequenceFile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// `org.apache.hadoop.io.compress.DefaultCodec`: one zlib stream.
    Default,
    /// `org.apache.hadoop.io.compress.GzipCodec`: gzip member(s).
    Gzip,
    /// `org.apache.hadoop.io.compress.BZip2Codec`: a bzip2 stream.
    BZip2,
    /// `org.apache.hadoop.io.compress.SnappyCodec`: Hadoop block framing
    /// around raw Snappy.
    Snappy,
    /// `org.apache.hadoop.io.compress.Lz4Codec`: Hadoop block framing around
    /// raw LZ4 blocks.
    Lz4,
    /// `org.apache.hadoop.io.compress.ZStandardCodec` (and aircompressor's
    /// `io.airlift.compress.zstd.ZstdCodec`): zstd frame(s).
    Zstd,
}

/// Hadoop's `DefaultCodec` class name.
pub const DEFAULT_CODEC_CLASS: &str = "org.apache.hadoop.io.compress.DefaultCodec";

impl Codec {
    /// Every codec, for tests and tools that want to try them all.
    pub const ALL: [Codec; 6] = [
        Codec::Default,
        Codec::Gzip,
        Codec::BZip2,
        Codec::Snappy,
        Codec::Lz4,
        Codec::Zstd,
    ];

    /// The codec a header's class name stands for, or `None` if unknown.
    pub fn from_class_name(class: &str) -> Option<Codec> {
        Some(match class {
            DEFAULT_CODEC_CLASS => Codec::Default,
            // A subclass of DefaultCodec that writes the same zlib bytes.
            "org.apache.hadoop.io.compress.DeflateCodec" => Codec::Default,
            "org.apache.hadoop.io.compress.GzipCodec" => Codec::Gzip,
            "org.apache.hadoop.io.compress.BZip2Codec" => Codec::BZip2,
            "org.apache.hadoop.io.compress.SnappyCodec" => Codec::Snappy,
            "org.apache.hadoop.io.compress.Lz4Codec" => Codec::Lz4,
            "org.apache.hadoop.io.compress.ZStandardCodec" => Codec::Zstd,
            // aircompressor's codec writes plain zstd frames too; Hadoop's
            // own ZStandardCodec needs a native library many installs lack,
            // so files in the wild use this name.
            "io.airlift.compress.zstd.ZstdCodec" => Codec::Zstd,
            _ => return None,
        })
    }

    /// The Hadoop class name the writer puts in headers.
    pub fn class_name(self) -> &'static str {
        match self {
            Codec::Default => DEFAULT_CODEC_CLASS,
            Codec::Gzip => "org.apache.hadoop.io.compress.GzipCodec",
            Codec::BZip2 => "org.apache.hadoop.io.compress.BZip2Codec",
            Codec::Snappy => "org.apache.hadoop.io.compress.SnappyCodec",
            Codec::Lz4 => "org.apache.hadoop.io.compress.Lz4Codec",
            Codec::Zstd => "org.apache.hadoop.io.compress.ZStandardCodec",
        }
    }

    /// A short name for messages.
    pub fn label(self) -> &'static str {
        match self {
            Codec::Default => "zlib",
            Codec::Gzip => "gzip",
            Codec::BZip2 => "bzip2",
            Codec::Snappy => "snappy",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
        }
    }
}

/// Largest input Hadoop puts in one Snappy chunk: its 256 KiB buffer minus
/// Snappy's worst-case expansion (`262144 - (262144 / 6 + 32)`).
const SNAPPY_MAX_CHUNK_INPUT: usize = 218_422;
/// Largest input Hadoop puts in one LZ4 chunk (`262144 - (262144 / 255 + 16)`).
const LZ4_MAX_CHUNK_INPUT: usize = 261_100;
/// The largest uncompressed length one outer block of the framing announces
/// when writing (its length field is a Java `int`).
const MAX_OUTER_BLOCK: usize = 1 << 30;

/// Upper bound of what `compressed` bytes of raw Snappy can decode to: the
/// densest element is a 3-byte copy of 64 bytes (ratio 21.3), so 32x plus
/// slack is never exceeded by valid data.
fn snappy_output_bound(compressed: usize) -> usize {
    compressed.saturating_mul(32).saturating_add(64)
}

/// Upper bound of what `compressed` bytes of a raw LZ4 block decode to: each
/// extra length byte adds at most 255 bytes of output.
fn lz4_output_bound(compressed: usize) -> usize {
    compressed.saturating_mul(255).saturating_add(64)
}

fn corrupt(codec: Codec, message: impl std::fmt::Display) -> FormatErrorKind {
    FormatErrorKind::Decompress {
        codec: codec.label(),
        message: message.to_string(),
    }
}

fn too_large(length: u64, limit: usize) -> FormatErrorKind {
    FormatErrorKind::TooLarge {
        what: "decompressed data",
        length,
        limit: limit as u64,
    }
}

/// Makes room for more output in `out` (doubling, at least 64 KiB), never
/// beyond `limit + 1` bytes in total: holding one byte more than the limit is
/// how the callers notice that a stream exceeds it.
fn grow(out: &mut Vec<u8>, limit: usize) -> Result<(), FormatErrorKind> {
    let hard_cap = limit.saturating_add(1);
    if out.len() >= hard_cap {
        return Err(too_large(out.len() as u64, limit));
    }
    let wanted = out.len().max(64 * 1024).min(hard_cap - out.len());
    out.reserve(wanted);
    Ok(())
}

/// Decompresses whole streams of one codec, keeping codec state and scratch
/// space between calls.
pub(crate) struct Decompressor {
    codec: Codec,
    zlib: Option<flate2::Decompress>,
    snappy: snap::raw::Decoder,
    zstd: Option<zstd::stream::raw::Decoder<'static>>,
}

impl Decompressor {
    pub(crate) fn new(codec: Codec) -> Self {
        Decompressor {
            codec,
            zlib: None,
            snappy: snap::raw::Decoder::new(),
            zstd: None,
        }
    }

    /// Replaces `out` with the decompression of the complete stream `input`,
    /// failing if it would exceed `limit` bytes.
    pub(crate) fn decompress(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), FormatErrorKind> {
        out.clear();
        match self.codec {
            Codec::Default => self.zlib(input, out, limit),
            Codec::Gzip => read_all(
                Codec::Gzip,
                flate2::read::MultiGzDecoder::new(input),
                out,
                limit,
            ),
            Codec::BZip2 => read_all(
                Codec::BZip2,
                bzip2::read::MultiBzDecoder::new(input),
                out,
                limit,
            ),
            Codec::Snappy | Codec::Lz4 => self.unframe(input, out, limit),
            Codec::Zstd => self.zstd(input, out, limit),
        }
    }

    fn zlib(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), FormatErrorKind> {
        use flate2::{FlushDecompress, Status};
        let z = self
            .zlib
            .get_or_insert_with(|| flate2::Decompress::new(true));
        z.reset(true);
        let mut consumed = 0usize;
        loop {
            if out.len() == out.capacity() {
                grow(out, limit)?;
            }
            let (in_before, out_before) = (z.total_in(), out.len());
            let rest = input.get(consumed..).unwrap_or_default();
            let status = z
                // `Finish` would demand the whole output in one call.
                .decompress_vec(rest, out, FlushDecompress::None)
                .map_err(|e| corrupt(Codec::Default, e))?;
            consumed += (z.total_in() - in_before) as usize;
            if out.len() > limit {
                return Err(too_large(out.len() as u64, limit));
            }
            match status {
                Status::StreamEnd if consumed >= input.len() => return Ok(()),
                // Concatenated zlib streams decode as one, as Hadoop's
                // DecompressorStream does.
                Status::StreamEnd => z.reset(true),
                Status::Ok | Status::BufError => {
                    let progressed = z.total_in() != in_before || out.len() != out_before;
                    let had_room = out.len() < out.capacity();
                    if had_room && (!progressed || consumed >= input.len()) {
                        return Err(corrupt(Codec::Default, "stream ends early"));
                    }
                }
            }
        }
    }

    fn zstd(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), FormatErrorKind> {
        use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};
        let decoder = match &mut self.zstd {
            Some(decoder) => {
                decoder.reinit().map_err(|e| corrupt(Codec::Zstd, e))?;
                decoder
            }
            slot => slot.insert(Decoder::new().map_err(|e| corrupt(Codec::Zstd, e))?),
        };
        let mut source = InBuffer::around(input);
        loop {
            if out.len() == out.capacity() {
                grow(out, limit)?;
            }
            let (in_before, out_before) = (source.pos(), out.len());
            let hint = {
                let mut sink = OutBuffer::around_pos(out, out_before);
                decoder
                    .run(&mut source, &mut sink)
                    .map_err(|e| corrupt(Codec::Zstd, e))?
            };
            if out.len() > limit {
                return Err(too_large(out.len() as u64, limit));
            }
            let input_done = source.pos() >= input.len();
            if hint == 0 && input_done {
                return Ok(());
            }
            let progressed = source.pos() != in_before || out.len() != out_before;
            let had_room = out.len() < out.capacity();
            if had_room && (!progressed || (input_done && hint != 0)) {
                return Err(corrupt(Codec::Zstd, "stream ends early"));
            }
        }
    }

    /// Hadoop block framing around raw Snappy or LZ4 chunks.
    fn unframe(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), FormatErrorKind> {
        let codec = self.codec;
        let mut pos = 0usize;
        while pos < input.len() {
            let block_len = read_be_len(codec, input, &mut pos, "block length")?;
            let target = out.len().saturating_add(block_len);
            if target > limit {
                return Err(too_large(target as u64, limit));
            }
            // A zero-length outer block has no chunks (Hadoop writes one for
            // empty values and at the end of large ones).
            while out.len() < target {
                let chunk_len = read_be_len(codec, input, &mut pos, "chunk length")?;
                let chunk = input
                    .get(pos..pos.saturating_add(chunk_len))
                    .ok_or_else(|| {
                        corrupt(
                            codec,
                            format!(
                                "chunk of {chunk_len} bytes but only {} left",
                                input.len() - pos
                            ),
                        )
                    })?;
                pos += chunk_len;
                let room = target - out.len();
                let start = out.len();
                if codec == Codec::Snappy {
                    let n = snap::raw::decompress_len(chunk).map_err(|e| corrupt(codec, e))?;
                    if n > room || n > snappy_output_bound(chunk.len()) {
                        return Err(corrupt(
                            codec,
                            format!("chunk claims {n} bytes, block has {room} left"),
                        ));
                    }
                    out.resize(start + n, 0);
                    let slot = out.get_mut(start..).unwrap_or_default();
                    self.snappy
                        .decompress(chunk, slot)
                        .map_err(|e| corrupt(codec, e))?;
                } else {
                    let cap = room.min(lz4_output_bound(chunk.len()));
                    out.resize(start + cap, 0);
                    let slot = out.get_mut(start..).unwrap_or_default();
                    let n = lz4_flex::block::decompress_into(chunk, slot)
                        .map_err(|e| corrupt(codec, e))?;
                    out.truncate(start + n);
                    if n == 0 && chunk_len == 0 && room > 0 {
                        // An empty chunk cannot fill the block; stop instead
                        // of looping over the rest of the input.
                        return Err(corrupt(codec, "empty chunk inside a non-empty block"));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Reads a big-endian `u32` length of the block framing; Java writes an
/// `int`, so values above `i32::MAX` are corrupt.
fn read_be_len(
    codec: Codec,
    input: &[u8],
    pos: &mut usize,
    what: &str,
) -> Result<usize, FormatErrorKind> {
    let bytes: [u8; 4] = input
        .get(*pos..pos.saturating_add(4))
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| corrupt(codec, format!("{what} cut short at stream byte {pos}")))?;
    *pos += 4;
    let value = i32::from_be_bytes(bytes);
    usize::try_from(value).map_err(|_| corrupt(codec, format!("negative {what} {value}")))
}

fn read_all(
    codec: Codec,
    decoder: impl Read,
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<(), FormatErrorKind> {
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    decoder
        .take(cap)
        .read_to_end(out)
        .map_err(|e| corrupt(codec, e))?;
    if out.len() > limit {
        return Err(too_large(out.len() as u64, limit));
    }
    Ok(())
}

/// Compresses whole streams of one codec for the writer, keeping codec state
/// between calls.
pub(crate) struct Compressor {
    codec: Codec,
    zlib: Option<flate2::Compress>,
    snappy: snap::raw::Encoder,
    zstd: Option<zstd::bulk::Compressor<'static>>,
}

impl Compressor {
    pub(crate) fn new(codec: Codec) -> Self {
        Compressor {
            codec,
            zlib: None,
            snappy: snap::raw::Encoder::new(),
            zstd: None,
        }
    }

    /// Appends one complete compressed stream of `input` to `out`.
    pub(crate) fn compress(&mut self, input: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
        use std::io::Write;
        match self.codec {
            Codec::Default => {
                use flate2::{Compression, FlushCompress, Status};
                // Level 6 is zlib's and Hadoop's default.
                let z = self
                    .zlib
                    .get_or_insert_with(|| flate2::Compress::new(Compression::new(6), true));
                z.reset();
                let mut consumed = 0usize;
                loop {
                    out.reserve(input.len() / 2 + 1024);
                    let before = z.total_in();
                    let status = z
                        .compress_vec(&input[consumed..], out, FlushCompress::Finish)
                        .map_err(std::io::Error::other)?;
                    consumed += (z.total_in() - before) as usize;
                    if status == Status::StreamEnd {
                        return Ok(());
                    }
                }
            }
            Codec::Gzip => {
                let mut encoder = flate2::write::GzEncoder::new(out, flate2::Compression::new(6));
                encoder.write_all(input)?;
                encoder.finish()?;
                Ok(())
            }
            Codec::BZip2 => {
                // Hadoop's BZip2Codec uses level 9 (900 kB blocks). The level
                // only sets the block size, so an input that fits smaller
                // blocks compresses identically at a lower level while the
                // encoder allocates far less (per RECORD value, this matters).
                let level = input.len().div_ceil(100_000).clamp(1, 9) as u32;
                let mut encoder = bzip2::write::BzEncoder::new(out, bzip2::Compression::new(level));
                encoder.write_all(input)?;
                encoder.finish()?;
                Ok(())
            }
            Codec::Snappy => self.frame(input, out, SNAPPY_MAX_CHUNK_INPUT),
            Codec::Lz4 => self.frame(input, out, LZ4_MAX_CHUNK_INPUT),
            Codec::Zstd => {
                // Level 3 is zstd's default.
                let z = match &mut self.zstd {
                    Some(z) => z,
                    slot => slot.insert(zstd::bulk::Compressor::new(3)?),
                };
                out.extend_from_slice(&z.compress(input)?);
                Ok(())
            }
        }
    }

    /// Hadoop block framing: outer blocks of at most [`MAX_OUTER_BLOCK`]
    /// bytes, each split into chunks of at most `max_chunk` input bytes as
    /// Hadoop's 256 KiB buffers do. Empty input is one empty outer block.
    fn frame(&mut self, input: &[u8], out: &mut Vec<u8>, max_chunk: usize) -> std::io::Result<()> {
        if input.is_empty() {
            out.extend_from_slice(&0u32.to_be_bytes());
            return Ok(());
        }
        for block in input.chunks(MAX_OUTER_BLOCK) {
            out.extend_from_slice(&(block.len() as u32).to_be_bytes());
            for chunk in block.chunks(max_chunk) {
                let compressed = match self.codec {
                    Codec::Snappy => self
                        .snappy
                        .compress_vec(chunk)
                        .map_err(std::io::Error::other)?,
                    _ => lz4_flex::block::compress(chunk),
                };
                out.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
                out.extend_from_slice(&compressed);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(codec: Codec, data: &[u8]) -> Vec<u8> {
        let mut packed = Vec::new();
        Compressor::new(codec).compress(data, &mut packed).unwrap();
        let mut out = Vec::new();
        Decompressor::new(codec)
            .decompress(&packed, &mut out, 1 << 30)
            .unwrap();
        out
    }

    #[test]
    fn every_codec_round_trips_empty_small_and_multi_chunk_data() {
        let big: Vec<u8> = (0..700_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for codec in Codec::ALL {
            for data in [&b""[..], b"hello", &big] {
                assert_eq!(round_trip(codec, data), data, "{codec:?} {}", data.len());
            }
        }
    }

    #[test]
    fn class_names_map_back_and_airlift_is_an_alias() {
        for codec in Codec::ALL {
            assert_eq!(Codec::from_class_name(codec.class_name()), Some(codec));
        }
        assert_eq!(
            Codec::from_class_name("io.airlift.compress.zstd.ZstdCodec"),
            Some(Codec::Zstd)
        );
        assert_eq!(Codec::from_class_name("com.example.Nope"), None);
    }

    #[test]
    fn hadoop_snappy_framing_with_trailing_empty_block() {
        // Two outer blocks as Hadoop writes for large values: one with data,
        // then an empty one.
        let chunk = snap::raw::Encoder::new()
            .compress_vec(b"abcabcabc")
            .unwrap();
        let mut framed = 9u32.to_be_bytes().to_vec();
        framed.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
        framed.extend_from_slice(&chunk);
        framed.extend_from_slice(&0u32.to_be_bytes());
        let mut out = Vec::new();
        Decompressor::new(Codec::Snappy)
            .decompress(&framed, &mut out, 100)
            .unwrap();
        assert_eq!(out, b"abcabcabc");
    }

    #[test]
    fn declared_sizes_beyond_the_limit_or_input_are_refused_before_allocating() {
        let mut out = Vec::new();
        let mut d = Decompressor::new(Codec::Snappy);
        // Outer block claims 1 GiB against a 1 MiB limit.
        let framed = [0x40, 0, 0, 0, 0, 0, 0, 1, 0];
        assert!(matches!(
            d.decompress(&framed, &mut out, 1 << 20),
            Err(FormatErrorKind::TooLarge { .. })
        ));
        // A 1-byte chunk claiming 100 MB inside a block that allows it.
        let framed = [0x10, 0, 0, 0, 0, 0, 0, 5, 0x80, 0xc2, 0xd7, 0x2f, 0];
        assert!(matches!(
            d.decompress(&framed, &mut out, 1 << 30),
            Err(FormatErrorKind::Decompress { .. })
        ));
        assert!(out.capacity() < 1 << 20);
    }

    #[test]
    fn zlib_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 1 << 20];
        let mut packed = Vec::new();
        Compressor::new(Codec::Default)
            .compress(&zeros, &mut packed)
            .unwrap();
        let mut out = Vec::new();
        let err = Decompressor::new(Codec::Default)
            .decompress(&packed, &mut out, 1000)
            .unwrap_err();
        assert!(matches!(err, FormatErrorKind::TooLarge { limit: 1000, .. }));
    }

    #[test]
    fn truncated_streams_are_errors_for_every_codec() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 13) as u8).collect();
        for codec in Codec::ALL {
            let mut packed = Vec::new();
            Compressor::new(codec).compress(&data, &mut packed).unwrap();
            let cut = &packed[..packed.len() - 3];
            let mut out = Vec::new();
            let result = Decompressor::new(codec).decompress(cut, &mut out, 1 << 20);
            assert!(result.is_err(), "{codec:?} accepted a truncated stream");
        }
    }
}
