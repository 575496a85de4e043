//! The `Loop` operations an embedder builds on: writing to any connection
//! (from a handler, and from other threads through `Handle::send`),
//! backpressure between connections (`pause_until_drained`), raw fds as
//! sources (`add_fd`) and loop timers (`after`, `every`, `cancel_timer`).
//! See also `loop_connect.rs` and `loop_lifecycle.rs`.

mod loop_util;

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use loop_util::{client, local, pattern, pump_for, pump_until, query, read_n, Log, Probe};
use wireloop::{
    CloseReason, Config, Context, EventLoop, Flow, Handle, Handler, Input, Interest, Loop, SendError, Sent, SourceId,
};

// ---- writes to any connection ----

/// Members of a relay, by name.
#[derive(Default)]
struct Chat {
    names: HashMap<String, SourceId>,
    closed: Vec<SourceId>,
}

/// Line protocol: `name X` registers (answer `ok`); `to X msg` sends `msg`
/// to member X with `Loop::send` and answers with what it returned.
#[derive(Default)]
struct Member {
    name: Option<String>,
}

impl Handler<Chat> for Member {
    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_, Chat>) -> Flow {
        while let Some(i) = input.bytes().iter().position(|&b| b == b'\n') {
            let line = String::from_utf8(input.bytes()[..i].to_vec()).unwrap();
            input.consume(i + 1);
            let reply = if let Some(name) = line.strip_prefix("name ") {
                let id = cx.id();
                cx.state_mut().names.insert(name.to_string(), id);
                self.name = Some(name.to_string());
                "ok\n".to_string()
            } else if let Some((to, msg)) = line.strip_prefix("to ").and_then(|r| r.split_once(' ')) {
                match cx.state().names.get(to).copied() {
                    None => "no such member\n".to_string(),
                    Some(t) => match cx.send(t, format!("{msg}\n").as_bytes()) {
                        Ok(s) => format!("sent {} {}\n", s.unsent, s.over_high_water),
                        Err(e) => format!("error {e:?}\n"),
                    },
                }
            } else {
                "what?\n".to_string()
            };
            cx.out().extend_from_slice(reply.as_bytes());
        }
        Flow::Continue
    }

    fn on_close(&mut self, id: SourceId, _reason: CloseReason, lp: &mut Loop<Chat>) {
        lp.state_mut().closed.push(id);
        if let Some(n) = &self.name {
            lp.state_mut().names.remove(n);
        }
    }
}

/// A chat loop running on its own thread.
fn chat_loop(cfg: Config) -> (Handle<Chat>, SocketAddr, thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel();
    let join = thread::spawn(move || {
        let mut lp = EventLoop::with_state(cfg, Chat::default()).unwrap();
        let bound = lp.listen(local(), |_peer| Member::default()).unwrap();
        tx.send((lp.handle(), bound.addr)).unwrap();
        lp.run(Duration::from_secs(1)).unwrap();
    });
    let (h, addr) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    (h, addr, join)
}

fn join_chat(name: &str, addr: SocketAddr) -> std::net::TcpStream {
    let mut s = client(addr);
    s.write_all(format!("name {name}\n").as_bytes()).unwrap();
    assert_eq!(read_n(&mut s, 3), b"ok\n");
    s
}

fn id_of(h: &Handle<Chat>, name: &'static str) -> SourceId {
    query(h, move |lp| lp.state().names[name])
}

