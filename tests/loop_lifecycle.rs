//! The life of an accepted connection as its handler sees it: `on_open`
//! first, `on_close` last and once, with the reason; stale ids after slot
//! reuse; graceful close against abort; half-close; refusal at the
//! connection limit; children killed with the loop.

mod loop_util;

use std::cell::RefCell;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::Command;
use std::rc::Rc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use loop_util::{client, local, pattern, pump_for, pump_until, read_n, record_open, Ev, Log, Probe};
use wireloop::{
    services, ChildId, ChildStream, CloseReason, Config, Context, EventLoop, Flow, Handler, Input, Loop, PeerAddr,
    SendError, Sent, Service, SourceId, Timeout,
};

const GREETING: &[u8] = b"welcome\n";

/// A loop on the test thread serving [`Probe`]s that greet first.
fn greeter_loop(cfg: Config) -> (EventLoop<Log>, SocketAddr) {
    let mut lp = EventLoop::with_state(cfg, Log::default()).unwrap();
    let bound = lp.listen(local(), |_peer| Probe::greeter(GREETING)).unwrap();
    (lp, bound.addr)
}

/// Waits for the one connection's `on_close`, then checks no second one
/// comes; returns the connection's id.
fn closed_once(lp: &mut EventLoop<Log>) -> SourceId {
    assert!(
        pump_until(lp, Duration::from_secs(5), |lp| lp.state().all_closes() > 0),
        "no on_close: {:?}",
        lp.state().evs
    );
    pump_for(lp, Duration::from_millis(100));
    let opened = lp.state().opened();
    assert_eq!(opened.len(), 1, "{:?}", lp.state().evs);
    assert_eq!(lp.state().closes(opened[0]).len(), 1, "on_close once: {:?}", lp.state().evs);
    assert_eq!(lp.state().all_closes(), 1);
    assert_eq!(lp.connections(), 0);
    opened[0]
}

#[test]
fn a_server_speaks_first_and_the_client_closing_is_peer_closed() {
    let (mut lp, addr) = greeter_loop(Config::default());
    let c = thread::spawn(move || {
        let mut s = client(addr);
        read_n(&mut s, GREETING.len()) // sends nothing
    });
    let id = closed_once(&mut lp);
    assert_eq!(c.join().unwrap(), GREETING);
    assert_eq!(lp.state().calls(id), ["open", "eof", "close:PeerClosed"]);
}

#[test]
fn a_daytime_like_server_greets_and_closes_from_on_open() {
    let mut lp = EventLoop::with_state(Config::default(), Log::default()).unwrap();
    let probe = Probe { open_flow: Flow::Close, ..Probe::greeter(b"Tue Jan  1 00:00:00 2030\r\n") };
    let bound = lp.listen(local(), move |_peer| probe.clone()).unwrap();
    let addr = bound.addr;
    let c = thread::spawn(move || {
        let mut s = client(addr);
        let mut got = Vec::new();
        s.read_to_end(&mut got).map_err(|e| e.kind()).map(|_| got)
    });
    let id = closed_once(&mut lp);
    assert_eq!(c.join().unwrap().unwrap(), b"Tue Jan  1 00:00:00 2030\r\n");
    assert_eq!(lp.state().calls(id), ["open", "close:Closed"]);
}

/// Sends `cmd`; the greeter answers `bye` and closes (by returning
/// `Flow::Close`, or by `cx.close` on itself): the client gets the whole
/// reply, then EOF, and the reason is `Closed`.
fn closes_after_the_reply(cmd: &'static [u8]) {
    let (mut lp, addr) = greeter_loop(Config::default());
    let c = thread::spawn(move || {
        let mut s = client(addr);
        s.write_all(cmd).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got
    });
    let id = closed_once(&mut lp);
    assert_eq!(c.join().unwrap(), b"welcome\nbye\n");
    let data = format!("data:{}", String::from_utf8_lossy(cmd));
    assert_eq!(lp.state().calls(id), ["open", data.as_str(), "close:Closed"]);
}

