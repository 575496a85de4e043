//! JSON header + streamed body: a 4-byte length, a JSON object of that length,
//! then a body whose length the *service* learns from the header.
//!
//! # Wire format
//!
//! ```text
//!  0               4                        4 + len
//!  +---+---+---+---+------------------------+--------------------------------+
//!  |  len  (i32)   |  header: UTF-8 JSON    |  body: `body_len` bytes,       |
//!  |  1..=max      |  object, `len` bytes   |  length NOT on the wire; the   |
//!  +---+---+---+---+------------------------+  service derives it from the   |
//!    little-endian by default               |  header (e.g. `file_size -     |
//!    (frame::ByteOrder selects)             |  offset`) and calls begin_body |
//!                                           +--------------------------------+
//! ```
//!
//! # Decoding contract
//!
//! [`HeaderDecoder::decode`] is handed all buffered, unconsumed bytes and
//! yields at most one [`Item`] per call, with the number of bytes it consumed
//! (the caller drops that many bytes from the front of its buffer). Every
//! message decodes to exactly this sequence:
//!
//! ```text
//!  Header(map)  -- caller calls begin_body(n) --  Body(chunk)*  BodyEnd
//! ```
//!
//! * `Header`: `consumed == 4 + len`. `Ok(None)` while the header is
//!   incomplete consumes nothing: the next call gets the same leftover (still
//!   starting at the length prefix) plus new bytes, and the already-validated
//!   length is taken from the state rather than re-parsed.
//! * After a `Header` the caller **must** call
//!   [`begin_body`](HeaderDecoder::begin_body) (0 allowed) before decoding
//!   further. If it does not, `decode` and `finish` fail with
//!   [`HeaderError::MissingBodyLen`] (and panic in debug builds, via
//!   `debug_assert!`, since this is a caller bug, not a peer error).
//! * `Body(chunk)`: `chunk` is `min(available, remaining)` bytes, never
//!   empty, `consumed == chunk.len()`. The body is never buffered whole.
//! * `BodyEnd` is yielded **exactly once per message**, after the last body
//!   chunk, consuming 0 bytes, even when the input is empty. An empty body
//!   (`begin_body(0)`) therefore yields `BodyEnd` right away with no `Body`
//!   items. After `BodyEnd` the decoder expects the next length prefix.
//!
//! # Invariants
//!
//! * States: `Len` (between messages), `Header { len }` (prefix validated:
//!   `1 <= len <= max_header`), `AwaitBodyLen` (header yielded, waiting for
//!   `begin_body`), `Body { remaining }` (`remaining == 0` means only
//!   `BodyEnd` is left to yield).
//! * The length is validated (negative, zero, over the limit) as soon as its
//!   4 bytes are present, before any header byte is awaited. Sizes are
//!   combined with checked arithmetic and never used to allocate; the JSON
//!   parser only sees bytes that actually arrived.
//! * After an `Err` the decoder does not move; the stream is broken and the
//!   connection should be closed.
//! * Every state change goes through one private `set_state`, which logs it
//!   at `trace` level.

use std::fmt;

use serde_json::{Map, Value};

use super::frame::{ByteOrder, PREFIX_LEN};

/// Default upper bound on a header's length: 64 KiB.
pub const DEFAULT_MAX_HEADER: usize = 64 * 1024;

/// Which part of a message the stream ended in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EofPart {
    /// Inside the 4-byte length prefix.
    Length,
    /// Inside the JSON header.
    Header,
    /// Inside the body.
    Body,
}

impl fmt::Display for EofPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EofPart::Length => "length prefix",
            EofPart::Header => "JSON header",
            EofPart::Body => "body",
        })
    }
}

