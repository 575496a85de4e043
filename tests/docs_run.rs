//! The docs are checked against real runs: the commands marked in
//! docs/tutorial.md, docs/sticky-packets.md and docs/nonblocking.md run
//! (servers on ports the kernel picks, the documented ports rewritten), and
//! every line of each shown output and trace excerpt must appear, in order,
//! in what really came out. See tests/docs_util for the markers.
//!
//! `DOCS_RUN_SHOW=1` prints each block's real output (to refresh an excerpt).

mod docs_util;
mod util;

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use docs_util::{blocks, check_in_order, normalise, ports_in, replace_number, rewrite_cargo, Block, Kind};

/// How long one command block may run.
const RUN_LIMIT: Duration = Duration::from_secs(60);

fn examples_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("examples")
}

/// A background process whose output goes to a file.
struct Bg {
    child: Child,
    out: PathBuf,
}

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Session {
    doc: String,
    dir: tempfile::TempDir,
    /// Documented port → the real one.
    ports: Vec<(u16, u16)>,
    server: Option<Bg>,
    /// The server's stderr (the trace) file and its length before the last run.
    trace_from: u64,
    bg: Option<Bg>,
    /// Output and trace of the last doc-run.
    last_out: String,
    last_trace: String,
    /// Output and trace of the doc-runs with an `id=`.
    named: std::collections::HashMap<String, (String, String)>,
    show: bool,
    python: bool,
    /// Blocks skipped (python3 missing), for the summary.
    skipped: usize,
}

impl Session {
    fn new(doc: &str) -> Session {
        let dir = tempfile::tempdir().unwrap();
        copy_clients(&dir.path().join("clients"));
        Session {
            doc: doc.to_string(),
            dir,
            ports: Vec::new(),
            server: None,
            trace_from: 0,
            bg: None,
            last_out: String::new(),
            last_trace: String::new(),
            named: Default::default(),
            show: std::env::var_os("DOCS_RUN_SHOW").is_some(),
            python: util::python3().is_some(),
            skipped: 0,
        }
    }

    fn tmp(&self) -> &Path {
        self.dir.path()
    }

    /// A documented command as it runs here.
    fn script(&self, body: &[String]) -> String {
        let mut s = rewrite_cargo(&body.join("\n"));
        s = s.replace("/tmp/", &format!("{}/", self.tmp().display()));
        for &(doc, real) in &self.ports {
            s = replace_number(&s, doc, real);
        }
        format!("wireloop() {{ \"$WIRELOOP\" \"$@\"; }}\n{s}\n")
    }

    /// `bash -c script`: servers in the temporary directory (where `files`
    /// stores), other commands from the repository's root, as the docs say.
    fn command(&self, script: &str, server: bool) -> Command {
        let cwd = if server { self.tmp().to_path_buf() } else { PathBuf::from(env!("CARGO_MANIFEST_DIR")) };
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(script)
            .current_dir(cwd)
            .env("WIRELOOP", util::BIN)
            .env("EXAMPLES", examples_dir())
            .env_remove("WIRELOOP_TRACE_BYTES")
            .stdin(Stdio::null());
        // The servers trace (terminal 1); the clients print only their output.
        if server {
            cmd.env("RUST_LOG", "wireloop=trace");
        } else {
            cmd.env_remove("RUST_LOG");
        }
        cmd
    }

    fn spawn_to(&self, script: &str, name: &str, stderr_too: bool) -> Bg {
        let out = self.tmp().join(name);
        let f = File::create(&out).unwrap();
        let mut cmd = self.command(script, name != "run.out");
        cmd.stdout(f.try_clone().unwrap());
        if stderr_too {
            cmd.stderr(f);
        } else {
            cmd.stderr(File::create(self.tmp().join(format!("{name}.err"))).unwrap());
        }
        Bg { child: cmd.spawn().unwrap(), out }
    }

