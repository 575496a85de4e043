//! `exec`: the tutorial's remote command runner, driven by the loop.
//!
//! ```text
//!            request header                 child output (pipes on the loop)
//!  Idle ─────────────────────────▶ Running ───────────────▶ stdout/stderr messages
//!   ▲   bad request / busy / bad    │  │ timeout: SIGTERM to the group, then SIGKILL after a grace
//!   │   token: error message, Idle  │  │ output over the cap: SIGKILL, truncated
//!   └───────────────────────────────┘  ▼
//!        shell exited and pipes at EOF (or 500 ms after the exit): what is left of the
//!        command is killed; exit message (then the next pipelined request)
//! ```
//!
//! The tutorial's server blocks while its command runs, returns stdout *or*
//! stderr and never the exit status, and sends output unframed. Here the
//! command runs as `/bin/sh -c <cmd>` in its own process group; its pipes are
//! sources on the same loop, so every other service keeps answering; each
//! chunk is forwarded as a framed message as it is read; one final message
//! ends every request. See `proto.rs` for the bytes.
//!
//! Safety: every command has a timeout (capped by the server), an output
//! cap, a concurrency limit shared by all connections, an optional token
//! (`super::auth`: constant time, three tries per connection, growing
//! penalties per source), a minimal environment and no inherited
//! descriptors (`spawn.rs`), and dies with its connection. The client
//! must keep its sending side open while a command runs: EOF cancels the
//! command, because a half-close cannot be told from a disconnect.

pub mod proto;
pub(crate) mod run;
pub mod spawn;

use std::cell::Cell;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::rc::Rc;
use std::time::{Duration, Instant};

use log::{info, trace};
use serde_json::{Map, Value};

use self::run::Run;
use self::spawn::RunAs;
use super::auth::{Guard, Secret};
use crate::codec::frame::ByteOrder;
use crate::codec::header::{HeaderDecoder, Item, DEFAULT_MAX_HEADER};
use crate::{ChildId, ChildStream};
use crate::{Context, Flow, Handler, Input};
use proto::Outcome;

/// The most descriptors a connection holds at once: its socket and a
/// command's two output pipes, and while it starts, the command's `/dev/null`
/// stdin and the spawn's error pipe.
pub const DESCRIPTORS: usize = 5;

/// Settings for the command runner.
#[derive(Debug, Clone)]
pub struct ExecConfig {
    /// Timeout when the request gives none.
    pub default_timeout: Duration,
    /// The most a request may ask for.
    pub max_timeout: Duration,
    /// Output forwarded per command before it is killed as truncated.
    pub max_output: u64,
    /// Commands running at once, across all connections.
    pub max_concurrent: usize,
    /// When set, every request must carry this token.
    pub token: Option<Secret>,
    /// Variables copied from the server's environment (the rest are not
    /// passed); default [`spawn::DEFAULT_ENV_PASS`].
    pub env_pass: Vec<String>,
    /// Variables to set for commands.
    pub env: Vec<(String, String)>,
    /// Run commands as this user (the server must be root to switch).
    pub run_as: Option<RunAs>,
    /// Time between SIGTERM and SIGKILL on timeout.
    pub kill_grace: Duration,
    /// The shell that runs `-c <cmd>`.
    pub shell: PathBuf,
}

impl Default for ExecConfig {
    fn default() -> Self {
        ExecConfig {
            default_timeout: Duration::from_secs(30),
            max_timeout: Duration::from_secs(600),
            max_output: 64 * 1024 * 1024,
            max_concurrent: 16,
            token: None,
            env_pass: spawn::DEFAULT_ENV_PASS.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            run_as: None,
            kill_grace: Duration::from_secs(2),
            shell: PathBuf::from("/bin/sh"),
        }
    }
}

/// What the service's connections did, shared by all of them (for the
/// metrics endpoint). Each count is bumped once, where it happens.
#[derive(Debug, Default)]
pub struct ExecCounters {
    /// Commands started.
    pub started: Cell<u64>,
    /// Requests answered with an error, by kind: `[bad_request, busy, spawn, token]`.
    pub errors: [Cell<u64>; 4],
    /// Commands killed, by reason: `[timeout, output_cap, closed]` (closed:
    /// the connection closed while its command ran).
    pub killed: [Cell<u64>; 3],
}

