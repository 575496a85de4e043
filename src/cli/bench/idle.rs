//! `wireloop bench idle`: C connections to a TCP echo, each making one round trip, then held idle.
//!
//! * Connections are opened one after another (a blocking connect with a timeout, then the
//!   request written at once), spread round-robin over `--sources` loopback source addresses
//!   ([`super::source_ip`]); at most [`WINDOW`] of them wait for their reply at a time, so a
//!   burst never overfills the server's accept queue (an overflow costs the connection a
//!   retransmission a second later).
//! * Every reply is checked like `bench echo`'s; a connection counts as established once its
//!   reply is complete. Failures are counted by kind (connect errors, a close or a wrong reply
//!   before the reply, no reply within [`REPLY_TIMEOUT`]), never retried.
//! * Once every connection is established or failed, one JSON line goes to stdout: counts, the
//!   seconds from the first connect to the last reply, and the connections established per
//!   second over that time (what the server accepted and answered).
//! * Then the connections are held, still registered for reading so a close by the server is
//!   counted, until `--hold` elapses, or without it until stdin closes; SIGTERM or SIGINT end
//!   either. A closing line goes to stderr.
//!
//! One process holds at most its open-file limit less [`FD_MARGIN`] connections (it raises its
//! soft limit to the hard one first); more is refused up front, naming the limit, so a caller
//! runs several processes instead (`benches/idle.sh`).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::{connect_from, cpu_seconds, source_ip, BenchArgs, Checker, Plan};

/// Connections at most waiting for their reply at once: below the accept queue of a listener
/// with the backlog of 128 that Rust's std (and so tokio's `TcpListener::bind`) asks for.
const WINDOW: usize = 100;
/// Descriptors kept free beside the held connections (stdio, the poll, libraries).
pub(super) const FD_MARGIN: u64 = 64;
/// A connect that has not completed by then counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Replies still missing this long after the last progress count as failed.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

struct Idle {
    sock: TcpStream,
    check: Checker,
    answered: bool,
}

/// Every connection and the counts kept while they are opened and held.
struct State {
    conns: Vec<Option<Idle>>,
    waiting: usize,
    established: u64,
    failed: BTreeMap<String, u64>,
    closed_by_server: u64,
    last_progress: Instant,
}

impl State {
    fn fail(&mut self, kind: &str) {
        *self.failed.entry(kind.to_string()).or_insert(0) += 1;
    }

    fn failures(&self) -> u64 {
        self.failed.values().sum()
    }

    /// Handles whatever is ready within `wait`: replies completed, closes seen.
    fn drain(&mut self, poll: &mut Poll, events: &mut Events, buf: &mut [u8], wait: Duration) -> Result<(), String> {
        match poll.poll(events, Some(wait)) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            r => r.map_err(|e| format!("poll: {e}"))?,
        }
        for ev in events.iter() {
            let i = ev.token().0;
            let Some(c) = self.conns.get_mut(i).and_then(Option::as_mut) else { continue };
            let outcome = loop {
                match c.sock.read(buf) {
                    Ok(0) => break Err("closed before its reply"),
                    Ok(k) => match c.check.feed(&buf[..k]) {
                        Ok(0) => {}
                        Ok(_) if !c.answered => {
                            c.answered = true;
                            break Ok(true);
                        }
                        Ok(_) => {} // an echo of nothing we sent: ignored
                        Err(_) => break Err("wrong reply"),
                    },
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(false),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break Err("reset before its reply"),
                }
            };
            match outcome {
                Ok(true) => {
                    self.waiting -= 1;
                    self.established += 1;
                    self.last_progress = Instant::now();
                }
                Ok(false) => {}
                Err(kind) => {
                    let answered = c.answered;
                    if let Some(mut c) = self.conns[i].take() {
                        let _ = poll.registry().deregister(&mut c.sock);
                    }
                    if answered {
                        self.closed_by_server += 1;
                    } else {
                        self.waiting -= 1;
                        self.fail(kind);
                        self.last_progress = Instant::now();
                    }
                }
            }
        }
        Ok(())
    }
}

