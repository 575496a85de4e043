//! Fan-out load tool for `benches/embed_peers.sh` (issue 13): one publisher, M readers, every
//! line delivered to every reader, counted and checked. std and mio only.
//!
//! ```text
//! fanout chat  ADDR [-m 1000] [-n 1000] [-b 1] [-s 64] [--pid PID] [--json]   # examples/chat.rs
//! fanout redis ADDR [-m 1000] [-n 1000] [-b 1] [-s 64] [--pid PID] [--json]   # redis-server
//! ```
//!
//! * `chat`: M member connections each read their `welcome…` line; one more member is the
//!   publisher, whose own welcome line tells its id, so every reader must then receive exactly
//!   `<id>: <payload>\n` per line sent (the chat never echoes a line to its sender).
//! * `redis`: M connections send `SUBSCRIBE ch` and read the confirmation; the publisher is a
//!   plain connection sending `PUBLISH ch <payload>` (RESP) and must get `:M` back for each; every
//!   reader must receive `*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$S\r\n<payload>\r\n` per message.
//!
//! The payload is S lowercase ASCII bytes, the same every time, so each reader's byte stream must
//! equal the expected message repeated: every byte is compared, and a message counts once its last
//! byte has arrived (message boundaries by position, never by searching for a delimiter).
//!
//! Pacing is lock-step: the publisher writes a batch of B lines in one `write`, and the next batch
//! only once every reader has received the whole batch. No reader is ever more than B messages
//! behind, so the chat's 1 MiB SendQ limit (and redis's pubsub output-buffer limit) cannot trip
//! unless something is wrong, and each server reads one batch per wake-up. The time from a batch's
//! write to its last delivery is the batch's fan-out latency (p50/p99/max reported).
//!
//! Before the measured N lines, 10 batches warm up (not counted). With `--pid PID` the server's
//! CPU time (utime+stime of /proc/PID/stat, all threads) over the measured lines is reported per
//! delivered message. Any reader closed, reset or sent a wrong byte is an error (exit 1), reported
//! with how many messages each side had got.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

const PUB: Token = Token(usize::MAX - 1);

struct Args {
    mode: String,
    addr: SocketAddr,
    members: usize,
    lines: u64,
    batch: u64,
    size: usize,
    pid: Option<u32>,
    json: bool,
    timeout: Duration,
}

fn usage() -> ! {
    eprintln!("usage: fanout chat|redis ADDR [-m MEMBERS] [-n LINES] [-b BATCH] [-s SIZE] [--pid PID] [--json] [--timeout SECS]");
    std::process::exit(2)
}

fn parse_args() -> Args {
    // `cargo bench` appends `--bench`; ignore it.
    let raw: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let mut pos = Vec::new();
    let mut a = Args {
        mode: String::new(),
        addr: "127.0.0.1:0".parse().unwrap(),
        members: 1000,
        lines: 1000,
        batch: 1,
        size: 64,
        pid: None,
        json: false,
        timeout: Duration::from_secs(120),
    };
    let mut it = raw.into_iter();
    while let Some(x) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| usage());
        match x.as_str() {
            "-m" => a.members = val().parse().unwrap_or_else(|_| usage()),
            "-n" => a.lines = val().parse().unwrap_or_else(|_| usage()),
            "-b" => a.batch = val().parse().unwrap_or_else(|_| usage()),
            "-s" => a.size = val().parse().unwrap_or_else(|_| usage()),
            "--pid" => a.pid = Some(val().parse().unwrap_or_else(|_| usage())),
            "--timeout" => a.timeout = Duration::from_secs(val().parse().unwrap_or_else(|_| usage())),
            "--json" => a.json = true,
            _ if x.starts_with('-') => usage(),
            _ => pos.push(x),
        }
    }
    if pos.len() != 2 || !matches!(pos[0].as_str(), "chat" | "redis") || a.batch == 0 || a.members == 0 {
        usage()
    }
    a.mode = pos[0].clone();
    a.addr = pos[1].parse().unwrap_or_else(|_| usage());
    a
}

/// utime+stime of a process, in clock ticks (all threads).
fn cpu_ticks(pid: &str) -> io::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &s[s.rfind(')').ok_or_else(|| io::Error::other("bad stat"))? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15.
    Ok(f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0))
}

