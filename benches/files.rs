//! File transfer over loopback against `wireloop serve --only files`, beside
//! the three costs one core pays serially for an upload, measured in the same
//! run on the same machine:
//!
//! * MD5 throughput of the `md-5` crate on one core (in memory);
//! * raw loopback TCP throughput (plain std copy, 64 KiB reads, as the loop's
//!   scratch buffer);
//! * the write rate to the page cache (64 KiB `write`s, no fsync; writeback
//!   started every 8 MiB with `sync_file_range`, exactly as the server does,
//!   so that both pay the same dirty-page throttling).
//!
//! The serial bound is `1 / (1/md5 + 1/copy + 1/write)`; the upload (up to
//! the reply, fsync included) is reported against it, and the final fsync,
//! which the server logs, separately. The server is a separate release
//! process, so its peak RSS (`VmHWM`) is its own.
//!
//! Every figure is given twice: by the wall clock, and per CPU-second of the
//! thread that does the work (the MD5 thread, the reading side of the copy,
//! the writing thread, and the server's loop thread from
//! `/proc/PID/schedstat`). On a shared machine the wall clock also counts
//! the time the loop waited for a CPU that other processes held; the
//! per-CPU-second figures do not, so their ratio is the stable one. Each
//! round also prints how much of the upload the loop ran and how much it
//! waited, runnable, for a CPU.
//!
//! ```text
//! cargo bench --bench files              # 1 GiB, 3 rounds, medians
//! cargo bench --bench files -- 256 5     # MiB, rounds
//! ```

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::io::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use wireloop::services::files::client::Client;
use wireloop::services::files::storage::SYNC_EVERY;

const BLOCK: usize = 64 * 1024 * 1024;

/// A reader yielding `total` bytes by repeating one block of noise.
struct Repeat<'a> {
    block: &'a [u8],
    left: u64,
    pos: usize,
}

impl Read for Repeat<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.left).min((self.block.len() - self.pos) as u64) as usize;
        buf[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos = (self.pos + n) % self.block.len();
        self.left -= n as u64;
        Ok(n)
    }
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

/// CPU seconds the calling thread has used.
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes the struct we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// A throughput by the wall clock and by the CPU time of the thread that
/// would be the server's (immune to other processes taking the CPU).
#[derive(Clone, Copy)]
struct Rate {
    wall: f64,
    cpu: f64,
}

fn rate(bytes: u64, wall: Duration, cpu_secs: f64) -> Rate {
    Rate { wall: mbps(bytes, wall), cpu: bytes as f64 / 1e6 / cpu_secs }
}

fn md5_rate(block: &[u8], total: u64) -> (Rate, String) {
    let (t, c) = (Instant::now(), thread_cpu());
    let mut h = Md5::new();
    let mut left = total;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        h.update(&block[..n]);
        left -= n as u64;
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    (rate(total, t.elapsed(), thread_cpu() - c), hex)
}

/// The CPU time is the reading side's: what the server pays to read.
fn loopback_rate(block: &[u8], total: u64) -> Rate {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let c = thread_cpu();
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0u64;
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            got += n as u64;
        }
        (got, thread_cpu() - c)
    });
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    io::copy(&mut Repeat { block, left: total, pos: 0 }, &mut s).unwrap();
    drop(s);
    let (got, cpu) = reader.join().unwrap();
    assert_eq!(got, total);
    rate(total, t.elapsed(), cpu)
}

fn page_cache_rate(block: &[u8], total: u64, dir: &std::path::Path) -> Rate {
    let path = dir.join("page-cache-probe");
    let mut f = std::fs::File::create(&path).unwrap();
    let (t, c) = (Instant::now(), thread_cpu());
    let mut left = total;
    let mut pos = 0;
    while left > 0 {
        let n = (left.min(64 * 1024) as usize).min(block.len() - pos);
        f.write_all(&block[pos..pos + n]).unwrap();
        pos = (pos + n) % block.len();
        left -= n as u64;
        let done = total - left;
        if done % SYNC_EVERY == 0 {
            // As the server does: start writeback of the last 8 MiB, no wait.
            let from = (done - SYNC_EVERY) as libc::off64_t;
            // SAFETY: a plain syscall on our own descriptor.
            unsafe { libc::sync_file_range(f.as_raw_fd(), from, SYNC_EVERY as i64, libc::SYNC_FILE_RANGE_WRITE) };
        }
    }
    let rate = rate(total, t.elapsed(), thread_cpu() - c);
    drop(f);
    std::fs::remove_file(path).unwrap();
    rate
}

fn start_server(root: &std::path::Path) -> (Child, SocketAddr, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wireloop"))
        .args(["serve", "--only", "files", "--files", "127.0.0.1:0", "--files-root", root.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.split_whitespace().nth(3).unwrap().parse().unwrap();
    let (tx, rx) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    (child, addr, rx)
}

/// Parses the `fsync 1.23ms` the server logs when it stores a file.
fn logged_fsync(rx: &mpsc::Receiver<String>) -> Option<Duration> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let line = std::iter::from_fn(|| rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).ok())
        .find(|l| l.contains(" stored "))?;
    let text = line.split("fsync ").nth(1)?.split(',').next()?;
    let (num, scale) = [("ns", 1e-9), ("µs", 1e-6), ("ms", 1e-3), ("s", 1.0)]
        .iter()
        .find_map(|(suffix, scale)| text.strip_suffix(suffix).map(|n| (n, *scale)))?;
    Some(Duration::from_secs_f64(num.parse::<f64>().ok()? * scale))
}