/// Opens, checks and holds the connections; see the module header.
pub(super) fn run(args: &BenchArgs, addr: SocketAddr, plan: &Plan) -> Result<ExitCode, String> {
    let (_, limit) = crate::cli::limits::raise_fd_limit();
    let most = limit.saturating_sub(FD_MARGIN);
    if args.conns as u64 > most {
        return Err(format!(
            "one process can hold {most} connections (its open-file limit {limit} less {FD_MARGIN}), not {}: \
             run several `bench idle` processes (benches/idle.sh does)",
            args.conns
        ));
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(|e| format!("signal: {e}"))?;
    }
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    let mut st = State {
        conns: Vec::with_capacity(args.conns),
        waiting: 0,
        established: 0,
        failed: BTreeMap::new(),
        closed_by_server: 0,
        last_progress: Instant::now(),
    };
    let (start, cpu0) = (Instant::now(), cpu_seconds());
    let mut last_error = String::new();
    for i in 0..args.conns {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        while st.waiting >= WINDOW && st.last_progress.elapsed() < REPLY_TIMEOUT {
            st.drain(&mut poll, &mut events, &mut buf, Duration::from_millis(100))?;
        }
        if st.waiting >= WINDOW {
            break; // the server stopped answering: the rest are not attempted
        }
        match open(addr, source_ip(args.sources, i), &plan.request) {
            Ok(mut sock) => {
                poll.registry()
                    .register(&mut sock, Token(st.conns.len()), Interest::READABLE)
                    .map_err(|e| e.to_string())?;
                st.conns.push(Some(Idle { sock, check: Checker::new(plan), answered: false }));
                st.waiting += 1;
            }
            Err(e) => {
                st.fail(&format!("connect: {:?}", e.kind()));
                last_error = e.to_string();
                if st.conns.is_empty() && st.failures() >= 16 {
                    return Err(format!("cannot connect to {addr}: {last_error}"));
                }
            }
        }
        if i % 32 == 31 {
            st.drain(&mut poll, &mut events, &mut buf, Duration::ZERO)?;
        }
    }
    st.last_progress = Instant::now();
    while st.waiting > 0 && st.last_progress.elapsed() < REPLY_TIMEOUT && !stop.load(Ordering::Relaxed) {
        st.drain(&mut poll, &mut events, &mut buf, Duration::from_millis(100))?;
    }
    let unanswered = st.waiting as u64;
    if unanswered > 0 {
        *st.failed.entry("no reply".into()).or_insert(0) += unanswered;
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let line = serde_json::json!({
        "target": "idle", "addr": addr.to_string(), "conns": args.conns, "sources": args.sources,
        "established": st.established, "failed": st.failures(), "failures": st.failed,
        "seconds": secs, "connect_rate": st.established as f64 / secs, "client_cpu_pct": 100.0 * cpu / secs,
        "open_file_limit": limit,
    });
    let mut out = io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).map_err(|e| e.to_string())?;
    drop(out);
    if !last_error.is_empty() {
        eprintln!("last connect error: {last_error}");
    }
    let held_from = Instant::now();
    if args.hold.is_none() {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut sink = [0u8; 256];
            let mut stdin = io::stdin();
            while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
            stop.store(true, Ordering::Relaxed);
        });
    }
    let until = args.hold.map(|h| held_from + h);
    while !stop.load(Ordering::Relaxed) && until.map_or(true, |u| Instant::now() < u) {
        st.drain(&mut poll, &mut events, &mut buf, Duration::from_millis(100))?;
    }
    eprintln!(
        "held {} connections for {:.1} s; {} closed by the server meanwhile",
        st.established,
        held_from.elapsed().as_secs_f64(),
        st.closed_by_server
    );
    Ok(if st.failures() == 0 && st.closed_by_server == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// One connection, its request written (a fresh socket's buffer takes it whole).
fn open(addr: SocketAddr, source: Option<std::net::Ipv4Addr>, request: &[u8]) -> io::Result<TcpStream> {
    let mut s = connect_from(addr, source, Some(CONNECT_TIMEOUT))?;
    s.set_nodelay(true)?;
    s.write_all(request)?;
    s.set_nonblocking(true)?;
    Ok(TcpStream::from_std(s))
}