/// Labels of [`ExecCounters::errors`], in order.
pub const ERROR_KINDS: [&str; 4] = ["bad_request", "busy", "spawn", "token"];
/// Labels of [`ExecCounters::killed`], in order.
pub const KILL_REASONS: [&str; 3] = ["timeout", "output_cap", "closed"];

pub(crate) fn bump(c: &Cell<u64>) {
    c.set(c.get().saturating_add(1));
}

/// Makes one [`Exec`] handler per connection; all share the settings and
/// the count of running commands.
#[derive(Debug, Clone)]
pub struct ExecService {
    cfg: Rc<ExecConfig>,
    running: Rc<Cell<usize>>,
    guard: Option<Rc<Guard>>,
    counters: Rc<ExecCounters>,
}

impl ExecService {
    /// A service with these settings.
    pub fn new(cfg: ExecConfig) -> Self {
        let guard = cfg.token.clone().map(|t| Rc::new(Guard::new("exec", t)));
        ExecService { cfg: Rc::new(cfg), running: Rc::default(), guard, counters: Rc::default() }
    }

    /// The count of commands running now, shared with the handlers.
    pub fn running(&self) -> Rc<Cell<usize>> {
        self.running.clone()
    }

    /// The service's counters, shared with the handlers.
    pub fn counters(&self) -> Rc<ExecCounters> {
        self.counters.clone()
    }

    /// A handler for a new connection.
    pub fn handler(&self) -> Exec {
        Exec {
            cfg: self.cfg.clone(),
            running: self.running.clone(),
            decoder: HeaderDecoder::new(ByteOrder::Little, DEFAULT_MAX_HEADER),
            state: State::Idle,
            stopping: false,
            guard: self.guard.clone(),
            tries: 0,
            counters: self.counters.clone(),
        }
    }
}

impl<S: 'static> crate::Service<S> for ExecService {
    fn accept(&mut self, _peer: crate::PeerAddr) -> Box<dyn Handler<S>> {
        Box::new(self.handler())
    }

    /// A peer refused at the connection limit gets one error message in the
    /// protocol's own frame.
    fn descriptors(&self) -> usize {
        DESCRIPTORS
    }

    fn refuse(&mut self, _peer: &crate::PeerAddr, reply: &mut Vec<u8>) {
        proto::encode_error(reply, "too many connections, try again later");
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for a request.
    Idle,
    /// A command is running.
    Running(Run),
}

/// One connection's command runner.
#[derive(Debug)]
pub struct Exec {
    cfg: Rc<ExecConfig>,
    running: Rc<Cell<usize>>,
    decoder: HeaderDecoder,
    state: State,
    /// The server is stopping: finish the running command, start no more.
    stopping: bool,
    /// The service's token check, if it has a token.
    guard: Option<Rc<Guard>>,
    /// Wrong tokens on this connection so far.
    tries: u32,
    counters: Rc<ExecCounters>,
}