#[test]
fn flow_close_is_closed_after_the_reply() {
    closes_after_the_reply(b"quit\n");
}

#[test]
fn loop_close_from_the_handler_is_closed_after_the_reply() {
    closes_after_the_reply(b"close-me\n");
}

#[test]
fn abort_is_aborted_and_the_client_sees_a_reset() {
    let (mut lp, addr) = greeter_loop(Config::default());
    let (tx, rx) = mpsc::channel();
    let c = thread::spawn(move || {
        let mut s = client(addr);
        let greeting = read_n(&mut s, GREETING.len());
        tx.send(()).unwrap();
        let mut buf = [0u8; 16];
        (greeting, s.read(&mut buf).map_err(|e| e.kind()))
    });
    assert!(pump_until(&mut lp, Duration::from_secs(5), |_| rx.try_recv().is_ok()));
    let id = lp.state().opened()[0];
    assert_eq!(lp.abort(id), Ok(()));
    let closed = closed_once(&mut lp);
    assert_eq!(closed, id);
    let (greeting, after) = c.join().unwrap();
    assert_eq!(greeting, GREETING);
    assert_eq!(after, Err(ErrorKind::ConnectionReset));
    assert_eq!(lp.state().calls(id), ["open", "close:Aborted"]);
}

#[test]
fn an_idle_connection_times_out() {
    let cfg = Config { idle_timeout: Duration::from_millis(200), ..Config::default() };
    let (mut lp, addr) = greeter_loop(cfg);
    let c = thread::spawn(move || {
        let start = Instant::now();
        let mut s = client(addr);
        let greeting = read_n(&mut s, GREETING.len());
        let mut rest = Vec::new();
        let end = s.read_to_end(&mut rest).map_err(|e| e.kind());
        (greeting, rest, end, start.elapsed())
    });
    let id = closed_once(&mut lp);
    let (greeting, rest, end, took) = c.join().unwrap();
    assert_eq!(greeting, GREETING);
    assert_eq!((rest.len(), end), (0, Ok(0)), "EOF after the greeting");
    assert!(took >= Duration::from_millis(200), "closed after {took:?}");
    assert!(took < Duration::from_secs(2), "closed after {took:?}");
    assert!(matches!(lp.state().closes(id)[0], CloseReason::Timeout(Timeout::Idle)), "{:?}", lp.state().evs);
    assert_eq!(lp.stats().timeouts, 1);
}

#[test]
fn loop_shutdown_is_shutdown() {
    let (mut lp, addr) = greeter_loop(Config::default());
    let (tx, rx) = mpsc::channel();
    let c = thread::spawn(move || {
        let mut s = client(addr);
        let greeting = read_n(&mut s, GREETING.len());
        tx.send(()).unwrap();
        let mut rest = Vec::new();
        (greeting, s.read_to_end(&mut rest).map_err(|e| e.kind()), rest)
    });
    assert!(pump_until(&mut lp, Duration::from_secs(5), |_| rx.try_recv().is_ok()));
    let id = lp.state().opened()[0];
    lp.shutdown(Duration::from_secs(2)).unwrap();
    assert_eq!(lp.state().calls(id), ["open", "close:Shutdown"]);
    let (greeting, end, rest) = c.join().unwrap();
    assert_eq!(greeting, GREETING);
    assert_eq!((end, rest.len()), (Ok(0), 0));
    assert_eq!(lp.connections(), 0);
    assert!(TcpStream::connect(addr).is_err(), "the listener is gone after shutdown");
}

