//! The time services on the command line: `wireloop time` (the tutorial's
//! strftime client, with a timeout), `wireloop sntp` (one SNTP exchange,
//! printing offset and delay as RFC 5905 defines them), and
//! [`TimeServeArgs`], the `wireloop serve` flags for the `time` and `sntp`
//! services.

use std::cell::RefCell;
use std::io::{self, IsTerminal, Write};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use clap::Args;
use wireloop::ratelimit::RateConfig;
use wireloop::services::metrics::Catalog;
use wireloop::services::sntp::{client_request, offset_delay, NtpTimestamp, Packet, Sntp, SntpConfig, MODE_SERVER};
use wireloop::services::time::{daytime_answer, rfc868_answer, Limited, TimeService, DEFAULT_FORMAT};
use wireloop::{Bound, EventLoop};

use super::{input_lines, parse_addr, peer, peer_or_host, values, Peer};

/// `wireloop serve` flags for the `time` and `sntp` services.
#[derive(Debug, Clone, Copy, Args)]
pub struct TimeServeArgs {
    /// strftime time server (the tutorial's UDP time server).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8082", value_parser = parse_addr)]
    pub time: SocketAddr,
    /// SNTPv4 server (RFC 4330/5905) for real NTP clients.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8123", value_parser = parse_addr)]
    pub sntp: SocketAddr,
    /// `time`: requests per second allowed per source (0: no limit).
    #[arg(long, value_name = "N", default_value_t = 50)]
    time_rate: u32,
    /// `time`: requests a source may send at once.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    time_burst: u32,
    /// `sntp`: requests per second allowed per source (0: no limit).
    #[arg(long, value_name = "N", default_value_t = 50)]
    sntp_rate: u32,
    /// `sntp`: requests a source may send at once.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    sntp_burst: u32,
    /// Sources each per-source limit (udp-echo, time, sntp, rfc868, daytime)
    /// remembers; past that, the least recently seen are forgotten.
    #[arg(long, value_name = "N", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(2..=1 << 24))]
    rate_sources: u64,
    /// RFC 868 Time over UDP (seconds since 1900, 4 bytes), off unless given.
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    pub rfc868: Option<SocketAddr>,
    /// RFC 867 Daytime over UDP (a line of text), off unless given.
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    pub daytime: Option<SocketAddr>,
    /// `sntp`: stratum announced (1-15).
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u8).range(1..=15))]
    sntp_stratum: u8,
    /// `sntp`: reference ID announced: 1-4 ASCII letters/digits, or an IPv4 address.
    #[arg(long, value_name = "CODE", default_value = "LOCL", value_parser = parse_refid)]
    sntp_refid: [u8; 4],
}

impl TimeServeArgs {
    /// A rate limit of `rate` per second and `burst` for one of `serve`'s
    /// services, remembering `--rate-sources` sources.
    pub fn rate(&self, rate: u32, burst: u32) -> RateConfig {
        RateConfig { rate, burst, max_sources: self.rate_sources as usize }
    }

    /// Binds RFC 868 Time (rate-limited like `time`) when called.
    pub fn install_rfc868(
        &self,
        catalog: &RefCell<Catalog>,
    ) -> impl FnOnce(&mut EventLoop, SocketAddr) -> io::Result<Bound> + 'static {
        self.install_limited("rfc868", rfc868_answer, catalog)
    }

    /// Binds RFC 867 Daytime (rate-limited like `time`) when called.
    pub fn install_daytime(
        &self,
        catalog: &RefCell<Catalog>,
    ) -> impl FnOnce(&mut EventLoop, SocketAddr) -> io::Result<Bound> + 'static {
        self.install_limited("daytime", daytime_answer, catalog)
    }

    /// Binds `answer` as the datagram service `name`, rate-limited like
    /// `time`, its refusals counted for the metrics.
    fn install_limited(
        &self,
        name: &'static str,
        answer: fn(&[u8], SocketAddr, &mut Vec<u8>) -> wireloop::Reply,
        catalog: &RefCell<Catalog>,
    ) -> impl FnOnce(&mut EventLoop, SocketAddr) -> io::Result<Bound> + 'static {
        let service = Limited::new(name, self.rate(self.time_rate, self.time_burst), answer);
        let limited = service.guard().limited_counter();
        catalog.borrow_mut().udp_rate_limited(name, move || limited.get());
        move |lp, addr| lp.bind_udp(addr, service)
    }

    /// Binds the `time` service when called.
    pub fn install_time(
        &self,
        catalog: &RefCell<Catalog>,
    ) -> impl FnOnce(&mut EventLoop, SocketAddr) -> io::Result<Bound> + 'static {
        let service = TimeService::new(self.rate(self.time_rate, self.time_burst));
        let limited = service.guard().limited_counter();
        catalog.borrow_mut().udp_rate_limited("time", move || limited.get());
        move |lp, addr| lp.bind_udp(addr, service)
    }

    /// Binds the `sntp` service when called.
    pub fn install_sntp(&self) -> impl FnOnce(&mut EventLoop, SocketAddr) -> io::Result<Bound> + 'static {
        let cfg = SntpConfig {
            stratum: self.sntp_stratum,
            ref_id: self.sntp_refid,
            rate: self.rate(self.sntp_rate, self.sntp_burst),
        };
        move |lp, addr| lp.bind_udp(addr, Sntp::new(cfg))
    }
}

