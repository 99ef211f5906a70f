//! The streaming SequenceFile reader: records out of NONE, RECORD and BLOCK
//! files over any `Read`.
//!
//! Records are handed out as slices borrowed from buffers the reader owns and
//! reuses (its input window for plain records, decompression buffers for
//! compressed ones), so reading allocates nothing per record once the buffers
//! have grown to the largest record or block. Every length read from the file
//! is checked against the configured limit and, when the input length is
//! known, against the bytes left, before anything is sized from it.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::codec::{Codec, Decompressor};
use super::header::{Compression, Header, SYNC_SIZE, read_header};
use super::input::Input;
use super::vint;
use super::writable::WritableKind;
use crate::format::{FormatError, FormatErrorKind, FormatResult, HexBytes};

/// Default cap on one record, one compressed section and one decompressed
/// section: 1 GiB. Hadoop's own buffers are Java arrays (under 2 GiB) and
/// real files hold records and blocks of kilobytes to a few megabytes; the
/// cap only has to stop a corrupt length from claiming gigabytes.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1 << 30;
/// Default input window: 1 MiB, so that reads from the file are large
/// (amortising system calls) while most records and blocks fit without the
/// window having to grow.
pub const DEFAULT_BUFFER_SIZE: usize = 1 << 20;

/// Knobs of a [`Reader`].
#[derive(Debug, Clone)]
pub struct ReaderOptions {
    /// Largest record, compressed section or decompressed section accepted;
    /// see [`DEFAULT_MAX_RECORD_BYTES`].
    pub max_record_bytes: usize,
    /// Initial size of the input window; see [`DEFAULT_BUFFER_SIZE`].
    pub buffer_size: usize,
    /// Total length of the input, when known: a length that runs past it is
    /// reported as a truncation at once, before anything is read into
    /// memory for it.
    pub input_len: Option<u64>,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            buffer_size: DEFAULT_BUFFER_SIZE,
            input_len: None,
        }
    }
}

/// The decompressed sections of the current BLOCK block and where iteration
/// stands in each of them.
#[derive(Default)]
struct Block {
    key_lens: Vec<u8>,
    keys: Vec<u8>,
    value_lens: Vec<u8>,
    values: Vec<u8>,
    /// Read positions in the four buffers above.
    key_lens_pos: usize,
    keys_pos: usize,
    value_lens_pos: usize,
    values_pos: usize,
    /// Records of this block not yet returned.
    remaining: u64,
}

/// A record with a position in the input: (key, value, offset).
pub type Located<'a> = (&'a [u8], &'a [u8], u64);

/// A streaming reader of one SequenceFile.
pub struct Reader<R: Read> {
    input: Input<R>,
    name: String,
    header: Header,
    options: ReaderOptions,
    key_kind: WritableKind,
    value_kind: WritableKind,
    decompressor: Option<Decompressor>,
    /// RECORD layout: the current decompressed value.
    value_buf: Vec<u8>,
    block: Block,
    /// File offset of the current record (NONE/RECORD) or block (BLOCK).
    record_offset: u64,
}

impl Reader<File> {
    /// Opens a file, using its length to reject impossible lengths early.
    pub fn open(path: &Path) -> FormatResult<Self> {
        let name = path.display().to_string();
        let io = |e| FormatError::new(name.as_str(), 0, FormatErrorKind::Io(e));
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let options = ReaderOptions {
            input_len: Some(len),
            ..ReaderOptions::default()
        };
        Reader::with_options(file, &name, options)
    }
}

impl<R: Read> Reader<R> {
    /// Reads the header of `input`. `name` is used in errors (file name or
    /// object path).
    pub fn new(input: R, name: &str) -> FormatResult<Self> {
        Self::with_options(input, name, ReaderOptions::default())
    }

    /// [`Reader::new`] with explicit options.
    pub fn with_options(input: R, name: &str, options: ReaderOptions) -> FormatResult<Self> {
        let mut input = Input::new(input, options.buffer_size);
        let (header, codec) = read_header(&mut input, name, options.max_record_bytes)?;
        Ok(Reader {
            input,
            name: name.to_string(),
            key_kind: WritableKind::of(&header.key_class),
            value_kind: WritableKind::of(&header.value_class),
            decompressor: codec.map(Decompressor::new),
            header,
            options,
            value_buf: Vec::new(),
            block: Block::default(),
            record_offset: 0,
        })
    }

