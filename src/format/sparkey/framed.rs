//! The snappy framing format (`.sz`), used for the `.spi.sz` indexes
//! sequins producers ship next to their logs.
//!
//! Decoding is written here rather than taken from `snap::read::FrameDecoder`
//! for two reasons: errors must name the byte offset of the bad chunk, and
//! the format allows skippable chunks of up to 16 MiB, which that decoder
//! refuses beyond about 75 KiB. Encoding uses `snap::write::FrameEncoder`,
//! whose output is byte-identical to snappy-java's for our inputs.
//!
//! A stream is a sequence of chunks: 1 type byte, 3 bytes little-endian
//! length, then the body. `0xff` stream identifier (`sNaPpY`, must come
//! first); `0x00` compressed and `0x01` uncompressed data, each with a masked
//! CRC-32C of the uncompressed bytes; `0xfe` padding and `0x80..=0xfd`
//! skippable; `0x02..=0x7f` reserved, an error.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

use crate::format::{FormatError, FormatErrorKind, FormatResult, HexBytes};

const STREAM_IDENTIFIER: &[u8] = b"sNaPpY";
/// Largest uncompressed payload of one data chunk, set by the format.
const MAX_CHUNK_DATA: usize = 65536;

/// The format's checksum: CRC-32C rotated right by 15 bits plus a constant.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
        .rotate_right(15)
        .wrapping_add(0xa282_ead8)
}

/// Decodes a framed stream from `input` to `output`; returns the number of
/// bytes written. `name` names the input in errors. An empty input is an
/// empty stream (python-snappy writes nothing for empty data).
pub fn decode(mut input: impl Read, mut output: impl Write, name: &str) -> FormatResult<u64> {
    let err = |offset: u64, kind| FormatError::new(name, offset, kind);
    let corrupt = |offset: u64, message: String| err(offset, FormatErrorKind::Corrupt(message));
    let mut offset = 0u64;
    let mut written = 0u64;
    let mut body = Vec::new();
    let mut data = vec![0u8; MAX_CHUNK_DATA];
    loop {
        let mut head = [0u8; 4];
        let got = read_full(&mut input, &mut head).map_err(|e| err(offset, e.into()))?;
        if got == 0 {
            return Ok(written);
        }
        if got < head.len() {
            return Err(err(
                offset,
                FormatErrorKind::Truncated {
                    what: "framed snappy chunk header",
                    needed: 4,
                    available: got as u64,
                },
            ));
        }
        let [kind, l0, l1, l2] = head;
        let len = u32::from_le_bytes([l0, l1, l2, 0]) as usize;
        if offset == 0 && kind != 0xff {
            return Err(err(
                0,
                FormatErrorKind::BadMagic {
                    format: "framed snappy",
                    found: HexBytes::of(&head),
                },
            ));
        }
        let body_offset = offset + 4;
        match kind {
            0x02..=0x7f => {
                return Err(corrupt(
                    offset,
                    format!("reserved unskippable chunk type {kind:#04x}"),
                ));
            }
            0x80..=0xfe => {
                // Skippable or padding: discard without buffering.
                let skipped = io::copy(&mut (&mut input).take(len as u64), &mut io::sink())
                    .map_err(|e| err(body_offset, e.into()))?;
                if skipped != len as u64 {
                    return Err(truncated(name, body_offset, len, skipped as usize));
                }
            }
            0xff | 0x00 | 0x01 => {
                // Data chunks hold at most a checksum plus a maximal
                // compressed 64 KiB; anything longer is corrupt, and is
                // refused before buffering.
                let limit = match kind {
                    0xff => STREAM_IDENTIFIER.len(),
                    0x00 => 4 + snap::raw::max_compress_len(MAX_CHUNK_DATA),
                    _ => 4 + MAX_CHUNK_DATA,
                };
                if len > limit {
                    return Err(err(
                        offset,
                        FormatErrorKind::TooLarge {
                            what: "framed snappy chunk",
                            length: len as u64,
                            limit: limit as u64,
                        },
                    ));
                }
                body.clear();
                let got = (&mut input)
                    .take(len as u64)
                    .read_to_end(&mut body)
                    .map_err(|e| err(body_offset, e.into()))?;
                if got != len {
                    return Err(truncated(name, body_offset, len, got));
                }
                let decoded =
                    decode_data_chunk(kind, &body, &mut data).map_err(|kind| err(offset, kind))?;
                if let Some(bytes) = decoded.and_then(|n| data.get(..n)) {
                    output.write_all(bytes).map_err(|e| err(offset, e.into()))?;
                    written += bytes.len() as u64;
                }
            }
        }
        offset = body_offset + len as u64;
    }
}