#[test]
fn a_client_reset_is_reset() {
    let (mut lp, addr) = greeter_loop(Config::default());
    let c = thread::spawn(move || {
        let mut s = client(addr);
        let greeting = read_n(&mut s, GREETING.len());
        socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
        drop(s); // RST
        greeting
    });
    let id = closed_once(&mut lp);
    assert_eq!(c.join().unwrap(), GREETING);
    assert_eq!(lp.state().calls(id), ["open", "close:Reset"]);
    assert_eq!(lp.stats().errors, 1);
}

#[test]
fn a_stale_id_after_slot_reuse_reaches_nothing() {
    let mut lp = EventLoop::with_state(Config::default(), Log::default()).unwrap();
    let bound = lp.listen(local(), |_peer| Probe::echo()).unwrap();
    let addr = bound.addr;
    // A opens and closes.
    let a_client = client(addr);
    assert!(pump_until(&mut lp, Duration::from_secs(5), |lp| lp.state().opened().len() == 1));
    let a = lp.state().opened()[0];
    drop(a_client);
    assert!(pump_until(&mut lp, Duration::from_secs(5), |lp| !lp.state().closes(a).is_empty()));
    // B takes A's slot.
    let (go_tx, go_rx) = mpsc::channel();
    let b_client = thread::spawn(move || {
        let mut s = client(addr);
        go_rx.recv().unwrap();
        s.write_all(b"b1\n").unwrap();
        let echoed = read_n(&mut s, 3);
        s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let mut extra = [0u8; 64];
        let more = s.read(&mut extra).map_err(|e| e.kind());
        (echoed, more, s)
    });
    assert!(pump_until(&mut lp, Duration::from_secs(5), |lp| lp.state().opened().len() == 2));
    let b = lp.state().opened()[1];
    assert_eq!(format!("{a}"), format!("{b}"), "B reuses A's slot ({a:?}, {b:?})");
    assert_ne!(a, b);
    assert!(!lp.contains(a));
    assert!(lp.contains(b));
    assert_eq!(lp.send(a, b"meant for A\n"), Err(SendError::Gone));
    assert_eq!(lp.close(a), Err(SendError::Gone));
    assert_eq!(lp.abort(a), Err(SendError::Gone));
    assert_eq!(lp.shutdown_write(a), Err(SendError::Gone));
    assert_eq!(lp.pause_reading(a), Err(SendError::Gone));
    assert_eq!(lp.unsent(a), Err(SendError::Gone));
    assert_eq!(lp.remove(a), Err(SendError::Gone));
    assert!(lp.peer_of(a).is_err());
    assert_eq!(lp.send(bound.id, b"x"), Err(SendError::NotAConnection));
    go_tx.send(()).unwrap();
    assert!(pump_until(&mut lp, Duration::from_secs(5), |_| b_client.is_finished()));
    let (echoed, more, _s) = b_client.join().unwrap();
    assert_eq!(echoed, b"b1\n");
    assert!(matches!(more, Err(ErrorKind::WouldBlock | ErrorKind::TimedOut)), "B got more: {more:?}");
    pump_for(&mut lp, Duration::from_millis(50));
    assert!(lp.contains(b), "B stays open");
    assert!(lp.state().closes(b).is_empty());
    assert_eq!(lp.state().data(b), b"b1\n");
    assert_eq!(lp.connections(), 1);
}

/// On `get\n`, queues 4 MiB of [`pattern`], then closes as `mode` says.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Then {
    FlowClose,
    LoopClose,
    /// Continue; the test aborts from outside.
    Nothing,
}

const BIG: usize = 4 * 1024 * 1024;

struct Big {
    then: Then,
    reply: Rc<Vec<u8>>,
}