    /// The file's header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The codec values or blocks are compressed with, if any.
    pub fn codec(&self) -> Option<Codec> {
        self.header
            .codec
            .as_deref()
            .and_then(Codec::from_class_name)
    }

    /// The name used in errors.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Byte offset in the input consumed so far (for progress and errors).
    pub fn position(&self) -> u64 {
        self.input.position()
    }

    /// Next record as its exact serialized Writable bytes, borrowed from
    /// internal buffers that are reused for the following records.
    pub fn next_raw(&mut self) -> FormatResult<Option<(&[u8], &[u8])>> {
        match self.header.compression {
            Compression::None | Compression::Record => {
                Ok(self.next_plain_record(false)?.map(|(k, v, _)| (k, v)))
            }
            Compression::Block => self.next_block_record(false),
        }
    }

    /// Next record unwrapped as sequins serves it: `BytesWritable` and
    /// `Text` without their (checked) length prefix, other classes as
    /// serialized.
    pub fn next_unwrapped(&mut self) -> FormatResult<Option<(&[u8], &[u8])>> {
        match self.header.compression {
            Compression::None | Compression::Record => {
                Ok(self.next_plain_record(true)?.map(|(k, v, _)| (k, v)))
            }
            Compression::Block => self.next_block_record(true),
        }
    }