/// Checks one chunk of type `0xff`, `0x00` or `0x01`; for data chunks,
/// leaves the payload in `data` and returns its length.
fn decode_data_chunk(
    kind: u8,
    body: &[u8],
    data: &mut [u8],
) -> Result<Option<usize>, FormatErrorKind> {
    if kind == 0xff {
        return if body == STREAM_IDENTIFIER {
            Ok(None)
        } else {
            Err(FormatErrorKind::BadMagic {
                format: "framed snappy stream identifier",
                found: HexBytes::of(body),
            })
        };
    }
    if body.len() < 4 {
        return Err(FormatErrorKind::Truncated {
            what: "framed snappy checksum",
            needed: 4,
            available: body.len() as u64,
        });
    }
    let (crc, payload) = body.split_at(4);
    let expected = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let snappy_err = |e: snap::Error| FormatErrorKind::Decompress {
        codec: "snappy",
        message: e.to_string(),
    };
    let len = if kind == 0x00 {
        let len = snap::raw::decompress_len(payload).map_err(snappy_err)?;
        if len > MAX_CHUNK_DATA {
            return Err(FormatErrorKind::TooLarge {
                what: "framed snappy chunk data",
                length: len as u64,
                limit: MAX_CHUNK_DATA as u64,
            });
        }
        let out = data.get_mut(..len).unwrap_or_default();
        snap::raw::Decoder::new()
            .decompress(payload, out)
            .map_err(snappy_err)?
    } else {
        let out = data.get_mut(..payload.len()).unwrap_or_default();
        out.copy_from_slice(payload);
        payload.len()
    };
    let computed = masked_crc32c(data.get(..len).unwrap_or_default());
    if computed != expected {
        return Err(FormatErrorKind::Checksum { expected, computed });
    }
    Ok(Some(len))
}