impl Handler<Log> for Big {
    fn on_open(&mut self, cx: &mut Context<'_, Log>) -> Flow {
        record_open(cx)
    }

    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_, Log>) -> Flow {
        if input.bytes() != b"get\n" {
            return Flow::Continue;
        }
        input.consume(4);
        let id = cx.id();
        cx.state_mut().evs.push(Ev::Data(id, b"get\n".to_vec()));
        cx.out().extend_from_slice(&self.reply);
        match self.then {
            Then::FlowClose => Flow::Close,
            Then::LoopClose => {
                cx.close(id).unwrap();
                Flow::Continue
            }
            Then::Nothing => Flow::Continue,
        }
    }

    fn on_close(&mut self, id: SourceId, reason: CloseReason, lp: &mut Loop<Log>) {
        lp.state_mut().evs.push(Ev::Close(id, reason));
    }
}

/// Asks for the 4 MiB reply, sleeps, then reads until EOF or an error:
/// the bytes, and how the stream ended.
fn slow_get(addr: SocketAddr) -> (Vec<u8>, Result<(), ErrorKind>) {
    let mut s = client(addr);
    s.write_all(b"get\n").unwrap();
    thread::sleep(Duration::from_millis(300));
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (got, Ok(())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return (got, Err(e.kind())),
        }
    }
}

fn big_loop(then: Then) -> (EventLoop<Log>, SocketAddr, Rc<Vec<u8>>) {
    let mut lp = EventLoop::with_state(Config::default(), Log::default()).unwrap();
    let reply = Rc::new(pattern(BIG));
    let r = reply.clone();
    let bound = lp.listen(local(), move |_peer| Big { then, reply: r.clone() }).unwrap();
    (lp, bound.addr, reply)
}

#[test]
fn a_graceful_close_delivers_all_4_mib_to_a_slow_reader() {
    for then in [Then::FlowClose, Then::LoopClose] {
        let (mut lp, addr, reply) = big_loop(then);
        let c = thread::spawn(move || slow_get(addr));
        assert!(pump_until(&mut lp, Duration::from_secs(10), |_| c.is_finished()), "{then:?}: client still reading");
        let (got, end) = c.join().unwrap();
        assert_eq!(end, Ok(()), "{then:?}: clean EOF");
        assert_eq!(got.len(), BIG, "{then:?}");
        assert!(got == *reply, "{then:?}: the bytes differ from the pattern");
        let id = closed_once(&mut lp);
        assert!(matches!(lp.state().closes(id)[0], CloseReason::Closed), "{then:?}: {:?}", lp.state().evs);
    }
}

#[test]
fn abort_after_queuing_4_mib_cuts_the_stream_with_a_reset() {
    let (mut lp, addr, reply) = big_loop(Then::Nothing);
    let c = thread::spawn(move || slow_get(addr));
    // The pass that queued the reply also wrote what the socket took.
    assert!(pump_until(&mut lp, Duration::from_secs(5), |lp| lp.state().evs.len() == 2));
    let id = lp.state().opened()[0];
    let unsent = lp.unsent(id).unwrap();
    assert!(unsent > 0, "the whole reply left at once; the abort proves nothing");
    assert_eq!(lp.abort(id), Ok(()));
    assert_eq!(lp.unsent(id), Ok(unsent), "nothing happens before the pass ends");
    let closed = closed_once(&mut lp);
    assert_eq!(closed, id);
    assert!(matches!(lp.state().closes(id)[0], CloseReason::Aborted), "{:?}", lp.state().evs);
    assert!(pump_until(&mut lp, Duration::from_secs(5), |_| c.is_finished()));
    let (got, end) = c.join().unwrap();
    eprintln!("aborted with {unsent} bytes unsent; the client read {} bytes", got.len());
    assert_eq!(end, Err(ErrorKind::ConnectionReset), "never a clean EOF");
    assert!(got.len() < BIG, "{}", got.len());
    assert!(got[..] == reply[..got.len()], "what arrived is a prefix of the reply");
}