fn clk_tck() -> f64 {
    // getconf CLK_TCK without libc: it is 100 on every Linux the project runs on; allow override.
    std::env::var("CLK_TCK").ok().and_then(|v| v.parse().ok()).unwrap_or(100.0)
}

/// `map_err` helper: an io::Error with what was being done.
fn e(what: impl Into<String>) -> impl FnOnce(io::Error) -> String {
    let what = what.into();
    move |err| format!("{what}: {err}")
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(s)
}

/// Reads one `\n`-terminated line byte by byte (nothing after it may be consumed).
fn read_line_exact(s: &mut TcpStream) -> io::Result<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        if s.read(&mut b)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before a full line"));
        }
        line.push(b[0]);
        if b[0] == b'\n' {
            return Ok(String::from_utf8_lossy(&line).into_owned());
        }
    }
}

/// Reads exactly the redis SUBSCRIBE confirmation: `*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:K\r\n`.
fn read_subscribed(s: &mut TcpStream) -> io::Result<()> {
    const HEAD: &[u8] = b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:";
    let mut head = vec![0u8; HEAD.len()];
    s.read_exact(&mut head)?;
    if head != HEAD {
        return Err(io::Error::other(format!("unexpected SUBSCRIBE reply {:?}", String::from_utf8_lossy(&head))));
    }
    let line = read_line_exact(s)?;
    if !line.ends_with("\r\n") || line.trim_end().parse::<u64>().is_err() {
        return Err(io::Error::other(format!("unexpected SUBSCRIBE count {line:?}")));
    }
    Ok(())
}

struct Reader {
    sock: mio::net::TcpStream,
    /// Position within the expected message of the next byte.
    pos: usize,
    /// Complete messages received.
    got: u64,
}

struct Report {
    delivered: u64,
    secs: f64,
    server_cpu_s: Option<f64>,
    client_cpu_s: f64,
    lat_us: Vec<f64>,
}

fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[i.min(v.len() - 1)]
}

