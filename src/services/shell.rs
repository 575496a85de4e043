//! `shell`: the tutorial's remote shell as its own client expects it —
//! unframed, and so the tutorial's sticky-packet demonstration.
//!
//! ```text
//!  client → server   up to 1024 bytes, as one recv(1024) takes them: one command
//!  server → client   its stderr if any, else its stdout, else 命令执行成功,
//!                    in UTF-8 or GBK (`ShellEncoding`), with no length and no end mark
//! ```
//!
//! ```text
//!          next ≤ 1024 buffered bytes                 child output (held, bounded)
//!  Idle ─────────────────────────────▶ Running ─────────────────────────────────────┐
//!   ▲   `quit`: close                   │ timeout: SIGTERM to the group, SIGKILL later│
//!   │   busy / cannot start: the        │ output past the bound: SIGKILL             │
//!   │   reason as the reply             ▼                                            │
//!   └──────────── exited and pipes at EOF: one reply, then the next command ◀────────┘
//! ```
//!
//! The tutorial's client reads each reply with one `recv(1024)`: a longer
//! reply is cut there and its rest arrives as the reply to the next command
//! (docs/sticky-packets.md shows it); the framed `exec` service is the fix.
//!
//! Commands run exactly as `exec`'s do (`exec/run.rs`, `exec/spawn.rs`): the
//! same `ExecConfig` — timeout, output cap, concurrency limit, minimal
//! environment, no inherited descriptors, own process group killed when the
//! connection closes (EOF while a command runs cancels it, as in `exec`).
//! There is no token: the tutorial's client cannot send one, so `serve`
//! binds this service to loopback unless told otherwise.
//!
//! Invariants: at most one command runs per connection; the output held for
//! a reply never passes the reply's bound (the exec output cap, and the room
//! left under the connection's `Config::max_output` when the command
//! started), and neither does the encoded reply.

use std::cell::Cell;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::process::ExitStatus;
use std::rc::Rc;

use log::{info, trace};

use super::exec::run::{self, Run};
use super::exec::{ExecConfig, ExecCounters, DESCRIPTORS};
use crate::{ChildId, ChildStream, Context, Flow, Handler, Input};

/// Bytes one command may have: the tutorial server's `recv(1024)`.
pub const RECV_SIZE: usize = 1024;

/// The reply of a command that wrote nothing (the tutorial's words).
pub const SUCCESS: &str = "命令执行成功";

/// How replies are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShellEncoding {
    /// The command's bytes as they are.
    Utf8,
    /// The command's output read as UTF-8 (invalid bytes as U+FFFD) and
    /// written as GBK, as the tutorial's client decodes it; a character GBK
    /// lacks becomes an HTML numeric reference (`&#128512;`).
    #[default]
    Gbk,
}

/// The reply to a command that wrote `stdout` and `stderr`: stderr if any,
/// else stdout, else [`SUCCESS`], encoded, at most `cap` bytes appended to
/// `out` (cut at a character boundary). Pure.
pub fn reply(stdout: &[u8], stderr: &[u8], encoding: ShellEncoding, cap: usize, out: &mut Vec<u8>) {
    let chosen = if !stderr.is_empty() {
        stderr
    } else if !stdout.is_empty() {
        stdout
    } else {
        SUCCESS.as_bytes()
    };
    match encoding {
        ShellEncoding::Utf8 => out.extend_from_slice(&chosen[..utf8_cut(chosen, cap)]),
        ShellEncoding::Gbk => encode_gbk(&String::from_utf8_lossy(chosen), cap, out),
    }
}

/// The longest prefix of `bytes` of at most `cap` bytes that does not end
/// inside a UTF-8 sequence (bytes that are not UTF-8 are cut at `cap`).
fn utf8_cut(bytes: &[u8], cap: usize) -> usize {
    if bytes.len() <= cap {
        return bytes.len();
    }
    let is_cont = |i: usize| bytes.get(i).is_some_and(|b| b & 0xC0 == 0x80);
    // A sequence is at most 4 bytes: back up over at most 3 continuations.
    let mut end = cap;
    while end > 0 && cap - end < 3 && is_cont(end) {
        end -= 1;
    }
    if is_cont(end) {
        cap
    } else {
        end
    }
}

