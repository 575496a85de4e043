//! `wireloop bench`: a load generator in the spirit of redis-benchmark, for any deployment of our
//! services (or any server with the same replies).
//!
//! * C connections (UDP: C connected sockets), each keeping P requests of S bytes in flight, until
//!   N requests are answered or D seconds have passed; in-flight requests at the deadline are not
//!   counted.
//! * Every reply is checked: `echo` must answer the uppercase of what was sent (payloads are
//!   lowercase ASCII, so the expected bytes are computed once); `framed` must answer `success` per
//!   frame; `udp-echo` one uppercase datagram per datagram. `--raw REQ --reply-len N` sends a fixed
//!   request (`PING\r\n`) and requires every N-byte reply to equal the first one (`+PONG\r\n`).
//! * The client is its own mio loop per thread (`-t`, default 1), reads until a short read, and
//!   takes one clock reading per readiness event, so it stays cheaper than the servers it drives;
//!   it reports its own CPU use so a run can show that the server, not the client, was saturated.
//!
//! Output: requests/s, MB/s of request payload (one direction), latency p50/p90/p99/p99.9/max from
//! an HDR histogram, client CPU; `--json` prints the same as one JSON line. A progress line is
//! drawn on stderr when it is a terminal. `tcp.rs` and `udp.rs` hold the two drivers.
//!
//! `--sources N` spreads TCP connections over N loopback source addresses (127.0.0.1,
//! 127.0.0.2, …, each bound before its connect), as one source address has only the local port
//! range's worth of connections to one server address. `idle` (`idle.rs`) opens C echo
//! connections, makes one round trip on each and holds them.

mod idle;
mod tcp;
mod udp;