impl Exec {
    fn set_state<S: 'static>(&mut self, cx: &mut Context<'_, S>, to: State) {
        let name = |s: &State| match s {
            State::Idle => "Idle".to_string(),
            State::Running(r) => format!("Running(child {})", r.child.0),
        };
        trace!("conn {}: exec: {} => {}", cx.id(), name(&self.state), name(&to));
        if let (State::Running(run), State::Idle) = (self.state, to) {
            run.release(&self.running, cx);
        }
        self.state = to;
    }

    /// Validates a request and starts its command, or answers with an error.
    /// Checks the request's token; an error reply, and whether to close,
    /// when it is wrong.
    fn authorized<S: 'static>(&mut self, header: &Map<String, Value>, cx: &mut Context<'_, S>) -> Result<(), Flow> {
        let Some(guard) = &self.guard else { return Ok(()) };
        let given = header.get("token").and_then(Value::as_str);
        let ip = cx.peer().tcp().map(|a| a.ip());
        let verdict = guard.check(ip, given, &mut self.tries, Instant::now());
        match verdict.error() {
            None => Ok(()),
            Some(why) => {
                bump(&self.counters.errors[3]);
                self.error(cx, &why);
                Err(if verdict.closes() { Flow::Close } else { Flow::Continue })
            }
        }
    }

    fn start<S: 'static>(&mut self, header: &Map<String, Value>, cx: &mut Context<'_, S>) -> Flow {
        if let Err(flow) = self.authorized(header, cx) {
            return flow;
        }
        let req = match proto::parse_request(header) {
            Ok(r) => r,
            Err(e) => {
                bump(&self.counters.errors[0]);
                self.error(cx, &format!("bad request: {e}"));
                return Flow::Continue;
            }
        };
        let timeout = req.timeout.unwrap_or(self.cfg.default_timeout).min(self.cfg.max_timeout);
        match run::launch("exec", &self.cfg, &self.running, &self.counters, req.cmd.as_ref(), timeout, cx) {
            Ok(run) => self.set_state(cx, State::Running(run)),
            Err(why) => self.error(cx, &why),
        }
        Flow::Continue
    }

    fn error<S: 'static>(&mut self, cx: &mut Context<'_, S>, msg: &str) {
        crate::info_limited!("exec {} ({}): refused: {}", cx.id(), cx.peer(), msg);
        cx.out().append(|out| proto::encode_error(out, msg));
    }
}

impl<S: 'static> Handler<S> for Exec {
    fn on_open(&mut self, cx: &mut Context<'_, S>) -> Flow {
        self.decoder.trace_as(cx.id().key as u64);
        Flow::Continue
    }

    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_, S>) -> Flow {
        // One request at a time: a pipelined next request waits, unconsumed,
        // until the running one has ended.
        while self.state == State::Idle && !cx.over_high_water() {
            match self.decoder.decode(input.bytes()) {
                Ok(Some(d)) => {
                    input.consume(d.consumed);
                    match d.item {
                        Item::Header(header) => {
                            self.decoder.begin_body(0);
                            if self.start(&header, cx) == Flow::Close {
                                return Flow::Close;
                            }
                        }
                        Item::Body(_) | Item::BodyEnd => {}
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.error(cx, &format!("bad request framing: {e}"));
                    return Flow::Close;
                }
            }
        }
        Flow::Continue
    }

    fn on_eof(&mut self, input: &mut Input<'_>, cx: &mut Context<'_, S>) -> Flow {
        if let State::Running(run) = self.state {
            // A FIN looks the same whether the client half-closed or went
            // away, and a silent command would never write to find out. So
            // EOF cancels: closing the connection kills the process group.
            info!("exec {} ({}): client closed while child {} runs; killing it", cx.id(), cx.peer(), run.child.0);
            return Flow::Close;
        }
        if let Err(e) = self.decoder.finish(input.bytes()) {
            self.error(cx, &format!("bad request framing: {e}"));
        }
        Flow::Close
    }

    fn on_child_output(&mut self, child: ChildId, stream: ChildStream, data: &[u8], cx: &mut Context<'_, S>) -> Flow {
        let State::Running(mut run) = self.state else { return Flow::Continue };
        if run.child != child || run.truncated {
            return Flow::Continue;
        }
        let take = run.admit("exec", run.forwarded, self.cfg.max_output, data.len(), &self.counters, cx);
        if take > 0 {
            cx.out().append(|out| proto::encode_output(out, stream, &data[..take]));
            run.forwarded = run.forwarded.saturating_add(take as u64);
        }
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
        let outcome = Outcome::new(status, run.timed_out, run.truncated, run.started.elapsed());
        run.log_end("exec", status, cx);
        cx.out().append(|out| proto::encode_exit(out, &outcome));
        self.set_state(cx, State::Idle);
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
        run.on_timer("exec", &self.cfg, &self.counters, cx);
        self.state = State::Running(run);
        Flow::Continue
    }
}

impl Drop for Exec {
    fn drop(&mut self) {
        // The loop kills a closed connection's children; free its slot.
        if let State::Running(run) = self.state {
            run.abandon(&self.running, &self.counters);
        }
    }
}