    /// Starts `wireloop serve` with every service on port 0; `listening`
    /// holds the documented listening lines, which name the services.
    fn server(&mut self, b: &Block, listening: &[String]) {
        let mut body = b.body.join(" ");
        for p in ports_in(&body) {
            body = body.replace(&format!("127.0.0.1:{p}"), "127.0.0.1:0");
        }
        let names: Vec<&str> = listening.iter().filter_map(|l| l.split_whitespace().nth(1)).collect();
        for n in &names {
            if !body.contains(&format!("--{n} ")) {
                body.push_str(&format!(" --{n} 127.0.0.1:0"));
            }
        }
        let script = self.script(&[body]);
        let bg = self.spawn_to(&script, "server.out", false);
        let want = listening.len();
        let got = wait_lines(&bg.out, want, "listening");
        assert_eq!(got.len(), want, "{}:{}: the server printed {got:?}", self.doc, b.line);
        self.map_ports(listening, &got);
        self.server = Some(bg);
        self.point_clients();
        // Its start-up lines, for a doc-trace right after (or `of=` its id).
        self.trace_from = 0;
        self.last_trace = self.settled_trace();
        if let Some(name) = &b.name {
            self.named.insert(name.clone(), (String::new(), self.last_trace.clone()));
        }
    }

    /// The tutorial's clients (copies) with their documented ports rewritten.
    fn point_clients(&self) {
        let dir = self.tmp().join("clients");
        for f in
            ["tcp_echo_client.py", "udp_echo_client.py", "udp_time_client.py", "exec_client.py", "test5/constants.py"]
        {
            let path = dir.join(f);
            let Ok(mut text) = std::fs::read_to_string(&path) else { continue };
            for &(doc, real) in &self.ports {
                text = replace_number(&text, doc, real);
            }
            std::fs::write(&path, text).unwrap();
        }
    }

    /// Pairs documented and real `listening` lines by what precedes the port.
    fn map_ports(&mut self, doc: &[String], real: &[String]) {
        for d in doc {
            let key = |l: &str| l.rsplit_once(':').map(|(a, _)| a.to_string());
            let Some(r) = real.iter().find(|r| key(r) == key(d)) else { continue };
            if let (Some(&dp), Some(&rp)) = (ports_in(d).first(), ports_in(r).first()) {
                self.ports.retain(|&(p, _)| p != dp);
                self.ports.push((dp, rp));
            }
        }
    }

    fn trace_path(&self) -> PathBuf {
        self.tmp().join("server.out.err")
    }

    fn run(&mut self, b: &Block) {
        let script = self.script(&b.body);
        if !self.python && script.contains("python3") {
            self.skipped += 1;
            self.last_out.clear();
            self.last_trace.clear();
            if let Some(name) = &b.name {
                self.named.insert(name.clone(), Default::default());
            }
            return;
        }
        self.trace_from = std::fs::metadata(self.trace_path()).map(|m| m.len()).unwrap_or(0);
        let mut bg = self.spawn_to(&script, "run.out", true);
        let start = Instant::now();
        loop {
            if bg.child.try_wait().unwrap().is_some() {
                break;
            }
            assert!(start.elapsed() < RUN_LIMIT, "{}:{}: still running after {RUN_LIMIT:?}", self.doc, b.line);
            std::thread::sleep(Duration::from_millis(20));
        }
        // The docs' /tmp is a temporary directory here: shown as /tmp again.
        let tmp = format!("{}/", self.tmp().display());
        self.last_out = std::fs::read_to_string(&bg.out).unwrap().replace(&tmp, "/tmp/");
        drop(bg);
        self.last_trace = self.settled_trace();
        if let Some(name) = &b.name {
            self.named.insert(name.clone(), (self.last_out.clone(), self.last_trace.clone()));
        }
        if self.show {
            eprintln!(
                "---- {}:{} output ----\n{}---- trace ----\n{}",
                self.doc, b.line, self.last_out, self.last_trace
            );
        }
    }