#[test]
fn a_handler_and_another_thread_write_to_any_connection() {
    let (h, addr, join) = chat_loop(Config::default());
    let mut a = join_chat("a", addr);
    let mut b = join_chat("b", addr);
    // From A's handler to B.
    a.write_all(b"to b hello from a\n").unwrap();
    assert_eq!(read_n(&mut b, 13), b"hello from a\n");
    assert_eq!(read_n(&mut a, 14), b"sent 13 false\n");
    // From this thread to B.
    let b_id = id_of(&h, "b");
    let a_id = id_of(&h, "a");
    assert_ne!(a_id, b_id);
    assert_eq!(h.send(b_id, "from handle\n").wait(), Ok(Sent { unsent: 12, over_high_water: false }));
    assert_eq!(read_n(&mut b, 12), b"from handle\n");
    // A leaves: its id is gone for good.
    drop(a);
    let start = Instant::now();
    while !query(&h, move |lp| lp.state().closed.contains(&a_id)) {
        assert!(start.elapsed() < Duration::from_secs(5), "A never closed");
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(h.send(a_id, "too late\n").wait(), Err(SendError::Gone));
    b.write_all(b"to a anyone there\n").unwrap();
    assert_eq!(read_n(&mut b, 15), b"no such member\n");
    assert!(!query(&h, move |lp| lp.contains(a_id)));
    h.stop();
    join.join().unwrap();
}

#[test]
fn handle_send_reports_over_high_water_for_a_reader_that_never_reads() {
    let high = 64 * 1024;
    let cfg = Config { high_water: high, low_water: 16 * 1024, ..Config::default() };
    let (h, addr, join) = chat_loop(cfg);
    let _c = join_chat("c", addr); // never reads again
    let c_id = id_of(&h, "c");
    let chunk = vec![b'z'; high];
    let first = h.send(c_id, chunk.clone()).wait();
    assert_eq!(first, Ok(Sent { unsent: high, over_high_water: false }), "not over at exactly high_water");
    let mut over = None;
    for i in 1..512 {
        let sent = h.send(c_id, chunk.clone()).wait().unwrap();
        assert_eq!(sent.over_high_water, sent.unsent > high, "{sent:?}");
        if sent.over_high_water {
            over = Some((i, sent.unsent));
            break;
        }
    }
    let (i, unsent) = over.expect("never over high water after 32 MiB to a peer that does not read");
    eprintln!("over high water after {i} more sends with {unsent} bytes unsent");
    let (now, closed) = query(&h, move |lp| (lp.unsent(c_id), lp.state().closed.len()));
    assert!(now.unwrap() > high);
    assert_eq!(closed, 0);
    h.stop();
    join.join().unwrap();
}

#[test]
fn handle_send_after_the_loop_is_gone_reports_stopped() {
    let (h, addr, join) = chat_loop(Config::default());
    let _d = join_chat("d", addr);
    let d_id = id_of(&h, "d");
    h.stop();
    join.join().unwrap();
    // The loop was dropped with its thread: the send can never run.
    let receipt = h.send(d_id, "x");
    assert_eq!(receipt.wait_timeout(Duration::from_secs(2)), Some(Err(SendError::Stopped)));
}

// ---- pause_until_drained ----

#[derive(Default)]
struct Proxy {
    target: Option<SourceId>,
    forwarded: usize,
    most_unsent: usize,
    pauses: usize,
    dropped: usize,
}

/// The target side: takes nothing, records its id.
struct Target;

impl Handler<Proxy> for Target {
    fn on_open(&mut self, cx: &mut Context<'_, Proxy>) -> Flow {
        let id = cx.id();
        cx.state_mut().target = Some(id);
        Flow::Continue
    }

    fn on_data(&mut self, input: &mut Input<'_>, _cx: &mut Context<'_, Proxy>) -> Flow {
        input.consume(input.bytes().len());
        Flow::Continue
    }
}

/// The reader side: forwards every byte to the target and pauses while the
/// target is over high water.
struct Forward;

impl Handler<Proxy> for Forward {
    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_, Proxy>) -> Flow {
        let t = cx.state().target.expect("the target connects first");
        let n = input.bytes().len();
        let sent = cx.send(t, input.bytes()).expect("the target is open");
        input.consume(n);
        let st = cx.state_mut();
        st.forwarded += n;
        st.most_unsent = st.most_unsent.max(sent.unsent);
        if sent.over_high_water {
            st.pauses += 1;
            cx.pause_until_drained(t).unwrap();
        }
        Flow::Continue
    }
}

