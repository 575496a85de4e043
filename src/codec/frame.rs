//! Length-prefixed frames: a 4-byte signed length, then that many payload bytes.
//!
//! # Wire format
//!
//! ```text
//!  0               4                                   4 + len
//!  +---+---+---+---+-----------------------------------+
//!  |  len  (i32)   |  payload: exactly `len` bytes     |  next frame ...
//!  +---+---+---+---+-----------------------------------+
//!    little-endian by default (Python `struct.pack('i', n)` on x86-64),
//!    big-endian on request (`struct.pack('!i', n)`)
//! ```
//!
//! The length is *signed* on the wire because that is what the Python peers
//! send; a negative length is a protocol error ([`FrameError::Negative`]), and
//! so is a length above the decoder's limit ([`FrameError::TooLong`]). A zero
//! length is a valid, empty frame.
//!
//! # Decoding contract
//!
//! [`FrameDecoder::decode`] is handed *all* buffered, unconsumed bytes and
//! decodes at most one frame from their front:
//!
//! * `Ok(Some(frame))`: `frame.consumed == 4 + frame.payload.len()` always
//!   covers one whole frame, length prefix included. The caller drops exactly
//!   that many bytes from the front of its buffer.
//! * `Ok(None)`: more bytes are needed. **Nothing is consumed**: the caller
//!   keeps every byte and, after the next read, passes the same leftover (which
//!   still starts at the frame's length prefix) followed by the new bytes.
//! * `Err(..)`: the peer broke the protocol; the connection should be closed.
//!   The error is reported as soon as the 4 length bytes are present, before
//!   any payload byte is awaited, so a peer announcing 2 GiB is refused after
//!   sending 4 bytes.
//!
//! # Invariants
//!
//! * The decoder is in state `Head` between frames and `Body { len }` once it
//!   has parsed and validated the current frame's length. In `Body` the length
//!   is not parsed or validated again: it is taken from the state. Yielding a
//!   frame returns the decoder to `Head`.
//! * `len` in `Body { len }` is never above the decoder's `max_len` nor above
//!   `i32::MAX`, so `4 + len` is computed with checked arithmetic and never
//!   used to allocate: payloads are borrowed from the input slice.
//! * After an `Err` the decoder stays in `Head`; feeding the same bytes again
//!   gives the same error. It is not meant to be reused on that stream.
//! * Every state change goes through one private `set_state`, which logs it
//!   at `trace` level.

use std::fmt;

// `ByteOrder` here is this module's enum; byteorder's trait is only needed for
// its methods on `LittleEndian` and `BigEndian`.
use byteorder::{BigEndian, ByteOrder as _, LittleEndian};

/// Byte order of a 4-byte length prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ByteOrder {
    /// Least significant byte first (Python `struct.pack('i', n)` on x86-64).
    #[default]
    Little,
    /// Most significant byte first, "network order" (`struct.pack('!i', n)`).
    Big,
}

impl ByteOrder {
    /// Reads a signed 32-bit integer from exactly 4 bytes.
    pub(crate) fn read_i32(self, bytes: [u8; 4]) -> i32 {
        match self {
            ByteOrder::Little => LittleEndian::read_i32(&bytes),
            ByteOrder::Big => BigEndian::read_i32(&bytes),
        }
    }

    /// Encodes a signed 32-bit integer as 4 bytes.
    pub(crate) fn write_i32(self, n: i32) -> [u8; 4] {
        let mut bytes = [0; 4];
        match self {
            ByteOrder::Little => LittleEndian::write_i32(&mut bytes, n),
            ByteOrder::Big => BigEndian::write_i32(&mut bytes, n),
        }
        bytes
    }

    /// Reads the 4-byte prefix at the front of `input`, if it is all there.
    pub(crate) fn read_prefix(self, input: &[u8]) -> Option<i32> {
        let head: [u8; 4] = input.get(..PREFIX_LEN)?.try_into().ok()?;
        Some(self.read_i32(head))
    }
}

/// Size of the length prefix, in bytes.
pub(crate) const PREFIX_LEN: usize = 4;