/// `text` as GBK, at most `cap` bytes, whole characters only.
fn encode_gbk(text: &str, cap: usize, out: &mut Vec<u8>) {
    use encoding_rs::EncoderResult;
    let mut encoder = encoding_rs::GBK.new_encoder();
    // GBK is at most 2 bytes per character, a numeric reference at most 10
    // for a 4-byte one ("&#1114111;") and 7 or 8 for a 2- or 3-byte one.
    let worst = text.len().saturating_mul(4);
    let start = out.len();
    let end = start.saturating_add(cap.min(worst));
    out.resize(end, 0);
    let (mut src, mut at) = (text, start);
    // In bulk while there is room for any one character (the encoder asks
    // for more room than the next character needs)...
    while end - at >= 16 {
        let (result, read, written) = encoder.encode_from_utf8_without_replacement(src, &mut out[at..end], true);
        src = &src[read..];
        at += written;
        match result {
            EncoderResult::InputEmpty => break,
            EncoderResult::OutputFull if read == 0 && written == 0 => break,
            EncoderResult::OutputFull => {}
            EncoderResult::Unmappable(c) => {
                let reference = format!("&#{};", u32::from(c));
                if reference.len() > end - at {
                    src = "";
                    break;
                }
                out[at..at + reference.len()].copy_from_slice(reference.as_bytes());
                at += reference.len();
            }
        }
    }
    // ...then one character at a time, while each fits whole.
    let mut scratch = [0u8; 16];
    for ch in src.chars() {
        let mut utf8 = [0u8; 4];
        let (result, _, written) =
            encoder.encode_from_utf8_without_replacement(ch.encode_utf8(&mut utf8), &mut scratch, true);
        let reference;
        let bytes = match result {
            EncoderResult::Unmappable(c) => {
                reference = format!("&#{};", u32::from(c));
                reference.as_bytes()
            }
            _ => &scratch[..written],
        };
        if bytes.len() > end - at {
            break;
        }
        out[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    }
    out.truncate(at);
}

/// Makes one [`Shell`] handler per connection; all share the settings and
/// the count of running commands.
#[derive(Debug, Clone)]
pub struct ShellService {
    cfg: Rc<ExecConfig>,
    encoding: ShellEncoding,
    running: Rc<Cell<usize>>,
    counters: Rc<ExecCounters>,
}

impl ShellService {
    /// A service running commands under `cfg` (its token is not used),
    /// replying in `encoding`.
    pub fn new(cfg: ExecConfig, encoding: ShellEncoding) -> Self {
        ShellService { cfg: Rc::new(cfg), encoding, running: Rc::default(), counters: Rc::default() }
    }

    /// The count of commands running now, shared with the handlers.
    pub fn running(&self) -> Rc<Cell<usize>> {
        self.running.clone()
    }

    /// The service's counters (the `bad_request` and `token` errors stay 0).
    pub fn counters(&self) -> Rc<ExecCounters> {
        self.counters.clone()
    }

    /// A handler for a new connection.
    pub fn handler(&self) -> Shell {
        Shell { svc: self.clone(), state: State::Idle, stdout: Vec::new(), stderr: Vec::new(), cap: 0, stopping: false }
    }
}

impl<S: 'static> crate::Service<S> for ShellService {
    fn accept(&mut self, _peer: crate::PeerAddr) -> Box<dyn Handler<S>> {
        Box::new(self.handler())
    }

    fn descriptors(&self) -> usize {
        DESCRIPTORS
    }

    fn refuse(&mut self, _peer: &crate::PeerAddr, out: &mut Vec<u8>) {
        reply(&[], b"too many connections, try again later\n", self.encoding, usize::MAX, out);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Running(Run),
}

/// One connection of the remote shell.
#[derive(Debug)]
pub struct Shell {
    svc: ShellService,
    state: State,
    /// The running command's output, held for its reply: once it writes to
    /// stderr its stdout is dropped (stderr wins), so one of the two is
    /// ever non-empty past the first stderr byte.
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// The most output held, and the most reply bytes, for this command.
    cap: usize,
    /// The server is stopping: finish the running command, start no more.
    stopping: bool,
}

impl Shell {
    /// Runs `cmd`, or answers at once why it cannot run.
    fn start<S: 'static>(&mut self, cmd: &[u8], cx: &mut Context<'_, S>) {
        // Bounded by the exec output cap and by what the connection may
        // still hold unsent, so the reply never closes the connection.
        let room = cx.config().max_output.saturating_sub(cx.out().len());
        self.cap = usize::try_from(self.svc.cfg.max_output).unwrap_or(usize::MAX).min(room);
        let timeout = self.svc.cfg.default_timeout.min(self.svc.cfg.max_timeout);
        let svc = &self.svc;
        match run::launch("shell", &svc.cfg, &svc.running, &svc.counters, OsStr::from_bytes(cmd), timeout, cx) {
            Ok(run) => {
                trace!("conn {}: shell: Idle => Running(child {})", cx.id(), run.child.0);
                self.state = State::Running(run);
            }
            Err(why) => {
                crate::info_limited!("shell {} ({}): refused: {}", cx.id(), cx.peer(), why);
                let (enc, cap) = (self.svc.encoding, self.cap);
                cx.out().append(|out| reply(&[], format!("{why}\n").as_bytes(), enc, cap, out));
            }
        }
    }
}

