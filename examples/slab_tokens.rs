//! The slab and its tokens, watched in the trace: a listener takes slot 0,
//! connections take the next free slots, a slot freed by a closed
//! connection is reused under a new serial, and an event whose source closed
//! earlier in the same pass is recognised as stale by its token and ignored.
//!
//! ```text
//! RUST_LOG=wireloop=trace cargo run --example slab_tokens
//! ```
//!
//! Three clients: `a` connects and leaves (its slot is freed); `b` and `c`
//! connect (`b` gets `a`'s old slot, with a new serial); then `b` and `c`
//! each send one byte before the loop polls, so one `epoll_wait` returns
//! both events. The handler of whichever runs first closes the other at once
//! (`Loop::abort`): the second event's token then names a slot whose serial
//! no longer matches, and the loop ignores it.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use wireloop::{Config, Context, EventLoop, Flow, Handler, Input, SourceId};

/// The open connections, in the loop's shared state.
type Open = Vec<SourceId>;

/// On its first byte, a connection closes every other one.
struct LastOneWins;

impl Handler<Open> for LastOneWins {
    fn on_open(&mut self, cx: &mut Context<'_, Open>) -> Flow {
        let me = cx.id();
        cx.state_mut().push(me);
        Flow::Continue
    }

    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_, Open>) -> Flow {
        input.consume(input.bytes().len());
        let me = cx.id();
        let others: Vec<SourceId> = cx.state().iter().copied().filter(|&id| id != me).collect();
        for id in others {
            println!("conn {me} closes conn {id}");
            let _ = cx.abort(id);
        }
        cx.state_mut().retain(|&id| id == me);
        Flow::Continue
    }
}

fn poll_until(lp: &mut EventLoop<Open>, done: impl Fn(&EventLoop<Open>) -> bool) -> std::io::Result<()> {
    for _ in 0..200 {
        if done(lp) {
            return Ok(());
        }
        lp.poll_once(Some(Duration::from_millis(10)))?;
    }
    Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the loop did not get there"))
}

fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut lp = EventLoop::with_state(Config::default(), Open::new())?;
    let bound = lp.listen("127.0.0.1:0".parse().unwrap(), |_peer| LastOneWins)?;
    println!("listener is slot {}", bound.id);

    let a = TcpStream::connect(bound.addr)?;
    poll_until(&mut lp, |lp| lp.connections() == 1)?;
    drop(a);
    poll_until(&mut lp, |lp| lp.connections() == 0)?;
    lp.state_mut().clear();

    let mut b = TcpStream::connect(bound.addr)?;
    poll_until(&mut lp, |lp| lp.connections() == 1)?;
    let mut c = TcpStream::connect(bound.addr)?;
    poll_until(&mut lp, |lp| lp.connections() == 2)?;

    // Both bytes are in the kernel before the loop polls: one pass, two events.
    b.write_all(b"b")?;
    c.write_all(b"c")?;
    std::thread::sleep(Duration::from_millis(50));
    lp.poll_once(Some(Duration::from_millis(100)))?;
    println!("{} connection left", lp.connections());
    Ok(())
}