use std::io::{self, IsTerminal, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;

use super::{peer, values, Peer};

/// Which service to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// TCP uppercase echo (default 127.0.0.1:8080).
    Echo,
    /// 4-byte little-endian length-prefixed frames, answered `success` (default 127.0.0.1:8084).
    Framed,
    /// UDP uppercase echo (default 127.0.0.1:8081).
    UdpEcho,
    /// TCP echo connections, one round trip each, then held idle (default 127.0.0.1:8080); prints
    /// one JSON line once all are established.
    Idle,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    wireloop bench echo 127.0.0.1:8080 -c 50 -P 1 -s 64 -d 5\n  \
    wireloop bench framed 8084 -c 50 -P 32 -n 1000000 --json\n  \
    wireloop bench echo 127.0.0.1:6379 --raw 'PING\\r\\n' --reply-len 7   # redis-server\n  \
    wireloop bench idle 127.0.0.1:8080 -c 9000 --sources 2 --hold 60")]
pub struct BenchArgs {
    /// Service to load. With `--raw` it only picks TCP (`echo`, `framed`) or UDP (`udp-echo`).
    #[arg(value_enum)]
    target: Target,
    /// Server address (a bare port means loopback); default: the service's default address.
    #[arg(value_parser = peer)]
    addr: Option<Peer>,
    /// Connections (UDP: sockets).
    #[arg(short = 'c', long = "conns", default_value_t = 50, value_parser = |s: &str| count(s, 1_000_000))]
    conns: usize,
    /// Stop after this many answered requests (default: only the duration bounds the run).
    #[arg(short = 'n', long = "requests")]
    requests: Option<u64>,
    /// Request payload size in bytes (framed: payload after the 4-byte prefix), at most 16 MiB.
    #[arg(short = 's', long = "size", default_value_t = 64, value_parser = message_size)]
    size: usize,
    /// Requests each connection keeps in flight (1 to 65536).
    #[arg(short = 'P', long = "pipeline", default_value_t = 1, value_parser = |s: &str| count(s, MAX_PIPELINE))]
    pipeline: usize,
    /// Stop after this many seconds (at most a year).
    #[arg(short = 'd', long = "duration", value_name = "SECS", default_value = "10", value_parser = values::positive_secs)]
    duration: Duration,
    /// TCP: spread the connections over this many loopback source addresses (127.0.0.1, 127.0.0.2, …;
    /// the server must be on 127.0.0.0/8), each with its own range of local ports.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = |s: &str| count(s, MAX_SOURCES))]
    sources: usize,
    /// idle: hold the connections this many seconds (default: until stdin closes); SIGTERM or
    /// SIGINT also ends the hold.
    #[arg(long, value_name = "SECS", value_parser = values::positive_secs)]
    hold: Option<Duration>,
    /// Client threads, each its own mio loop with a share of the connections.
    #[arg(short = 't', long = "threads", default_value_t = 1)]
    threads: usize,
    #[command(flatten)]
    tls: super::tls::TlsClientArgs,
    /// Print one JSON line instead of the report.
    #[arg(long)]
    json: bool,
    /// Send this fixed request instead (escapes: \r \n \t \\ \xHH), e.g. 'PING\r\n'.
    #[arg(long, value_name = "BYTES", requires = "reply_len")]
    raw: Option<String>,
    /// With --raw: length of each reply (at most 16 MiB); every reply must equal the first.
    #[arg(long, value_name = "N", requires = "raw", value_parser = message_size)]
    reply_len: Option<usize>,
}

/// The largest request payload or reply a run uses: each connection holds
/// one of each.
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// The most requests a connection keeps in flight (each holds a timestamp).
const MAX_PIPELINE: usize = 65_536;

/// The most loopback source addresses (127.0.0.1 to 127.0.0.250).
const MAX_SOURCES: usize = 250;

/// The source address connection `i` binds before connecting with `--sources N` (N > 1): 127.0.0.1
/// to 127.0.0.N in turn. `None` (let the kernel choose) with one source.
fn source_ip(sources: usize, i: usize) -> Option<Ipv4Addr> {
    if sources <= 1 {
        return None;
    }
    let k = u8::try_from(1 + i % sources).unwrap_or(1);
    Some(Ipv4Addr::new(127, 0, 0, k))
}

/// A blocking TCP connection to `addr`, from `source` (any port) if given, within `timeout` if
/// given. On Linux the port is picked at connect (`IP_BIND_ADDRESS_NO_PORT`), so a source address
/// serves one connection per local port and server address, not one per local port in all.
pub(crate) fn connect_from(
    addr: SocketAddr,
    source: Option<Ipv4Addr>,
    timeout: Option<Duration>,
) -> io::Result<std::net::TcpStream> {
    let Some(ip) = source else {
        return match timeout {
            Some(t) => std::net::TcpStream::connect_timeout(&addr, t),
            None => std::net::TcpStream::connect(addr),
        };
    };
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let one: libc::c_int = 1;
        // SAFETY: setsockopt reads an int from the pointer we pass, of the size we pass.
        let r = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    s.bind(&SocketAddr::from((ip, 0)).into())?;
    match timeout {
        Some(t) => s.connect_timeout(&addr.into(), t)?,
        None => s.connect(&addr.into())?,
    }
    Ok(s.into())
}

/// A request or reply size: 0 to [`MAX_MESSAGE`] bytes.
fn message_size(s: &str) -> Result<usize, String> {
    values::bytes_usize(s).and_then(|n| {
        if n > MAX_MESSAGE {
            Err(format!("more than {MAX_MESSAGE} bytes (16 MiB)"))
        } else {
            Ok(n)
        }
    })
}

/// A count from 1 to `max`.
fn count(s: &str, max: usize) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("not a whole number from 1 to {max}")),
    }
}

/// What goes on the wire: one request, and how replies are checked.
pub(crate) struct Plan {
    request: Vec<u8>,
    /// Each reply's bytes, if known in advance (else: whatever the first reply was).
    reply: Option<Vec<u8>>,
    reply_len: usize,
    pipeline: usize,
}

