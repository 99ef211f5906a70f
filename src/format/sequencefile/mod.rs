//! Hadoop SequenceFiles: the default input of sequins.
//!
//! This module owns everything about the format: the header
//! ([`header`]), Hadoop's variable-length integers ([`vint`]), the codecs and
//! Hadoop's block framing ([`codec`]), the streaming [`Reader`] for NONE,
//! RECORD and BLOCK layouts, the [`Writer`] used by tests, benchmarks and
//! tools, and Writable unwrapping as sequins does it ([`writable`]).
//!
//! ```no_run
//! use sequinsfs::format::sequencefile::Reader;
//! # fn main() -> Result<(), sequinsfs::format::FormatError> {
//! let mut reader = Reader::open("part-00000".as_ref())?;
//! while let Some((key, value)) = reader.next_unwrapped()? {
//!     println!("{} bytes -> {} bytes", key.len(), value.len());
//! }
//! # Ok(()) }
//! ```
//!
//! Every failure is a [`FormatError`](crate::format::FormatError) naming the
//! file and the byte offset of the structure that was wrong; no input makes
//! the reader panic or allocate more than the configured limit
//! ([`ReaderOptions::max_record_bytes`]) or than the input could hold.

pub mod codec;
pub mod header;
mod input;
mod reader;
pub mod vint;
pub mod writable;
mod writer;

pub use codec::Codec;
pub use header::{Compression, Header};
pub use reader::{DEFAULT_BUFFER_SIZE, DEFAULT_MAX_RECORD_BYTES, Reader, ReaderOptions};
pub use writable::{WritableKind, unwrap_writable, write_bytes_writable, write_text};
pub use writer::{DEFAULT_BLOCK_SIZE, DEFAULT_SYNC_INTERVAL, Writer, WriterOptions};
