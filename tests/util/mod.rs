//! Helpers shared by the integration tests: a `wireloop serve` child process
//! on port 0, an in-process loop on its own thread, and small I/O helpers.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_wireloop");

/// `serve --only <names>` with every named service on 127.0.0.1:0, then `extra`.
pub fn serve_args(names: &[&str], extra: &[&str]) -> Vec<String> {
    let mut args = vec!["serve".to_string(), "--only".into(), names.join(",")];
    for n in names {
        args.push(format!("--{n}"));
        args.push("127.0.0.1:0".into());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// A `wireloop serve` process, killed on drop.
pub struct Server {
    pub child: Child,
    pub addrs: HashMap<String, SocketAddr>,
}

impl Server {
    /// Starts `wireloop serve --only <names>` with every named service on
    /// 127.0.0.1:0, plus `extra` arguments, and waits for its listening lines.
    pub fn start(names: &[&str], extra: &[&str]) -> Server {
        Server::start_args(&serve_args(names, extra), names.len())
    }

    /// Starts `wireloop` with exactly `args`, expecting `expect` listening
    /// lines. `WIRELOOP_BIN` names another binary to test (a release build,
    /// for the fault suite's figures).
    pub fn start_args(args: &[String], expect: usize) -> Server {
        let bin = std::env::var("WIRELOOP_BIN").unwrap_or_else(|_| BIN.to_string());
        let mut cmd = Command::new(bin);
        cmd.args(args);
        Server::start_cmd(cmd, expect)
    }

    /// Starts `wireloop serve --only <names>` as [`Server::start`] does, with
    /// its open-file limit (soft and hard) set to `nofile` by `prlimit`.
    pub fn start_limited(names: &[&str], extra: &[&str], nofile: u32) -> Server {
        let mut cmd = Command::new("prlimit");
        cmd.arg(format!("--nofile={nofile}:{nofile}")).arg(BIN).args(serve_args(names, extra));
        Server::start_cmd(cmd, names.len())
    }

    /// Starts `cmd` (a `wireloop serve`), expecting `expect` listening lines.
    pub fn start_cmd(mut cmd: Command, expect: usize) -> Server {
        let mut child = cmd
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn wireloop");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut addrs = HashMap::new();
        while addrs.len() < expect {
            let line = rx
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("server did not print {expect} listening lines"));
            let parts: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(parts.len(), 4, "unexpected line {line:?}");
            assert_eq!(parts[0], "listening", "unexpected line {line:?}");
            addrs.insert(parts[1].to_string(), parts[3].parse().expect("address"));
        }
        Server { child, addrs }
    }

    pub fn addr(&self, name: &str) -> SocketAddr {
        self.addrs[name]
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal to the server.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([&format!("-{sig}"), &self.pid().to_string()]).status().expect("kill");
        assert!(ok.success());
    }

    /// Waits for exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident set size of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// Connects with a read timeout, so a broken server fails the test instead of hanging it.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Reads exactly `n` bytes.
pub fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).expect("read reply");
    buf
}

/// Sends `data` and reads back exactly `expect.len()` bytes, asserting them.
pub fn round_trip(s: &mut TcpStream, data: &[u8], expect: &[u8]) {
    s.write_all(data).expect("send");
    assert_eq!(read_n(s, expect.len()), expect);
}

/// `python3`, if the machine has it.
pub fn python3() -> Option<PathBuf> {
    let ok = Command::new("python3").arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
    if ok {
        Some(PathBuf::from("python3"))
    } else {
        eprintln!("SKIPPED: python3 is not installed, so the tutorial's clients cannot run");
        None
    }
}

/// Copies the tutorial's client `name` (from tests/clients) into a temporary
/// directory, with its `ip_port = (...)` line pointed at `addr`. Returns the
/// directory (keep it alive) and the script's path.
pub fn client_script(name: &str, addr: SocketAddr) -> (tempfile::TempDir, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    let dir = tempfile::tempdir().expect("tempdir");
    copy_tree(&root, dir.path());
    let target = ip_port_line(addr);
    for file in [name, "test5/constants.py"] {
        let path = dir.path().join(file);
        let text = std::fs::read_to_string(&path).expect("client source");
        let patched: Vec<String> =
            text.lines().map(|l| if l.starts_with("ip_port = ") { target.clone() } else { l.to_string() }).collect();
        std::fs::write(&path, patched.join("\n") + "\n").expect("write client");
    }
    let path = dir.path().join(name);
    (dir, path)
}