/// A reference ID: 1-4 ASCII letters/digits (NUL-padded), or an IPv4 address.
fn parse_refid(s: &str) -> Result<[u8; 4], String> {
    if let Ok(ip) = s.parse::<Ipv4Addr>() {
        return Ok(ip.octets());
    }
    if (1..=4).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric()) {
        let mut id = [0u8; 4];
        id[..s.len()].copy_from_slice(s.as_bytes());
        return Ok(id);
    }
    Err(format!("`{s}` is not 1-4 ASCII letters/digits nor an IPv4 address"))
}

#[derive(Debug, Args)]
pub struct TimeArgs {
    /// `[ADDR] [FORMAT]`: server (default 127.0.0.1:8082; the first word is the
    /// address when it looks like one) and strftime format (empty: the
    /// server's default, %Y-%m-%d %X). With no FORMAT, reads formats from
    /// stdin, one a line (prompting on a terminal), until EOF or `quit`.
    #[arg(value_name = "[ADDR] [FORMAT]", num_args = 0..=2)]
    words: Vec<String>,
    /// Seconds to wait for each reply.
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = values::positive_secs)]
    timeout: Duration,
}

#[derive(Debug, Args)]
pub struct SntpArgs {
    /// Server: HOST (port 123), HOST:PORT, [v6]:PORT, or a bare port on 127.0.0.1.
    #[arg(default_value = "127.0.0.1:8123", value_parser = |s: &str| peer_or_host(s, 123))]
    addr: Peer,
    /// Seconds to wait for the reply.
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = values::positive_secs)]
    timeout: Duration,
    /// NTP version to ask with.
    #[arg(long, value_name = "3|4", default_value_t = 4, value_parser = clap::value_parser!(u8).range(3..=4))]
    ntp_version: u8,
}

/// A UDP socket connected to `addr`, reading with `timeout`.
fn udp_to(addr: &Peer, timeout: Duration) -> Result<UdpSocket, String> {
    let to = addr.udp();
    let local: SocketAddr = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("literal");
    let socket = UdpSocket::bind(local).map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    socket.connect(to).map_err(|e| format!("cannot reach {addr}: {e}"))?;
    socket.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    Ok(socket)
}

/// Discards replies that came in after an earlier request timed out, so they
/// are not taken for the answer to the next one.
fn drain(socket: &UdpSocket, buf: &mut [u8]) {
    if socket.set_nonblocking(true).is_ok() {
        while socket.recv(buf).is_ok() {}
        let _ = socket.set_nonblocking(false);
    }
}

