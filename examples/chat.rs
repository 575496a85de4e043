//! A line-based chat room on the loop: every line a member sends reaches
//! every *other* member, in the same pass of the loop.
//!
//! ```text
//! cargo run --release --example chat -- 127.0.0.1:7000
//! nc 127.0.0.1 7000     # in two or more terminals
//! ```
//!
//! The room (who is in it) is the loop's shared state, reached from every
//! handler call as `cx.state_mut()`: no `Rc<RefCell<…>>`. A member learns
//! its own id in `on_open` and leaves the room in `on_close`, which the loop
//! calls exactly once however the connection ends.
//!
//! Bounds: a line is at most 4 KiB (a longer one gets an error line and a
//! close); a member that does not read is disconnected as soon as its unsent
//! output passes the high-water mark (IRC's "SendQ exceeded"), so the others
//! are never slowed and memory stays bounded (members × high water). The
//! mark is 1 MiB: a member that reads, but more slowly than the room talks,
//! is cut off too once it is that far behind.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use wireloop::{CloseReason, Config, Context, EventLoop, Flow, Handler, Input, Loop, PeerAddr, SourceId};

/// The longest line a member may send, without its newline.
const MAX_LINE: usize = 4096;

/// The shared state: who is in the room.
#[derive(Default)]
struct Room {
    members: BTreeSet<SourceId>,
}

struct Member;

impl Handler<Room> for Member {
    fn on_open(&mut self, cx: &mut Context<'_, Room>) -> Flow {
        let (me, peer) = (cx.id(), cx.peer().to_string());
        let others = cx.state().members.len();
        cx.state_mut().members.insert(me);
        let _ = writeln!(cx.out(), "welcome, member {me} ({peer}); {others} other(s) here");
        Flow::Continue
    }

    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_, Room>) -> Flow {
        while let Some(end) = input.bytes().iter().position(|&b| b == b'\n') {
            if end > MAX_LINE {
                return too_long(cx);
            }
            let line = format!("{}: {}\n", cx.id(), String::from_utf8_lossy(&input.bytes()[..end]));
            input.consume(end + 1);
            broadcast(cx, line.as_bytes());
        }
        if input.bytes().len() > MAX_LINE {
            return too_long(cx);
        }
        Flow::Continue
    }

    fn on_close(&mut self, id: SourceId, reason: CloseReason, lp: &mut Loop<Room>) {
        lp.state_mut().members.remove(&id);
        if !reason.is_clean() {
            eprintln!("member {id} left: {reason}");
        }
    }
}

fn too_long(cx: &mut Context<'_, Room>) -> Flow {
    let _ = writeln!(cx.out(), "error: line longer than {MAX_LINE} bytes");
    Flow::Close
}

/// Queues `line` for every member but the sender; all of it is written
/// before this pass of the loop ends. A member whose unsent output is over
/// the high-water mark is not reading: it is cut off.
fn broadcast(cx: &mut Context<'_, Room>, line: &[u8]) {
    let me = cx.id();
    // Taken out for the loop (sending touches the loop, not the room), put back after.
    let members = std::mem::take(&mut cx.state_mut().members);
    for &m in members.iter().filter(|&&m| m != me) {
        match cx.send(m, line) {
            Ok(sent) if sent.over_high_water => {
                eprintln!("member {m}: SendQ exceeded ({} bytes unsent); disconnecting it", sent.unsent);
                let _ = cx.abort(m);
            }
            Ok(_) => {}
            // Closing already (its on_close removes it).
            Err(_) => {}
        }
    }
    cx.state_mut().members = members;
}

fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args().nth(1).as_deref().unwrap_or("127.0.0.1:7000").parse().map_err(|e| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("usage: chat [ADDR like 127.0.0.1:7000]: {e}"))
    })?;
    let cfg = Config { high_water: 1024 * 1024, low_water: 256 * 1024, ..Config::default() };
    let mut lp = EventLoop::with_state(cfg, Room::default())?;
    let bound = lp.listen(addr, |_peer: PeerAddr| Member)?;
    println!("listening {}", bound.addr);
    std::io::stdout().flush()?;
    lp.run(Duration::from_secs(1))
}