fn ip_port_line(addr: SocketAddr) -> String {
    format!("ip_port = ('{}', {})", addr.ip(), addr.port())
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read clients") {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
            copy_tree(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

/// Starts a python script (UTF-8, unbuffered output) with its stdin piped;
/// its stdout arrives on the receiver, chunk by chunk, until it closes.
pub fn spawn_python(script: &Path) -> (Child, mpsc::Receiver<Vec<u8>>) {
    let mut child = Command::new("python3")
        .arg(script)
        .current_dir(script.parent().unwrap())
        .env("PYTHONIOENCODING", "utf-8")
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python3");
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Runs a python script with `stdin` fed in, collecting stdout until it
/// contains every string in `expect` (then kills it), until it exits, or
/// until `limit` passes. With `expect` empty it waits for exit.
/// Some tutorial clients loop forever at EOF, so waiting for exit won't do.
pub fn run_python_until(script: &Path, stdin: &str, expect: &[&str], limit: Duration) -> String {
    let (mut child, rx) = spawn_python(script);
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).expect("feed stdin");
    let start = Instant::now();
    let mut out = Vec::new();
    while start.elapsed() < limit {
        if let Ok(chunk) = rx.recv_timeout(Duration::from_millis(50)) {
            out.extend(chunk);
        }
        let text = String::from_utf8_lossy(&out);
        if !expect.is_empty() && expect.iter().all(|e| text.contains(e)) {
            break;
        }
        if let Ok(Some(_)) = child.try_wait() {
            while let Ok(chunk) = rx.recv_timeout(Duration::from_millis(100)) {
                out.extend(chunk);
            }
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    String::from_utf8_lossy(&out).into_owned()
}

/// User + system CPU time of a process so far, in clock ticks (1/100 s).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // after ")": state(0) ppid(1) … utime(11) stime(12)
    f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0)
}

/// Open descriptors of a process.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// The `q` quantile (0..=1) of some durations.
pub fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort();
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
    samples[i]
}

/// Round trips on an echo connection every `every` until `stop`; returns the latencies.
pub fn echo_latencies(
    addr: SocketAddr,
    every: Duration,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<Duration> {
    let mut s = connect(addr);
    s.set_nodelay(true).unwrap();
    let mut out = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let t = Instant::now();
        round_trip(&mut s, b"ping", b"PING");
        out.push(t.elapsed());
        std::thread::sleep(every);
    }
    out
}

/// MD5 of `data` as lowercase hex.
pub fn md5_hex(data: &[u8]) -> String {
    use md5::{Digest, Md5};
    Md5::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// A `files` request header: 4-byte little-endian length, then the JSON.
pub fn files_header(v: &Value) -> Vec<u8> {
    let json = serde_json::to_vec(v).unwrap();
    let mut m = (json.len() as i32).to_le_bytes().to_vec();
    m.extend(json);
    m
}

/// Reads one reply header and returns its JSON text exactly as sent.
pub fn files_reply_text(s: &mut TcpStream) -> String {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).expect("reply length");
    let len = i32::from_le_bytes(len);
    assert!(len > 0 && len < 1 << 20, "reply length {len}");
    let mut buf = vec![0; len as usize];
    s.read_exact(&mut buf).unwrap();
    String::from_utf8(buf).unwrap()
}

pub fn files_reply(s: &mut TcpStream) -> Value {
    serde_json::from_str(&files_reply_text(s)).unwrap()
}

pub fn error_of(v: &Value) -> String {
    assert_eq!(v["ok"], false, "expected an error, got {v}");
    v["error"].as_str().unwrap().to_string()
}

/// The server closed the connection (after its reply): EOF, not a reset.
pub fn assert_closed(s: &mut TcpStream) {
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("a clean close, not a reset");
    assert!(rest.is_empty(), "unexpected bytes after the reply: {rest:?}");
}

/// Polls `f` every 20 ms until it holds or `limit` passes; its last answer.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// Runs `wireloop ARGS` with `stdin` fed in, and returns its output.
pub fn run_cli(args: &[&str], stdin: impl AsRef<[u8]>) -> std::process::Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wireloop");
    child.stdin.take().expect("stdin").write_all(stdin.as_ref()).expect("write stdin");
    child.wait_with_output().expect("wait for wireloop")
}