#[test]
fn send_over_max_output_is_refused_and_queues_nothing() {
    let max = 1024 * 1024;
    let cfg = Config { max_output: max, ..Config::default() };
    let mut lp = EventLoop::with_state(cfg, Log::default()).unwrap();
    let bound = lp.listen(local(), |_peer| Probe::default()).unwrap();
    let mut s = client(bound.addr);
    assert!(pump_until(&mut lp, Duration::from_secs(5), |lp| lp.state().opened().len() == 1));
    let id = lp.state().opened()[0];
    assert_eq!(lp.send(id, &pattern(BIG)), Err(SendError::OverLimit));
    assert_eq!(lp.unsent(id), Ok(0));
    // Exactly the limit fits; one byte more does not.
    assert_eq!(lp.send(id, &vec![7u8; max]), Ok(Sent { unsent: max, over_high_water: false }));
    assert_eq!(lp.send(id, b"x"), Err(SendError::OverLimit));
    assert_eq!(lp.unsent(id), Ok(max));
    let r = thread::spawn(move || {
        let got = read_n(&mut s, max);
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut extra = [0u8; 16];
        (got, s.read(&mut extra).map_err(|e| e.kind()), s)
    });
    assert!(pump_until(&mut lp, Duration::from_secs(5), |_| r.is_finished()));
    let (got, extra, _s) = r.join().unwrap();
    assert!(got.iter().all(|&b| b == 7));
    assert!(matches!(extra, Err(ErrorKind::WouldBlock | ErrorKind::TimedOut)), "{extra:?}");
    assert!(lp.contains(id));
    assert!(lp.state().closes(id).is_empty());
}

/// Answers `hi\n` with `hello\n` and shuts its write side; records all.
struct HalfCloser;

impl Handler<Log> for HalfCloser {
    fn on_open(&mut self, cx: &mut Context<'_, Log>) -> Flow {
        record_open(cx)
    }

    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_, Log>) -> Flow {
        let id = cx.id();
        let bytes = input.bytes().to_vec();
        input.consume(bytes.len());
        if bytes == b"hi\n" {
            cx.out().extend_from_slice(b"hello\n");
            cx.shutdown_write(id).unwrap();
        }
        cx.state_mut().evs.push(Ev::Data(id, bytes));
        Flow::Continue
    }

    fn on_eof(&mut self, _input: &mut Input<'_>, cx: &mut Context<'_, Log>) -> Flow {
        let id = cx.id();
        cx.state_mut().evs.push(Ev::Eof(id));
        Flow::Continue // half-closed both ways: the loop closes it
    }

    fn on_close(&mut self, id: SourceId, reason: CloseReason, lp: &mut Loop<Log>) {
        lp.state_mut().evs.push(Ev::Close(id, reason));
    }
}

