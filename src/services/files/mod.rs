//! `files`: upload, download, resume and list over the tutorial's
//! "4-byte length + JSON header + body" protocol, one connection state
//! machine per client, all on the loop's one thread.
//!
//! ```text
//!  client                                                     server (this state machine)
//!  [len][{"file_name","file_size","md5"}][body ...] ──────▶  Idle ─Header─▶ Receiving ─Body*─▶ (write + MD5)
//!                                                            ─BodyEnd─▶ [Verifying: MD5 of a resumed prefix,
//!                                                                        one CHUNK per drain] ─▶ fsync, rename
//!                                  [len][{"ok":true,…}] ◀──  Idle
//!  [len][{"op":"get","file_name"}] ─────────────────────▶  [Hashing: no cached MD5, one CHUNK per drain]
//!      [len][{"ok":true,"file_size","md5"}][body ...] ◀──  Sending: one CHUNK per on_drain ─▶ Idle
//!  [len][{"op":"stat",…}]          ─────────────────────▶  reply at once, stay Idle
//!  [len][{"op":"list",…}]          ─────────────────────▶  Listing: one page, built when the loop
//!                                  ◀── [len][{"files",…}]    turns to it (`yield_now`) ─▶ Idle
//!  [len][{"op":"list","partials":true,…}] ──────────────▶  one page of partial uploads from the
//!                                  ◀── [len][{"partials",…}] store's index, at once, stay Idle
//!  refused header, no body announced                     ─▶ [len][{"ok":false,"error"}], stay Idle
//!  refused upload (body announced), bad header, disk error ─▶ [len][{"ok":false,"error"}], Closing (lingering close)
//! ```
//!
//! Storage rules (names, partial files, atomic commit, limits) live in
//! [`storage`]; message shapes in [`proto`]; a blocking client in [`client`].
//! This file holds the state machine and its input pump; `request.rs`
//! serves a header, `receive.rs` an upload body, `transfer.rs` the work
//! done in `on_drain` (hashing, sending, listing pages), `shutdown.rs`
//! the grace period.
//!
//! # Invariants
//!
//! * The handler is a `State` enum; every change goes through one
//!   `set_state`, which traces `from => to` at `trace` level.
//! * The decoder ([`HeaderDecoder`]) gets `begin_body` after every header:
//!   the upload's `file_size - offset`, or 0.
//! * A refusal is sent before any body byte is read. If no body was announced
//!   the connection stays usable; if one was (or cannot be told), the reply
//!   is followed by [`Flow::Close`], since the stream cannot be resynchronised.
//! * Per loop event the handler does at most one bounded disk operation per
//!   call: an upload writes the chunk the loop just read (≤ 64 KiB) and, when
//!   resuming, reads at most [`storage::CHUNK`] of the prefix to hash; a
//!   download reads one [`storage::CHUNK`] into the output only when the
//!   socket has drained to the low-water mark (`notify_on_drain`), so output
//!   stays under low water + one chunk and a file is never loaded whole.
//!   Work with no socket event to drive it (hashing) asks for `on_drain`
//!   with empty output, which the loop runs at most twice per pass before
//!   putting the connection behind every other ready source.
//! * An upload that ends without a commit (close, reset, timeout, too
//!   slow, shutdown) keeps its partial file for a resume, unless it received
//!   no byte at all: dropping its [`Upload`] removes it. Partials are charged
//!   to the peer's address ([`UploadSpec::source`]) and bounded by
//!   [`FilesConfig::partials`]; `receive.rs` answers a chunk over a bound
//!   with the byte reached.
//! * The only unbounded blocking call is the commit's `fsync`, once per
//!   upload; writeback is started every 8 MiB during the upload so it waits
//!   for little (see [`storage`]).
//! * While the state is busy (not `Idle`/`Receiving`), input is left
//!   unconsumed; pipelined requests wait (bounded by the loop's `max_input`).
//!   So do requests while the unsent output is over the high-water mark:
//!   replies never pile up past it by more than one (a listing page is at
//!   most [`storage::page::PAGE_BYTES`] of names).
//!   Busy states declare [`Activity::Working`] so that the loop's message
//!   deadline does not count the wait; an upload body never declares
//!   `Receiving` (a large file takes longer than any message timeout), so it
//!   only has to keep moving: at least `min_rate` bytes per second over each
//!   `rate_window` (`rate.rs`), and some byte within the idle timeout.

