//! A soak run: mixed load on every service of one `wireloop serve` for a
//! given time, printing the server's RSS, descriptor count, child count and
//! the echo p99 at each interval, and at the end the slope of each per hour.
//! Flat RSS and flat descriptors are the goal.
//!
//! ```text
//! cargo build --release
//! cargo run --release --example soak -- --minutes 30 --interval 60
//! ```
//!
//! It starts `target/<profile>/wireloop serve` itself on loopback ports, and
//! drives, in a loop paced to `--rate` rounds per second: an echo round trip
//! on a long-lived connection (timed), an echo on a fresh connection, a frame,
//! a UDP echo, a time request, an SNTP request, and every tenth round a
//! command through `exec`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn arg(args: &[String], name: &str, default: f64) -> f64 {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn proc_status(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn children(pid: u32) -> usize {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
                .filter(|st| {
                    let after = st.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
                    after.split_whitespace().nth(1) == Some(pid.to_string().as_str())
                })
                .count()
        })
        .unwrap_or(0)
}

/// Least-squares slope of `ys` against `xs`.
fn slope(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let num: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let den: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as i32).to_le_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

fn exec_true(addr: SocketAddr) -> std::io::Result<()> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let req = br#"{"cmd":"echo soak"}"#;
    s.write_all(&(req.len() as i32).to_le_bytes())?;
    s.write_all(req)?;
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&all).contains("\"type\":\"exit\"") {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        all.extend_from_slice(&buf[..n]);
    }
    Ok(())
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let minutes = arg(&args, "--minutes", 1.0);
    let interval = Duration::from_secs_f64(arg(&args, "--interval", 10.0));
    let rate = arg(&args, "--rate", 200.0);
    let exe = std::env::current_exe()?;
    let bin = exe.parent().and_then(|p| p.parent()).map(|p| p.join("wireloop")).expect("target dir");
    let mut cmd = Command::new(&bin);
    // Rate limits off: the soak itself is one source sending fast.
    cmd.arg("serve").args([
        "--only",
        "echo,udp-echo,framed,exec,time,sntp",
        "--time-rate",
        "0",
        "--sntp-rate",
        "0",
        "--udp-echo-rate",
        "0",
    ]);
    cmd.env("RUST_LOG", "warn");
    for s in ["echo", "udp-echo", "framed", "exec", "time", "sntp"] {
        cmd.args([format!("--{s}"), "127.0.0.1:0".to_string()]);
    }
    let mut server = cmd.stdout(Stdio::piped()).spawn().map_err(|e| {
        eprintln!("cannot start {} (run `cargo build --release` first): {e}", bin.display());
        e
    })?;
    let pid = server.id();
    let mut addrs: HashMap<String, SocketAddr> = HashMap::new();
    let mut lines = BufReader::new(server.stdout.take().expect("stdout")).lines();
    while addrs.len() < 6 {
        let line = lines.next().expect("listening line")?;
        let f: Vec<&str> = line.split_whitespace().collect();
        addrs.insert(f[1].to_string(), f[3].parse().expect("addr"));
    }
    let mut echo = TcpStream::connect(addrs["echo"])?;
    echo.set_nodelay(true)?;
    let mut framed = TcpStream::connect(addrs["framed"])?;
    let udp = UdpSocket::bind("127.0.0.1:0")?;
    udp.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut sntp_req = [0u8; 48];
    sntp_req[0] = 0x23; // version 4, mode 3

    println!("soak: {minutes} min, {rate} rounds/s, server pid {pid}");
    println!(
        "{:>8} {:>10} {:>6} {:>8} {:>10} {:>8} {:>10}",
        "minute", "rss_kib", "fds", "children", "rounds", "errors", "echo_p99"
    );
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(minutes * 60.0);
    let (mut xs, mut rss, mut fds) = (Vec::new(), Vec::new(), Vec::new());
    let (mut rounds, mut errors) = (0u64, 0u64);
    let mut lat: Vec<Duration> = Vec::new();
    let mut next_report = start + interval;
    let pace = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let mut buf = vec![0u8; 2048];
    while Instant::now() < end {
        let round_start = Instant::now();
        let t = Instant::now();
        let ok = echo.write_all(b"soak round\n").and_then(|_| echo.read_exact(&mut buf[..11])).is_ok()
            && &buf[..11] == b"SOAK ROUND\n";
        lat.push(t.elapsed());
        errors += u64::from(!ok);
        let fresh = TcpStream::connect(addrs["echo"]).and_then(|mut s| {
            s.write_all(b"x")?;
            s.read_exact(&mut buf[..1])
        });
        errors += u64::from(fresh.is_err());
        let f = framed.write_all(&frame(b"soak")).and_then(|_| framed.read_exact(&mut buf[..7]));
        errors += u64::from(f.is_err() || &buf[..7] != b"success");
        for (svc, req) in [("udp-echo", &b"soak"[..]), ("time", &b"%Y"[..]), ("sntp", &sntp_req[..])] {
            let r = udp.send_to(req, addrs[svc]).and_then(|_| udp.recv_from(&mut buf));
            errors += u64::from(r.is_err());
        }
        if rounds % 10 == 0 {
            errors += u64::from(exec_true(addrs["exec"]).is_err());
        }
        rounds += 1;
        if Instant::now() >= next_report {
            lat.sort();
            let p99 = lat.get(lat.len().saturating_sub(1) * 99 / 100).copied().unwrap_or_default();
            let m = start.elapsed().as_secs_f64() / 60.0;
            let (r, d) = (proc_status(pid, "VmRSS:"), std::fs::read_dir(format!("/proc/{pid}/fd"))?.count());
            println!("{m:>8.1} {r:>10} {d:>6} {:>8} {rounds:>10} {errors:>8} {p99:>10.2?}", children(pid));
            xs.push(m);
            rss.push(r as f64);
            fds.push(d as f64);
            lat.clear();
            next_report += interval;
        }
        if let Some(rest) = pace.checked_sub(round_start.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    println!(
        "slopes per hour: rss {:+.1} KiB, fds {:+.2}; rounds {rounds}, errors {errors}",
        slope(&xs, &rss) * 60.0,
        slope(&xs, &fds) * 60.0
    );
    let _ = server.kill();
    let _ = server.wait();
    Ok(())
}
