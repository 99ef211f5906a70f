//! Response bodies: small ones in one buffer, values larger than a chunk
//! streamed from the version a chunk at a time.
//!
//! A streamed value holds its version (so the data cannot go away while it
//! is sent) and reads the next chunk only when hyper asks for it, that is
//! when the connection has room: a large value costs one chunk of memory
//! however slow the client, and a value stored compressed is decoded one
//! chunk's blocks at a time.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};

use crate::catalog::{LookupError, ValueRef, Version};

/// Values up to this size are read in one go; larger ones are streamed in
/// chunks of this size. 256 KiB: large enough that a chunk costs few
/// system calls, small enough that thousands of concurrent downloads of
/// large values stay within a few hundred MiB.
pub const CHUNK: usize = 256 * 1024;

/// The body of every response.
pub enum Body {
    /// Everything at once (possibly nothing).
    Full(Option<Bytes>),
    /// A range of a value, read a chunk at a time.
    Value(ValueStream),
    /// A peer's answer to a proxied request, relayed as it arrives.
    Peer(crate::cluster::pipeline::PeerBody),
}

impl Default for Body {
    fn default() -> Self {
        Body::Full(None)
    }
}

impl Body {
    pub fn new(bytes: Bytes) -> Self {
        Body::Full(Some(bytes))
    }
}

/// `[next, end)` of a value of `version`, still to be sent.
pub struct ValueStream {
    version: Arc<Version>,
    value: ValueRef,
    next: u64,
    end: u64,
    /// Reused while the value is read from a mapping; a decoded chunk
    /// leaves with its buffer.
    scratch: Vec<u8>,
}

impl ValueStream {
    pub fn new(version: Arc<Version>, value: ValueRef, range: std::ops::Range<u64>) -> Self {
        ValueStream {
            version,
            value,
            next: range.start,
            end: range.end.min(value.len),
            scratch: Vec::new(),
        }
    }

    fn next_chunk(&mut self) -> Result<Bytes, LookupError> {
        let len = (self.end - self.next).min(CHUNK as u64) as usize;
        // A decoded chunk is handed to hyper as it is (no copy); the next
        // one gets a buffer of its own.
        let mut decoded = std::mem::take(&mut self.scratch);
        let bytes = match self
            .version
            .read_value(&self.value, self.next, len, &mut decoded)?
        {
            Some(mapped) => {
                self.scratch = decoded;
                Bytes::copy_from_slice(mapped)
            }
            None => Bytes::from(decoded),
        };
        if bytes.is_empty() {
            // The data ended before its recorded length: stop rather than
            // loop; the client sees a short body and hyper closes.
            return Err(self.version.context(LookupError::new(format!(
                "value ended at byte {} of {}",
                self.next, self.end
            ))));
        }
        self.next += bytes.len() as u64;
        Ok(bytes)
    }
}

/// What a streamed body can fail with: the stored data became unreadable
/// mid-value (the connection is then closed).
pub type BodyError = LookupError;

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            Body::Peer(incoming) => Pin::new(incoming).poll_frame(cx).map(|frame| {
                frame.map(|r| {
                    r.map_err(|e| {
                        tracing::warn!("http: a peer's answer broke off: {e}");
                        LookupError::new(e)
                    })
                })
            }),
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::Value(stream) => {
                if stream.next >= stream.end {
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(stream.next_chunk().map(Frame::data).inspect_err(
                    |e| {
                        tracing::error!(
                            "http: reading a value failed mid-body: {}",
                            crate::error_chain::ErrorChain(e)
                        )
                    },
                )))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(bytes) => bytes.is_none(),
            Body::Value(stream) => stream.next >= stream.end,
            Body::Peer(incoming) => incoming.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Value(stream) => SizeHint::with_exact(stream.end.saturating_sub(stream.next)),
            Body::Peer(incoming) => incoming.size_hint(),
        }
    }
}