pub mod client;
pub mod proto;
mod rate;
mod receive;
mod request;
mod shutdown;
pub mod storage;
mod transfer;

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use log::{debug, info, trace};
use md5::{Digest, Md5};
use serde_json::{Map, Value};

use self::proto::{announced_body, Reply, Request};
use self::rate::MinRate;
use self::storage::page::PAGE_MAX;
use self::storage::{
    clean_name, hex, read_chunk_at, FilesCounters, PartialBounds, PartialInfo, Store, Upload, UploadSpec, CHUNK,
};
use super::auth::{Guard, Secret};
use super::Refusing;
use crate::codec::frame::ByteOrder;
use crate::codec::header::{HeaderDecoder, Item, DEFAULT_MAX_HEADER};
use crate::deadline::Activity;
use crate::{Context, Flow, Handler, Input, PeerAddr};

/// The most descriptors a connection holds at once: its socket, the file
/// it reads or writes, and two directories while a commit renames
/// between them (a listing holds two as well).
pub const DESCRIPTORS: usize = 4;

/// Default slowest accepted upload body, bytes per second ([`FilesConfig::min_rate`]).
pub const DEFAULT_MIN_RATE: u64 = 500;
/// Default window the minimum rate is averaged over ([`FilesConfig::rate_window`]).
pub const DEFAULT_RATE_WINDOW: Duration = Duration::from_secs(30);

/// Settings for the files service.
#[derive(Debug, Clone)]
pub struct FilesConfig {
    /// The storage root; created if missing.
    pub root: PathBuf,
    /// Largest accepted file, if limited.
    pub max_size: Option<u64>,
    /// Interrupted uploads untouched for longer than this are removed.
    pub partial_max_age: Duration,
    /// Largest request header, in bytes.
    pub max_header: usize,
    /// Slowest accepted upload body, in bytes per second averaged over
    /// `rate_window`; 0 turns the check off. A slower upload gets an error
    /// reply and keeps its partial file for a resume.
    pub min_rate: u64,
    /// How long `min_rate` is averaged over.
    pub rate_window: Duration,
    /// When set, every request must carry this token (see [`crate::services::auth`]).
    pub token: Option<Secret>,
    /// Bounds on partial uploads (count and bytes, in total and per
    /// source); over them the oldest abandoned partial is evicted.
    pub partials: PartialBounds,
}

impl Default for FilesConfig {
    fn default() -> Self {
        FilesConfig {
            root: PathBuf::from("wireloop-files"),
            max_size: None,
            partial_max_age: Duration::from_secs(24 * 3600),
            max_header: DEFAULT_MAX_HEADER,
            min_rate: DEFAULT_MIN_RATE,
            rate_window: DEFAULT_RATE_WINDOW,
            token: None,
            partials: PartialBounds::default(),
        }
    }
}

/// Opens the store (creating the root, sweeping old partial files) and
/// returns a [`crate::Service`] making one [`Files`] handler per connection.
/// A peer refused at the connection limit gets one error reply in the
/// protocol's own frame.
pub fn service(cfg: &FilesConfig) -> io::Result<Refusing<impl FnMut(PeerAddr) -> Files>> {
    service_counted(cfg).map(|(svc, _)| svc)
}