/// Checks a reply stream, split anywhere, against the expected reply repeated.
pub(crate) struct Checker {
    expected: Vec<u8>,
    known: bool,
    len: usize,
    pos: usize,
}

impl Checker {
    fn new(plan: &Plan) -> Self {
        let known = plan.reply.is_some();
        let expected = plan.reply.clone().unwrap_or_default();
        Checker { expected, known, len: plan.reply_len, pos: 0 }
    }

    /// Feeds received bytes; returns how many replies they completed.
    fn feed(&mut self, mut data: &[u8]) -> Result<u64, String> {
        let mut done = 0;
        while !data.is_empty() {
            let k = (self.len - self.pos).min(data.len());
            if !self.known {
                self.expected.extend_from_slice(&data[..k]);
            } else if data[..k] != self.expected[self.pos..self.pos + k] {
                return Err(format!(
                    "wrong reply: expected {:?}, got {:?}",
                    String::from_utf8_lossy(&self.expected[self.pos..self.pos + k]),
                    String::from_utf8_lossy(&data[..k])
                ));
            }
            self.pos += k;
            data = &data[k..];
            if self.pos == self.len {
                self.pos = 0;
                self.known = true;
                done += 1;
            }
        }
        Ok(done)
    }
}

/// State every client thread shares.
pub(crate) struct Shared {
    limit: u64,
    issued: AtomicU64,
    done: AtomicU64,
    start: Barrier,
    duration: Duration,
}

impl Shared {
    /// May one more request be issued?
    fn take(&self) -> bool {
        self.limit == u64::MAX || self.issued.fetch_add(1, Ordering::Relaxed) < self.limit
    }
}

/// What one client thread measured.
pub(crate) struct Outcome {
    hist: Histogram<u64>,
    completed: u64,
    lost: u64,
    end: Instant,
}

impl Outcome {
    fn new() -> Self {
        let hist = Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds");
        Outcome { hist, completed: 0, lost: 0, end: Instant::now() }
    }

    /// One reply: its latency from when its request was issued.
    fn record(&mut self, sent: Instant, now: Instant) {
        self.hist.saturating_record(now.saturating_duration_since(sent).as_nanos() as u64);
        self.completed += 1;
    }
}

fn unescape(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let (byte, used) = match b.get(i + 1) {
            Some(b'r') => (b'\r', 2),
            Some(b'n') => (b'\n', 2),
            Some(b't') => (b'\t', 2),
            Some(b'\\') => (b'\\', 2),
            Some(b'x') => {
                let hex = s.get(i + 2..i + 4).ok_or("\\x needs two hex digits")?;
                (u8::from_str_radix(hex, 16).map_err(|_| format!("bad escape \\x{hex}"))?, 4)
            }
            _ => return Err(format!("unknown escape in `{s}` (use \\r \\n \\t \\\\ \\xHH)")),
        };
        out.push(byte);
        i += used;
    }
    Ok(out)
}

fn plan(args: &BenchArgs) -> Result<Plan, String> {
    let pipeline = args.pipeline;
    if let (Some(raw), Some(n)) = (&args.raw, args.reply_len) {
        let request = unescape(raw)?;
        if request.is_empty() || n == 0 {
            return Err("--raw and --reply-len must not be empty".into());
        }
        return Ok(Plan { request, reply: None, reply_len: n, pipeline });
    }
    let payload: Vec<u8> = (0..args.size).map(|i| b'a' + (i % 26) as u8).collect();
    let upper = payload.to_ascii_uppercase();
    Ok(match args.target {
        Target::Echo | Target::UdpEcho | Target::Idle => {
            if payload.is_empty() {
                return Err("-s must be at least 1 for echo".into());
            }
            if args.target == Target::UdpEcho && payload.len() > 65_507 {
                return Err("-s must be at most 65507 for udp-echo (the largest IPv4 datagram)".into());
            }
            Plan { request: payload, reply: Some(upper), reply_len: args.size, pipeline }
        }
        Target::Framed => {
            let mut request = Vec::with_capacity(4 + payload.len());
            wireloop::codec::frame::encode_frame(wireloop::codec::frame::ByteOrder::Little, &payload, &mut request)
                .map_err(|e| e.to_string())?;
            Plan { request, reply: Some(b"success".to_vec()), reply_len: 7, pipeline }
        }
    })
}