/// Seconds the loop thread (`loop-0`) ran, and seconds it waited,
/// runnable, for a CPU.
fn sched_secs(pid: u32) -> (f64, f64) {
    let task = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| t.ok())
        .find(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "loop-0"))
        .map(|t| t.path())
        .expect("the server's loop-0 thread");
    let s = std::fs::read_to_string(task.join("schedstat")).unwrap();
    let v: Vec<f64> = s.split_whitespace().take(2).map(|x| x.parse::<f64>().unwrap() / 1e9).collect();
    (v[0], v[1])
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let nums: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let mib = nums.first().copied().unwrap_or(1024);
    let rounds = nums.get(1).copied().unwrap_or(3).max(1) as usize;
    let total = mib * 1024 * 1024;
    let mut block = vec![0u8; BLOCK];
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for b in block.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    println!("file transfer benchmark: {mib} MiB over loopback, {rounds} rounds, root {}", dir.path().display());
    // Untimed warm-up: the first use of fresh memory (page cache pages never
    // touched before, on a VM) is several times slower than steady state.
    let _ = page_cache_rate(&block, total, dir.path());

    let (mut child, addr, log) = start_server(dir.path());
    let pid = child.id();
    let mut client = Client::connect(addr).unwrap();
    // Per round: md5, copy, write, serial, upload, upload without fsync, download.
    let mut rows: Vec<[Rate; 7]> = Vec::new();
    let mut fsyncs = Vec::new();
    let mut rss_upload = 0;
    for round in 0..rounds {
        let (md5, hex) = md5_rate(&block, total);
        let copy = loopback_rate(&block, total);
        let write = page_cache_rate(&block, total, dir.path());
        while log.try_recv().is_ok() {}
        let body = Repeat { block: &block, left: total, pos: 0 };
        let (ran0, waited0) = sched_secs(pid);
        let t = Instant::now();
        let info = client.put("bench.bin", total, &hex, 0, true, body, |_| {}).unwrap();
        let upload = t.elapsed();
        let (ran1, waited1) = sched_secs(pid);
        assert_eq!(info.md5, hex);
        let fsync = logged_fsync(&log).unwrap_or_default();
        rss_upload = rss_upload.max(peak_rss_kib(pid));
        let t = Instant::now();
        let got = client.get("bench.bin", io::sink(), |_, _| {}).unwrap();
        let download = t.elapsed();
        let (ran2, _) = sched_secs(pid);
        assert_eq!(got.file_size, total);
        let bound = |f: fn(&Rate) -> f64| 1.0 / (1.0 / f(&md5) + 1.0 / f(&copy) + 1.0 / f(&write));
        let serial = Rate { wall: bound(|r| r.wall), cpu: bound(|r| r.cpu) };
        let up = rate(total, upload, ran1 - ran0);
        let up_nosync = rate(total, upload - fsync, ran1 - ran0);
        let down = rate(total, download, ran2 - ran1);
        println!(
            "round {}: wall MB/s: md5 {:.0}, copy {:.0}, write {:.0}, bound {:.0}, upload {:.0} ({:.2}x), download {:.0}; \
             fsync {fsync:.2?}; during the upload the loop thread ran {:.0}% and waited for a CPU {:.0}% of the time; \
             per CPU-second: bound {:.0}, upload {:.0} ({:.2}x)",
            round + 1,
            md5.wall,
            copy.wall,
            write.wall,
            serial.wall,
            up.wall,
            up.wall / serial.wall,
            down.wall,
            (ran1 - ran0) / upload.as_secs_f64() * 100.0,
            (waited1 - waited0) / upload.as_secs_f64() * 100.0,
            serial.cpu,
            up.cpu,
            up.cpu / serial.cpu,
        );
        rows.push([md5, copy, write, serial, up, up_nosync, down]);
        fsyncs.push(fsync.as_secs_f64() * 1e3);
    }
    let rss_all = peak_rss_kib(pid);
    let _ = child.kill();
    let _ = child.wait();

    let med = |i: usize, f: fn(&Rate) -> f64| median(&mut rows.iter().map(|r| f(&r[i])).collect::<Vec<_>>());
    let names = [
        "MD5 (md-5, one core, in memory)",
        "loopback copy (std, 64 KiB reads; CPU: the reader's)",
        "write to the page cache (64 KiB writes, as the server)",
        "serial bound 1/(1/md5+1/copy+1/write)",
        "upload, to the reply (fsync included; CPU: the loop thread's)",
        "upload without the final fsync",
        "download, MD5 verified by the client (CPU: the loop thread's)",
    ];
    let (bw, bc) = (med(3, |r| r.wall), med(3, |r| r.cpu));
    println!();
    println!("median of {rounds} rounds:");
    println!();
    println!("| measure | MB/s (wall clock) | vs bound | MB/s per CPU-second | vs bound |");
    println!("|---|---:|---:|---:|---:|");
    for (i, name) in names.iter().enumerate() {
        let (w, c) = (med(i, |r| r.wall), med(i, |r| r.cpu));
        if (3..=5).contains(&i) {
            println!("| {name} | {w:.0} | {:.2} | {c:.0} | {:.2} |", w / bw, c / bc);
        } else {
            println!("| {name} | {w:.0} | | {c:.0} | |");
        }
    }
    println!();
    println!("final fsync: median {:.1} ms", median(&mut fsyncs));
    println!("server peak RSS (VmHWM): {rss_upload} KiB during the uploads, {rss_all} KiB after the downloads");
}