    /// [`Reader::next_unwrapped`] for an uncompressed file, with the input
    /// offset of the value as served: its bytes are exactly the input's
    /// `offset..offset + value.len()` (an unwrapped value is always the tail
    /// of its serialized form). Fails on a compressed file, whose values are
    /// not stored as served.
    pub fn next_unwrapped_at(&mut self) -> FormatResult<Option<Located<'_>>> {
        if self.header.compression != Compression::None {
            let offset = self.input.position();
            return Err(self.fail(
                offset,
                FormatErrorKind::Corrupt(format!(
                    "values are {} compressed, not stored in place",
                    self.header.compression
                )),
            ));
        }
        Ok(self
            .next_plain_record(true)?
            .map(|(key, value, end)| (key, value, end - value.len() as u64)))
    }

    /// Reads to the end and returns the number of records, checking every
    /// record on the way.
    pub fn count_records(&mut self) -> FormatResult<u64> {
        let mut count = 0;
        while self.next_raw()?.is_some() {
            count += 1;
        }
        Ok(count)
    }

    fn fail(&self, offset: u64, kind: FormatErrorKind) -> FormatError {
        FormatError::new(self.name.as_str(), offset, kind)
    }

    /// Refuses a length read at `offset` that exceeds the configured limit
    /// (too large) or the bytes left in the input, when known (truncated).
    fn check_len(
        &self,
        offset: u64,
        what: &'static str,
        len: usize,
        after: u64,
    ) -> FormatResult<()> {
        if len > self.options.max_record_bytes {
            return Err(self.fail(
                offset,
                FormatErrorKind::TooLarge {
                    what,
                    length: len as u64,
                    limit: self.options.max_record_bytes as u64,
                },
            ));
        }
        if let Some(total) = self.options.input_len {
            let left = total.saturating_sub(after);
            if len as u64 > left {
                return Err(self.fail(
                    offset,
                    FormatErrorKind::Truncated {
                        what,
                        needed: len as u64,
                        available: left,
                    },
                ));
            }
        }
        Ok(())
    }

    /// Checks the 16 bytes at the front of the input against the header's
    /// sync marker and consumes them.
    fn expect_sync(&mut self) -> FormatResult<()> {
        let offset = self.input.position();
        let found = self
            .input
            .take_array::<SYNC_SIZE>("sync marker")
            .map_err(|k| self.fail(offset, k))?;
        if found != self.header.sync {
            return Err(self.fail(
                offset,
                FormatErrorKind::SyncMismatch {
                    expected: HexBytes::of(&self.header.sync),
                    found: HexBytes::of(&found),
                },
            ));
        }
        Ok(())
    }

    /// Reads the 4-byte length that starts a record or a sync escape;
    /// `None` at a clean end of file.
    fn next_int_or_eof(&mut self, what: &'static str) -> FormatResult<Option<i32>> {
        let offset = self.input.position();
        let have = self
            .input
            .fill(4)
            .map_err(|e| self.fail(offset, e.into()))?;
        if have == 0 {
            return Ok(None);
        }
        let bytes = self
            .input
            .take_array::<4>(what)
            .map_err(|k| self.fail(offset, k))?;
        Ok(Some(i32::from_be_bytes(bytes)))
    }

    /// The next plain record, with the input offset where its serialized
    /// value ends.
    fn next_plain_record(&mut self, unwrap: bool) -> FormatResult<Option<Located<'_>>> {
        let (offset, record_len) = loop {
            let offset = self.input.position();
            match self.next_int_or_eof("record length")? {
                None => return Ok(None),
                Some(-1) => self.expect_sync()?,
                Some(len) if len < 0 => {
                    return Err(self.fail(
                        offset,
                        FormatErrorKind::Corrupt(format!("negative record length {len}")),
                    ));
                }
                Some(len) => break (offset, len as usize),
            }
        };
        self.record_offset = offset;
        // The key length field follows the record length and is not
        // counted in it.
        self.check_len(offset, "record", record_len, offset + 8)?;
        let key_len_at = offset + 4;
        let key_len = i32::from_be_bytes(
            self.input
                .take_array::<4>("key length")
                .map_err(|k| self.fail(key_len_at, k))?,
        );
        let key_len = usize::try_from(key_len)
            .ok()
            .filter(|&k| k <= record_len)
            .ok_or_else(|| {
                self.fail(
                    key_len_at,
                    FormatErrorKind::Corrupt(format!(
                        "key length {key_len} outside the record length {record_len}"
                    )),
                )
            })?;
        let name = self.name.as_str();
        let end = offset + 8 + record_len as u64;
        let body = self
            .input
            .take(record_len, "record")
            .map_err(|k| FormatError::new(name, offset, k))?;
        let (key, value) = body.split_at_checked(key_len).unwrap_or_default();
        let value = match &mut self.decompressor {
            None => value,
            Some(decompressor) => {
                let value_at = offset + 8 + key_len as u64;
                decompressor
                    .decompress(value, &mut self.value_buf, self.options.max_record_bytes)
                    .map_err(|k| FormatError::new(name, value_at, k))?;
                &self.value_buf
            }
        };
        if unwrap {
            let kinds = (self.key_kind, self.value_kind);
            let (key, value) = unwrap_pair(kinds, key, value, name, offset)?;
            return Ok(Some((key, value, end)));
        }
        Ok(Some((key, value, end)))
    }

    fn next_block_record(&mut self, unwrap: bool) -> FormatResult<Option<(&[u8], &[u8])>> {
        while self.block.remaining == 0 {
            if !self.read_block()? {
                return Ok(None);
            }
        }
        let b = &mut self.block;
        // The block was validated when read, so these cannot fail; they are
        // still checked rather than trusted.
        let broken = || FormatError::new(self.name.as_str(), self.record_offset, block_bug());
        let (key_len, used) =
            vint::decode_vint(b.key_lens.get(b.key_lens_pos..).unwrap_or_default())
                .map_err(|_| broken())?;
        b.key_lens_pos += used;
        let (value_len, used) =
            vint::decode_vint(b.value_lens.get(b.value_lens_pos..).unwrap_or_default())
                .map_err(|_| broken())?;
        b.value_lens_pos += used;
        let key_end = b.keys_pos.saturating_add(key_len as usize);
        let value_end = b.values_pos.saturating_add(value_len as usize);
        let key = b.keys.get(b.keys_pos..key_end).ok_or_else(broken)?;
        let value = b.values.get(b.values_pos..value_end).ok_or_else(broken)?;
        b.keys_pos = key_end;
        b.values_pos = value_end;
        b.remaining -= 1;
        if unwrap {
            let kinds = (self.key_kind, self.value_kind);
            return unwrap_pair(kinds, key, value, &self.name, self.record_offset).map(Some);
        }
        Ok(Some((key, value)))
    }

    /// Reads and validates the next block; `false` at a clean end of file.
    fn read_block(&mut self) -> FormatResult<bool> {
        let offset = self.input.position();
        self.record_offset = offset;
        match self.next_int_or_eof("sync escape")? {
            None => return Ok(false),
            Some(-1) => self.expect_sync()?,
            Some(other) => {
                return Err(self.fail(
                    offset,
                    FormatErrorKind::Corrupt(format!(
                        "expected a sync marker before a block, found length {other}"
                    )),
                ));
            }
        }
        let count_at = self.input.position();
        let count = self
            .input
            .take_vint_len("block record count")
            .map_err(|k| self.fail(count_at, k))?;
        let Some(decompressor) = self.decompressor.as_mut() else {
            return Err(self.fail(offset, block_bug()));
        };
        let limit = self.options.max_record_bytes;
        let sections: [(&'static str, &mut Vec<u8>); 4] = [
            ("key lengths section", &mut self.block.key_lens),
            ("keys section", &mut self.block.keys),
            ("value lengths section", &mut self.block.value_lens),
            ("values section", &mut self.block.values),
        ];
        for (what, buf) in sections {
            let at = self.input.position();
            let fail = |k| FormatError::new(self.name.as_str(), at, k);
            let len = self.input.take_vint_len(what).map_err(fail)?;
            let after = self.input.position();
            if len > limit {
                return Err(fail(FormatErrorKind::TooLarge {
                    what,
                    length: len as u64,
                    limit: limit as u64,
                }));
            }
            if let Some(left) = self.options.input_len.map(|t| t.saturating_sub(after))
                && len as u64 > left
            {
                return Err(fail(FormatErrorKind::Truncated {
                    what,
                    needed: len as u64,
                    available: left,
                }));
            }
            let compressed = self.input.take(len, what).map_err(fail)?;
            decompressor
                .decompress(compressed, buf, limit)
                .map_err(|k| FormatError::new(self.name.as_str(), after, k))?;
        }
        let fail = |k| FormatError::new(self.name.as_str(), offset, k);
        check_lengths(&self.block.key_lens, count, self.block.keys.len(), "key").map_err(fail)?;
        check_lengths(
            &self.block.value_lens,
            count,
            self.block.values.len(),
            "value",
        )
        .map_err(fail)?;
        let b = &mut self.block;
        b.key_lens_pos = 0;
        b.keys_pos = 0;
        b.value_lens_pos = 0;
        b.values_pos = 0;
        b.remaining = count as u64;
        Ok(true)
    }
}