/// CPU seconds (user + system) this process has used so far.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

pub fn run(args: BenchArgs) -> Result<ExitCode, String> {
    let plan = plan(&args)?;
    let addr = match &args.addr {
        // Every connection goes to the address the first one reached.
        Some(p) if args.target != Target::UdpEcho => p.tcp()?.peer_addr().map_err(|e| e.to_string())?,
        Some(p) => p.udp(),
        None => {
            let port = match args.target {
                Target::Echo | Target::Idle => 8080,
                Target::Framed => 8084,
                Target::UdpEcho => 8081,
            };
            SocketAddr::from(([127, 0, 0, 1], port))
        }
    };
    if args.tls.enabled() && matches!(args.target, Target::UdpEcho | Target::Idle) {
        return Err("--tls is for the echo and framed targets".into());
    }
    if args.sources > 1 {
        let loopback = matches!(addr, SocketAddr::V4(a) if a.ip().is_loopback());
        if args.target == Target::UdpEcho || !loopback {
            return Err("--sources spreads TCP connections over 127.0.0.x: the server must be on 127.0.0.0/8".into());
        }
    }
    if args.hold.is_some() && args.target != Target::Idle {
        return Err("--hold is for `bench idle`".into());
    }
    if args.target == Target::Idle {
        return idle::run(&args, addr, &plan);
    }
    let default_peer = Peer::loopback(addr.port());
    let tls = args.tls.session(args.addr.as_ref().unwrap_or(&default_peer))?;
    let threads = args.threads.clamp(1, args.conns);
    let shared = Shared {
        limit: args.requests.unwrap_or(u64::MAX),
        issued: AtomicU64::new(0),
        done: AtomicU64::new(0),
        start: Barrier::new(threads + 1),
        duration: args.duration,
    };
    let udp = args.target == Target::UdpEcho;
    let progress = !args.json && io::stderr().is_terminal();
    let (results, start, cpu) = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let n = args.conns / threads + usize::from(t < args.conns % threads);
                let (plan, shared, tls) = (&plan, &shared, &tls);
                // Each thread's connections take the source addresses from where the last one's stopped.
                let first = (0..t).map(|u| args.conns / threads + usize::from(u < args.conns % threads)).sum::<usize>();
                let from = (args.sources, first);
                s.spawn(
                    move || {
                        if udp {
                            udp::run(addr, n, plan, shared)
                        } else {
                            tcp::run(addr, n, from, plan, shared, tls)
                        }
                    },
                )
            })
            .collect();
        shared.start.wait();
        let (start, cpu0) = (Instant::now(), cpu_seconds());
        while progress && workers.iter().any(|w| !w.is_finished()) {
            std::thread::sleep(Duration::from_millis(250));
            let (done, secs) = (shared.done.load(Ordering::Relaxed), start.elapsed().as_secs_f64());
            eprint!("\r{secs:6.1} s  {done:>12} replies  {:>12.0} req/s ", done as f64 / secs);
        }
        let results: Vec<_> = workers.into_iter().map(|w| w.join().expect("bench thread panicked")).collect();
        if progress {
            eprint!("\r{:70}\r", "");
        }
        (results, start, cpu_seconds() - cpu0)
    });
    let mut total = Outcome::new();
    for r in results {
        let r = r?;
        total.hist.add(&r.hist).map_err(|e| format!("histogram: {e:?}"))?;
        total.completed += r.completed;
        total.lost += r.lost;
        total.end = total.end.max(r.end);
    }
    if total.completed == 0 {
        return Err(format!("no complete reply from {addr} during the run: is it serving this protocol?"));
    }
    report(&args, addr, &plan, &total, total.end.duration_since(start).as_secs_f64(), cpu)
}