/// Default upper bound on a frame's payload length: 16 MiB.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// A protocol violation (or an encoding request that cannot be honoured).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix was negative.
    Negative(i32),
    /// The length prefix exceeded the decoder's limit.
    TooLong {
        /// The declared payload length.
        len: u64,
        /// The decoder's limit.
        max: usize,
    },
    /// The stream ended in the middle of a frame.
    UnexpectedEof {
        /// How many more bytes the unfinished frame needed.
        needed: usize,
        /// How many bytes of it had arrived.
        have: usize,
    },
    /// A payload to encode is longer than a 4-byte signed length can express.
    PayloadTooLarge(usize),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Negative(n) => {
                write!(f, "frame length prefix is negative ({n})")
            }
            FrameError::TooLong { len, max } => {
                write!(f, "frame length {len} exceeds the maximum of {max} bytes")
            }
            FrameError::UnexpectedEof { needed, have } => write!(
                f,
                "stream ended in the middle of a frame: {have} bytes of it \
                 arrived, {needed} more were needed"
            ),
            FrameError::PayloadTooLarge(n) => {
                write!(f, "payload of {n} bytes is too large for a frame (at most {} bytes)", i32::MAX)
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// One decoded frame, borrowed from the decoder's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The frame's payload (without the length prefix).
    pub payload: &'a [u8],
    /// Bytes of input this frame occupied: `4 + payload.len()`.
    pub consumed: usize,
}

/// Where the decoder is within the current frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between frames: the next 4 bytes are a length prefix.
    Head,
    /// The prefix was parsed and validated; waiting for `4 + len` bytes.
    Body { len: usize },
}

/// Incremental decoder for length-prefixed frames. See the module docs for
/// the resume contract.
///
/// ```
/// use wireloop::codec::frame::{encode_frame, ByteOrder, FrameDecoder};
///
/// let mut wire = Vec::new();
/// encode_frame(ByteOrder::Little, b"hello", &mut wire).unwrap();
/// encode_frame(ByteOrder::Little, b"feng", &mut wire).unwrap();
///
/// let mut dec = FrameDecoder::new(ByteOrder::Little, 1024);
/// assert!(dec.decode(&wire[..6]).unwrap().is_none()); // need more: nothing consumed
/// let first = dec.decode(&wire).unwrap().unwrap();
/// assert_eq!((first.payload, first.consumed), (&b"hello"[..], 9));
/// let second = dec.decode(&wire[9..]).unwrap().unwrap();
/// assert_eq!(second.payload, b"feng");
/// // A negative length is refused as soon as its 4 bytes are in.
/// assert!(dec.decode(&(-1i32).to_le_bytes()).is_err());
/// ```
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    order: ByteOrder,
    max_len: usize,
    state: State,
    /// The connection its trace lines name (`conn 8: frame: …`), if told.
    trace_as: Option<u64>,
}

impl Default for FrameDecoder {
    /// Little-endian, [`DEFAULT_MAX_FRAME`].
    fn default() -> Self {
        Self::new(ByteOrder::Little, DEFAULT_MAX_FRAME)
    }
}

impl FrameDecoder {
    /// Creates a decoder for prefixes in `order`, refusing payloads longer
    /// than `max_len` bytes (the wire format itself caps them at `i32::MAX`).
    pub fn new(order: ByteOrder, max_len: usize) -> Self {
        FrameDecoder { order, max_len, state: State::Head, trace_as: None }
    }

    /// The byte order this decoder reads.
    pub fn order(&self) -> ByteOrder {
        self.order
    }

