//! A SequenceFile writer for NONE, RECORD and BLOCK layouts with every codec
//! the reader knows, laid out as Hadoop's `SequenceFile.Writer` does (sync
//! escapes by interval, blocks closed at a size threshold).
//!
//! It makes test and benchmark data of any size and feeds tools; Hadoop's
//! own files remain the ground truth for the reader.

use std::io::{BufWriter, Write};

use super::codec::{Codec, Compressor};
use super::header::{Compression, Header, SYNC_SIZE};
use super::vint;
use super::writable::{BYTES_WRITABLE_CLASS, TEXT_CLASS, write_bytes_writable, write_text};
use crate::format::{FormatError, FormatErrorKind, FormatResult};

/// Hadoop's current default sync interval: 5 KiB x 20 = 100 KiB between
/// sync escapes in NONE/RECORD files.
pub const DEFAULT_SYNC_INTERVAL: u64 = 5 * 1024 * 20;
/// Hadoop's default `io.seqfile.compress.blocksize`: a block is closed once
/// its buffered keys and values reach 1,000,000 bytes.
pub const DEFAULT_BLOCK_SIZE: usize = 1_000_000;

/// What a [`Writer`] writes.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Java class of the keys (written in the header; appended keys must be
    /// its serialization).
    pub key_class: String,
    /// Java class of the values.
    pub value_class: String,
    /// Record layout.
    pub compression: Compression,
    /// Codec for RECORD and BLOCK (ignored for NONE).
    pub codec: Codec,
    /// Metadata pairs, written in this order.
    pub metadata: Vec<(Vec<u8>, Vec<u8>)>,
    /// Minimum bytes between sync escapes in NONE/RECORD files; see
    /// [`DEFAULT_SYNC_INTERVAL`].
    pub sync_interval: u64,
    /// Buffered key + value bytes that close a BLOCK block; see
    /// [`DEFAULT_BLOCK_SIZE`].
    pub block_size: usize,
    /// The sync marker; `None` picks a random one, as Hadoop does.
    pub sync: Option<[u8; SYNC_SIZE]>,
}

impl WriterOptions {
    /// Options for the given classes: uncompressed, no metadata, Hadoop's
    /// defaults for everything else.
    pub fn new(key_class: &str, value_class: &str) -> Self {
        WriterOptions {
            key_class: key_class.to_string(),
            value_class: value_class.to_string(),
            compression: Compression::None,
            codec: Codec::Default,
            metadata: Vec::new(),
            sync_interval: DEFAULT_SYNC_INTERVAL,
            block_size: DEFAULT_BLOCK_SIZE,
            sync: None,
        }
    }

    /// `BytesWritable` keys and values (what sequins users usually write).
    pub fn bytes_writable() -> Self {
        Self::new(BYTES_WRITABLE_CLASS, BYTES_WRITABLE_CLASS)
    }

    /// `Text` keys and values.
    pub fn text() -> Self {
        Self::new(TEXT_CLASS, TEXT_CLASS)
    }

    /// The same options with another layout and codec.
    pub fn compressed(mut self, compression: Compression, codec: Codec) -> Self {
        self.compression = compression;
        self.codec = codec;
        self
    }
}

/// A random sync marker: hashes seeded by the standard library's per-process
/// random keys, mixed with the time (Hadoop uses an MD5 of a UID and time).
fn random_sync() -> [u8; SYNC_SIZE] {
    use std::hash::{BuildHasher, Hasher};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut sync = [0u8; SYNC_SIZE];
    for (i, half) in sync.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(now);
        h.write_usize(i);
        half.copy_from_slice(&h.finish().to_be_bytes());
    }
    sync
}

/// Records buffered for the current BLOCK block.
#[derive(Default)]
struct PendingBlock {
    count: usize,
    key_lens: Vec<u8>,
    keys: Vec<u8>,
    value_lens: Vec<u8>,
    values: Vec<u8>,
}

/// Writes one SequenceFile.
pub struct Writer<W: Write> {
    out: BufWriter<W>,
    /// Bytes written so far (the file offset of the next byte).
    position: u64,
    last_sync: u64,
    sync: [u8; SYNC_SIZE],
    options: WriterOptions,
    compressor: Option<Compressor>,
    compressed: Vec<u8>,
    block: PendingBlock,
    /// Scratch for the serializing helpers.
    key_scratch: Vec<u8>,
    value_scratch: Vec<u8>,
}

