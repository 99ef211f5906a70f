//! The reader's own input buffer: a window over any `Read` that can hand out
//! a whole record or block section as one borrowed slice.
//!
//! Unlike `BufReader`, a request for `n` bytes makes the window hold `n`
//! contiguous bytes, growing it when a record is larger than the buffer. The
//! window only doubles while it is full of bytes actually read, so a length
//! field that lies can never make it allocate much more than the input really
//! holds; callers additionally refuse lengths above their configured limit
//! before asking.

use std::io::{self, Read};

use super::vint;
use crate::format::FormatErrorKind;

pub(crate) struct Input<R> {
    inner: R,
    buf: Vec<u8>,
    /// Start of the unconsumed bytes in `buf`.
    start: usize,
    /// End of the bytes read into `buf`.
    end: usize,
    /// File offset of `buf[0]`.
    base: u64,
    /// The underlying reader returned 0 (end of input).
    eof: bool,
}

impl<R: Read> Input<R> {
    pub(crate) fn new(inner: R, initial_capacity: usize) -> Self {
        Input {
            inner,
            buf: vec![0; initial_capacity.max(64)],
            start: 0,
            end: 0,
            base: 0,
            eof: false,
        }
    }

    /// File offset of the next unconsumed byte.
    #[inline]
    pub(crate) fn position(&self) -> u64 {
        self.base + self.start as u64
    }

    /// Unconsumed bytes currently buffered.
    #[inline]
    pub(crate) fn available(&self) -> &[u8] {
        self.buf.get(self.start..self.end).unwrap_or_default()
    }

    /// Tries to buffer at least `n` unconsumed bytes; returns how many are
    /// buffered, which is less than `n` only at the end of the input.
    #[inline]
    pub(crate) fn fill(&mut self, n: usize) -> io::Result<usize> {
        let have = self.end - self.start;
        if have >= n || self.eof {
            return Ok(have);
        }
        self.fill_slow(n)
    }

    #[cold]
    fn fill_slow(&mut self, n: usize) -> io::Result<usize> {
        while self.end - self.start < n && !self.eof {
            if self.buf.len() - self.start < n && self.start > 0 {
                // Move the unconsumed tail to the front to make room.
                self.buf.copy_within(self.start..self.end, 0);
                self.base += self.start as u64;
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                // Full of real data and still short: double, but never past
                // what was asked for.
                let new_len = self
                    .buf
                    .len()
                    .saturating_mul(2)
                    .min(n)
                    .max(self.buf.len() + 1);
                self.buf.resize(new_len, 0);
            }
            let space = self.buf.get_mut(self.end..).unwrap_or_default();
            match self.inner.read(space) {
                Ok(0) => self.eof = true,
                Ok(read) => self.end += read,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.end - self.start)
    }

    /// Marks `n` buffered bytes as consumed (`n` must be buffered).
    #[inline]
    pub(crate) fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.end - self.start);
        self.start = (self.start + n).min(self.end);
    }
}

impl<R: Read> Input<R> {
    /// Consumes and returns the next `n` bytes, or says that the input ends
    /// before them (`what` names the structure for the error).
    #[inline]
    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&[u8], FormatErrorKind> {
        let have = self.fill(n)?;
        if have < n {
            return Err(FormatErrorKind::Truncated {
                what,
                needed: n as u64,
                available: have as u64,
            });
        }
        let start = self.start;
        self.consume(n);
        Ok(self.buf.get(start..start + n).unwrap_or_default())
    }

    /// Consumes a fixed-size array (a big-endian int, a sync marker).
    #[inline]
    pub(crate) fn take_array<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<[u8; N], FormatErrorKind> {
        let bytes = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// Consumes a Hadoop vint that must be a non-negative `i32` (a length or
    /// a count).
    pub(crate) fn take_vint_len(&mut self, what: &'static str) -> Result<usize, FormatErrorKind> {
        let have = self.fill(1)?;
        let Some(&first) = self.available().first() else {
            return Err(FormatErrorKind::Truncated {
                what,
                needed: 1,
                available: have as u64,
            });
        };
        let size = vint::encoded_len(first);
        let bytes = self.take(size, what)?;
        let (value, _) = vint::decode_vint(bytes)
            .map_err(|e| FormatErrorKind::BadVint(format!("{what}: {e}")))?;
        usize::try_from(value)
            .map_err(|_| FormatErrorKind::Corrupt(format!("negative {what} {value}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out at most 3 bytes per call.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = out.len().min(3).min(self.0.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn requests_larger_than_the_buffer_grow_it_and_positions_stay_right() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let mut input = Input::new(Trickle(&data), 16);
        assert!(input.fill(10).unwrap() >= 10);
        input.consume(10);
        assert!(input.fill(500).unwrap() >= 500);
        assert_eq!(&input.available()[..500], &data[10..510]);
        assert_eq!(input.position(), 10);
        input.consume(500);
        assert_eq!(input.fill(5000).unwrap(), 490);
        assert_eq!(input.position(), 510);
    }

    #[test]
    fn a_huge_request_on_a_short_input_allocates_little() {
        let data = [7u8; 100];
        let mut input = Input::new(&data[..], 64);
        assert_eq!(input.fill(1 << 30).unwrap(), 100);
        assert!(input.buf.len() <= 256);
    }
}
