//! A TCP proxy on the loop: each accepted connection gets an outbound
//! connection to the upstream, and bytes are forwarded both ways.
//!
//! ```text
//! cargo run --release --example proxy -- 127.0.0.1:9000 127.0.0.1:8080
//! ```
//!
//! ```text
//!  client ──▶ [Side: client] ──send──▶ [Side: upstream] ──▶ upstream
//!         ◀──                  ◀──send──                  ◀──
//! ```
//!
//! * Backpressure: when one side's unsent output passes the high-water
//!   mark, reading from the other side pauses until it drains
//!   (`pause_until_drained`), so a fast sender facing a slow reader holds at
//!   most a high-water mark of memory per direction.
//! * Half-close is carried across: EOF from one peer becomes a FIN to the
//!   other (`shutdown_write`) while the other direction keeps flowing; a
//!   pair closes once both directions are done.
//! * An upstream that refuses (or any error on one side) resets the other
//!   side, so the client can tell the stream failed; a clean close on one
//!   side closes the other gracefully, after its output is flushed.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use wireloop::{CloseReason, Config, Context, EventLoop, Flow, Handler, Input, Loop, PeerAddr, SourceId};

/// One side of a proxied pair; `other` is the connection it forwards to.
struct Side {
    other: Option<SourceId>,
    /// The client side's upstream address, until it connects.
    upstream: Option<SocketAddr>,
    role: &'static str,
}

impl Handler for Side {
    fn on_open(&mut self, cx: &mut Context<'_>) -> Flow {
        if let Some(addr) = self.upstream.take() {
            // The client side: connect out. Bytes the client sends before the
            // upstream opens are queued on it and written once it does.
            let me = cx.id();
            self.other = Some(cx.connect(addr, Side { other: Some(me), upstream: None, role: "upstream" }));
        }
        Flow::Continue
    }

    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_>) -> Flow {
        let Some(other) = self.other else { return Flow::Close };
        match cx.send(other, input.bytes()) {
            Ok(sent) => {
                input.consume(input.bytes().len());
                if sent.over_high_water {
                    let _ = cx.pause_until_drained(other);
                }
                Flow::Continue
            }
            // The other side is gone or closing: so are we.
            Err(_) => Flow::Close,
        }
    }

    fn on_eof(&mut self, _input: &mut Input<'_>, cx: &mut Context<'_>) -> Flow {
        // Our peer is done sending: pass its FIN on, keep the other direction.
        match self.other.map(|o| cx.shutdown_write(o)) {
            Some(Ok(())) => Flow::Continue,
            _ => Flow::Close,
        }
    }

    fn on_close(&mut self, _id: SourceId, reason: CloseReason, lp: &mut Loop) {
        if let Some(other) = self.other {
            if reason.is_clean() {
                let _ = lp.close(other);
            } else {
                eprintln!("proxy: {} side: {reason}", self.role);
                let _ = lp.abort(other);
            }
        }
    }
}

fn main() -> std::io::Result<()> {
    let usage = || std::io::Error::new(std::io::ErrorKind::InvalidInput, "usage: proxy LISTEN_ADDR UPSTREAM_ADDR");
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args.next().ok_or_else(usage)?.parse().map_err(|_| usage())?;
    let upstream: SocketAddr = args.next().ok_or_else(usage)?.parse().map_err(|_| usage())?;
    let cfg = Config { high_water: 256 * 1024, low_water: 64 * 1024, ..Config::default() };
    let mut lp = EventLoop::new(cfg)?;
    let bound =
        lp.listen(listen, move |_peer: PeerAddr| Side { other: None, upstream: Some(upstream), role: "client" })?;
    println!("listening {}", bound.addr);
    std::io::stdout().flush()?;
    lp.run(Duration::from_secs(1))
}
