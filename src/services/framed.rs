//! `framed`: the tutorial's "method 2" fix for sticky packets — a 4-byte
//! length prefix before each message — answered with `success` per frame.
//!
//! ```text
//!  client                                           server
//!  [len i32][payload][len i32][payload]…  ───────▶  FrameDecoder: Head ⇄ Body { len }
//!                                         ◀───────  "success" (7 bytes) per complete frame
//!  [len = -1 or > max]                    ───────▶  "error: <reason>\n", flush, lingering close
//! ```
//!
//! Frames may arrive split at any byte or many to one read; the decoder
//! (`codec::frame`) keeps its place, and the loop keeps the unconsumed bytes.
//! A bad length is refused after its 4 bytes, before any payload is
//! buffered. Only the offending connection is closed.

use log::debug;

use super::{error_line, Requests};
use crate::codec::frame::{ByteOrder, FrameDecoder, DEFAULT_MAX_FRAME};
use crate::{Context, Flow, Handler, Input};

/// Settings for the framed service.
#[derive(Debug, Clone, Copy)]
pub struct FramedConfig {
    /// Byte order of the length prefix.
    pub order: ByteOrder,
    /// Largest payload accepted.
    pub max: usize,
}

impl Default for FramedConfig {
    fn default() -> Self {
        FramedConfig { order: ByteOrder::Little, max: DEFAULT_MAX_FRAME }
    }
}

/// One connection's method-2 state machine.
#[derive(Debug)]
pub struct Framed {
    decoder: FrameDecoder,
    requests: Requests,
}

impl Framed {
    /// A connection waiting for its first length prefix.
    pub fn new(cfg: FramedConfig) -> Self {
        Framed { decoder: FrameDecoder::new(cfg.order, cfg.max), requests: Requests::default() }
    }
}

/// The framed service: one [`Framed`] per connection; a peer refused at the
/// connection limit gets [`super::BUSY_LINE`].
pub fn service(cfg: FramedConfig) -> super::Refusing<impl FnMut(crate::PeerAddr) -> Framed + Clone> {
    counted(cfg, Requests::default())
}

/// [`service`], counting its requests into `requests`.
pub fn counted(
    cfg: FramedConfig,
    requests: Requests,
) -> super::Refusing<impl FnMut(crate::PeerAddr) -> Framed + Clone> {
    super::Refusing::new(move |_peer| Framed { requests: requests.clone(), ..Framed::new(cfg) }, super::BUSY_LINE)
}

impl<S: 'static> Handler<S> for Framed {
    fn on_open(&mut self, cx: &mut Context<'_, S>) -> Flow {
        self.decoder.trace_as(cx.id().key as u64);
        Flow::Continue
    }

    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_, S>) -> Flow {
        loop {
            if cx.over_high_water() {
                // The rest waits, unconsumed, until the replies drain.
                return Flow::Continue;
            }
            match self.decoder.decode(input.bytes()) {
                Ok(Some(frame)) => {
                    let shown = &frame.payload[..frame.payload.len().min(32)];
                    debug!(
                        "conn {}: framed: frame of {} bytes: {:?}",
                        cx.id(),
                        frame.payload.len(),
                        String::from_utf8_lossy(shown)
                    );
                    input.consume(frame.consumed);
                    cx.out().extend_from_slice(b"success");
                    self.requests.answer();
                }
                Ok(None) => return Flow::Continue,
                Err(e) => {
                    self.requests.refuse();
                    return error_line("framed", e, cx);
                }
            }
        }
    }

    fn on_eof(&mut self, input: &mut Input<'_>, cx: &mut Context<'_, S>) -> Flow {
        match self.decoder.finish(input.bytes()) {
            Ok(()) => Flow::Close,
            Err(e) => {
                self.requests.refuse();
                error_line("framed", e, cx)
            }
        }
    }
}