    /// The trace written since the run began, once the server has been
    /// quiet for 300 ms (at most 3 s).
    fn settled_trace(&self) -> String {
        if self.server.is_none() {
            return String::new();
        }
        let path = self.trace_path();
        let (mut len, mut quiet_since, start) = (0, Instant::now(), Instant::now());
        while quiet_since.elapsed() < Duration::from_millis(300) && start.elapsed() < Duration::from_secs(3) {
            let now = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if now != len {
                len = now;
                quiet_since = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut f = File::open(&path).unwrap();
        let mut all = Vec::new();
        f.read_to_end(&mut all).unwrap();
        let from = usize::try_from(self.trace_from).unwrap().min(all.len());
        String::from_utf8_lossy(&all[from..]).into_owned()
    }

    fn bg_output(&mut self, b: &Block) -> String {
        let bg = self.bg.as_mut().unwrap_or_else(|| panic!("{}:{}: no doc-bg before", self.doc, b.line));
        let start = Instant::now();
        while bg.child.try_wait().unwrap().is_none() && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::fs::read_to_string(&bg.out).unwrap()
    }
}

/// Waits (at most 20 s) for `want` lines starting with `prefix` in `path`.
fn wait_lines(path: &Path, want: usize, prefix: &str) -> Vec<String> {
    let start = Instant::now();
    loop {
        let got: Vec<String> = File::open(path)
            .map(|f| BufReader::new(f).lines().map_while(Result::ok).filter(|l| l.starts_with(prefix)).collect())
            .unwrap_or_default();
        if got.len() >= want || start.elapsed() > Duration::from_secs(20) {
            return got;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn copy_clients(to: &Path) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    let status = Command::new("cp").arg("-r").arg(&from).arg(to).status().unwrap();
    assert!(status.success());
}

/// Runs every marked block of `doc` and checks every excerpt; returns the
/// failures (empty when the doc matches its real run).
fn run_doc(doc: &str) -> Vec<String> {
    let md = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(doc)).unwrap();
    let all = blocks(&md);
    assert!(!all.is_empty(), "{doc}: no marked blocks");
    if all.iter().any(|b| b.body.iter().any(|l| l.contains("--example"))) {
        assert!(
            examples_dir().join("sticky_server").exists(),
            "examples are not built (plain `cargo test` builds them)"
        );
    }
    let mut s = Session::new(doc);
    let mut failures = Vec::new();
    let mut last = Kind::Run;
    for (i, b) in all.iter().enumerate() {
        let next_expect = all.get(i + 1).filter(|n| n.kind == Kind::Expect).map(|n| n.body.clone()).unwrap_or_default();
        let got = match b.kind {
            Kind::Server => {
                s.server(b, &next_expect);
                None
            }
            Kind::Bg => {
                // It binds port 0 instead; its `listening ADDR` lines say
                // where, in the order of the addresses on its command line.
                let mut body = b.body.join("\n");
                let documented = ports_in(&body);
                for p in &documented {
                    body = body.replace(&format!("127.0.0.1:{p}"), "127.0.0.1:0");
                }
                let script = s.script(&[body]);
                s.bg = None;
                let bg = s.spawn_to(&script, "bg.out", true);
                let got = wait_lines(&bg.out, documented.len(), "listening");
                let real: Vec<u16> = got.iter().flat_map(|l| ports_in(l)).collect();
                assert_eq!(real.len(), documented.len(), "{doc}:{}: it printed {got:?}", b.line);
                for (d, r) in documented.into_iter().zip(real) {
                    s.ports.retain(|&(p, _)| p != d);
                    s.ports.push((d, r));
                }
                s.bg = Some(bg);
                None
            }
            Kind::Run => {
                s.run(b);
                None
            }
            // The listening lines after a server were checked as it started.
            Kind::Expect if last == Kind::Server || last == Kind::Bg => None,
            Kind::Expect | Kind::Trace if b.name.is_some() => {
                let name = b.name.as_deref().unwrap();
                let (out, trace) =
                    s.named.get(name).unwrap_or_else(|| panic!("{doc}:{}: no doc-run id={name} before", b.line));
                Some(if b.kind == Kind::Expect { out.clone() } else { trace.clone() })
            }
            Kind::Expect => Some(s.last_out.clone()),
            Kind::ExpectBg => Some(s.bg_output(b)),
            Kind::Trace => Some(s.last_trace.clone()),
        };
        if b.kind != Kind::Expect && b.kind != Kind::Trace && b.kind != Kind::ExpectBg {
            last = b.kind.clone();
        }
        let Some(actual) = got else { continue };
        if actual.is_empty() && s.skipped > 0 && !s.python {
            continue;
        }
        if let Err(e) = check_in_order(&b.body, &actual) {
            failures.push(format!("{doc}:{}: {e}\n--- real output, normalised ---\n{}", b.line, show(&actual)));
        }
    }
    if s.skipped > 0 {
        eprintln!("{doc}: SKIPPED {} blocks that need python3", s.skipped);
    }
    failures
}

fn show(actual: &str) -> String {
    actual.lines().map(normalise).collect::<Vec<_>>().join("\n")
}

fn assert_doc(doc: &str) {
    let failures = run_doc(doc);
    assert!(
        failures.is_empty(),
        "{} excerpt(s) of {doc} differ from a real run:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn the_tutorial_shows_what_its_commands_print() {
    assert_doc("docs/tutorial.md");
}

#[test]
fn sticky_packets_shows_what_its_commands_print() {
    assert_doc("docs/sticky-packets.md");
}

#[test]
fn the_primer_shows_what_its_commands_print() {
    assert_doc("docs/nonblocking.md");
}

#[test]
fn a_stale_or_reordered_excerpt_is_caught() {
    let real = "[2026-12-02T12:26:35Z TRACE wireloop::event_loop::dispatch] conn 4: read 5 bytes; handler consumed 4, keeps 1\n\
                [2026-12-02T12:26:35Z TRACE wireloop::event_loop::conn] conn 4: wrote 4 bytes (0 left)\n";
    let ok = ["TRACE wireloop::event_loop::dispatch] conn 8: read 5 bytes; handler consumed 4, keeps 1".to_string()];
    assert_eq!(check_in_order(&ok, real), Ok(()));
    let wild = ["TRACE wireloop::event_loop::conn] conn 8: wrote … bytes (… left)".to_string()];
    assert_eq!(check_in_order(&wild, real), Ok(()));
    let wrong_wild = ["TRACE wireloop::event_loop::conn] conn 8: wrote … bytes (… right)".to_string()];
    assert!(check_in_order(&wrong_wild, real).is_err());
    let stale = ["TRACE wireloop::event_loop::dispatch] conn 8: read 5 bytes (buffered 0)".to_string()];
    assert!(check_in_order(&stale, real).unwrap_err().contains("is not in the real output"));
    let reordered = [
        "TRACE wireloop::event_loop::conn] conn 8: wrote 4 bytes (0 left)".to_string(),
        "TRACE wireloop::event_loop::dispatch] conn 8: read 5 bytes; handler consumed 4, keeps 1".to_string(),
    ];
    assert!(check_in_order(&reordered, real).unwrap_err().contains("not in this order"));
}

#[test]
fn commands_are_rewritten_to_the_built_binaries_and_real_ports() {
    assert_eq!(rewrite_cargo("cargo run --release -q -- echo 127.0.0.1:8080"), "\"$WIRELOOP\" echo 127.0.0.1:8080");
    assert_eq!(
        rewrite_cargo("cargo run --release -q --example sticky_server -- 127.0.0.1:8090 2 10"),
        "\"$EXAMPLES/sticky_server\" 127.0.0.1:8090 2 10"
    );
    assert_eq!(rewrite_cargo("x | cargo run --release -q -- chop a; echo"), "x | \"$WIRELOOP\" chop a; echo");
    assert_eq!(replace_number("127.0.0.1:8080 18080 8080", 8080, 4242), "127.0.0.1:4242 18080 4242");
    assert_eq!(
        normalise("[2026-12-02T12:26:35Z TRACE wireloop::x] echo: accepted 127.0.0.1:47748 as conn 4"),
        "TRACE wireloop::x] echo: accepted 127.0.0.1:N as conn N"
    );
    assert_eq!(normalise("event (slot 4, serial 7): readable"), "event (slot N, serial N): readable");
    assert_eq!(normalise("2026-11-25 19:31:58"), "<time>");
}