fn run(a: &Args) -> Result<Report, String> {
    let payload: Vec<u8> = (0..a.size).map(|i| b'a' + (i % 26) as u8).collect();

    // Readers first (a chat member only receives lines sent after it joined).
    let mut readers = Vec::with_capacity(a.members);
    for i in 0..a.members {
        let mut s = connect(a.addr).map_err(e(format!("connect reader {i}")))?;
        if a.mode == "chat" {
            let w = read_line_exact(&mut s).map_err(e(format!("reader {i} welcome")))?;
            if !w.starts_with("welcome") {
                return Err(format!("reader {i}: expected a welcome line, got {w:?}"));
            }
        } else {
            s.write_all(b"*2\r\n$9\r\nSUBSCRIBE\r\n$2\r\nch\r\n").map_err(e("SUBSCRIBE"))?;
            read_subscribed(&mut s).map_err(e(format!("reader {i} SUBSCRIBE")))?;
        }
        readers.push(s);
    }

    // The publisher and what each reader must receive per line.
    let mut publ = connect(a.addr).map_err(e("connect publisher"))?;
    let (expected, request, reply): (Vec<u8>, Vec<u8>, Vec<u8>) = if a.mode == "chat" {
        let w = read_line_exact(&mut publ).map_err(e("publisher welcome"))?;
        // "welcome, member {id} ({peer}); N other(s) here"
        let id = w
            .strip_prefix("welcome, member ")
            .and_then(|r| r.split(" (").next())
            .ok_or_else(|| format!("cannot parse the publisher's id from {w:?}"))?;
        let mut exp = format!("{id}: ").into_bytes();
        exp.extend_from_slice(&payload);
        exp.push(b'\n');
        let mut req = payload.clone();
        req.push(b'\n');
        (exp, req, Vec::new())
    } else {
        let mut exp = format!("*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n${}\r\n", a.size).into_bytes();
        exp.extend_from_slice(&payload);
        exp.extend_from_slice(b"\r\n");
        let mut req = format!("*3\r\n$7\r\nPUBLISH\r\n$2\r\nch\r\n${}\r\n", a.size).into_bytes();
        req.extend_from_slice(&payload);
        req.extend_from_slice(b"\r\n");
        (exp, req, format!(":{}\r\n", a.members).into_bytes())
    };

    let mut poll = Poll::new().map_err(e("poll"))?;
    let mut rs: Vec<Reader> = Vec::with_capacity(a.members);
    for (i, s) in readers.into_iter().enumerate() {
        s.set_nonblocking(true).map_err(e("nonblocking"))?;
        let mut sock = mio::net::TcpStream::from_std(s);
        poll.registry().register(&mut sock, Token(i), Interest::READABLE).map_err(e("register"))?;
        rs.push(Reader { sock, pos: 0, got: 0 });
    }
    publ.set_nonblocking(true).map_err(e("nonblocking"))?;
    let mut publ = mio::net::TcpStream::from_std(publ);
    poll.registry().register(&mut publ, PUB, Interest::READABLE).map_err(e("register"))?;

    let warm_batches = 10u64;
    let total_lines = warm_batches * a.batch + a.lines;
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0u64; // lines written by the publisher
    let mut acked = 0u64; // redis: PUBLISH replies checked
    let mut reply_pos = 0usize;
    let mut done_readers = a.members; // readers holding every line sent so far
    let mut batch_at = Instant::now();
    let mut lat_us = Vec::new();
    let mut start: Option<(Instant, Option<u64>, u64)> = None;
    let deadline = Instant::now() + a.timeout;
    let pid = a.pid.map(|p| p.to_string());
    let self_ticks = || cpu_ticks("self").unwrap_or(0);
    let mut batch_req = Vec::new();

    loop {
        // Lock-step: the next batch once every reader has the previous one.
        if done_readers == a.members && sent < total_lines {
            if sent == warm_batches * a.batch && start.is_none() {
                let srv = pid.as_deref().map(cpu_ticks).transpose().map_err(e("server /proc stat"))?;
                start = Some((Instant::now(), srv, self_ticks()));
            }
            let k = a.batch.min(total_lines - sent);
            batch_req.clear();
            for _ in 0..k {
                batch_req.extend_from_slice(&request);
            }
            let mut off = 0;
            while off < batch_req.len() {
                match publ.write(&batch_req[off..]) {
                    Ok(0) => return Err("publisher: server closed".into()),
                    Ok(w) => off += w,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {
                        std::thread::yield_now()
                    }
                    Err(e) => return Err(format!("publisher write: {e}")),
                }
            }
            batch_at = Instant::now();
            sent += k;
            done_readers = 0;
        }
        if sent == total_lines && done_readers == a.members && (reply.is_empty() || acked == total_lines) {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            let min = rs.iter().map(|r| r.got).min().unwrap_or(0);
            return Err(format!(
                "timed out: {sent} lines sent, the slowest reader had {min}, {done_readers}/{} readers complete",
                a.members
            ));
        }
        poll.poll(&mut events, Some(deadline - now)).map_err(e("poll"))?;
        for ev in events.iter() {
            if ev.token() == PUB {
                // Only redis answers the publisher: `:M\r\n` per PUBLISH.
                loop {
                    match publ.read(&mut buf) {
                        Ok(0) => return Err("publisher: server closed".into()),
                        Ok(k) => {
                            if reply.is_empty() {
                                return Err(format!(
                                    "publisher got unexpected {:?}",
                                    String::from_utf8_lossy(&buf[..k])
                                ));
                            }
                            for &b in &buf[..k] {
                                if b != reply[reply_pos] {
                                    return Err(format!(
                                        "PUBLISH reply differs from {:?} (receivers != {}): got {:?}",
                                        String::from_utf8_lossy(&reply),
                                        a.members,
                                        String::from_utf8_lossy(&buf[..k])
                                    ));
                                }
                                reply_pos += 1;
                                if reply_pos == reply.len() {
                                    reply_pos = 0;
                                    acked += 1;
                                }
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(format!("publisher read: {e}")),
                    }
                }
                continue;
            }
            let i = ev.token().0;
            let r = &mut rs[i];
            loop {
                let k = match r.sock.read(&mut buf) {
                    Ok(0) => return Err(format!("reader {i}: the server closed it after {} of {sent} lines", r.got)),
                    Ok(k) => k,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(format!("reader {i}: {e} after {} of {sent} lines", r.got)),
                };
                // Compare against the expected message, repeated, segment by segment.
                let mut data = &buf[..k];
                while !data.is_empty() {
                    let n = data.len().min(expected.len() - r.pos);
                    if data[..n] != expected[r.pos..r.pos + n] {
                        return Err(format!(
                            "reader {i}: wrong bytes after {} messages: got {:?}, expected {:?}",
                            r.got,
                            String::from_utf8_lossy(&data[..n]),
                            String::from_utf8_lossy(&expected[r.pos..r.pos + n])
                        ));
                    }
                    r.pos += n;
                    data = &data[n..];
                    if r.pos == expected.len() {
                        r.pos = 0;
                        r.got += 1;
                        if r.got > sent {
                            return Err(format!("reader {i}: more messages ({}) than lines sent ({sent})", r.got));
                        }
                        if r.got == sent {
                            done_readers += 1;
                            if done_readers == a.members && start.is_some() {
                                lat_us.push(batch_at.elapsed().as_secs_f64() * 1e6);
                            }
                        }
                    }
                }
                // Edge-triggered: a short read drained the socket.
                if k < buf.len() {
                    break;
                }
            }
        }
    }
    let (t0, srv0, self0) = start.ok_or("no measured lines")?;
    let secs = t0.elapsed().as_secs_f64();
    let tck = clk_tck();
    let server_cpu_s = match (pid.as_deref(), srv0) {
        (Some(p), Some(s0)) => Some((cpu_ticks(p).map_err(e("server /proc stat"))? - s0) as f64 / tck),
        _ => None,
    };
    let client_cpu_s = (self_ticks() - self0) as f64 / tck;
    lat_us.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Ok(Report { delivered: a.lines * a.members as u64, secs, server_cpu_s, client_cpu_s, lat_us })
}

fn main() {
    let a = parse_args();
    let r = match run(&a) {
        Ok(r) => r,
        Err(msg) => {
            eprintln!("fanout {} {}: {msg}", a.mode, a.addr);
            std::process::exit(1);
        }
    };
    let dps = r.delivered as f64 / r.secs;
    let us_per = r.server_cpu_s.map(|c| 1e6 * c / r.delivered as f64);
    if a.json {
        println!(
            "{{\"mode\":\"{}\",\"members\":{},\"lines\":{},\"batch\":{},\"size\":{},\"delivered\":{},\"seconds\":{:.4},\"deliveries_per_s\":{:.1},\"server_cpu_s\":{},\"server_cpu_us_per_delivery\":{},\"client_cpu_pct\":{:.1},\"batch_p50_us\":{:.0},\"batch_p99_us\":{:.0},\"batch_max_us\":{:.0}}}",
            a.mode,
            a.members,
            a.lines,
            a.batch,
            a.size,
            r.delivered,
            r.secs,
            dps,
            r.server_cpu_s.map_or("null".into(), |c| format!("{c:.3}")),
            us_per.map_or("null".into(), |u| format!("{u:.4}")),
            100.0 * r.client_cpu_s / r.secs,
            pct(&r.lat_us, 50.0),
            pct(&r.lat_us, 99.0),
            r.lat_us.last().copied().unwrap_or(0.0),
        );
    } else {
        println!(
            "{} {}: {} lines x {} readers (batches of {}, {} B) = {} deliveries in {:.2} s: {:.0} deliveries/s",
            a.mode, a.addr, a.lines, a.members, a.batch, a.size, r.delivered, r.secs, dps
        );
        if let (Some(c), Some(u)) = (r.server_cpu_s, us_per) {
            println!("server CPU {c:.2} s ({:.0}%), {u:.3} us per delivered message", 100.0 * c / r.secs);
        }
        println!(
            "client CPU {:.0}%; batch fan-out time p50 {:.0} us, p99 {:.0} us, max {:.0} us",
            100.0 * r.client_cpu_s / r.secs,
            pct(&r.lat_us, 50.0),
            pct(&r.lat_us, 99.0),
            r.lat_us.last().copied().unwrap_or(0.0)
        );
    }
}
