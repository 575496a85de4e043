//! Per-connection byte buffers: what was read and not yet parsed, and what was
//! produced and not yet written.
//!
//! ```text
//!  InBuf   [ consumed | unparsed ........ ]      OutBuf  [ sent | unsent ....... ]
//!           0        start             len                0     pos             len
//! ```
//!
//! Invariants:
//! * `InBuf` only holds bytes a handler left unconsumed (a partial message),
//!   and frees its memory whenever it empties.
//! * A connection's `OutBuf` is, while empty, a vector of no capacity: the
//!   loop lends it its one spare buffer for a pass ([`OutBuf::lend`]) and
//!   takes the capacity back once everything is written
//!   ([`OutBuf::give_back`]). So a request answered at once allocates
//!   nothing, and an idle connection holds no buffer memory at all.
//! * `OutBuf` is append-only for handlers: bytes already handed to the kernel
//!   are skipped by an offset (`pos`) after a short write, never rewritten.

use std::io::{self, Write};

/// Capacity above which the loop's spare output buffer is freed, rather than
/// kept, once it empties.
const KEEP_CAPACITY: usize = 64 * 1024;

/// Bytes read from a peer and not yet consumed by its handler.
#[derive(Debug, Default)]
pub(crate) struct InBuf {
    buf: Vec<u8>,
    start: usize,
}

impl InBuf {
    /// The unconsumed bytes.
    pub(crate) fn data(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    pub(crate) fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends freshly read bytes after the unconsumed ones.
    pub(crate) fn extend(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            // Move the tail to the front at most once per half-buffer consumed,
            // so the copying is amortised O(1) per byte.
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Marks `n` bytes at the front as consumed.
    pub(crate) fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.len());
        self.start += n;
        if self.start == self.buf.len() {
            self.clear();
        }
    }

    /// Replaces the contents with the unconsumed tail of `bytes`.
    pub(crate) fn keep_tail(&mut self, bytes: &[u8]) {
        self.clear();
        self.buf.extend_from_slice(bytes);
    }

    fn clear(&mut self) {
        self.start = 0;
        self.buf = Vec::new();
    }
}

/// A connection's output: what its handler produced and the kernel has not yet
/// taken. Handlers append through [`crate::Context::out`].
#[derive(Debug, Default)]
pub struct OutBuf {
    buf: Vec<u8>,
    pos: usize,
}

impl OutBuf {
    /// Bytes waiting to be written.
    #[inline]
    pub fn len(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// True when nothing waits to be written.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends bytes to send.
    #[inline]
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Lets an encoder append to the underlying vector. The closure may only
    /// append: shortening the vector would drop bytes already queued, which
    /// panics.
    #[inline]
    pub fn append<R>(&mut self, f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        let before = self.buf.len();
        let r = f(&mut self.buf);
        assert!(self.buf.len() >= before, "OutBuf::append may only append");
        r
    }

    /// Before a pass: an empty buffer without memory borrows `spare`'s.
    pub(crate) fn lend(&mut self, spare: &mut OutBuf) {
        if self.is_empty() && self.buf.capacity() == 0 {
            std::mem::swap(self, spare);
        }
    }

    /// After a pass: an empty buffer returns its memory to `spare` (or frees
    /// it if `spare` already has some), so an idle connection holds none.
    pub(crate) fn give_back(&mut self, spare: &mut OutBuf) {
        if self.is_empty() && self.buf.capacity() > 0 {
            if spare.buf.capacity() == 0 {
                std::mem::swap(self, spare);
            } else {
                self.buf = Vec::new();
            }
        }
    }

    /// The unsent bytes.
    #[inline]
    pub fn unsent(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Records that the kernel took `n` more bytes.
    pub(crate) fn advance(&mut self, n: usize) {
        debug_assert!(n <= self.len());
        self.pos += n;
        if self.pos == self.buf.len() {
            self.pos = 0;
            if self.buf.capacity() > KEEP_CAPACITY {
                self.buf = Vec::new();
            } else {
                self.buf.clear();
            }
        } else if self.pos >= self.len() {
            // After a short write, compact once the sent prefix outweighs the
            // rest: amortised O(1) per byte, and the vector stops growing.
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }
}

impl Write for OutBuf {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbuf_short_writes_advance_an_offset() {
        let mut o = OutBuf::default();
        o.extend_from_slice(b"hello world");
        o.advance(3);
        assert_eq!(o.unsent(), b"lo world");
        o.extend_from_slice(b"!");
        o.advance(5);
        assert_eq!(o.unsent(), b"rld!");
        o.advance(4);
        assert!(o.is_empty());
    }

    #[test]
    #[should_panic(expected = "may only append")]
    fn outbuf_append_refuses_truncation() {
        let mut o = OutBuf::default();
        o.extend_from_slice(b"abc");
        o.append(|v| v.truncate(1));
    }

    #[test]
    fn an_empty_outbuf_borrows_and_returns_the_spare() {
        let mut spare = OutBuf::default();
        spare.extend_from_slice(&[0; 100]);
        spare.advance(100);
        let cap = spare.buf.capacity();
        let mut conn = OutBuf::default();
        conn.lend(&mut spare);
        assert_eq!((conn.buf.capacity(), spare.buf.capacity()), (cap, 0));
        conn.extend_from_slice(b"reply");
        conn.advance(5);
        conn.give_back(&mut spare);
        assert_eq!((conn.buf.capacity(), spare.buf.capacity()), (0, cap));
        // Output still unsent stays with its connection.
        conn.lend(&mut spare);
        conn.extend_from_slice(b"pending");
        conn.give_back(&mut spare);
        assert_eq!(conn.unsent(), b"pending");
    }

    #[test]
    fn inbuf_keeps_unconsumed_and_releases_large_buffers() {
        let mut i = InBuf::default();
        i.extend(&[7u8; 10_000]);
        i.consume(9_998);
        assert_eq!(i.data(), &[7, 7]);
        i.extend(b"xy");
        assert_eq!(i.data(), b"\x07\x07xy");
        i.consume(4);
        assert!(i.is_empty());
        assert_eq!(i.buf.capacity(), 0);
    }
}