/// [`service`], and the store's counters (for the metrics endpoint).
// The `impl` type cannot be named in a type alias on stable Rust.
#[allow(clippy::type_complexity)]
pub fn service_counted(cfg: &FilesConfig) -> io::Result<(Refusing<impl FnMut(PeerAddr) -> Files>, Rc<FilesCounters>)> {
    let store = Rc::new(Store::open_with(&cfg.root, cfg.max_size, cfg.partial_max_age, &cfg.partials)?);
    let counters = store.counters();
    info!("files: storing under {}", store.root().display());
    let (max_header, rate) = (cfg.max_header, MinRate::new(cfg.min_rate, cfg.rate_window));
    let guard = cfg.token.clone().map(|t| Rc::new(Guard::new("files", t)));
    let mut busy = Vec::new();
    Reply::error("too many connections, try again later").encode(&mut busy);
    let svc = Refusing::new(
        move |peer| {
            let mut f = Files::with_rate(Rc::clone(&store), max_header, peer, rate.clone());
            f.guard = guard.clone();
            f
        },
        busy,
    )
    .holding(DESCRIPTORS);
    Ok((svc, counters))
}

/// An upload being received (or verified).
#[derive(Debug)]
struct Receive {
    up: Upload,
    md5: Md5,
    /// Bytes of the partial file already fed to `md5` (less than
    /// `up.written()` only after a resume, until the prefix is caught up).
    hashed: u64,
    expected: String,
}

/// Why a file's MD5 is being computed.
#[derive(Debug)]
enum Purpose {
    Get { offset: u64 },
    Stat { partial: Option<PartialInfo> },
}

/// A finished file without a cached MD5, hashed a chunk at a time.
#[derive(Debug)]
struct Hash {
    name: String,
    file: File,
    size: u64,
    pos: u64,
    md5: Md5,
    purpose: Purpose,
}

/// A listing request, waiting for its turn to walk the tree.
#[derive(Debug)]
struct List {
    prefix: String,
    after: Option<String>,
    limit: usize,
}

/// A download in progress.
#[derive(Debug)]
struct Send {
    file: File,
    pos: u64,
    end: u64,
}

/// Where a connection is.
#[derive(Debug)]
enum State {
    /// Between requests.
    Idle,
    /// Upload body chunks go to the partial file and the MD5.
    Receiving(Receive),
    /// Body complete; hashing the rest of a resumed prefix before the commit.
    Verifying(Receive),
    /// Computing a finished file's MD5 before a `get` or `stat` reply.
    Hashing(Hash),
    /// A `list` waits for its turn (`yield_now`) to build its page.
    Listing(List),
    /// Streaming a download.
    Sending(Send),
    /// An error reply went out; the connection is closing.
    Closing,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Idle => "Idle",
            State::Receiving(_) => "Receiving",
            State::Verifying(_) => "Verifying",
            State::Hashing(_) => "Hashing",
            State::Listing(_) => "Listing",
            State::Sending(_) => "Sending",
            State::Closing => "Closing",
        }
    }
}

/// One connection's files protocol state machine.
#[derive(Debug)]
pub struct Files {
    store: Rc<Store>,
    decoder: HeaderDecoder,
    state: State,
    /// Name of a state taken out with `take`, for the next trace line.
    taken: Option<&'static str>,
    peer: PeerAddr,
    eof: bool,
    buf: Vec<u8>,
    /// Body bytes per window while an upload streams in.
    rate: MinRate,
    /// The loop is shutting down: finish the request in flight, take no other.
    stopping: bool,
    /// The service's token check, if it has a token.
    guard: Option<Rc<Guard>>,
    /// Wrong tokens on this connection so far.
    tries: u32,
    /// The connection's slot, for trace lines (set by `on_open`).
    conn: u64,
}

impl Files {
    /// A connection from `peer` on `store`, refusing headers over `max_header`,
    /// with the default minimum upload rate ([`DEFAULT_MIN_RATE`] over
    /// [`DEFAULT_RATE_WINDOW`]).
    pub fn new(store: Rc<Store>, max_header: usize, peer: PeerAddr) -> Files {
        Files::with_rate(store, max_header, peer, MinRate::new(DEFAULT_MIN_RATE, DEFAULT_RATE_WINDOW))
    }