pub fn run_time(args: TimeArgs) -> Result<ExitCode, String> {
    let timeout = args.timeout;
    let default = Peer::loopback(8082);
    let (addr, format) = match args.words.as_slice() {
        [] => (default, None),
        [one] => match peer(one) {
            Ok(a) => (a, None),
            Err(_) => (default, Some(one.clone())),
        },
        [addr, format, ..] => (peer(addr)?, Some(format.clone())),
    };
    let socket = udp_to(&addr, timeout)?;
    let mut buf = vec![0u8; 65_536];
    let mut ask = |format: &str| -> Result<bool, String> {
        drain(&socket, &mut buf);
        socket.send(format.as_bytes()).map_err(|e| format!("sending to {addr}: {e}"))?;
        match socket.recv(&mut buf) {
            Ok(n) => {
                let reply = String::from_utf8_lossy(&buf[..n]);
                if reply.starts_with("error: ") {
                    eprintln!("{reply}");
                    return Ok(false);
                }
                let mut out = io::stdout().lock();
                let _ = writeln!(out, "{reply}");
                let _ = out.flush();
                Ok(true)
            }
            Err(e) => {
                let why = match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => format!("within {timeout:?}"),
                    _ => format!("({e})"),
                };
                eprintln!("no reply from {addr} {why}: is `wireloop serve` running there? (over-limit requests are dropped silently)");
                Ok(false)
            }
        }
    };
    let all_ok = match format {
        Some(f) => ask(&f)?,
        // Formats from stdin, one a line, prompted for on a terminal; empty
        // input (`< /dev/null`) asks once for the default.
        None => {
            let (mut all_ok, mut asked) = (true, false);
            for line in input_lines(&format!("format (empty: {DEFAULT_FORMAT})> "), false) {
                all_ok &= ask(&line.map_err(|e| format!("reading stdin: {e}"))?)?;
                asked = true;
            }
            if !asked && !io::stdin().is_terminal() {
                all_ok = ask("")?;
            }
            all_ok
        }
    };
    Ok(if all_ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

pub fn run_sntp(args: SntpArgs) -> Result<ExitCode, String> {
    let limit = args.timeout;
    let addr = &args.addr;
    let socket = udp_to(addr, limit)?;
    let t1 = NtpTimestamp::now();
    socket.send(&client_request(args.ntp_version, t1).encode()).map_err(|e| format!("sending to {addr}: {e}"))?;
    // At most a year (`values::positive_secs`): this cannot overflow.
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 1024];
    let (reply, t4) = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no reply from {addr} within {limit:?}: is an SNTP server running there?"));
        }
        socket.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
        let n = match socket.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
            Err(e) => return Err(format!("no reply from {addr}: {e}")),
        };
        let t4 = NtpTimestamp::now();
        match Packet::parse(&buf[..n]) {
            // Only an answer to *this* request counts (RFC 5905's origin check).
            Some(p) if p.origin == t1 => break (p, t4),
            _ => eprintln!("ignored a {n}-byte datagram that does not answer our request"),
        }
    };
    if let Some(code) = reply.kiss_code() {
        return Err(format!("{addr} sent a kiss-o'-death `{}`: it asks us to stop", refid_text(code, 0)));
    }
    if reply.mode != MODE_SERVER {
        return Err(format!("{addr} answered in mode {}, not 4 (server)", reply.mode));
    }
    if reply.leap == 3 {
        eprintln!("warning: {addr} says its clock is unsynchronised (leap indicator 3)");
    }
    let (offset, delay) = offset_delay(t1, reply.receive, reply.transmit, t4);
    let server_time = shift(SystemTime::now(), offset);
    let shown = chrono::DateTime::<chrono::Local>::from(server_time).format("%Y-%m-%d %H:%M:%S%.6f %:z");
    println!(
        "server {addr}: version {}, stratum {}, refid {}, leap {}",
        reply.version,
        reply.stratum,
        refid_text(reply.ref_id, reply.stratum),
        reply.leap
    );
    println!("time   {shown}");
    println!("offset {offset:+.6} s");
    println!("delay  {delay:.6} s");
    Ok(ExitCode::SUCCESS)
}

/// `t` moved by `secs` (either way), saturating at what `SystemTime` holds.
fn shift(t: SystemTime, secs: f64) -> SystemTime {
    let d = Duration::try_from_secs_f64(secs.abs()).unwrap_or(Duration::ZERO);
    if secs >= 0.0 {
        t.checked_add(d).unwrap_or(t)
    } else {
        t.checked_sub(d).unwrap_or(t)
    }
}

/// A reference ID as text: ASCII for stratum 0-1 or when printable, else an
/// IPv4 address.
fn refid_text(id: [u8; 4], stratum: u8) -> String {
    let trimmed: Vec<u8> = id.iter().copied().take_while(|&b| b != 0).collect();
    if stratum <= 1 || (!trimmed.is_empty() && trimmed.iter().all(|b| b.is_ascii_graphic())) {
        String::from_utf8_lossy(&trimmed).into_owned()
    } else {
        Ipv4Addr::from(id).to_string()
    }
}
