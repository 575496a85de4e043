//! The output bound holds while replies are built: a handler that checks
//! `Context::over_high_water` between requests stops taking input once its
//! output is full, and the loop hands the held input back once the output
//! has drained — before it reads the socket, and before the peer's EOF.

mod loop_util;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::thread;
use std::time::Duration;

use loop_util::{client, local, pump_for, pump_until};
use wireloop::{Config, Context, EventLoop, Flow, Handler, Input};

/// Bytes of reply per one-byte request: a big reply for a tiny request, as a
/// file listing is.
const REPLY: usize = 200 * 1024;
/// Requests the client sends in one write.
const REQUESTS: usize = 100;

/// The most unsent output seen after any reply, and replies built.
#[derive(Default)]
struct Seen {
    max_unsent: usize,
    replies: usize,
}

/// Answers each byte with [`REPLY`] bytes of that byte, one request at a
/// time while the output is under high water. With `drain_hook`, it also
/// asks for `on_drain` when it stops, and that call (which parses nothing)
/// must not make the loop forget the held input.
struct Amplifier {
    drain_hook: bool,
    eof_serves: bool,
}

impl Amplifier {
    fn serve(&mut self, input: &mut Input<'_>, cx: &mut Context<'_, Seen>) {
        while let Some(&b) = input.bytes().first() {
            if cx.over_high_water() {
                if self.drain_hook {
                    cx.notify_on_drain();
                }
                return;
            }
            input.consume(1);
            let unsent = cx.out().append(|v| {
                v.resize(v.len() + REPLY, b);
                v.len()
            });
            let seen = cx.state_mut();
            seen.replies += 1;
            seen.max_unsent = seen.max_unsent.max(unsent);
        }
    }
}

impl Handler<Seen> for Amplifier {
    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_, Seen>) -> Flow {
        self.serve(input, cx);
        Flow::Continue
    }

    fn on_eof(&mut self, input: &mut Input<'_>, cx: &mut Context<'_, Seen>) -> Flow {
        if !self.eof_serves {
            // Every request must have been served before the EOF is seen.
            assert!(input.bytes().is_empty(), "EOF delivered with {} requests unserved", input.bytes().len());
        }
        self.serve(input, cx);
        if input.bytes().is_empty() {
            Flow::Close
        } else {
            // Called again with the rest once the output has drained.
            Flow::Continue
        }
    }

    fn on_drain(&mut self, _input: &mut Input<'_>, _cx: &mut Context<'_, Seen>) -> Flow {
        Flow::Continue
    }
}

fn requests() -> Vec<u8> {
    (0..REQUESTS).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Reads until EOF and checks every reply, in order.
fn read_all_replies(mut s: std::net::TcpStream) -> usize {
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), REQUESTS * REPLY, "every request answered in full");
    for (i, reply) in got.chunks(REPLY).enumerate() {
        let b = b'a' + (i % 26) as u8;
        assert!(reply.iter().all(|&x| x == b), "reply {i} is the answer to request {i}");
    }
    got.len()
}

fn run(half_close: bool, drain_hook: bool) {
    let cfg = Config::default();
    let high = cfg.high_water;
    let mut lp = EventLoop::with_state(cfg, Seen::default()).unwrap();
    let addr = lp.listen(local(), move |_| Amplifier { drain_hook, eof_serves: false }).unwrap().addr;
    let mut s = client(addr);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&requests()).unwrap();
    if half_close {
        s.shutdown(Shutdown::Write).unwrap();
    }
    // The client does not read: the server must stop at its high-water mark.
    assert!(pump_until(&mut lp, Duration::from_secs(5), |lp| lp.state().replies > 0));
    pump_for(&mut lp, Duration::from_millis(300));
    let seen = lp.state();
    println!("not reading: {} replies built, at most {} bytes unsent", seen.replies, seen.max_unsent);
    assert!(seen.replies < REQUESTS, "all {REQUESTS} replies were built for a client that reads nothing");
    assert!(
        seen.max_unsent <= high + REPLY,
        "unsent output reached {} bytes; the bound is high water ({high}) plus one reply",
        seen.max_unsent
    );
    if !half_close {
        s.shutdown(Shutdown::Write).unwrap();
    }
    let reader = thread::spawn(move || read_all_replies(s));
    assert!(pump_until(&mut lp, Duration::from_secs(10), |_| reader.is_finished()), "client got every reply");
    reader.join().unwrap();
    assert_eq!(lp.state().replies, REQUESTS);
    assert!(lp.state().max_unsent <= high + REPLY);
}

#[test]
fn pipelined_requests_wait_while_the_output_is_full_and_are_served_after() {
    run(false, false);
}

#[test]
fn held_requests_are_served_before_the_peers_eof() {
    run(true, false);
}

#[test]
fn an_on_drain_call_in_between_does_not_strand_the_held_input() {
    run(false, true);
}

/// A peer that sends everything and its FIN in one go, to a handler that
/// only answers in `on_eof`: `on_eof` stops at high water and is called
/// again with the rest once the output drains.
#[test]
fn on_eof_that_stops_at_high_water_is_called_again() {
    struct AtEof(Amplifier);
    impl Handler<Seen> for AtEof {
        fn on_data(&mut self, _: &mut Input<'_>, _: &mut Context<'_, Seen>) -> Flow {
            Flow::Continue
        }
        fn on_eof(&mut self, input: &mut Input<'_>, cx: &mut Context<'_, Seen>) -> Flow {
            self.0.on_eof(input, cx)
        }
    }
    let mut lp = EventLoop::with_state(Config::default(), Seen::default()).unwrap();
    let addr = lp.listen(local(), |_| AtEof(Amplifier { drain_hook: false, eof_serves: true })).unwrap().addr;
    let mut s = client(addr);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&requests()).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let reader = thread::spawn(move || read_all_replies(s));
    assert!(pump_until(&mut lp, Duration::from_secs(10), |_| reader.is_finished()), "client got every reply");
    reader.join().unwrap();
    assert_eq!(lp.state().replies, REQUESTS);
}
