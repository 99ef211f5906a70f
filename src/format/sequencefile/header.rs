//! The SequenceFile header: magic, version, classes, compression, codec,
//! metadata and sync marker, read from and written to bytes.
//!
//! Versions 4 to 6 are read (6 is what every writer since early Hadoop
//! produces; 4 and 5 differ only by missing fields). Older versions stored
//! class names in Hadoop's obsolete `UTF8` encoding and are refused with a
//! clear "unsupported version" error, as is anything newer than 6.

use std::fmt;
use std::io::Read;

use super::codec::{Codec, DEFAULT_CODEC_CLASS};
use super::input::Input;
use super::vint;
use crate::format::{FormatError, FormatErrorKind, FormatResult, HexBytes};

/// The three bytes every SequenceFile starts with.
pub const MAGIC: &[u8; 3] = b"SEQ";
/// The version this crate writes (and the newest Hadoop reads).
pub const CURRENT_VERSION: u8 = 6;
/// The oldest version read: the first with Text class names.
pub const OLDEST_VERSION: u8 = 4;
/// Size of the sync marker.
pub const SYNC_SIZE: usize = 16;

/// How records are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Plain records.
    None,
    /// Each value compressed on its own; keys plain.
    Record,
    /// Records grouped in blocks of four compressed sections.
    Block,
}

impl fmt::Display for Compression {
    /// Hadoop's names, as `SequenceFile.CompressionType` prints them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "NONE",
            Compression::Record => "RECORD",
            Compression::Block => "BLOCK",
        })
    }
}

/// A parsed SequenceFile header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Format version (4, 5 or 6).
    pub version: u8,
    /// Java class of the keys, e.g. `org.apache.hadoop.io.Text`.
    pub key_class: String,
    /// Java class of the values.
    pub value_class: String,
    /// Record layout.
    pub compression: Compression,
    /// Codec class name as written in the file (version 4 files name none
    /// and mean `DefaultCodec`, which is filled in); `None` if uncompressed.
    pub codec: Option<String>,
    /// Metadata pairs in file order (Hadoop writes them sorted by key).
    pub metadata: Vec<(Vec<u8>, Vec<u8>)>,
    /// The file's sync marker.
    pub sync: [u8; SYNC_SIZE],
}

impl Header {
    /// The metadata as Hadoop's `SequenceFile.Metadata.toString()` prints it:
    /// `size: N\n` then `\tKEY\tVALUE\n` per pair, sorted by key bytes and
    /// with later duplicates replacing earlier ones (Hadoop keeps them in a
    /// `TreeMap`), bytes decoded as lossy UTF-8.
    pub fn metadata_to_hadoop_string(&self) -> String {
        let sorted: std::collections::BTreeMap<&[u8], &[u8]> = self
            .metadata
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect();
        let mut out = format!("size: {}\n", sorted.len());
        for (k, v) in sorted {
            out.push('\t');
            out.push_str(&String::from_utf8_lossy(k));
            out.push('\t');
            out.push_str(&String::from_utf8_lossy(v));
            out.push('\n');
        }
        out
    }

    /// Serializes the header as version 6.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(MAGIC);
        out.push(CURRENT_VERSION);
        write_text_field(self.key_class.as_bytes(), out);
        write_text_field(self.value_class.as_bytes(), out);
        out.push(u8::from(self.compression != Compression::None));
        out.push(u8::from(self.compression == Compression::Block));
        if self.compression != Compression::None {
            let codec = self.codec.as_deref().unwrap_or(DEFAULT_CODEC_CLASS);
            write_text_field(codec.as_bytes(), out);
        }
        let count = i32::try_from(self.metadata.len()).unwrap_or(i32::MAX);
        out.extend_from_slice(&count.to_be_bytes());
        for (k, v) in &self.metadata {
            write_text_field(k, out);
            write_text_field(v, out);
        }
        out.extend_from_slice(&self.sync);
    }
}

fn write_text_field(bytes: &[u8], out: &mut Vec<u8>) {
    vint::encode_vlong(bytes.len() as i64, out);
    out.extend_from_slice(bytes);
}