#[test]
fn pause_until_drained_holds_the_reader_while_the_target_is_full() {
    let (high, low) = (256 * 1024, 64 * 1024);
    let total = 16 * 1024 * 1024;
    let cfg = Config { high_water: high, low_water: low, ..Config::default() };
    let mut lp = EventLoop::with_state(cfg, Proxy::default()).unwrap();
    let to = lp.listen(local(), |_peer| Target).unwrap().addr;
    let from = lp.listen(local(), |_peer| Forward).unwrap().addr;
    let mut target = client(to);
    assert!(pump_until(&mut lp, Duration::from_secs(5), |lp| lp.state().target.is_some()));
    let start = Instant::now();
    let reader = thread::spawn(move || {
        thread::sleep(Duration::from_millis(1000)); // stalled at first
        let mut got = Vec::with_capacity(total);
        target.read_to_end(&mut got).map_err(|e| e.kind()).map(|_| got)
    });
    let writer = thread::spawn(move || {
        let mut s = client(from);
        s.write_all(&pattern(total)).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        s
    });
    let mut while_stalled = None;
    let done = pump_until(&mut lp, Duration::from_secs(10), |lp| {
        if while_stalled.is_none() && start.elapsed() >= Duration::from_millis(800) {
            while_stalled = Some(lp.state().forwarded);
        }
        lp.state().forwarded == total
    });
    assert!(done, "forwarded {} of {total}", lp.state().forwarded);
    let t = lp.state().target.unwrap();
    assert_eq!(lp.close(t), Ok(())); // flush, then FIN: the reader's EOF
    assert!(pump_until(&mut lp, Duration::from_secs(10), |_| reader.is_finished()));
    let got = reader.join().unwrap().expect("clean EOF");
    let _ = writer.join().unwrap();
    let st = lp.state();
    let while_stalled = while_stalled.unwrap();
    eprintln!(
        "forwarded while the target did not read: {while_stalled}; pauses {}; most unsent {}",
        st.pauses, st.most_unsent
    );
    assert_eq!(got.len(), total);
    assert!(got == pattern(total), "bytes lost, repeated or reordered");
    assert!(st.pauses >= 1);
    assert!(st.most_unsent <= high + 64 * 1024, "unsent reached {}", st.most_unsent);
    assert!(while_stalled < total / 2, "{while_stalled} forwarded while the target did not read");
}

// ---- raw fds as sources ----

#[derive(Default)]
struct PipeState {
    got: Vec<u8>,
    calls: usize,
    eof: bool,
}