/// Unwraps a record's key and value; errors name the record's offset.
#[inline]
fn unwrap_pair<'a>(
    (key_kind, value_kind): (WritableKind, WritableKind),
    key: &'a [u8],
    value: &'a [u8],
    name: &str,
    offset: u64,
) -> FormatResult<(&'a [u8], &'a [u8])> {
    let fail = |what: &str, kind: FormatErrorKind| {
        let kind = match kind {
            FormatErrorKind::Corrupt(m) => FormatErrorKind::Corrupt(format!("{what}: {m}")),
            other => other,
        };
        FormatError::new(name, offset, kind)
    };
    let key = key_kind.unwrap(key).map_err(|k| fail("key", k))?;
    let value = value_kind.unwrap(value).map_err(|k| fail("value", k))?;
    Ok((key, value))
}

fn block_bug() -> FormatErrorKind {
    FormatErrorKind::Corrupt("internal block state inconsistent".into())
}

/// Checks that a lengths section holds exactly `count` non-negative vints
/// summing to the size of its data section.
fn check_lengths(
    lens: &[u8],
    count: usize,
    data_len: usize,
    what: &str,
) -> Result<(), FormatErrorKind> {
    let mut pos = 0usize;
    let mut total = 0usize;
    for index in 0..count {
        let rest = lens.get(pos..).unwrap_or_default();
        if rest.is_empty() {
            return Err(FormatErrorKind::Corrupt(format!(
                "block declares {count} records but has {what} lengths for only {index}"
            )));
        }
        let (len, used) = vint::decode_vint(rest).map_err(|e| {
            FormatErrorKind::BadVint(format!("{what} length {index} of block: {e}"))
        })?;
        let len = usize::try_from(len).map_err(|_| {
            FormatErrorKind::Corrupt(format!("negative {what} length {len} in block"))
        })?;
        pos += used;
        total = total.saturating_add(len);
    }
    if pos != lens.len() {
        return Err(FormatErrorKind::Corrupt(format!(
            "block declares {count} records but its {what} lengths section has {} bytes left over",
            lens.len() - pos
        )));
    }
    if total != data_len {
        return Err(FormatErrorKind::Corrupt(format!(
            "block {what} lengths sum to {total} bytes but the {what}s section holds {data_len}"
        )));
    }
    Ok(())
}