fn truncated(name: &str, offset: u64, needed: usize, available: usize) -> FormatError {
    FormatError::new(
        name,
        offset,
        FormatErrorKind::Truncated {
            what: "framed snappy chunk",
            needed: needed as u64,
            available: available as u64,
        },
    )
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Encodes `input` as a framed stream (stream identifier first, then data
/// chunks) into `output`; returns the number of input bytes.
pub fn encode(mut input: impl Read, output: impl Write) -> io::Result<u64> {
    let mut encoder = snap::write::FrameEncoder::new(output);
    // snap writes the stream identifier lazily; write it even for empty
    // input, as snappy-java does, so the output is always a valid stream.
    let n = io::copy(&mut input, &mut encoder)?;
    if n == 0 {
        let mut output = encoder.into_inner().map_err(|e| e.into_error())?;
        output.write_all(&[0xff, 0x06, 0x00, 0x00])?;
        output.write_all(STREAM_IDENTIFIER)?;
        output.flush()?;
        return Ok(0);
    }
    encoder.into_inner().map_err(|e| e.into_error())?.flush()?;
    Ok(n)
}

/// Decodes the framed file `src` (e.g. `X.spi.sz`) into `dst` (e.g.
/// `X.spi`), writing a temporary file next to `dst` and renaming it.
pub fn decode_file(src: &Path, dst: &Path) -> FormatResult<u64> {
    let src_name = src.display().to_string();
    let dst_name = dst.display().to_string();
    let io_err = |name: &str, e| FormatError::new(name, 0, FormatErrorKind::Io(e));
    let input = File::open(src).map_err(|e| io_err(&src_name, e))?;
    let mut temp_name = dst.file_name().unwrap_or_default().to_os_string();
    temp_name.push(format!(".tmp-{}", std::process::id()));
    let temp = dst.with_file_name(temp_name);
    let result = (|| {
        let file = File::create(&temp).map_err(|e| io_err(&dst_name, e))?;
        let mut out = BufWriter::with_capacity(1 << 16, file);
        let n = decode(
            BufReader::with_capacity(1 << 16, input),
            &mut out,
            &src_name,
        )?;
        out.into_inner()
            .map_err(|e| io_err(&dst_name, e.into_error()))?;
        fs::rename(&temp, dst).map_err(|e| io_err(&dst_name, e))?;
        Ok(n)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Encodes `src` (e.g. `X.spi`) into the framed file `dst` (`X.spi.sz`),
/// through a temporary file next to `dst`.
pub fn encode_file(src: &Path, dst: &Path) -> FormatResult<u64> {
    let dst_name = dst.display().to_string();
    let io_err = |e| FormatError::new(dst_name.as_str(), 0, FormatErrorKind::Io(e));
    let mut temp_name = dst.file_name().unwrap_or_default().to_os_string();
    temp_name.push(format!(".tmp-{}", std::process::id()));
    let temp = dst.with_file_name(temp_name);
    let result = (|| {
        let input = File::open(src)?;
        let mut out = BufWriter::with_capacity(1 << 16, File::create(&temp)?);
        let n = encode(BufReader::with_capacity(1 << 16, input), &mut out)?;
        out.into_inner().map_err(|e| e.into_error())?;
        fs::rename(&temp, dst)?;
        Ok(n)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result.map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_vec(input: &[u8]) -> FormatResult<Vec<u8>> {
        let mut out = Vec::new();
        decode(input, &mut out, "t.sz")?;
        Ok(out)
    }

    #[test]
    fn crc_matches_reference_check_value() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn round_trips_and_handles_empty_streams() {
        let data: Vec<u8> = (0..300_000u32)
            .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
            .collect();
        let mut framed = Vec::new();
        assert_eq!(encode(&data[..], &mut framed).unwrap(), data.len() as u64);
        assert_eq!(&framed[..10], b"\xff\x06\x00\x00sNaPpY");
        assert_eq!(decode_vec(&framed).unwrap(), data);

        let mut empty = Vec::new();
        encode(&[][..], &mut empty).unwrap();
        assert_eq!(empty, b"\xff\x06\x00\x00sNaPpY");
        assert_eq!(decode_vec(&empty).unwrap(), b"");
        assert_eq!(decode_vec(b"").unwrap(), b"");
    }

    #[test]
    fn skips_padding_and_large_skippable_chunks_and_repeated_identifiers() {
        let mut framed = Vec::new();
        encode(&b"hello"[..], &mut framed).unwrap();
        let mut stream = framed.clone();
        stream.extend_from_slice(&[0xfe, 0x03, 0x00, 0x00, 1, 2, 3]);
        // A 200 000-byte skippable chunk (0x80).
        stream.extend_from_slice(&[0x80, 0x40, 0x0d, 0x03]);
        stream.extend(std::iter::repeat_n(7u8, 200_000));
        stream.extend_from_slice(&framed);
        assert_eq!(decode_vec(&stream).unwrap(), b"hellohello");
    }

    #[test]
    fn rejects_bad_streams_with_offsets() {
        let mut framed = Vec::new();
        encode(&b"hello hello hello"[..], &mut framed).unwrap();

        let mut bad_crc = framed.clone();
        bad_crc[14] ^= 1; // inside the first data chunk's CRC
        let err = decode_vec(&bad_crc).unwrap_err();
        assert!(
            matches!(err.kind, FormatErrorKind::Checksum { .. }),
            "{err}"
        );
        assert_eq!(err.offset, 10);

        let err = decode_vec(&framed[..framed.len() - 1]).unwrap_err();
        assert!(
            matches!(err.kind, FormatErrorKind::Truncated { .. }),
            "{err}"
        );

        let err = decode_vec(&framed[1..]).unwrap_err();
        assert!(
            matches!(err.kind, FormatErrorKind::BadMagic { .. }),
            "{err}"
        );

        let mut reserved = framed.clone();
        reserved.extend_from_slice(&[0x02, 0x00, 0x00, 0x00]);
        let err = decode_vec(&reserved).unwrap_err();
        assert_eq!(err.offset, framed.len() as u64);

        let mut huge = framed.clone();
        huge.extend_from_slice(&[0x01, 0xff, 0xff, 0xff]);
        let err = decode_vec(&huge).unwrap_err();
        assert!(
            matches!(err.kind, FormatErrorKind::TooLarge { .. }),
            "{err}"
        );
    }
}