impl<S: 'static> Handler<S> for Shell {
    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_, S>) -> Flow {
        // Each command is what one recv(1024) would take from the bytes
        // buffered; while one runs, the next waits unconsumed.
        while self.state == State::Idle && !input.bytes().is_empty() && !cx.over_high_water() {
            let n = input.bytes().len().min(RECV_SIZE);
            let cmd = input.bytes()[..n].to_vec();
            input.consume(n);
            if cmd == b"quit" || self.stopping {
                return Flow::Close;
            }
            self.start(&cmd, cx);
        }
        Flow::Continue
    }

    fn on_eof(&mut self, _input: &mut Input<'_>, cx: &mut Context<'_, S>) -> Flow {
        if let State::Running(run) = self.state {
            // As in `exec`: a FIN cannot be told from a disconnect.
            info!("shell {} ({}): client closed while child {} runs; killing it", cx.id(), cx.peer(), run.child.0);
        }
        Flow::Close
    }

    fn on_child_output(&mut self, child: ChildId, stream: ChildStream, data: &[u8], cx: &mut Context<'_, S>) -> Flow {
        let State::Running(mut run) = self.state else { return Flow::Continue };
        if run.child != child {
            return Flow::Continue;
        }
        let held = match stream {
            ChildStream::Stderr => {
                self.stdout = Vec::new();
                &mut self.stderr
            }
            ChildStream::Stdout if !self.stderr.is_empty() => return Flow::Continue,
            ChildStream::Stdout => &mut self.stdout,
        };
        let take = run.admit("shell", held.len() as u64, self.cap as u64, data.len(), &self.svc.counters, cx);
        held.extend_from_slice(&data[..take]);
        self.state = State::Running(run);
        Flow::Continue
    }

    fn on_child_exit(
        &mut self,
        child: ChildId,
        status: ExitStatus,
        input: &mut Input<'_>,
        cx: &mut Context<'_, S>,
    ) -> Flow {
        let State::Running(run) = self.state else { return Flow::Continue };
        if run.child != child {
            return Flow::Continue;
        }
        let took = run.started.elapsed();
        run.log_end("shell", status, cx);
        if run.timed_out {
            // Said as the shell would say it, on stderr, so it is the reply.
            self.stdout = Vec::new();
            self.stderr.extend_from_slice(format!("timed out after {took:.1?}; killed\n").as_bytes());
        }
        let (stdout, stderr) = (std::mem::take(&mut self.stdout), std::mem::take(&mut self.stderr));
        let (enc, cap) = (self.svc.encoding, self.cap);
        cx.out().append(|out| reply(&stdout, &stderr, enc, cap, out));
        run.release(&self.svc.running, cx);
        trace!("conn {}: shell: Running(child {}) => Idle", cx.id(), child.0);
        self.state = State::Idle;
        if self.stopping {
            return Flow::Close;
        }
        self.on_data(input, cx)
    }

    fn on_shutdown(&mut self, _input: &mut Input<'_>, _cx: &mut Context<'_, S>) -> Flow {
        // A running command may finish within the server's grace period.
        self.stopping = true;
        match self.state {
            State::Running(_) => Flow::Continue,
            State::Idle => Flow::Close,
        }
    }

    fn on_timer(&mut self, _input: &mut Input<'_>, cx: &mut Context<'_, S>) -> Flow {
        let State::Running(mut run) = self.state else { return Flow::Continue };
        run.on_timer("shell", &self.svc.cfg, &self.svc.counters, cx);
        self.state = State::Running(run);
        Flow::Continue
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        // The loop kills a closed connection's children; free its slot.
        if let State::Running(run) = self.state {
            run.abandon(&self.svc.running, &self.svc.counters);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(stdout: &[u8], stderr: &[u8], enc: ShellEncoding, cap: usize) -> Vec<u8> {
        let mut out = b"kept".to_vec();
        reply(stdout, stderr, enc, cap, &mut out);
        assert_eq!(&out[..4], b"kept", "reply only appends");
        out.split_off(4)
    }

    #[test]
    fn stderr_wins_then_stdout_then_the_success_words() {
        use ShellEncoding::Utf8;
        assert_eq!(r(b"out\n", b"err\n", Utf8, 100), b"err\n");
        assert_eq!(r(b"out\n", b"", Utf8, 100), b"out\n");
        assert_eq!(r(b"", b"", Utf8, 100), SUCCESS.as_bytes());
    }

    #[test]
    fn gbk_replies_are_the_bytes_the_tutorial_client_decodes() {
        use ShellEncoding::Gbk;
        assert_eq!(r(b"", b"", Gbk, 100), [0xc3, 0xfc, 0xc1, 0xee, 0xd6, 0xb4, 0xd0, 0xd0, 0xb3, 0xc9, 0xb9, 0xa6]);
        assert_eq!(r("你好 ok\n".as_bytes(), b"", Gbk, 100), b"\xc4\xe3\xba\xc3 ok\n");
        // Not in GBK: a numeric reference; not UTF-8: U+FFFD, also a reference.
        assert_eq!(r("😀".as_bytes(), b"", Gbk, 100), b"&#128512;");
        assert_eq!(r(b"a\xffb", b"", Gbk, 100), b"a&#65533;b");
    }

    #[test]
    fn the_bound_cuts_whole_characters_only() {
        use ShellEncoding::{Gbk, Utf8};
        // 你好 is 6 bytes in UTF-8, 4 in GBK.
        assert_eq!(r("你好".as_bytes(), b"", Utf8, 5), "你".as_bytes());
        assert_eq!(r("你好".as_bytes(), b"", Utf8, 6), "你好".as_bytes());
        assert_eq!(r("你好".as_bytes(), b"", Gbk, 3), b"\xc4\xe3");
        assert_eq!(r("你好".as_bytes(), b"", Gbk, 4), b"\xc4\xe3\xba\xc3");
        assert_eq!(r(&[b'x'; 3000], b"", Gbk, 1024).len(), 1024);
        assert_eq!(r(&[b'x'; 3000], b"", Utf8, 0), b"");
        let text = "你".repeat(600);
        assert_eq!(r(text.as_bytes(), b"", Gbk, 1023), b"\xc4\xe3".repeat(511));
        let text = format!("{}😀", "x".repeat(1020));
        assert_eq!(r(text.as_bytes(), b"", Gbk, 1024), "x".repeat(1020).as_bytes());
        assert_eq!(r(text.as_bytes(), b"", Gbk, 1029).len(), 1029);
        // Bytes that are not UTF-8 are cut where the bound is.
        assert_eq!(r(&[0x80; 10], b"", Utf8, 4), [0x80; 4]);
    }
}