/// A protocol violation (or a request the codec cannot honour).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// The header length prefix was negative.
    Negative(i32),
    /// The header length prefix was 0; a header is at least `{}`.
    Empty,
    /// The header length exceeded the decoder's limit.
    TooLong {
        /// The declared header length.
        len: u64,
        /// The decoder's limit.
        max: usize,
    },
    /// The header bytes are not valid UTF-8.
    InvalidUtf8,
    /// The header is not valid JSON; carries the parser's message.
    InvalidJson(String),
    /// The header is valid JSON but not an object.
    NotAnObject,
    /// The stream ended in the middle of a message.
    UnexpectedEof {
        /// The part of the message that was cut short.
        part: EofPart,
        /// How many more bytes that part needed.
        needed: u64,
        /// How many unconsumed bytes were left.
        have: usize,
    },
    /// A header to encode is longer than a 4-byte signed length can express.
    PayloadTooLarge(usize),
    /// Caller bug: a header was decoded but
    /// [`begin_body`](HeaderDecoder::begin_body) was not called before the
    /// next `decode` or `finish`.
    MissingBodyLen,
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Negative(n) => write!(f, "header length prefix is negative ({n})"),
            HeaderError::Empty => f.write_str("header length prefix is 0; a header cannot be empty"),
            HeaderError::TooLong { len, max } => {
                write!(f, "header length {len} exceeds the maximum of {max} bytes")
            }
            HeaderError::InvalidUtf8 => f.write_str("header is not valid UTF-8"),
            HeaderError::InvalidJson(msg) => write!(f, "header is not valid JSON: {msg}"),
            HeaderError::NotAnObject => f.write_str("header is valid JSON but not a JSON object"),
            HeaderError::UnexpectedEof { part, needed, have } => write!(
                f,
                "stream ended in the middle of a message's {part}: {have} bytes left over, \
                 {needed} more were needed"
            ),
            HeaderError::PayloadTooLarge(n) => {
                write!(f, "header of {n} bytes is too large to encode (at most {} bytes)", i32::MAX)
            }
            HeaderError::MissingBodyLen => {
                f.write_str("a header was decoded but begin_body was not called before decoding on")
            }
        }
    }
}

impl std::error::Error for HeaderError {}

/// One piece of a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Item<'a> {
    /// The parsed JSON header object.
    Header(Map<String, Value>),
    /// A non-empty chunk of the body, borrowed from the input.
    Body(&'a [u8]),
    /// The body is complete (yielded once per message, consuming 0 bytes).
    BodyEnd,
}

/// An item together with the number of input bytes it consumed.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded<'a> {
    /// What was decoded.
    pub item: Item<'a>,
    /// Bytes to drop from the front of the caller's buffer.
    pub consumed: usize,
}

/// Where the decoder is within the current message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between messages: the next 4 bytes are a length prefix.
    Len,
    /// Prefix validated; waiting for `4 + len` bytes.
    Header { len: usize },
    /// Header yielded; the caller must call `begin_body`.
    AwaitBodyLen,
    /// Streaming the body; `remaining == 0` means `BodyEnd` is due.
    Body { remaining: u64 },
}

/// Incremental decoder for header + body messages. See the module docs for
/// the contract.
///
/// ```
/// use serde_json::json;
/// use wireloop::codec::frame::ByteOrder;
/// use wireloop::codec::header::{encode_header, HeaderDecoder, Item};
///
/// let mut wire = Vec::new();
/// encode_header(ByteOrder::Little, &json!({"file_name": "a.txt", "file_size": 5}), &mut wire).unwrap();
/// wire.extend_from_slice(b"hello");
///
/// let mut dec = HeaderDecoder::default();
/// let d = dec.decode(&wire).unwrap().unwrap();
/// let Item::Header(h) = d.item else { panic!("a header comes first") };
/// dec.begin_body(h["file_size"].as_u64().unwrap()); // the service sizes the body
/// let rest = &wire[d.consumed..];
/// let d = dec.decode(&rest[..2]).unwrap().unwrap(); // the body streams in pieces
/// assert_eq!(d.item, Item::Body(b"he"));
/// let d = dec.decode(&rest[2..]).unwrap().unwrap();
/// assert_eq!(d.item, Item::Body(b"llo"));
/// assert_eq!(dec.decode(&[]).unwrap().unwrap().item, Item::BodyEnd);
/// ```
#[derive(Debug, Clone)]
pub struct HeaderDecoder {
    order: ByteOrder,
    max_header: usize,
    state: State,
    /// The connection its trace lines name (`conn 8: header: …`), if told.
    trace_as: Option<u64>,
}

