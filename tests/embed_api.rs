//! The embedding API, driven in-process: poll_once, run + Handle::stop,
//! Handle::submit, custom services, and the loop's close/backpressure rules
//! as a user-written handler sees them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use wireloop::{Config, Context, EventLoop, Flow, Handler, Input, Reply};

/// A line protocol: answers each complete line with its length; a line
/// "bye" makes it reply "ok bye" and close; a line "bad" gets an error and a
/// close while the peer may still be sending.
#[derive(Default)]
struct LineLen;

impl Handler for LineLen {
    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_>) -> Flow {
        while let Some(i) = input.bytes().iter().position(|&b| b == b'\n') {
            let line = &input.bytes()[..i];
            let reply = match line {
                b"bye" => Some(b"ok bye\n".to_vec()),
                b"bad" => Some(b"error: bad line\n".to_vec()),
                _ => None,
            };
            input.consume(i + 1);
            if let Some(r) = reply {
                cx.out().extend_from_slice(&r);
                return Flow::Close;
            }
            cx.out().extend_from_slice(format!("{i}\n").as_bytes());
        }
        Flow::Continue
    }
}

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Starts a loop on its own thread; returns its handle, the bound address and the join handle.
fn spawn_loop(cfg: Config) -> (wireloop::Handle, SocketAddr, thread::JoinHandle<wireloop::Stats>) {
    let (tx, rx) = mpsc::channel();
    let join = thread::spawn(move || {
        let mut lp = EventLoop::new(cfg).unwrap();
        let bound = lp.listen(local(), |_peer| LineLen).unwrap();
        tx.send((lp.handle(), bound.addr)).unwrap();
        lp.run(Duration::from_secs(2)).unwrap();
        lp.stats()
    });
    let (h, addr) = rx.recv().unwrap();
    (h, addr, join)
}

#[test]
fn poll_once_serves_a_custom_protocol_on_the_callers_thread() {
    let mut lp = EventLoop::new(Config::default()).unwrap();
    let bound = lp.listen(local(), |_peer| LineLen).unwrap();
    assert_ne!(bound.addr.port(), 0, "the real port is read back");
    let client = thread::spawn(move || {
        let mut s = connect(bound.addr);
        s.write_all(b"abc\nhello\nby").unwrap();
        thread::sleep(Duration::from_millis(20));
        s.write_all(b"e\n").unwrap();
        let mut got = String::new();
        s.read_to_string(&mut got).unwrap();
        got
    });
    let start = Instant::now();
    while !client.is_finished() && start.elapsed() < Duration::from_secs(10) {
        lp.poll_once(Some(Duration::from_millis(10))).unwrap();
    }
    assert_eq!(client.join().unwrap(), "3\n5\nok bye\n");
    assert_eq!(lp.stats().accepted, 1);
    // The handler said Close after EOF-less input: the loop lingered, then removed it.
    let start = Instant::now();
    while lp.connections() > 0 && start.elapsed() < Duration::from_secs(5) {
        lp.poll_once(Some(Duration::from_millis(10))).unwrap();
    }
    assert_eq!(lp.connections(), 0);
}

#[test]
fn handle_stops_a_running_loop_from_another_thread() {
    let (handle, addr, join) = spawn_loop(Config::default());
    let mut s = connect(addr);
    s.write_all(b"xy\n").unwrap();
    let mut buf = [0u8; 2];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"2\n");
    handle.stop();
    let stats = join.join().unwrap();
    assert_eq!(stats.accepted, 1);
    // Stopped: the listener is gone.
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn submit_adds_a_udp_socket_while_the_loop_runs() {
    let (handle, _addr, join) = spawn_loop(Config::default());
    let (tx, rx) = mpsc::channel();
    handle.submit(move |lp| {
        let bound = lp
            .bind_udp(local(), |data: &[u8], _peer: SocketAddr, reply: &mut Vec<u8>| {
                reply.extend(data.iter().rev());
                Reply::Send
            })
            .unwrap();
        tx.send(bound.addr).unwrap();
    });
    let udp_addr = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let c = UdpSocket::bind(local()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.send_to(b"abc", udp_addr).unwrap();
    let mut buf = [0u8; 8];
    let (n, _) = c.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"cba");
    handle.stop();
    join.join().unwrap();
}

#[test]
fn an_error_reply_reaches_a_peer_that_is_still_sending() {
    let (handle, addr, join) = spawn_loop(Config::default());
    let mut s = connect(addr);
    // The error comes mid-stream; the peer keeps sending after it. With a
    // plain close, unread input would make the kernel send a reset and the
    // reply could be lost; the lingering close drains it instead.
    s.write_all(b"bad\n").unwrap();
    s.write_all(&vec![b'z'; 200_000]).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("clean EOF after the error reply, not a reset");
    assert_eq!(got, b"error: bad line\n");
    handle.stop();
    join.join().unwrap();
}

