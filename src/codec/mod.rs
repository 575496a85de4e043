//! Codecs: pure byte-level parsers and encoders, with no I/O.
//!
//! Every decoder here takes a byte slice (everything buffered and not yet
//! consumed) and answers one of three ways:
//!
//! * `Ok(Some(..))` — a message (or a piece of one), together with how many
//!   bytes of the input it consumed;
//! * `Ok(None)` — the input is a valid prefix, but more bytes are needed;
//! * `Err(..)` — the peer broke the protocol.
//!
//! "Need more" is never an error. Running out of input in the middle of a
//! message *at end of stream* is its own error, reported by the decoder's
//! `finish`-style method.
//!
//! Decoders keep their progress in a small state enum, so that a call after a
//! partial read resumes where the last one stopped instead of rescanning.
//! Socket code (the event loop) only fills and drains buffers.

pub mod digits;
pub mod frame;
pub mod header;
pub mod upper;