fn pipe() -> (OwnedFd, std::fs::File) {
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills two fresh descriptors, owned from here on.
    let rc = unsafe { libc::pipe(fds.as_mut_ptr()) };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    // SAFETY: both fds are new and owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // The loop's end is non-blocking; the writer blocks (its own thread
    // waits for the loop to read).
    // SAFETY: F_SETFL on an fd we own.
    unsafe { libc::fcntl(r.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    (r, std::fs::File::from(w))
}

#[test]
fn a_pipe_fd_is_read_until_eof_and_then_deregistered() {
    let mut lp = EventLoop::with_state(Config::default(), PipeState::default()).unwrap();
    let (r, mut w) = pipe();
    let id = lp
        .add_fd(r, Interest::READABLE, |fd, _ready, lp: &mut Loop<PipeState>| {
            lp.state_mut().calls += 1;
            let mut buf = [0u8; 4096];
            loop {
                // SAFETY: reading into a local buffer of the given length.
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                match n {
                    0 => {
                        lp.state_mut().eof = true;
                        return Flow::Close;
                    }
                    n if n > 0 => lp.state_mut().got.extend_from_slice(&buf[..n as usize]),
                    _ => {
                        let e = std::io::Error::last_os_error();
                        match e.kind() {
                            ErrorKind::WouldBlock => return Flow::Continue,
                            ErrorKind::Interrupted => continue,
                            _ => panic!("pipe read: {e}"),
                        }
                    }
                }
            }
        })
        .unwrap();
    assert!(lp.contains(id));
    let big = pattern(300 * 1024); // more than a pipe holds: several wake-ups
    let b = big.clone();
    let writer = thread::spawn(move || {
        w.write_all(b"abc").unwrap();
        thread::sleep(Duration::from_millis(50));
        w.write_all(&b).unwrap();
    }); // the write end closes here
    assert!(pump_until(&mut lp, Duration::from_secs(5), |lp| !lp.contains(id)), "never deregistered");
    writer.join().unwrap();
    let st = lp.state();
    assert!(st.eof);
    assert_eq!(st.got.len(), 3 + big.len());
    assert!(st.got[..3] == *b"abc" && st.got[3..] == big[..]);
    assert!(st.calls >= 2, "{} calls", st.calls);
    assert_eq!(lp.remove(id), Err(SendError::Gone));
}

#[test]
fn remove_deregisters_a_source_and_closes_its_fd() {
    let mut lp = EventLoop::with_state(Config::default(), PipeState::default()).unwrap();
    let (r, mut w) = pipe();
    let id = lp
        .add_fd(r, Interest::READABLE, |_fd, _ready, lp: &mut Loop<PipeState>| {
            lp.state_mut().calls += 1;
            Flow::Continue
        })
        .unwrap();
    assert_eq!(lp.send(id, b"x"), Err(SendError::NotAConnection));
    assert_eq!(lp.remove(id), Ok(()));
    assert!(!lp.contains(id));
    // The read end is closed: writing gets EPIPE (SIGPIPE is ignored by the test harness).
    let e = w.write_all(b"x").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BrokenPipe);
    pump_for(&mut lp, Duration::from_millis(50));
    assert_eq!(lp.state().calls, 0);
}

// ---- loop timers ----

#[derive(Default)]
struct Ticks {
    once: Vec<Duration>,
    every: Vec<Duration>,
    cancelled: usize,
}

#[test]
fn after_fires_once_and_not_before_its_delay() {
    let mut lp = EventLoop::with_state(Config::default(), Ticks::default()).unwrap();
    let start = Instant::now();
    let t = lp.after(Duration::from_millis(200), move |lp| lp.state_mut().once.push(start.elapsed()));
    assert!(pump_until(&mut lp, Duration::from_secs(5), |lp| !lp.state().once.is_empty()));
    pump_for(&mut lp, Duration::from_millis(300));
    let fired = &lp.state().once;
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert!(fired[0] >= Duration::from_millis(200), "fired after {:?}", fired[0]);
    assert!(fired[0] < Duration::from_secs(1), "fired after {:?}", fired[0]);
    assert!(!lp.cancel_timer(t), "a fired one-shot cannot be cancelled");
}

#[test]
fn every_fires_until_it_returns_close() {
    let mut lp = EventLoop::with_state(Config::default(), Ticks::default()).unwrap();
    let start = Instant::now();
    let t = lp.every(Duration::from_millis(40), move |lp| {
        lp.state_mut().every.push(start.elapsed());
        if lp.state().every.len() == 5 {
            Flow::Close
        } else {
            Flow::Continue
        }
    });
    assert!(pump_until(&mut lp, Duration::from_secs(5), |lp| lp.state().every.len() >= 5));
    pump_for(&mut lp, Duration::from_millis(300));
    let fired = &lp.state().every;
    assert_eq!(fired.len(), 5, "{fired:?}");
    for (i, at) in fired.iter().enumerate() {
        assert!(*at >= Duration::from_millis(40 * (i as u64 + 1)), "tick {i} at {at:?}");
    }
    assert!(!lp.cancel_timer(t), "a stopped timer cannot be cancelled");
}

#[test]
fn a_cancelled_timer_never_fires() {
    let mut lp = EventLoop::with_state(Config::default(), Ticks::default()).unwrap();
    let t = lp.after(Duration::from_millis(100), |lp| lp.state_mut().once.push(Duration::ZERO));
    let e = lp.every(Duration::from_millis(30), |lp| {
        lp.state_mut().every.push(Duration::ZERO);
        Flow::Continue
    });
    let keep = lp.after(Duration::from_millis(150), |lp| lp.state_mut().cancelled += 1);
    assert!(lp.cancel_timer(t));
    assert!(!lp.cancel_timer(t), "a second cancel finds nothing");
    pump_for(&mut lp, Duration::from_millis(100));
    assert!(lp.cancel_timer(e), "a running `every` can be cancelled");
    let ticks = lp.state().every.len();
    assert!(ticks >= 1, "the `every` ran before being cancelled");
    pump_for(&mut lp, Duration::from_millis(300));
    assert_eq!(lp.state().once.len(), 0, "the cancelled one-shot fired");
    assert_eq!(lp.state().every.len(), ticks, "the cancelled `every` fired again");
    assert_eq!(lp.state().cancelled, 1, "the other timer still fired");
    assert!(!lp.cancel_timer(keep));
}

#[test]
fn a_timer_can_send_to_a_connection_and_close_it() {
    let mut lp = EventLoop::with_state(Config::default(), Log::default()).unwrap();
    let bound = lp.listen(local(), |_peer| Probe::default()).unwrap();
    let addr = bound.addr;
    let c = thread::spawn(move || {
        let mut s = client(addr);
        let mut got = Vec::new();
        s.read_to_end(&mut got).map_err(|e| e.kind()).map(|_| got)
    });
    assert!(pump_until(&mut lp, Duration::from_secs(5), |lp| lp.state().opened().len() == 1));
    let id = lp.state().opened()[0];
    lp.after(Duration::from_millis(100), move |lp| {
        assert_eq!(lp.send(id, b"tick\n").map(|s| s.unsent), Ok(5));
        lp.close(id).unwrap();
        assert_eq!(lp.send(id, b"no more"), Err(SendError::Closing));
    });
    assert!(pump_until(&mut lp, Duration::from_secs(5), |lp| !lp.state().closes(id).is_empty()));
    assert!(pump_until(&mut lp, Duration::from_secs(5), |_| c.is_finished()));
    assert_eq!(c.join().unwrap().unwrap(), b"tick\n");
    assert_eq!(lp.state().calls(id), ["open", "close:Closed"]);
}

#[test]
fn a_timer_set_long_after_the_last_pass_fires_on_time() {
    // An embedder does its own work between `poll_once` calls; a timer set
    // then must count from when it was set, not from the last pass.
    let mut lp = EventLoop::with_state(Config::default(), Ticks::default()).unwrap();
    lp.poll_once(Some(Duration::ZERO)).unwrap();
    thread::sleep(Duration::from_millis(500));
    let set = Instant::now();
    lp.after(Duration::from_millis(100), move |lp| lp.state_mut().once.push(set.elapsed()));
    let start = Instant::now();
    while lp.state().once.is_empty() && start.elapsed() < Duration::from_secs(3) {
        lp.poll_once(Some(Duration::from_secs(2))).unwrap(); // the timer bounds the wait
    }
    let fired = &lp.state().once;
    assert_eq!(fired.len(), 1);
    assert!(fired[0] >= Duration::from_millis(100), "fired after {:?}", fired[0]);
    assert!(fired[0] < Duration::from_millis(300), "a 100 ms timer fired after {:?}", fired[0]);
}

// ---- pausing a reader ----

#[test]
fn pause_reading_holds_input_and_eof_until_resume_reading() {
    let mut lp = EventLoop::with_state(Config::default(), Log::default()).unwrap();
    let bound = lp.listen(local(), |_peer| Probe::default()).unwrap();
    let mut s = client(bound.addr);
    assert!(pump_until(&mut lp, Duration::from_secs(5), |lp| lp.state().opened().len() == 1));
    let id = lp.state().opened()[0];
    assert_eq!(lp.pause_reading(id), Ok(()));
    assert_eq!(lp.pause_reading(id), Ok(()), "pausing twice is harmless");
    s.write_all(b"while paused\n").unwrap();
    pump_for(&mut lp, Duration::from_millis(200));
    assert_eq!(lp.state().data(id), b"", "read while paused");
    assert_eq!(lp.resume_reading(id), Ok(()));
    assert!(pump_until(&mut lp, Duration::from_secs(5), |lp| lp.state().data(id) == b"while paused\n"));
    // EOF waits too.
    assert_eq!(lp.pause_reading(id), Ok(()));
    s.write_all(b"last\n").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    pump_for(&mut lp, Duration::from_millis(200));
    assert!(lp.contains(id));
    assert_eq!(lp.state().calls(id), ["open", "data:while paused\n"]);
    assert_eq!(lp.resume_reading(id), Ok(()));
    assert!(pump_until(&mut lp, Duration::from_secs(5), |lp| !lp.state().closes(id).is_empty()));
    assert_eq!(lp.state().calls(id), ["open", "data:while paused\nlast\n", "eof", "close:PeerClosed"]);
    assert_eq!(lp.resume_reading(id), Err(SendError::Gone));
}

/// Like [`Forward`], but a gone target is counted, not fatal.
struct ForwardOrDrop;

impl Handler<Proxy> for ForwardOrDrop {
    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_, Proxy>) -> Flow {
        let t = cx.state().target.expect("the target connects first");
        let n = input.bytes().len();
        let sent = cx.send(t, input.bytes());
        input.consume(n);
        let st = cx.state_mut();
        match sent {
            Ok(sent) => {
                st.forwarded += n;
                if sent.over_high_water {
                    st.pauses += 1;
                    cx.pause_until_drained(t).unwrap();
                }
            }
            Err(e) => {
                assert_eq!(e, SendError::Gone);
                st.dropped += n;
            }
        }
        Flow::Continue
    }
}