#[test]
fn shutdown_write_sends_eof_after_the_reply_and_keeps_reading() {
    let mut lp = EventLoop::with_state(Config::default(), Log::default()).unwrap();
    let bound = lp.listen(local(), |_peer| HalfCloser).unwrap();
    let addr = bound.addr;
    let (eof_tx, eof_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel();
    let c = thread::spawn(move || {
        let mut s = client(addr);
        s.write_all(b"hi\n").unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap(); // EOF from the server's FIN
        eof_tx.send(()).unwrap();
        s.write_all(b"more\n").unwrap();
        go_rx.recv().unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut after = [0u8; 8];
        (got, s.read(&mut after).map_err(|e| e.kind()))
    });
    assert!(pump_until(&mut lp, Duration::from_secs(5), |_| eof_rx.try_recv().is_ok()), "the client saw no EOF");
    let id = lp.state().opened()[0];
    assert!(pump_until(&mut lp, Duration::from_secs(5), |lp| lp.state().data(id) == b"hi\nmore\n"));
    assert!(lp.contains(id), "half-closed, still open for reading");
    assert_eq!(lp.send(id, b"late"), Err(SendError::Closing));
    go_tx.send(()).unwrap();
    assert!(pump_until(&mut lp, Duration::from_secs(5), |lp| !lp.state().closes(id).is_empty()));
    pump_for(&mut lp, Duration::from_millis(100));
    let (got, after) = c.join().unwrap();
    assert_eq!(got, b"hello\n");
    assert_eq!(after, Ok(0));
    assert_eq!(lp.state().calls(id), ["open", "data:hi\nmore\n", "eof", "close:PeerClosed"]);
    assert_eq!(lp.connections(), 0);
}

/// Spawns `sh -c 'echo $$; exec sleep 30'` on open and keeps its pid.
struct Spawner {
    pid: Rc<RefCell<Option<i32>>>,
    closes: Rc<RefCell<Vec<String>>>,
}

impl Handler for Spawner {
    fn on_open(&mut self, cx: &mut Context<'_>) -> Flow {
        cx.spawn(Command::new("sh").args(["-c", "echo $$; exec sleep 30"])).unwrap();
        Flow::Continue
    }

    fn on_data(&mut self, _input: &mut Input<'_>, _cx: &mut Context<'_>) -> Flow {
        Flow::Continue
    }

    fn on_child_output(&mut self, _child: ChildId, stream: ChildStream, data: &[u8], _cx: &mut Context<'_>) -> Flow {
        assert_eq!(stream, ChildStream::Stdout);
        let pid = String::from_utf8_lossy(data).trim().parse().unwrap();
        *self.pid.borrow_mut() = Some(pid);
        Flow::Continue
    }

    fn on_close(&mut self, _id: SourceId, reason: CloseReason, _lp: &mut Loop) {
        self.closes.borrow_mut().push(format!("{reason:?}"));
    }
}

fn process_gone(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for the process.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    let err = std::io::Error::last_os_error().raw_os_error();
    !alive && err == Some(libc::ESRCH) && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn dropping_the_loop_kills_and_reaps_a_running_child() {
    let pid = Rc::new(RefCell::new(None));
    let closes = Rc::new(RefCell::new(Vec::new()));
    let mut lp = EventLoop::new(Config::default()).unwrap();
    let (p, c) = (pid.clone(), closes.clone());
    let bound = lp.listen(local(), move |_peer| Spawner { pid: p.clone(), closes: c.clone() }).unwrap();
    let _s = client(bound.addr);
    assert!(pump_until(&mut lp, Duration::from_secs(5), |_| pid.borrow().is_some()), "the child printed no pid");
    let pid = pid.borrow().unwrap();
    assert!(!process_gone(pid), "the child {pid} should be running");
    drop(lp);
    let start = Instant::now();
    while !process_gone(pid) && start.elapsed() < Duration::from_secs(2) {
        thread::sleep(Duration::from_millis(10));
    }
    assert!(process_gone(pid), "child {pid} still exists (or is an unreaped zombie) 2 s after the drop");
    assert_eq!(*closes.borrow(), ["Shutdown"]);
}

/// Refuses with `busy\n` at the connection limit.
struct Busy;

impl Service<Log> for Busy {
    fn accept(&mut self, _peer: PeerAddr) -> Box<dyn Handler<Log>> {
        Box::new(Probe::default())
    }

    fn refuse(&mut self, _peer: &PeerAddr, reply: &mut Vec<u8>) {
        reply.extend_from_slice(b"busy\n");
    }
}

/// With room for one connection, a second client's whole stream; the
/// stats, and the handler calls recorded.
fn refused_stream<T: Service<Log> + 'static>(service: T) -> (Vec<u8>, wireloop::Stats, Vec<String>) {
    let cfg = Config { max_connections: 1, ..Config::default() };
    let mut lp = EventLoop::with_state(cfg, Log::default()).unwrap();
    let bound = lp.listen(local(), service).unwrap();
    let _first = client(bound.addr);
    assert!(pump_until(&mut lp, Duration::from_secs(5), |lp| lp.connections() == 1));
    let mut second = client(bound.addr);
    assert!(pump_until(&mut lp, Duration::from_secs(5), |lp| lp.stats().refused == 1));
    let mut got = Vec::new();
    second.read_to_end(&mut got).expect("EOF, not a reset");
    pump_for(&mut lp, Duration::from_millis(50));
    assert_eq!(lp.connections(), 1, "the first stays open");
    let calls = lp.state().opened().into_iter().flat_map(|id| lp.state().calls(id)).collect();
    (got, lp.stats(), calls)
}

#[test]
fn service_refuse_says_busy_at_the_connection_limit() {
    let (got, stats, calls) = refused_stream(Busy);
    assert_eq!(got, b"busy\n");
    assert_eq!((stats.accepted, stats.refused), (1, 1));
    assert_eq!(calls, ["open"], "no handler for the refused one");
}

#[test]
fn a_closure_service_refuses_with_nothing() {
    let (got, stats, calls) = refused_stream(|_peer| Probe::default());
    assert_eq!(got, b"");
    assert_eq!((stats.accepted, stats.refused), (1, 1));
    assert_eq!(calls, ["open"], "no handler for the refused one");
}

#[test]
fn the_echo_service_refuses_with_its_busy_line() {
    let (got, stats, _) = refused_stream(services::echo::service());
    assert_eq!(got, services::BUSY_LINE);
    assert_eq!((stats.accepted, stats.refused), (1, 1));
}

#[test]
fn a_refused_client_that_already_sent_a_request_still_reads_busy() {
    let cfg = Config { max_connections: 1, ..Config::default() };
    let mut lp = EventLoop::with_state(cfg, Log::default()).unwrap();
    let bound = lp.listen(local(), Busy).unwrap();
    let _first = client(bound.addr);
    assert!(pump_until(&mut lp, Duration::from_secs(5), |lp| lp.connections() == 1));
    let mut second = client(bound.addr);
    second.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap(); // before the loop accepts it
    assert!(pump_until(&mut lp, Duration::from_secs(5), |lp| lp.stats().refused == 1));
    let mut got = Vec::new();
    let end = second.read_to_end(&mut got).map_err(|e| e.kind());
    eprintln!("refused after sending: read {got:?}, then {end:?}");
    assert_eq!(got, b"busy\n");
}

/// A client that dials again from `on_close` (once), counting each dial
/// and each `on_close`.
struct Redialer {
    addr: SocketAddr,
    again: bool,
    counts: Rc<RefCell<(usize, usize)>>,
}

impl Handler for Redialer {
    fn on_data(&mut self, input: &mut Input<'_>, _cx: &mut Context<'_>) -> Flow {
        input.consume(input.bytes().len());
        Flow::Continue
    }

    fn on_close(&mut self, _id: SourceId, _reason: CloseReason, lp: &mut Loop) {
        self.counts.borrow_mut().1 += 1;
        if self.again {
            self.counts.borrow_mut().0 += 1;
            lp.connect(self.addr, Redialer { addr: self.addr, again: false, counts: self.counts.clone() });
        }
    }
}

/// A loop with one open outbound connection whose handler redials.
fn redialing_loop(listener: &std::net::TcpListener) -> (EventLoop, Rc<RefCell<(usize, usize)>>) {
    let addr = listener.local_addr().unwrap();
    let counts = Rc::new(RefCell::new((1, 0)));
    let mut lp = EventLoop::new(Config::default()).unwrap();
    lp.connect(addr, Redialer { addr, again: true, counts: counts.clone() });
    assert!(pump_until(&mut lp, Duration::from_secs(5), |lp| lp.stats().connected == 1));
    (lp, counts)
}

#[test]
fn a_connection_dialed_from_on_close_during_drop_hears_on_close_too() {
    let listener = std::net::TcpListener::bind(local()).unwrap();
    let (lp, counts) = redialing_loop(&listener);
    drop(lp);
    let (dials, closes) = *counts.borrow();
    assert_eq!(dials, 2);
    assert_eq!(closes, dials, "every connection the loop tried must hear on_close exactly once");
}

#[test]
fn shutdown_leaves_no_connection_even_one_dialed_from_on_close() {
    let listener = std::net::TcpListener::bind(local()).unwrap();
    let (mut lp, counts) = redialing_loop(&listener);
    lp.shutdown(Duration::from_millis(500)).unwrap();
    let (dials, closes) = *counts.borrow();
    assert_eq!(dials, 2);
    assert_eq!(lp.connections(), 0, "open after shutdown; {closes} on_close for {dials} dials");
    assert_eq!(closes, dials);
}

#[test]
fn a_peer_that_stops_reading_hits_the_send_timeout() {
    let cfg = Config { send_timeout: Duration::from_millis(300), ..Config::default() };
    let mut lp = EventLoop::with_state(cfg, Log::default()).unwrap();
    let bound = lp.listen(local(), |_peer| Probe::default()).unwrap();
    let _s = client(bound.addr); // never reads
    assert!(pump_until(&mut lp, Duration::from_secs(5), |lp| lp.state().opened().len() == 1));
    let id = lp.state().opened()[0];
    // Queued from outside the handler, more than the kernel buffers hold.
    let start = Instant::now();
    lp.send(id, &pattern(16 * 1024 * 1024)).unwrap();
    assert!(pump_until(&mut lp, Duration::from_secs(5), |lp| !lp.state().closes(id).is_empty()), "never closed");
    let took = start.elapsed();
    assert!(matches!(lp.state().closes(id)[0], CloseReason::Timeout(Timeout::Send)), "{:?}", lp.state().evs);
    assert!(took >= Duration::from_millis(300), "closed after {took:?}");
    assert!(took < Duration::from_secs(2), "closed after {took:?}");
    assert_eq!(lp.stats().timeouts, 1);
}

/// Consumes only whole lines.
struct Lines;

impl Handler<Log> for Lines {
    fn on_open(&mut self, cx: &mut Context<'_, Log>) -> Flow {
        record_open(cx)
    }

    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_, Log>) -> Flow {
        while let Some(i) = input.bytes().iter().position(|&b| b == b'\n') {
            let id = cx.id();
            let line = input.bytes()[..=i].to_vec();
            input.consume(i + 1);
            cx.state_mut().evs.push(Ev::Data(id, line));
        }
        Flow::Continue
    }

    fn on_close(&mut self, id: SourceId, reason: CloseReason, lp: &mut Loop<Log>) {
        lp.state_mut().evs.push(Ev::Close(id, reason));
    }
}