#[test]
fn backpressure_pauses_reading_and_resumes_when_the_peer_reads() {
    let cfg = Config { high_water: 64 * 1024, low_water: 16 * 1024, ..Config::default() };
    let (handle, addr, join) = spawn_loop(cfg);
    let s = connect(addr);
    let mut w = s.try_clone().unwrap();
    // 400,000 one-byte lines: replies are 2 bytes each, 800 KB in all.
    let writer = thread::spawn(move || {
        let lines = "a\n".repeat(400_000);
        w.write_all(lines.as_bytes()).unwrap();
        w.shutdown(std::net::Shutdown::Write).unwrap();
    });
    thread::sleep(Duration::from_millis(300)); // let the server hit its mark
    let mut got = Vec::new();
    let mut r = s;
    r.read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    assert_eq!(got.len(), 800_000);
    assert!(got.chunks(2).all(|c| c == b"1\n"));
    handle.stop();
    join.join().unwrap();
}

/// Streams `n` bytes in 64 KiB pieces, producing each piece only when the
/// loop reports the output drained (as a file download does).
struct Stream {
    left: usize,
    pieces: std::rc::Rc<std::cell::Cell<usize>>,
}

impl Stream {
    fn piece(&mut self, cx: &mut Context<'_>) -> Flow {
        let n = self.left.min(64 * 1024);
        if n == 0 {
            return Flow::Close;
        }
        cx.out().extend_from_slice(&vec![b'd'; n]);
        self.left -= n;
        self.pieces.set(self.pieces.get() + 1);
        cx.notify_on_drain();
        Flow::Continue
    }
}

impl Handler for Stream {
    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_>) -> Flow {
        if input.bytes().ends_with(b"\n") {
            let n: usize = String::from_utf8_lossy(input.bytes()).trim().parse().unwrap();
            input.consume(input.bytes().len());
            self.left = n;
            return self.piece(cx);
        }
        Flow::Continue
    }

    fn on_drain(&mut self, _input: &mut Input<'_>, cx: &mut Context<'_>) -> Flow {
        self.piece(cx)
    }
}

#[test]
fn on_drain_streams_a_large_reply_piece_by_piece_to_a_slow_reader() {
    let mut lp = EventLoop::new(Config::default()).unwrap();
    let pieces = std::rc::Rc::new(std::cell::Cell::new(0));
    let counter = pieces.clone();
    let bound = lp.listen(local(), move |_| Stream { left: 0, pieces: counter.clone() }).unwrap();
    let total = 20 * 1024 * 1024;
    let client = thread::spawn(move || {
        let mut s = connect(bound.addr);
        s.write_all(format!("{total}\n").as_bytes()).unwrap();
        thread::sleep(Duration::from_millis(200)); // slow start: the server must wait, not buffer 20 MB
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got
    });
    let mut most_pieces_while_stalled = 0;
    let start = Instant::now();
    while !client.is_finished() && start.elapsed() < Duration::from_secs(20) {
        lp.poll_once(Some(Duration::from_millis(5))).unwrap();
        if start.elapsed() < Duration::from_millis(150) {
            most_pieces_while_stalled = pieces.get();
        }
    }
    let got = client.join().unwrap();
    eprintln!("pieces produced while the client was not reading: {most_pieces_while_stalled}");
    assert_eq!(got.len(), total);
    assert!(got.iter().all(|&b| b == b'd'));
    assert_eq!(pieces.get(), total / (64 * 1024));
    // While the client did not read, only what fits in the socket buffers
    // plus the high-water mark was produced, not all 320 pieces.
    assert!(most_pieces_while_stalled < 120, "{most_pieces_while_stalled} pieces produced while stalled");
}

#[test]
fn connection_churn_does_not_grow_the_timer_heap() {
    let mut lp = EventLoop::new(Config::default()).unwrap();
    let bound = lp.listen(local(), wireloop::services::echo::service()).unwrap();
    let client = thread::spawn(move || {
        for _ in 0..3000 {
            let mut s = connect(bound.addr);
            s.write_all(b"x").unwrap();
            let mut b = [0u8; 1];
            s.read_exact(&mut b).unwrap();
        }
    });
    let mut most = 0;
    while !client.is_finished() {
        lp.poll_once(Some(Duration::from_millis(5))).unwrap();
        most = most.max(lp.timer_entries());
    }
    client.join().unwrap();
    for _ in 0..50 {
        lp.poll_once(Some(Duration::from_millis(5))).unwrap();
    }
    eprintln!("3,000 connections opened and closed: at most {most} timer entries");
    assert_eq!(lp.stats().accepted, 3000);
    // Each closed connection leaves an idle deadline 300 s away; without
    // compaction the heap would hold about 3,000 entries now.
    assert!(most < 1100, "timer heap grew to {most} entries");
}