#[test]
fn a_reader_paused_until_drained_resumes_when_the_target_closes() {
    let cfg = Config { high_water: 64 * 1024, low_water: 16 * 1024, ..Config::default() };
    let total = 8 * 1024 * 1024;
    let mut lp = EventLoop::with_state(cfg, Proxy::default()).unwrap();
    let to = lp.listen(local(), |_peer| Target).unwrap().addr;
    let from = lp.listen(local(), |_peer| ForwardOrDrop).unwrap().addr;
    let target = client(to); // never reads
    assert!(pump_until(&mut lp, Duration::from_secs(5), |lp| lp.state().target.is_some()));
    let writer = thread::spawn(move || {
        let mut s = client(from);
        s.write_all(&pattern(total)).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        s
    });
    // Paused, and staying so.
    assert!(pump_until(&mut lp, Duration::from_secs(5), |lp| lp.state().pauses >= 1));
    pump_for(&mut lp, Duration::from_millis(300));
    let before = lp.state().forwarded;
    pump_for(&mut lp, Duration::from_millis(200));
    assert_eq!(lp.state().forwarded, before, "the reader kept going while the target was full");
    assert!(before < total);
    drop(target); // unread data: a reset
    let done = pump_until(&mut lp, Duration::from_secs(10), |lp| lp.state().forwarded + lp.state().dropped == total);
    assert!(done, "the reader never resumed: {} forwarded, {} dropped", lp.state().forwarded, lp.state().dropped);
    let _ = writer.join().unwrap();
    assert!(lp.state().dropped > 0);
}

// ---- a source that removes itself ----

#[test]
fn a_source_callback_can_remove_itself() {
    #[derive(Default)]
    struct Me {
        id: Option<SourceId>,
        removed: Option<Result<(), SendError>>,
    }
    let mut lp = EventLoop::with_state(Config::default(), Me::default()).unwrap();
    let (r, mut w) = pipe();
    let id = lp
        .add_fd(r, Interest::READABLE, |fd, _ready, lp: &mut Loop<Me>| {
            let mut buf = [0u8; 64];
            // SAFETY: reading into a local buffer of the given length.
            let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            assert_eq!(n, 1);
            let me = lp.state().id.unwrap();
            let removed = lp.remove(me);
            lp.state_mut().removed = Some(removed);
            Flow::Continue
        })
        .unwrap();
    lp.state_mut().id = Some(id);
    w.write_all(b"q").unwrap();
    assert!(pump_until(&mut lp, Duration::from_secs(5), |lp| lp.state().removed.is_some()));
    assert_eq!(lp.state().removed, Some(Ok(())));
    assert!(!lp.contains(id));
    assert_eq!(w.write_all(b"x").unwrap_err().kind(), ErrorKind::BrokenPipe, "the fd was closed");
}