impl Default for HeaderDecoder {
    /// Little-endian, [`DEFAULT_MAX_HEADER`].
    fn default() -> Self {
        Self::new(ByteOrder::Little, DEFAULT_MAX_HEADER)
    }
}

impl HeaderDecoder {
    /// Creates a decoder for prefixes in `order`, refusing headers longer than
    /// `max_header` bytes.
    pub fn new(order: ByteOrder, max_header: usize) -> Self {
        HeaderDecoder { order, max_header, state: State::Len, trace_as: None }
    }

    /// Decodes at most one item from the front of `input` (all unconsumed
    /// buffered bytes). `Ok(None)` means more bytes are needed and nothing was
    /// consumed.
    ///
    /// # Panics
    ///
    /// In debug builds, if called after an [`Item::Header`] without
    /// [`begin_body`](Self::begin_body); release builds return
    /// [`HeaderError::MissingBodyLen`].
    pub fn decode<'a>(&mut self, input: &'a [u8]) -> Result<Option<Decoded<'a>>, HeaderError> {
        match self.state {
            State::Len => match self.parse_len(input)? {
                None => Ok(None),
                Some(len) => {
                    self.set_state(State::Header { len });
                    self.decode_header(len, input)
                }
            },
            State::Header { len } => self.decode_header(len, input),
            State::AwaitBodyLen => {
                debug_assert!(false, "header: decode called before begin_body");
                Err(HeaderError::MissingBodyLen)
            }
            State::Body { remaining: 0 } => {
                self.set_state(State::Len);
                Ok(Some(Decoded { item: Item::BodyEnd, consumed: 0 }))
            }
            State::Body { remaining } => {
                // min(available, remaining), computed without truncating casts.
                let chunk = match usize::try_from(remaining) {
                    Ok(r) => r.min(input.len()),
                    Err(_) => input.len(),
                };
                if chunk == 0 {
                    return Ok(None);
                }
                // chunk <= remaining, so this cannot underflow.
                let left = remaining - chunk as u64;
                self.set_state(State::Body { remaining: left });
                Ok(Some(Decoded { item: Item::Body(&input[..chunk]), consumed: chunk }))
            }
        }
    }

    /// Tells the decoder the body length of the message whose header was just
    /// decoded. Must be called exactly once after each [`Item::Header`]; 0 is
    /// allowed (the next `decode` then yields [`Item::BodyEnd`] at once).
    ///
    /// Calling it at any other time is a caller bug: it panics in debug
    /// builds and is ignored (with an error log) in release builds.
    pub fn begin_body(&mut self, body_len: u64) {
        if self.state == State::AwaitBodyLen {
            self.set_state(State::Body { remaining: body_len });
        } else {
            debug_assert!(false, "header: begin_body called in state {:?}", self.state);
            log::error!("header: begin_body({body_len}) ignored in state {:?}", self.state);
        }
    }

    /// `true` from [`begin_body`](Self::begin_body) until
    /// [`Item::BodyEnd`] has been yielded.
    pub fn in_body(&self) -> bool {
        matches!(self.state, State::Body { .. })
    }

    /// Body bytes still to come, while [`in_body`](Self::in_body); `Some(0)`
    /// means only `BodyEnd` is left to yield.
    pub fn body_remaining(&self) -> Option<u64> {
        match self.state {
            State::Body { remaining } => Some(remaining),
            _ => None,
        }
    }

    /// Called at end of stream with whatever is left unconsumed (after
    /// `decode` returned `Ok(None)`). `Ok(())` only at a message boundary:
    /// `rest` empty and no message started (or one whose body is complete and
    /// only `BodyEnd` is pending). Otherwise [`HeaderError::UnexpectedEof`]
    /// saying where the stream was cut, or the length error if `rest` holds an
    /// undecoded invalid prefix.
    ///
    /// # Panics
    ///
    /// In debug builds, if called after an [`Item::Header`] without
    /// [`begin_body`](Self::begin_body) (release: [`HeaderError::MissingBodyLen`]).
    pub fn finish(&self, rest: &[u8]) -> Result<(), HeaderError> {
        let have = rest.len();
        let eof =
            |part, target: u64| HeaderError::UnexpectedEof { part, needed: target.saturating_sub(have as u64), have };
        match self.state {
            State::Len if rest.is_empty() => Ok(()),
            State::Len => match self.parse_len(rest)? {
                None => Err(eof(EofPart::Length, PREFIX_LEN as u64)),
                Some(len) => Err(eof(EofPart::Header, header_total(len)? as u64)),
            },
            State::Header { len } => Err(eof(EofPart::Header, header_total(len)? as u64)),
            State::AwaitBodyLen => {
                debug_assert!(false, "header: finish called before begin_body");
                Err(HeaderError::MissingBodyLen)
            }
            State::Body { remaining: 0 } if rest.is_empty() => Ok(()),
            State::Body { remaining } => Err(eof(EofPart::Body, remaining)),
        }
    }

    /// Parses the header once its `4 + len` bytes are all present.
    fn decode_header<'a>(&mut self, len: usize, input: &'a [u8]) -> Result<Option<Decoded<'a>>, HeaderError> {
        let total = header_total(len)?;
        let Some(raw) = input.get(PREFIX_LEN..total) else {
            return Ok(None);
        };
        let text = std::str::from_utf8(raw).map_err(|_| HeaderError::InvalidUtf8)?;
        let value: Value = serde_json::from_str(text).map_err(|e| HeaderError::InvalidJson(e.to_string()))?;
        let Value::Object(map) = value else {
            return Err(HeaderError::NotAnObject);
        };
        self.set_state(State::AwaitBodyLen);
        Ok(Some(Decoded { item: Item::Header(map), consumed: total }))
    }

    /// Parses and validates the prefix at the front of `input`, if present.
    fn parse_len(&self, input: &[u8]) -> Result<Option<usize>, HeaderError> {
        let Some(raw) = self.order.read_prefix(input) else {
            return Ok(None);
        };
        let len = u64::try_from(raw).map_err(|_| HeaderError::Negative(raw))?;
        match usize::try_from(len) {
            Ok(0) => Err(HeaderError::Empty),
            Ok(n) if n <= self.max_header => Ok(Some(n)),
            _ => Err(HeaderError::TooLong { len, max: self.max_header }),
        }
    }

    /// Names connection `conn` in this decoder's trace lines
    /// (`conn 8: header: …`), so that with several peers each state change says
    /// whose it is. Only the log line changes; decoding does not.
    pub fn trace_as(&mut self, conn: u64) {
        self.trace_as = Some(conn);
    }

    /// The single place where the state changes.
    fn set_state(&mut self, to: State) {
        match self.trace_as {
            Some(conn) => log::trace!("conn {conn}: header: {:?} => {:?}", self.state, to),
            None => log::trace!("header: {:?} => {:?}", self.state, to),
        }
        self.state = to;
    }
}

/// `4 + len`, checked.
fn header_total(len: usize) -> Result<usize, HeaderError> {
    PREFIX_LEN.checked_add(len).ok_or(HeaderError::PayloadTooLarge(len))
}

/// Appends a length prefix (in `order`) and the compact JSON encoding of
/// `header` to `out`. The body, if any, is appended by the caller.
///
/// Fails with [`HeaderError::NotAnObject`] if `header` is not a JSON object
/// and [`HeaderError::PayloadTooLarge`] if its encoding exceeds `i32::MAX`
/// bytes; `out` is left untouched on error.
pub fn encode_header(order: ByteOrder, header: &Value, out: &mut Vec<u8>) -> Result<(), HeaderError> {
    if !header.is_object() {
        return Err(HeaderError::NotAnObject);
    }
    let json = serde_json::to_vec(header).map_err(|e| HeaderError::InvalidJson(e.to_string()))?;
    let len = i32::try_from(json.len()).map_err(|_| HeaderError::PayloadTooLarge(json.len()))?;
    out.reserve(PREFIX_LEN.saturating_add(json.len()));
    out.extend_from_slice(&order.write_i32(len));
    out.extend_from_slice(&json);
    Ok(())
}
