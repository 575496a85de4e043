//! The embedding examples as a user runs them: `examples/chat.rs` and
//! `examples/proxy.rs`, started as processes on 127.0.0.1:0, driven by plain
//! std clients, asserting exact bytes and bounded memory.

mod util;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use util::{connect, read_n, rss_kib};

fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join("examples").join(name);
    assert!(path.exists(), "example {name} not built (plain `cargo test` builds the examples)");
    path
}

/// A running example, killed on drop.
struct Running {
    child: Child,
    addr: SocketAddr,
}

impl Running {
    fn start(name: &str, args: &[&str]) -> Running {
        let mut child = Command::new(example(name))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start example");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = line.trim().strip_prefix("listening ").unwrap_or_else(|| panic!("{line:?}")).parse().unwrap();
        Running { child, addr }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_line(s: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\n") {
        match s.read(&mut b) {
            Ok(0) => break,
            Ok(_) => line.push(b[0]),
            Err(e) => panic!("read: {e} after {:?}", String::from_utf8_lossy(&line)),
        }
    }
    String::from_utf8(line).unwrap()
}

/// Nothing arrives within `wait`.
fn assert_silent(s: &mut TcpStream, wait: Duration) {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("expected silence, got {other:?} {:?}", &b[..8]),
    }
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
}

#[test]
fn chat_greets_and_relays_each_line_to_every_other_member() {
    let chat = Running::start("chat", &["127.0.0.1:0"]);
    let mut members: Vec<TcpStream> = (0..3).map(|_| connect(chat.addr)).collect();
    for m in &mut members {
        assert!(read_line(m).starts_with("welcome"), "first line is the greeting");
    }
    members[0].write_all(b"hello all\n").unwrap();
    let got1 = read_line(&mut members[1]);
    let got2 = read_line(&mut members[2]);
    assert!(got1.ends_with(": hello all\n"), "{got1:?}");
    assert_eq!(got1, got2, "every other member gets the same line");
    // The sender does not get its own line; a partial line waits for its end.
    assert_silent(&mut members[0], Duration::from_millis(200));
    members[2].write_all(b"split ").unwrap();
    assert_silent(&mut members[0], Duration::from_millis(100));
    members[2].write_all(b"line\n").unwrap();
    assert!(read_line(&mut members[0]).ends_with(": split line\n"));
    assert!(read_line(&mut members[1]).ends_with(": split line\n"));
}

#[test]
fn chat_closes_a_member_whose_line_is_over_4_kib_and_keeps_the_others() {
    let chat = Running::start("chat", &["127.0.0.1:0"]);
    let mut a = connect(chat.addr);
    let mut b = connect(chat.addr);
    read_line(&mut a);
    read_line(&mut b);
    let mut long = vec![b'x'; 4097];
    long.push(b'\n');
    a.write_all(&long).unwrap();
    assert_eq!(read_line(&mut a), "error: line longer than 4096 bytes\n");
    let mut rest = Vec::new();
    a.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "closed after the error line");
    // Exactly 4 KiB is allowed.
    let mut c = connect(chat.addr);
    read_line(&mut c);
    let mut max = vec![b'y'; 4096];
    max.push(b'\n');
    c.write_all(&max).unwrap();
    let got = read_line(&mut b);
    assert!(got.ends_with(&format!(": {}\n", "y".repeat(4096))), "{} bytes", got.len());
}

#[test]
fn chat_cuts_off_a_member_that_does_not_read_and_never_slows_the_others() {
    let chat = Running::start("chat", &["127.0.0.1:0"]);
    let base = rss_kib(chat.child.id());
    let mut sleeper = connect(chat.addr);
    let mut talker = connect(chat.addr);
    let mut listener = connect(chat.addr);
    for s in [&mut sleeper, &mut talker, &mut listener] {
        read_line(s);
    }
    // 20 MB of lines: far more than the kernel's buffers plus the high-water
    // mark can hold for the sleeper.
    let line = format!("{}\n", "z".repeat(1000));
    let n = 20_000;
    let reader = thread::spawn(move || {
        let mut got = 0;
        let mut r = BufReader::new(listener);
        let mut l = String::new();
        while got < n {
            l.clear();
            if r.read_line(&mut l).unwrap() == 0 {
                break;
            }
            got += 1;
        }
        got
    });
    let start = Instant::now();
    for i in 0..n {
        talker.write_all(line.as_bytes()).unwrap();
        if i % 100 == 99 {
            // A busy room, not a firehose: a member that reads keeps up.
            thread::sleep(Duration::from_millis(1));
        }
    }
    assert_eq!(reader.join().unwrap(), n, "the reading member got every line");
    let took = start.elapsed();
    let peak = rss_kib(chat.child.id());
    eprintln!("20 MB relayed in {took:?}; chat RSS {base} -> {peak} KiB");
    assert!(peak < base + 64 * 1024, "memory bounded: {base} -> {peak} KiB");
    // The sleeper was disconnected: after what the kernel buffered, a reset or EOF.
    sleeper.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match sleeper.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => assert!(Instant::now() < deadline, "the sleeper was never cut off"),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("sleeper: {e}"),
        }
    }
}