    /// The largest payload length this decoder accepts.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Decode at most one frame from the front of `input` (all unconsumed
    /// buffered bytes).
    ///
    /// Returns `Ok(Some(frame))` with `frame.consumed == 4 + payload.len()`,
    /// `Ok(None)` when more bytes are needed (nothing consumed; pass the same
    /// leftover plus new bytes next time), or an error for a negative or
    /// too-long length, detected as soon as the 4 length bytes are present.
    pub fn decode<'a>(&mut self, input: &'a [u8]) -> Result<Option<Frame<'a>>, FrameError> {
        let len = match self.state {
            State::Body { len } => {
                debug_assert!(input.len() >= PREFIX_LEN, "frame: input must still start at the parsed length prefix");
                len
            }
            State::Head => match self.parse_len(input)? {
                None => return Ok(None),
                Some(len) => {
                    self.set_state(State::Body { len });
                    len
                }
            },
        };
        let total = frame_total(len, self.max_len)?;
        match input.get(PREFIX_LEN..total) {
            None => Ok(None),
            Some(payload) => {
                self.set_state(State::Head);
                Ok(Some(Frame { payload, consumed: total }))
            }
        }
    }

    /// Called at end of stream with whatever is left unconsumed (after
    /// [`decode`](Self::decode) returned `Ok(None)`).
    ///
    /// `Ok(())` if `rest` is empty, i.e. the stream ended at a frame boundary;
    /// otherwise [`FrameError::UnexpectedEof`] (or the length error, if `rest`
    /// holds an undecoded invalid prefix).
    pub fn finish(&self, rest: &[u8]) -> Result<(), FrameError> {
        if rest.is_empty() {
            return Ok(());
        }
        let needed = match self.state {
            State::Body { .. } => self.needed(rest.len()),
            State::Head => match self.parse_len(rest)? {
                None => self.needed(rest.len()),
                Some(len) => frame_total(len, self.max_len)?.saturating_sub(rest.len()),
            },
        };
        Err(FrameError::UnexpectedEof { needed, have: rest.len() })
    }

    /// How many more bytes are needed, given `input_len` buffered bytes,
    /// before the next [`decode`](Self::decode) can make progress. Zero means
    /// `decode` can make progress now. In state `Head` this counts only up to
    /// the end of the length prefix.
    pub fn needed(&self, input_len: usize) -> usize {
        let target = match self.state {
            State::Head => PREFIX_LEN,
            State::Body { len } => PREFIX_LEN.saturating_add(len),
        };
        target.saturating_sub(input_len)
    }

    /// Parses and validates the prefix at the front of `input`, if present.
    fn parse_len(&self, input: &[u8]) -> Result<Option<usize>, FrameError> {
        let Some(raw) = self.order.read_prefix(input) else {
            return Ok(None);
        };
        let len = u64::try_from(raw).map_err(|_| FrameError::Negative(raw))?;
        match usize::try_from(len) {
            Ok(n) if n <= self.max_len => Ok(Some(n)),
            _ => Err(FrameError::TooLong { len, max: self.max_len }),
        }
    }

    /// Names connection `conn` in this decoder's trace lines
    /// (`conn 8: frame: …`), so that with several peers each state change says
    /// whose it is. Only the log line changes; decoding does not.
    pub fn trace_as(&mut self, conn: u64) {
        self.trace_as = Some(conn);
    }

    /// The single place where the state changes.
    fn set_state(&mut self, to: State) {
        match self.trace_as {
            Some(conn) => log::trace!("conn {conn}: frame: {:?} => {:?}", self.state, to),
            None => log::trace!("frame: {:?} => {:?}", self.state, to),
        }
        self.state = to;
    }
}

/// `4 + len`, checked.
fn frame_total(len: usize, max: usize) -> Result<usize, FrameError> {
    PREFIX_LEN.checked_add(len).ok_or(FrameError::TooLong { len: len as u64, max })
}

/// Appends one frame (length prefix in `order`, then `payload`) to `out`.
///
/// Fails with [`FrameError::PayloadTooLarge`] if `payload` is longer than
/// `i32::MAX` bytes; `out` is left untouched in that case.
pub fn encode_frame(order: ByteOrder, payload: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
    let len = i32::try_from(payload.len()).map_err(|_| FrameError::PayloadTooLarge(payload.len()))?;
    out.reserve(PREFIX_LEN.saturating_add(payload.len()));
    out.extend_from_slice(&order.write_i32(len));
    out.extend_from_slice(payload);
    Ok(())
}