impl<W: Write> Writer<W> {
    /// Writes the header and returns a writer for the records.
    pub fn new(out: W, options: WriterOptions) -> FormatResult<Self> {
        let sync = options.sync.unwrap_or_else(random_sync);
        let compressed = options.compression != Compression::None;
        let header = Header {
            version: super::header::CURRENT_VERSION,
            key_class: options.key_class.clone(),
            value_class: options.value_class.clone(),
            compression: options.compression,
            codec: compressed.then(|| options.codec.class_name().to_string()),
            metadata: options.metadata.clone(),
            sync,
        };
        let mut bytes = Vec::new();
        header.write_to(&mut bytes);
        let mut writer = Writer {
            // 1 MiB, like the reader's window: few large writes.
            out: BufWriter::with_capacity(1 << 20, out),
            position: 0,
            last_sync: 0,
            sync,
            compressor: compressed.then(|| Compressor::new(options.codec)),
            options,
            compressed: Vec::new(),
            block: PendingBlock::default(),
            key_scratch: Vec::new(),
            value_scratch: Vec::new(),
        };
        writer.write(&bytes)?;
        Ok(writer)
    }

    fn io_error(&self, e: std::io::Error) -> FormatError {
        FormatError::new("(output)", self.position, FormatErrorKind::Io(e))
    }

    fn write(&mut self, bytes: &[u8]) -> FormatResult<()> {
        self.out.write_all(bytes).map_err(|e| self.io_error(e))?;
        self.position += bytes.len() as u64;
        Ok(())
    }

    fn write_sync(&mut self) -> FormatResult<()> {
        let mut escape = [0u8; 4 + SYNC_SIZE];
        escape[..4].copy_from_slice(&(-1i32).to_be_bytes());
        escape[4..].copy_from_slice(&self.sync);
        self.write(&escape)?;
        self.last_sync = self.position;
        Ok(())
    }

    fn too_large(&self, what: &'static str, length: usize) -> FormatError {
        FormatError::new(
            "(output)",
            self.position,
            FormatErrorKind::TooLarge {
                what,
                length: length as u64,
                limit: i32::MAX as u64,
            },
        )
    }

    /// Appends one record given as the serialized Writables of the header's
    /// classes.
    pub fn append(&mut self, key: &[u8], value: &[u8]) -> FormatResult<()> {
        if self.options.compression == Compression::Block {
            return self.buffer_block_record(key, value);
        }
        if self.position >= self.last_sync + self.options.sync_interval {
            self.write_sync()?;
        }
        let value = match self.compressor.as_mut() {
            None => value,
            Some(compressor) => {
                self.compressed.clear();
                compressor
                    .compress(value, &mut self.compressed)
                    .map_err(|e| FormatError::new("(output)", self.position, e.into()))?;
                &self.compressed
            }
        };
        let record_len = i32::try_from(key.len() + value.len())
            .map_err(|_| self.too_large("record", key.len() + value.len()))?;
        let mut lengths = [0u8; 8];
        lengths[..4].copy_from_slice(&record_len.to_be_bytes());
        lengths[4..].copy_from_slice(&(key.len() as i32).to_be_bytes());
        let out = &mut self.out;
        let result = out
            .write_all(&lengths)
            .and_then(|()| out.write_all(key))
            .and_then(|()| out.write_all(value));
        result.map_err(|e| FormatError::new("(output)", self.position, e.into()))?;
        self.position += 8 + record_len as u64;
        Ok(())
    }

    /// Appends a record of `BytesWritable`s holding `key` and `value`.
    pub fn append_bytes_writable(&mut self, key: &[u8], value: &[u8]) -> FormatResult<()> {
        let (mut k, mut v) = (
            std::mem::take(&mut self.key_scratch),
            std::mem::take(&mut self.value_scratch),
        );
        k.clear();
        v.clear();
        write_bytes_writable(key, &mut k);
        write_bytes_writable(value, &mut v);
        let result = self.append(&k, &v);
        (self.key_scratch, self.value_scratch) = (k, v);
        result
    }

    /// Appends a record of `Text`s holding `key` and `value` (any bytes).
    pub fn append_text(&mut self, key: &[u8], value: &[u8]) -> FormatResult<()> {
        let (mut k, mut v) = (
            std::mem::take(&mut self.key_scratch),
            std::mem::take(&mut self.value_scratch),
        );
        k.clear();
        v.clear();
        write_text(key, &mut k);
        write_text(value, &mut v);
        let result = self.append(&k, &v);
        (self.key_scratch, self.value_scratch) = (k, v);
        result
    }