fn report(
    args: &BenchArgs,
    addr: SocketAddr,
    plan: &Plan,
    t: &Outcome,
    secs: f64,
    cpu: f64,
) -> Result<ExitCode, String> {
    let rps = t.completed as f64 / secs;
    let payload = if args.raw.is_some() { plan.request.len() } else { args.size };
    let mbps = rps * payload as f64 / 1e6;
    let us = |q: f64| t.hist.value_at_quantile(q) as f64 / 1000.0;
    let (p50, p90, p99, p999, max) = (us(0.5), us(0.9), us(0.99), us(0.999), t.hist.max() as f64 / 1000.0);
    let cpu_pct = 100.0 * cpu / secs;
    let target = match args.target {
        Target::Echo => "echo",
        Target::Framed => "framed",
        Target::UdpEcho => "udp-echo",
        Target::Idle => "idle",
    };
    let mut out = io::stdout().lock();
    let w = if args.json {
        let v = serde_json::json!({
            "target": target, "addr": addr.to_string(), "conns": args.conns, "pipeline": plan.pipeline,
            "size": payload, "raw": args.raw.is_some(), "seconds": secs, "requests": t.completed,
            "rps": rps, "mbps": mbps, "p50_us": p50, "p90_us": p90, "p99_us": p99, "p999_us": p999,
            "max_us": max, "lost": t.lost, "client_cpu_pct": cpu_pct,
        });
        writeln!(out, "{v}")
    } else {
        writeln!(
            out,
            "{target} {addr}: {} {}, pipeline {}, {payload} B requests, {secs:.2} s\n  \
             requests:   {} ({rps:.0} req/s){}\n  throughput: {mbps:.2} MB/s (request payload, one way)\n  \
             latency us: p50 {p50:.1}  p90 {p90:.1}  p99 {p99:.1}  p99.9 {p999:.1}  max {max:.1}\n  \
             client cpu: {cpu_pct:.0}% of one core",
            args.conns,
            if args.target == Target::UdpEcho { "sockets" } else { "connections" },
            plan.pipeline,
            t.completed,
            if t.lost > 0 { format!(", {} datagrams lost", t.lost) } else { String::new() },
        )
    };
    w.and_then(|()| out.flush()).map_err(|e| e.to_string())?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checker_accepts_any_split_and_refuses_a_wrong_byte() {
        let plan = Plan { request: b"ab".to_vec(), reply: Some(b"AB".to_vec()), reply_len: 2, pipeline: 1 };
        let mut c = Checker::new(&plan);
        assert_eq!(c.feed(b"A").unwrap(), 0);
        assert_eq!(c.feed(b"BABA").unwrap(), 2);
        assert_eq!(c.feed(b"B").unwrap(), 1);
        assert!(c.feed(b"Ab").is_err());
    }

    #[test]
    fn raw_mode_learns_the_first_reply() {
        let plan = Plan { request: b"PING\r\n".to_vec(), reply: None, reply_len: 7, pipeline: 1 };
        let mut c = Checker::new(&plan);
        assert_eq!(c.feed(b"+PONG\r\n+PO").unwrap(), 1);
        assert_eq!(c.feed(b"NG\r\n").unwrap(), 1);
        assert!(c.feed(b"-ERR\r\n ").is_err());
    }

    #[test]
    fn unescape_handles_the_escapes() {
        assert_eq!(unescape(r"PING\r\n").unwrap(), b"PING\r\n");
        assert_eq!(unescape(r"\x41\\").unwrap(), b"A\\");
        assert!(unescape(r"\q").is_err());
    }
}