#[test]
fn a_message_trickling_in_hits_the_message_timeout() {
    let cfg = Config {
        message_timeout: Duration::from_millis(400),
        idle_timeout: Duration::from_millis(250),
        ..Config::default()
    };
    let mut lp = EventLoop::with_state(cfg, Log::default()).unwrap();
    let bound = lp.listen(local(), |_peer| Lines).unwrap();
    let addr = bound.addr;
    let c = thread::spawn(move || {
        let mut s = client(addr);
        s.write_all(b"whole\n").unwrap();
        let start = Instant::now();
        // One byte every 100 ms: never idle for 250 ms, never a whole line.
        for _ in 0..30 {
            if s.write_all(b"x").is_err() {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
        start.elapsed()
    });
    assert!(pump_until(&mut lp, Duration::from_secs(5), |lp| lp.state().all_closes() == 1));
    let id = lp.state().opened()[0];
    assert!(matches!(lp.state().closes(id)[0], CloseReason::Timeout(Timeout::Message)), "{:?}", lp.state().evs);
    assert_eq!(lp.state().data(id), b"whole\n");
    assert!(pump_until(&mut lp, Duration::from_secs(5), |_| c.is_finished()));
    let took = c.join().unwrap();
    assert!(took < Duration::from_millis(2500), "the client kept writing for {took:?}");
}