/// An upstream on its own thread: `serve(stream)` runs for each connection.
fn upstream(serve: impl Fn(TcpStream) + Send + Sync + 'static) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let serve = std::sync::Arc::new(serve);
    thread::spawn(move || {
        for s in l.incoming().map_while(Result::ok) {
            let serve = serve.clone();
            thread::spawn(move || serve(s));
        }
    });
    addr
}

#[test]
fn proxy_forwards_both_ways_and_carries_half_close_in_each_direction() {
    // The upstream reads until EOF, then answers with what it got, reversed,
    // and closes: bytes flow upstream-to-client after the client's FIN.
    let up = upstream(|mut s| {
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got.reverse();
        s.write_all(b"got:").unwrap();
        s.write_all(&got).unwrap();
    });
    let proxy = Running::start("proxy", &["127.0.0.1:0", &up.to_string()]);
    let mut c = connect(proxy.addr);
    c.write_all(b"abc").unwrap();
    c.write_all(b"def").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut reply = Vec::new();
    c.read_to_end(&mut reply).unwrap();
    assert_eq!(reply, b"got:fedcba");

    // The other direction: the upstream speaks first and shuts its side;
    // the client still sends afterwards, and the upstream gets it.
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let up = upstream(move |mut s| {
        s.write_all(b"hello").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        tx.lock().unwrap().send(got).unwrap();
    });
    let proxy = Running::start("proxy", &["127.0.0.1:0", &up.to_string()]);
    let mut c = connect(proxy.addr);
    assert_eq!(read_n(&mut c, 5), b"hello");
    let mut eof = [0u8; 1];
    assert_eq!(c.read(&mut eof).unwrap(), 0, "the upstream's FIN reaches the client");
    c.write_all(b"after your FIN").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), b"after your FIN");
}

#[test]
fn proxy_resets_the_client_when_the_upstream_refuses() {
    let gone = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let proxy = Running::start("proxy", &["127.0.0.1:0", &gone.to_string()]);
    let mut c = connect(proxy.addr);
    let mut b = [0u8; 1];
    match c.read(&mut b) {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset),
        Ok(n) => panic!("expected a reset, read {n} bytes"),
    }
}

#[test]
fn proxy_memory_stays_bounded_against_an_upstream_that_does_not_read() {
    let (tx, rx) = std::sync::mpsc::channel::<TcpStream>();
    let tx = std::sync::Mutex::new(tx);
    let up = upstream(move |s| tx.lock().unwrap().send(s).unwrap());
    let proxy = Running::start("proxy", &["127.0.0.1:0", &up.to_string()]);
    let base = rss_kib(proxy.child.id());
    let mut c = connect(proxy.addr);
    let mut upstream_side = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    // Push for a second at an upstream that reads nothing.
    c.set_nonblocking(true).unwrap();
    let chunk = vec![7u8; 1 << 16];
    let (mut pushed, start) = (0usize, Instant::now());
    while start.elapsed() < Duration::from_secs(1) {
        match c.write(&chunk) {
            Ok(n) => pushed += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("{e}"),
        }
    }
    let stalled = rss_kib(proxy.child.id());
    eprintln!("pushed {pushed} bytes at a stalled upstream; proxy RSS {base} -> {stalled} KiB");
    assert!(stalled < base + 16 * 1024, "proxy held {} KiB", stalled - base);
    // Now the upstream reads: every byte arrives, and the client can go on.
    c.set_nonblocking(false).unwrap();
    let reader = thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0usize;
        loop {
            match upstream_side.read(&mut buf) {
                Ok(0) => return total,
                Ok(n) => {
                    assert!(buf[..n].iter().all(|&b| b == 7));
                    total += n;
                }
                Err(e) => panic!("{e}"),
            }
        }
    });
    for _ in 0..256 {
        c.write_all(&chunk).unwrap();
    }
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(reader.join().unwrap(), pushed + 256 * chunk.len());
}

#[test]
fn proxy_memory_stays_bounded_against_a_client_that_does_not_read() {
    // The reverse direction: the upstream pushes, the client reads nothing.
    let (tx, rx) = std::sync::mpsc::channel::<usize>();
    let tx = std::sync::Mutex::new(tx);
    let up = upstream(move |mut s| {
        s.set_nonblocking(true).unwrap();
        let chunk = vec![9u8; 1 << 16];
        let (mut pushed, start) = (0usize, Instant::now());
        while start.elapsed() < Duration::from_secs(1) {
            match s.write(&chunk) {
                Ok(n) => pushed += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(5)),
                Err(e) => panic!("{e}"),
            }
        }
        tx.lock().unwrap().send(pushed).unwrap();
        // Then finish the stream; the client reads it all.
        s.set_nonblocking(false).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        thread::sleep(Duration::from_secs(5));
    });
    let proxy = Running::start("proxy", &["127.0.0.1:0", &up.to_string()]);
    let base = rss_kib(proxy.child.id());
    let mut c = connect(proxy.addr);
    let pushed = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let stalled = rss_kib(proxy.child.id());
    eprintln!("upstream pushed {pushed} bytes at a client that reads nothing; proxy RSS {base} -> {stalled} KiB");
    assert!(stalled < base + 16 * 1024, "proxy held {} KiB", stalled - base);
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), pushed);
    assert!(got.iter().all(|&b| b == 9));
}