    fn with_rate(store: Rc<Store>, max_header: usize, peer: PeerAddr, rate: MinRate) -> Files {
        Files {
            store,
            decoder: HeaderDecoder::new(ByteOrder::Little, max_header),
            state: State::Idle,
            taken: None,
            peer,
            eof: false,
            buf: Vec::new(),
            rate,
            stopping: false,
            guard: None,
            tries: 0,
            conn: 0,
        }
    }

    /// The one place the state changes.
    fn set_state(&mut self, to: State) {
        let from = self.taken.take().unwrap_or(self.state.name());
        if from != to.name() {
            trace!("conn {}: files: {} => {}", self.conn, from, to.name());
        }
        self.state = to;
    }

    /// Moves the current state's data out; the next `set_state` traces from it.
    fn take(&mut self) -> State {
        let s = std::mem::replace(&mut self.state, State::Idle);
        self.taken = Some(s.name());
        s
    }

    fn reply<S: 'static>(&mut self, r: &Reply, cx: &mut Context<'_, S>) {
        cx.out().append(|v| r.encode(v));
    }

    /// Sends an error. With no body announced the connection stays usable;
    /// otherwise it closes (lingering, so the reply is not lost to a reset).
    fn refuse<S: 'static>(&mut self, why: String, body: Option<u64>, cx: &mut Context<'_, S>) -> Flow {
        crate::info_limited!("files {}: refused: {why}", self.peer);
        self.reply(&Reply::error(why), cx);
        if body == Some(0) {
            return Flow::Continue;
        }
        self.set_state(State::Closing);
        Flow::Close
    }

    /// An error after which the stream cannot continue.
    fn fail<S: 'static>(&mut self, why: String, cx: &mut Context<'_, S>) -> Flow {
        debug!("conn {} ({}): files: closing: {why}", self.conn, self.peer);
        self.reply(&Reply::error(why), cx);
        self.take();
        self.set_state(State::Closing);
        Flow::Close
    }

    /// Decodes and serves requests while the state can take input.
    fn pump<S: 'static>(&mut self, input: &mut Input<'_>, cx: &mut Context<'_, S>) -> Flow {
        loop {
            if !matches!(self.state, State::Idle | State::Receiving(_)) {
                return Flow::Continue;
            }
            if self.stopping && matches!(self.state, State::Idle) {
                // Shutting down: the request in flight is answered.
                return Flow::Close;
            }
            if matches!(self.state, State::Idle) && cx.over_high_water() {
                // The next request waits, unconsumed, until the replies
                // drain (`on_drain`, or the loop's call once reading resumes).
                cx.notify_on_drain();
                return Flow::Continue;
            }
            let d = match self.decoder.decode(input.bytes()) {
                Ok(Some(d)) => d,
                Ok(None) => break,
                Err(e) => return self.fail(format!("bad request: {e}"), cx),
            };
            input.consume(d.consumed);
            let flow = match d.item {
                Item::Header(map) => self.on_header(map, cx),
                Item::Body(chunk) => self.on_body(chunk, cx),
                Item::BodyEnd => self.on_body_end(cx),
            };
            if flow == Flow::Close {
                return Flow::Close;
            }
        }
        if self.eof && matches!(self.state, State::Idle) {
            return match self.decoder.finish(input.bytes()) {
                Ok(()) => Flow::Close,
                Err(e) => self.fail(format!("bad request: {e}"), cx),
            };
        }
        Flow::Continue
    }

    fn close_now(&mut self, why: &str) -> Flow {
        log::warn!("files {}: {why}; closing", self.peer);
        self.take();
        self.set_state(State::Closing);
        Flow::Close
    }
}

fn stat_reply(name: String, complete: Option<(u64, String)>, partial: Option<PartialInfo>) -> Reply {
    let (file_size, md5) = complete.map_or((None, None), |(s, m)| (Some(s), Some(m)));
    Reply {
        file_name: Some(name),
        file_size,
        md5,
        partial_size: partial.as_ref().map(|p| p.size),
        partial_file_size: partial.as_ref().map(|p| p.meta.file_size),
        partial_md5: partial.map(|p| p.meta.md5),
        ..Reply::ok()
    }
}

