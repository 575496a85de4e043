//! TCP uppercase echo: every byte is answered, as soon as it arrives, with its
//! uppercase form. No framing, no waiting for a newline.
//!
//! The only state is the 0–3 bytes of a UTF-8 sequence cut by a read, and the
//! loop keeps those for us: the handler simply leaves them unconsumed
//! ([`crate::codec::upper`]). At EOF they are passed through unchanged and the
//! connection closes once everything is flushed (half-close works).

use super::{Refusing, BUSY_LINE};
use crate::codec::upper::upper_into;
use crate::PeerAddr;
use crate::{Context, Flow, Handler, Input};

/// One connection's uppercase echo.
#[derive(Debug, Default)]
pub struct UpperEcho;

impl<S: 'static> Handler<S> for UpperEcho {
    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_, S>) -> Flow {
        let used = cx.out().append(|out| upper_into(input.bytes(), false, out));
        input.consume(used);
        Flow::Continue
    }

    fn on_eof(&mut self, input: &mut Input<'_>, cx: &mut Context<'_, S>) -> Flow {
        let used = cx.out().append(|out| upper_into(input.bytes(), true, out));
        input.consume(used);
        Flow::Close
    }
}

/// The echo service: one [`UpperEcho`] per connection; a peer refused at
/// the connection limit gets [`BUSY_LINE`].
pub fn service() -> Refusing<impl FnMut(PeerAddr) -> UpperEcho + Clone> {
    Refusing::new(|_peer| UpperEcho, BUSY_LINE)
}