/// Reads the header at the start of `input`; `max_field` caps the length of
/// any one string in it. Returns the header and its codec (if compressed).
pub(crate) fn read_header<R: Read>(
    input: &mut Input<R>,
    name: &str,
    max_field: usize,
) -> FormatResult<(Header, Option<Codec>)> {
    let at = |input: &Input<R>| input.position();
    let fail = |offset: u64, kind: FormatErrorKind| FormatError::new(name, offset, kind);

    let have = input.fill(4).map_err(|e| fail(0, e.into()))?;
    let start = input.available();
    if have < MAGIC.len() || start.get(..3) != Some(&MAGIC[..]) {
        if have < MAGIC.len() && MAGIC.starts_with(start) {
            return Err(fail(
                0,
                FormatErrorKind::Truncated {
                    what: "SequenceFile magic",
                    needed: 3,
                    available: have as u64,
                },
            ));
        }
        return Err(fail(
            0,
            FormatErrorKind::BadMagic {
                format: "SequenceFile",
                found: HexBytes::of(start.get(..have.min(4)).unwrap_or_default()),
            },
        ));
    }
    input.consume(3);
    let [version] = input.take_array::<1>("version").map_err(|k| fail(3, k))?;
    if !(OLDEST_VERSION..=CURRENT_VERSION).contains(&version) {
        return Err(fail(
            3,
            FormatErrorKind::UnsupportedVersion {
                format: "SequenceFile",
                version: version.into(),
            },
        ));
    }

    let read_string = |input: &mut Input<R>, what: &'static str| -> FormatResult<Vec<u8>> {
        let offset = at(input);
        let len = input.take_vint_len(what).map_err(|k| fail(offset, k))?;
        if len > max_field {
            return Err(fail(
                offset,
                FormatErrorKind::TooLarge {
                    what,
                    length: len as u64,
                    limit: max_field as u64,
                },
            ));
        }
        let bytes = input.take(len, what).map_err(|k| fail(offset, k))?;
        Ok(bytes.to_vec())
    };
    let utf8 = |bytes: Vec<u8>, offset: u64, what: &str| {
        String::from_utf8(bytes).map_err(|_| {
            fail(
                offset,
                FormatErrorKind::Corrupt(format!("{what} is not UTF-8")),
            )
        })
    };

    let offset = at(input);
    let key_class = utf8(
        read_string(input, "key class name")?,
        offset,
        "key class name",
    )?;
    let offset = at(input);
    let value_class = utf8(
        read_string(input, "value class name")?,
        offset,
        "value class name",
    )?;

    let offset = at(input);
    let [compressed, block] = input
        .take_array::<2>("compression flags")
        .map_err(|k| fail(offset, k))?;
    let flag = |value: u8, what: &str, offset: u64| match value {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(fail(
            offset,
            FormatErrorKind::Corrupt(format!("{what} flag is {other}, not 0 or 1")),
        )),
    };
    let compressed = flag(compressed, "compressed", offset)?;
    let block = flag(block, "block-compressed", offset + 1)?;
    let compression = match (compressed, block) {
        (false, false) => Compression::None,
        (true, false) => Compression::Record,
        (true, true) => Compression::Block,
        (false, true) => {
            return Err(fail(
                offset,
                FormatErrorKind::Corrupt("block-compressed but not compressed".into()),
            ));
        }
    };

    let mut codec = None;
    let mut codec_class = None;
    if compressed {
        let offset = at(input);
        let class = if version >= 5 {
            utf8(
                read_string(input, "codec class name")?,
                offset,
                "codec class name",
            )?
        } else {
            DEFAULT_CODEC_CLASS.to_string()
        };
        codec = Some(
            Codec::from_class_name(&class)
                .ok_or_else(|| fail(offset, FormatErrorKind::UnknownCodec(class.clone())))?,
        );
        codec_class = Some(class);
    }

    let mut metadata = Vec::new();
    if version >= 6 {
        let offset = at(input);
        let count = i32::from_be_bytes(
            input
                .take_array::<4>("metadata count")
                .map_err(|k| fail(offset, k))?,
        );
        if count < 0 {
            return Err(fail(
                offset,
                FormatErrorKind::Corrupt(format!("negative metadata count {count}")),
            ));
        }
        // No reservation from `count`: each pair must actually be read.
        for _ in 0..count {
            let key = read_string(input, "metadata key")?;
            let value = read_string(input, "metadata value")?;
            metadata.push((key, value));
        }
    }

    let offset = at(input);
    let sync = input
        .take_array::<SYNC_SIZE>("sync marker")
        .map_err(|k| fail(offset, k))?;

    Ok((
        Header {
            version,
            key_class,
            value_class,
            compression,
            codec: codec_class,
            metadata,
            sync,
        },
        codec,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            version: 6,
            key_class: "org.apache.hadoop.io.Text".into(),
            value_class: "org.apache.hadoop.io.BytesWritable".into(),
            compression: Compression::Block,
            codec: Some(Codec::Snappy.class_name().into()),
            metadata: vec![
                (b"b".to_vec(), b"2".to_vec()),
                (b"a".to_vec(), b"1".to_vec()),
            ],
            sync: *b"0123456789abcdef",
        }
    }

    fn parse(bytes: &[u8]) -> FormatResult<(Header, Option<Codec>)> {
        read_header(&mut Input::new(bytes, 64), "h", 1 << 20)
    }

    #[test]
    fn written_header_parses_back() {
        let mut bytes = Vec::new();
        sample().write_to(&mut bytes);
        let (header, codec) = parse(&bytes).unwrap();
        assert_eq!(header, sample());
        assert_eq!(codec, Some(Codec::Snappy));
    }

    #[test]
    fn metadata_prints_like_hadoop() {
        assert_eq!(
            sample().metadata_to_hadoop_string(),
            "size: 2\n\ta\t1\n\tb\t2\n"
        );
    }

    #[test]
    fn version_4_and_5_headers_parse() {
        // Version 5: codec name but no metadata.
        let mut v5 = b"SEQ\x05\x01K\x01V\x01\x00".to_vec();
        write_text_field(Codec::Gzip.class_name().as_bytes(), &mut v5);
        v5.extend_from_slice(&[9; 16]);
        let (h, codec) = parse(&v5).unwrap();
        assert_eq!(
            (h.version, codec, h.metadata.len()),
            (5, Some(Codec::Gzip), 0)
        );
        // Version 4: compressed means DefaultCodec, named nowhere.
        let mut v4 = b"SEQ\x04\x01K\x01V\x01\x01".to_vec();
        v4.extend_from_slice(&[9; 16]);
        let (h, codec) = parse(&v4).unwrap();
        assert_eq!(codec, Some(Codec::Default));
        assert_eq!(h.codec.as_deref(), Some(DEFAULT_CODEC_CLASS));
        assert_eq!(h.compression, Compression::Block);
    }

    #[test]
    fn old_and_future_versions_are_refused() {
        for version in [1u8, 3, 7] {
            let err = parse(&[b'S', b'E', b'Q', version, 0, 0]).unwrap_err();
            assert!(matches!(
                err.kind,
                FormatErrorKind::UnsupportedVersion { version: v, .. } if v == u32::from(version)
            ));
            assert_eq!(err.offset, 3);
        }
    }

    #[test]
    fn unknown_codec_is_named_with_its_offset() {
        let mut bytes = b"SEQ\x06\x01K\x01V\x01\x00".to_vec();
        write_text_field(b"com.example.MagicCodec", &mut bytes);
        let err = parse(&bytes).unwrap_err();
        assert!(
            matches!(&err.kind, FormatErrorKind::UnknownCodec(c) if c == "com.example.MagicCodec")
        );
        assert_eq!(err.offset, 10);
        assert!(err.to_string().contains("com.example.MagicCodec"));
    }

    #[test]
    fn huge_metadata_count_fails_on_the_missing_pairs() {
        let mut bytes = b"SEQ\x06\x01K\x01V\x00\x00".to_vec();
        bytes.extend_from_slice(&i32::MAX.to_be_bytes());
        let err = parse(&bytes).unwrap_err();
        assert!(matches!(err.kind, FormatErrorKind::Truncated { .. }));
        assert_eq!(err.offset, 14);
    }
}