impl Files {
    fn data<S: 'static>(&mut self, input: &mut Input<'_>, cx: &mut Context<'_, S>) -> Flow {
        if matches!(self.state, State::Closing) {
            input.consume(input.bytes().len());
            return Flow::Close;
        }
        self.pump(input, cx)
    }

    fn drain<S: 'static>(&mut self, input: &mut Input<'_>, cx: &mut Context<'_, S>) -> Flow {
        let flow = match &self.state {
            State::Listing(_) => self.list_page(cx),
            State::Sending(_) => self.send_chunk(cx),
            State::Hashing(_) => self.hash_step(cx),
            State::Verifying(r) if r.hashed < r.up.written() => {
                let flow = self.catch_up(cx);
                if flow == Flow::Continue {
                    cx.notify_on_drain();
                }
                flow
            }
            State::Verifying(_) => {
                let State::Verifying(r) = self.take() else { unreachable!("matched above") };
                self.finish(r, cx)
            }
            State::Idle | State::Receiving(_) => Flow::Continue,
            State::Closing => return Flow::Close,
        };
        if flow == Flow::Close {
            return flow;
        }
        self.pump(input, cx)
    }

    fn peer_eof<S: 'static>(&mut self, input: &mut Input<'_>, cx: &mut Context<'_, S>) -> Flow {
        self.eof = true;
        match &self.state {
            State::Receiving(r) => {
                let kept = if r.up.keeps_partial() { "kept for a resume" } else { "removed (it held nothing)" };
                info!(
                    "files {}: upload of {} interrupted at {} of {} bytes; the partial file is {kept}",
                    self.peer,
                    r.up.name(),
                    r.up.written(),
                    r.up.file_size()
                );
                self.take();
                self.set_state(State::Closing);
                Flow::Close
            }
            State::Closing => Flow::Close,
            _ => self.pump(input, cx),
        }
    }
}

/// Tells the loop's deadlines what the connection is doing: while hashing,
/// verifying or sending, the handler is working on the peer's behalf (no
/// idle or message deadline; a stalled reader still meets the send
/// timeout). Otherwise `Auto`: a header must arrive within the message
/// timeout, and an upload body, consumed as it arrives, only needs to keep
/// moving however large the file (the minimum rate, checked by the handler's
/// own timer, and the idle timeout).
fn activity(state: &State) -> Activity {
    match state {
        State::Hashing(_) | State::Verifying(_) | State::Sending(_) | State::Listing(_) => Activity::Working,
        State::Idle | State::Receiving(_) | State::Closing => Activity::Auto,
    }
}

impl<S: 'static> Handler<S> for Files {
    fn on_open(&mut self, cx: &mut Context<'_, S>) -> Flow {
        self.conn = cx.id().key as u64;
        self.decoder.trace_as(self.conn);
        Flow::Continue
    }

    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_, S>) -> Flow {
        let flow = self.data(input, cx);
        cx.set_activity(activity(&self.state));
        flow
    }

    fn on_drain(&mut self, input: &mut Input<'_>, cx: &mut Context<'_, S>) -> Flow {
        let flow = self.drain(input, cx);
        cx.set_activity(activity(&self.state));
        flow
    }

    fn on_eof(&mut self, input: &mut Input<'_>, cx: &mut Context<'_, S>) -> Flow {
        let flow = self.peer_eof(input, cx);
        cx.set_activity(activity(&self.state));
        flow
    }

    fn on_shutdown(&mut self, _input: &mut Input<'_>, cx: &mut Context<'_, S>) -> Flow {
        let flow = self.shutdown(cx);
        cx.set_activity(activity(&self.state));
        flow
    }

    fn on_timer(&mut self, _input: &mut Input<'_>, cx: &mut Context<'_, S>) -> Flow {
        let flow = self.rate_check(cx);
        cx.set_activity(activity(&self.state));
        flow
    }
}
