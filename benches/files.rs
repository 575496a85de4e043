//! File transfer over loopback against `wireloop serve --only files`, beside
//! the three costs one core pays serially for an upload, measured in the same
//! run on the same machine:
//!
//! * MD5 throughput of the `md-5` crate on one core (in memory);
//! * raw loopback TCP throughput (plain std copy, 64 KiB reads, as the loop's
//!   scratch buffer);
//! * the write rate to the page cache (64 KiB `write`s, no fsync).
//!
//! The serial bound is `1 / (1/md5 + 1/copy + 1/write)`; the upload (up to
//! the reply, fsync included) is reported against it, and the final fsync,
//! which the server logs, separately. The server is a separate release
//! process, so its peak RSS (`VmHWM`) is its own.
//!
//! ```text
//! cargo bench --bench files            # 1 GiB
//! cargo bench --bench files -- 256     # MiB
//! ```

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use wireloop::services::files::client::Client;

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

fn md5_rate(block: &[u8], total: u64) -> (f64, String) {
    let t = Instant::now();
    let mut h = Md5::new();
    let mut left = total;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        h.update(&block[..n]);
        left -= n as u64;
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    (mbps(total, t.elapsed()), hex)
}

fn loopback_rate(block: &[u8], total: u64) -> f64 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0u64;
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            got += n as u64;
        }
        got
    });
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    io::copy(&mut Repeat { block, left: total, pos: 0 }, &mut s).unwrap();
    drop(s);
    assert_eq!(reader.join().unwrap(), total);
    mbps(total, t.elapsed())
}

fn page_cache_rate(block: &[u8], total: u64, dir: &std::path::Path) -> f64 {
    let path = dir.join("page-cache-probe");
    let mut f = std::fs::File::create(&path).unwrap();
    let t = Instant::now();
    let mut left = total;
    let mut pos = 0;
    while left > 0 {
        let n = (left.min(64 * 1024) as usize).min(block.len() - pos);
        f.write_all(&block[pos..pos + n]).unwrap();
        pos = (pos + n) % block.len();
        left -= n as u64;
    }
    let rate = mbps(total, t.elapsed());
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

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn main() {
    let mib: u64 = std::env::args().skip(1).find(|a| a.parse::<u64>().is_ok()).map_or(1024, |a| a.parse().unwrap());
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
    println!("file transfer benchmark: {mib} MiB over loopback, root {}", dir.path().display());

    let (md5, hex) = md5_rate(&block, total);
    let copy = loopback_rate(&block, total);
    let write = page_cache_rate(&block, total, dir.path());
    let serial = 1.0 / (1.0 / md5 + 1.0 / copy + 1.0 / write);

    let (mut child, addr, log) = start_server(dir.path());
    while log.try_recv().is_ok() {}
    let mut client = Client::connect(addr).unwrap();
    let t = Instant::now();
    let info =
        client.put("bench.bin", total, &hex, 0, true, Repeat { block: &block, left: total, pos: 0 }, |_| {}).unwrap();
    let upload = t.elapsed();
    assert_eq!(info.md5, hex);
    let fsync = logged_fsync(&log).unwrap_or_default();
    let rss_upload = peak_rss_kib(child.id());

    let t = Instant::now();
    let got = client.get("bench.bin", io::sink(), |_, _| {}).unwrap();
    let download = t.elapsed();
    assert_eq!(got.file_size, total);
    let rss_all = peak_rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();

    let up = mbps(total, upload);
    let up_nosync = mbps(total, upload.saturating_sub(fsync));
    println!();
    println!("| measure | MB/s | vs serial bound |");
    println!("|---|---:|---:|");
    println!("| MD5 (md-5, one core, in memory) | {md5:.0} | |");
    println!("| loopback copy (std, 64 KiB reads) | {copy:.0} | |");
    println!("| write to the page cache (64 KiB writes) | {write:.0} | |");
    println!("| serial bound 1/(1/md5+1/copy+1/write) | {serial:.0} | 1.00 |");
    println!("| upload, to the reply (fsync included) | {up:.0} | {:.2} |", up / serial);
    println!("| upload without the final fsync | {up_nosync:.0} | {:.2} |", up_nosync / serial);
    println!(
        "| download, MD5 verified by the client | {:.0} | {:.2} |",
        mbps(total, download),
        mbps(total, download) / serial
    );
    println!();
    println!("upload {upload:.2?}, of which the final fsync {fsync:.2?}; download {download:.2?}");
    println!("server peak RSS: {} KiB after the upload, {} KiB after the download", rss_upload, rss_all);
}
