//! Helpers for the `Loop` API tests (`loop_api.rs`, `loop_connect.rs`,
//! `loop_lifecycle.rs`): a handler that records every call in the loop's
//! shared state, and bounded ways to drive a loop.
#![allow(dead_code)]

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use wireloop::{CloseReason, Context, EventLoop, Flow, Handle, Handler, Input, Loop, SourceId};

pub fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A TCP client with a 5 s read timeout, so no read can hang a test.
pub fn client(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Reads exactly `n` bytes (bounded by the stream's read timeout).
pub fn read_n(s: &mut impl Read, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).unwrap();
    buf
}

/// Drives the loop until `done` holds; false if `limit` passed first.
pub fn pump_until<S: 'static>(
    lp: &mut EventLoop<S>,
    limit: Duration,
    mut done: impl FnMut(&EventLoop<S>) -> bool,
) -> bool {
    let start = Instant::now();
    loop {
        if done(lp) {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        lp.poll_once(Some(Duration::from_millis(5))).unwrap();
    }
}

/// Drives the loop for `d`.
pub fn pump_for<S: 'static>(lp: &mut EventLoop<S>, d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        lp.poll_once(Some(Duration::from_millis(5))).unwrap();
    }
}

/// Runs `f` on the loop's thread and returns its answer (at most 5 s).
pub fn query<S: 'static, T: Send + 'static>(h: &Handle<S>, f: impl FnOnce(&mut Loop<S>) -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    h.submit(move |lp| {
        let _ = tx.send(f(lp));
    });
    rx.recv_timeout(Duration::from_secs(5)).expect("the loop ran the task within 5 s")
}

/// One handler call, as recorded by [`Probe`].
#[derive(Debug)]
pub enum Ev {
    Open(SourceId),
    Data(SourceId, Vec<u8>),
    Eof(SourceId),
    Close(SourceId, CloseReason),
}

/// Shared state: every handler call, in order.
#[derive(Debug, Default)]
pub struct Log {
    pub evs: Vec<Ev>,
}

/// Records `on_open` for the connection in `cx` (every recording handler's
/// `on_open`).
pub fn record_open(cx: &mut Context<'_, Log>) -> Flow {
    let id = cx.id();
    cx.state_mut().evs.push(Ev::Open(id));
    Flow::Continue
}

impl Log {
    /// The ids that were opened, in order.
    pub fn opened(&self) -> Vec<SourceId> {
        self.evs.iter().filter_map(|e| if let Ev::Open(id) = e { Some(*id) } else { None }).collect()
    }

    /// Every close reason `id` got (exactly one is expected).
    pub fn closes(&self, id: SourceId) -> Vec<&CloseReason> {
        self.evs
            .iter()
            .filter_map(|e| match e {
                Ev::Close(i, r) if *i == id => Some(r),
                _ => None,
            })
            .collect()
    }

    /// All close events.
    pub fn all_closes(&self) -> usize {
        self.evs.iter().filter(|e| matches!(e, Ev::Close(..))).count()
    }

    /// Everything `id` received, concatenated.
    pub fn data(&self, id: SourceId) -> Vec<u8> {
        let mut out = Vec::new();
        for e in &self.evs {
            if let Ev::Data(i, d) = e {
                if *i == id {
                    out.extend_from_slice(d);
                }
            }
        }
        out
    }

    /// The call sequence of `id`, one word per call (consecutive data calls
    /// merged): `open`, `data:<bytes>`, `eof`, `close:<Debug of reason>`.
    pub fn calls(&self, id: SourceId) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for e in &self.evs {
            let word = match e {
                Ev::Open(i) if *i == id => "open".to_string(),
                Ev::Data(i, d) if *i == id => {
                    let d = String::from_utf8_lossy(d).into_owned();
                    if let Some(last) = out.last_mut().filter(|l| l.starts_with("data:")) {
                        last.push_str(&d);
                        continue;
                    }
                    format!("data:{d}")
                }
                Ev::Eof(i) if *i == id => "eof".to_string(),
                Ev::Close(i, r) if *i == id => format!("close:{r:?}"),
                _ => continue,
            };
            out.push(word);
        }
        out
    }
}

/// A handler that records each call in the [`Log`], sends `greeting` from
/// `on_open`, and on input consumes everything and answers commands that
/// arrive as a whole read:
/// `quit\n` → replies `bye\n` and returns [`Flow::Close`];
/// `close-me\n` → replies `bye\n` and calls [`Loop::close`] on itself;
/// anything else is echoed if `echo` is set.
#[derive(Debug, Clone)]
pub struct Probe {
    pub greeting: &'static [u8],
    pub echo: bool,
    /// What `on_open` returns.
    pub open_flow: Flow,
    /// What `on_eof` returns.
    pub eof_flow: Flow,
}

impl Default for Probe {
    fn default() -> Self {
        Probe { greeting: b"", echo: false, open_flow: Flow::Continue, eof_flow: Flow::Close }
    }
}

impl Probe {
    pub fn greeter(greeting: &'static [u8]) -> Self {
        Probe { greeting, ..Probe::default() }
    }

    pub fn echo() -> Self {
        Probe { echo: true, ..Probe::default() }
    }
}

impl Handler<Log> for Probe {
    fn on_open(&mut self, cx: &mut Context<'_, Log>) -> Flow {
        let id = cx.id();
        cx.state_mut().evs.push(Ev::Open(id));
        cx.out().extend_from_slice(self.greeting);
        self.open_flow
    }

    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_, Log>) -> Flow {
        let id = cx.id();
        let bytes = input.bytes().to_vec();
        input.consume(bytes.len());
        cx.state_mut().evs.push(Ev::Data(id, bytes.clone()));
        match &bytes[..] {
            b"quit\n" => {
                cx.out().extend_from_slice(b"bye\n");
                Flow::Close
            }
            b"close-me\n" => {
                cx.out().extend_from_slice(b"bye\n");
                cx.close(id).unwrap();
                Flow::Continue
            }
            _ => {
                if self.echo {
                    cx.out().extend_from_slice(&bytes);
                }
                Flow::Continue
            }
        }
    }

    fn on_eof(&mut self, input: &mut Input<'_>, cx: &mut Context<'_, Log>) -> Flow {
        let id = cx.id();
        assert!(input.bytes().is_empty(), "Probe consumes everything");
        cx.state_mut().evs.push(Ev::Eof(id));
        self.eof_flow
    }

    fn on_close(&mut self, id: SourceId, reason: CloseReason, lp: &mut Loop<Log>) {
        lp.state_mut().evs.push(Ev::Close(id, reason));
    }
}

/// A byte pattern with no short period, so a lost or repeated piece shows.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}