    fn buffer_block_record(&mut self, key: &[u8], value: &[u8]) -> FormatResult<()> {
        if key.len() > i32::MAX as usize || value.len() > i32::MAX as usize {
            return Err(self.too_large("record", key.len().max(value.len())));
        }
        let b = &mut self.block;
        vint::encode_vlong(key.len() as i64, &mut b.key_lens);
        b.keys.extend_from_slice(key);
        vint::encode_vlong(value.len() as i64, &mut b.value_lens);
        b.values.extend_from_slice(value);
        b.count += 1;
        if b.keys.len() + b.values.len() >= self.options.block_size {
            self.flush_block()?;
        }
        Ok(())
    }

    /// Writes the buffered records as one block: sync escape, record count,
    /// then the four compressed sections.
    fn flush_block(&mut self) -> FormatResult<()> {
        if self.block.count == 0 {
            return Ok(());
        }
        self.write_sync()?;
        let mut head = Vec::with_capacity(9);
        vint::encode_vlong(self.block.count as i64, &mut head);
        self.write(&head)?;
        let block = std::mem::take(&mut self.block);
        for section in [
            &block.key_lens,
            &block.keys,
            &block.value_lens,
            &block.values,
        ] {
            let mut compressed = std::mem::take(&mut self.compressed);
            compressed.clear();
            if let Some(compressor) = self.compressor.as_mut() {
                compressor
                    .compress(section, &mut compressed)
                    .map_err(|e| FormatError::new("(output)", self.position, e.into()))?;
            }
            if compressed.len() > i32::MAX as usize {
                return Err(self.too_large("compressed block section", compressed.len()));
            }
            head.clear();
            vint::encode_vlong(compressed.len() as i64, &mut head);
            self.write(&head)?;
            self.write(&compressed)?;
            self.compressed = compressed;
        }
        // Keep the buffers' capacity for the next block.
        let mut block = block;
        block.count = 0;
        block.key_lens.clear();
        block.keys.clear();
        block.value_lens.clear();
        block.values.clear();
        self.block = block;
        Ok(())
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Writes any buffered block, flushes, and returns the output.
    pub fn finish(mut self) -> FormatResult<W> {
        self.flush_block()?;
        let position = self.position;
        self.out.into_inner().map_err(|e| {
            FormatError::new("(output)", position, FormatErrorKind::Io(e.into_error()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::sequencefile::Reader;

    fn read_all(bytes: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut reader = Reader::new(bytes, "t").unwrap();
        let mut out = Vec::new();
        while let Some((k, v)) = reader.next_unwrapped().unwrap() {
            out.push((k.to_vec(), v.to_vec()));
        }
        out
    }

    #[test]
    fn every_layout_and_codec_reads_back() {
        let records: Vec<(Vec<u8>, Vec<u8>)> = (0..500u32)
            .map(|i| (i.to_string().into_bytes(), vec![b'v'; (i % 37) as usize]))
            .collect();
        let mut layouts = vec![(Compression::None, Codec::Default)];
        for codec in Codec::ALL {
            layouts.push((Compression::Record, codec));
            layouts.push((Compression::Block, codec));
        }
        for (compression, codec) in layouts {
            let mut options = WriterOptions::bytes_writable().compressed(compression, codec);
            options.sync_interval = 100;
            options.block_size = 1000;
            let mut writer = Writer::new(Vec::new(), options).unwrap();
            for (k, v) in &records {
                writer.append_bytes_writable(k, v).unwrap();
            }
            let bytes = writer.finish().unwrap();
            assert_eq!(read_all(&bytes), records, "{compression} {codec:?}");
        }
    }

    #[test]
    fn block_files_start_every_block_with_a_sync() {
        let mut options = WriterOptions::text().compressed(Compression::Block, Codec::Snappy);
        options.sync = Some([7; 16]);
        options.block_size = 10;
        let mut writer = Writer::new(Vec::new(), options).unwrap();
        for i in 0..3 {
            writer
                .append_text(b"key", format!("value {i}").as_bytes())
                .unwrap();
        }
        let bytes = writer.finish().unwrap();
        let escape: Vec<u8> = [0xff; 4].into_iter().chain([7; 16]).collect();
        let syncs = bytes
            .windows(20)
            .filter(|w| *w == escape.as_slice())
            .count();
        assert_eq!(syncs, 3);
    }
}
