//! The metrics endpoint: `GET /metrics` over HTTP/1.x, answered with the
//! Prometheus text format ([`render`]) of what the loops count.
//!
//! Where counters live (layers run one way: loop → services → CLI):
//! * the loop counts per listener (accepted, refused, open, bytes in and
//!   out, errors by kind: [`crate::ListenerStats`]), per UDP socket
//!   ([`crate::UdpStats`]) and per pass ([`crate::PassStats`]), with plain
//!   integer adds on its existing paths;
//! * a service counts what only it knows (a rate limiter's refusals,
//!   commands, transfers) in its own shared cells, and registers a probe
//!   that reads them ([`Catalog::probe`], [`Catalog::udp_rate_limited`]);
//! * the embedder (the CLI) names the sockets in a [`Catalog`].
//!
//! A [`Snapshot`] is read from one loop through its catalog; with several
//! loops on several threads, each publishes its snapshot into a shared
//! [`Published`] slot (on a timer, see [`publish_every`]), and the
//! endpoint, on one loop, renders its own live snapshot plus the others'
//! latest: their figures lag by at most the publishing interval.
//!
//! The endpoint is a service like the others, under the loop's deadlines
//! and limits: a request head is at most [`MAX_HEAD`] bytes; a peer that
//! does not speak HTTP/1.x is closed without a reply; `GET`/`HEAD` of
//! `/metrics` get `200`, other paths `404`, other methods `405`; every
//! reply ends the connection (`Connection: close`).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{Context, Flow, Handler, Input, ListenerStats, Loop, PassStats, PeerAddr, Service, SourceId, UdpStats};

pub mod http;
pub mod render;

use http::{parse_head, HeadError};

/// Longest request head accepted.
pub const MAX_HEAD: usize = 8 * 1024;

/// A UDP socket's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpEntry {
    /// The loop's counters.
    pub stats: UdpStats,
    /// Datagrams its service left unanswered over a rate limit, if it has one.
    pub rate_limited: Option<u64>,
}

/// A family of a service's own counters: one `# HELP`/`# TYPE` and its samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    /// Metric name, `wireloop_*`.
    pub name: &'static str,
    /// `counter` or `gauge`.
    pub kind: &'static str,
    /// One line of help.
    pub help: &'static str,
    /// (labels without braces, e.g. `service="exec",reason="timeout"`; value).
    pub samples: Vec<(&'static str, u64)>,
}

impl Family {
    fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(out, "# HELP {} {}\n# TYPE {} {}", self.name, self.help, self.name, self.kind);
        for (labels, v) in &self.samples {
            let _ = writeln!(out, "{}{{{labels}}} {v}", self.name);
        }
    }
}

/// Everything the endpoint exports, from one loop or summed over several.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Per TCP service.
    pub tcp: Vec<(&'static str, ListenerStats)>,
    /// Per UDP service.
    pub udp: Vec<(&'static str, UdpEntry)>,
    /// The services' own counters.
    pub services: Vec<Family>,
    /// Pass times.
    pub passes: PassStats,
    /// Loops summed.
    pub workers: u64,
    /// Each loop's own figures, by worker index (one entry per loop).
    pub per_worker: Vec<WorkerFigures>,
}

/// One loop's figures apart from the others': how `SO_REUSEPORT` split the
/// connections, and what each loop's slab holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerFigures {
    /// The worker's index (`loop-N`).
    pub worker: usize,
    /// Accepted connections open now, all its listeners.
    pub open: u64,
    /// Connections it accepted, all its listeners.
    pub accepted: u64,
    /// Its slab's slots, held and free ([`Loop::slots`]).
    pub slots: u64,
}

impl Snapshot {
    /// Adds `other`'s figures, matching services by name (a service only
    /// `other` has is appended).
    pub fn add(&mut self, other: &Snapshot) {
        for (name, s) in &other.tcp {
            match self.tcp.iter_mut().find(|(n, _)| n == name) {
                Some((_, mine)) => mine.add(s),
                None => self.tcp.push((name, *s)),
            }
        }
        for (name, e) in &other.udp {
            match self.udp.iter_mut().find(|(n, _)| n == name) {
                Some((_, mine)) => {
                    let (a, b) = (&mut mine.stats, &e.stats);
                    a.received = a.received.saturating_add(b.received);
                    a.sent = a.sent.saturating_add(b.sent);
                    a.dropped = a.dropped.saturating_add(b.dropped);
                    a.send_errors = a.send_errors.saturating_add(b.send_errors);
                    a.looped = a.looped.saturating_add(b.looped);
                    mine.rate_limited = match (mine.rate_limited, e.rate_limited) {
                        (Some(x), Some(y)) => Some(x.saturating_add(y)),
                        (x, y) => x.or(y),
                    };
                }
                None => self.udp.push((name, *e)),
            }
        }
        for f in &other.services {
            match self.services.iter_mut().find(|m| m.name == f.name) {
                Some(mine) => {
                    for (labels, v) in &f.samples {
                        match mine.samples.iter_mut().find(|(l, _)| l == labels) {
                            Some((_, m)) => *m = m.saturating_add(*v),
                            None => mine.samples.push((labels, *v)),
                        }
                    }
                }
                None => self.services.push(f.clone()),
            }
        }
        self.passes.add(&other.passes);
        self.workers = self.workers.saturating_add(other.workers);
        self.per_worker.extend_from_slice(&other.per_worker);
        self.per_worker.sort_by_key(|w| w.worker);
    }
}

type Probe = Rc<dyn Fn() -> u64>;
type FamilyProbe = Rc<dyn Fn(&mut Vec<Family>)>;

/// The sockets of one loop by service name, and probes of the services'
/// own counters.
#[derive(Default, Clone)]
pub struct Catalog {
    tcp: Vec<(&'static str, SourceId)>,
    udp: Vec<(&'static str, SourceId)>,
    rate_limited: Vec<(&'static str, Probe)>,
    probes: Vec<FamilyProbe>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").field("tcp", &self.tcp).field("udp", &self.udp.len()).finish_non_exhaustive()
    }
}

impl Catalog {
    /// Names a TCP listener.
    pub fn tcp(&mut self, name: &'static str, id: SourceId) {
        self.tcp.push((name, id));
    }

    /// Names a UDP socket.
    pub fn udp(&mut self, name: &'static str, id: SourceId) {
        self.udp.push((name, id));
    }

    /// Gives the UDP service `name` a probe of its rate-limit refusals (named
    /// before or after its socket).
    pub fn udp_rate_limited(&mut self, name: &'static str, probe: impl Fn() -> u64 + 'static) {
        self.rate_limited.push((name, Rc::new(probe)));
    }

    /// Adds a probe that appends a service's own counter families.
    pub fn probe(&mut self, probe: impl Fn(&mut Vec<Family>) + 'static) {
        self.probes.push(Rc::new(probe));
    }

    /// Reads the figures of `lp`, the loop of worker `worker`, into `snap`,
    /// keeping its buffers.
    pub fn collect_into<S: 'static>(&self, lp: &Loop<S>, worker: usize, snap: &mut Snapshot) {
        snap.tcp.clear();
        snap.udp.clear();
        snap.services.clear();
        for &(name, id) in &self.tcp {
            snap.tcp.push((name, lp.listener_stats(id).unwrap_or_default()));
        }
        for &(name, id) in &self.udp {
            let stats = lp.udp_stats(id).unwrap_or_default();
            let rate_limited = self.rate_limited.iter().find(|(n, _)| *n == name).map(|(_, p)| p());
            snap.udp.push((name, UdpEntry { stats, rate_limited }));
        }
        for p in &self.probes {
            p(&mut snap.services);
        }
        snap.passes = lp.pass_stats();
        snap.workers = 1;
        let (open, accepted) = snap
            .tcp
            .iter()
            .fold((0u64, 0u64), |(o, a), (_, s)| (o.saturating_add(s.open), a.saturating_add(s.accepted)));
        snap.per_worker.clear();
        snap.per_worker.push(WorkerFigures { worker, open, accepted, slots: lp.slots() as u64 });
    }
}

/// The latest snapshot of each loop, by worker index (shared across threads).
pub type Published = Arc<Mutex<Vec<Snapshot>>>;

/// Publishes the snapshot of `lp` into slot `slot` of `shared` now and every
/// `every` after, on a loop timer, for as long as the loop runs.
pub fn publish_every<S: 'static>(
    lp: &mut Loop<S>,
    catalog: Rc<RefCell<Catalog>>,
    shared: Published,
    slot: usize,
    every: Duration,
) {
    {
        let mut g = shared.lock().unwrap_or_else(|p| p.into_inner());
        if g.len() <= slot {
            g.resize_with(slot + 1, Snapshot::default);
        }
        catalog.borrow().collect_into(lp, slot, &mut g[slot]);
    }
    lp.after(every, move |lp| publish_every(lp, catalog, shared, slot, every));
}

/// The endpoint's service: `catalog` names this loop's sockets; `others`
/// holds the other loops' published snapshots (slot `own` is skipped: this
/// loop's figures are read live).
#[derive(Clone)]
pub struct MetricsService {
    catalog: Rc<RefCell<Catalog>>,
    others: Option<(Published, usize)>,
}

impl std::fmt::Debug for MetricsService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsService").finish_non_exhaustive()
    }
}

impl MetricsService {
    /// A service reading this loop through `catalog`, and the other loops'
    /// snapshots from `others` (all slots but `own`), if any.
    pub fn new(catalog: Rc<RefCell<Catalog>>, others: Option<(Published, usize)>) -> Self {
        MetricsService { catalog, others }
    }

    /// This loop's figures plus the others' latest.
    pub fn snapshot<S: 'static>(&self, lp: &Loop<S>) -> Snapshot {
        let mut snap = Snapshot::default();
        let own = self.others.as_ref().map_or(0, |(_, own)| *own);
        self.catalog.borrow().collect_into(lp, own, &mut snap);
        if let Some((shared, own)) = &self.others {
            let g = shared.lock().unwrap_or_else(|p| p.into_inner());
            for (i, s) in g.iter().enumerate() {
                if i != *own {
                    snap.add(s);
                }
            }
        }
        snap
    }
}

impl<S: 'static> Service<S> for MetricsService {
    fn accept(&mut self, _peer: PeerAddr) -> Box<dyn Handler<S>> {
        Box::new(MetricsConn { svc: self.clone() })
    }
}

/// One scrape: a request head in, one reply out, then close.
struct MetricsConn {
    svc: MetricsService,
}

impl<S: 'static> Handler<S> for MetricsConn {
    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_, S>) -> Flow {
        let head = match parse_head(input.bytes(), MAX_HEAD) {
            Ok(None) => return Flow::Continue,
            Err(HeadError::Malformed) => {
                log::debug!("metrics: {}: not an HTTP request; closing", cx.peer());
                return Flow::Close;
            }
            Err(HeadError::TooLarge) => {
                reply(cx, "431 Request Header Fields Too Large", "", "request head too large\n", false);
                return Flow::Close;
            }
            Ok(Some(head)) => head,
        };
        let (method, path, len) = (head.method, head.path, head.len);
        let head_only = method == "HEAD";
        if method != "GET" && method != "HEAD" {
            reply(cx, "405 Method Not Allowed", "Allow: GET, HEAD\r\n", "only GET and HEAD\n", false);
        } else if path != "/metrics" {
            reply(cx, "404 Not Found", "", "not found; try /metrics\n", head_only);
        } else {
            let snap = self.svc.snapshot(cx);
            let mut body = String::with_capacity(8 * 1024);
            render::render(&snap, &mut body);
            reply(cx, "200 OK", "", &body, head_only);
        }
        input.consume(len);
        Flow::Close
    }

    fn on_eof(&mut self, _input: &mut Input<'_>, _cx: &mut Context<'_, S>) -> Flow {
        Flow::Close
    }
}

/// Writes a whole reply; the body is omitted for `HEAD`.
fn reply<S: 'static>(cx: &mut Context<'_, S>, status: &str, extra: &str, body: &str, head_only: bool) {
    let ctype = if status.starts_with("200") { "text/plain; version=0.0.4; charset=utf-8" } else { "text/plain" };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
        body.len()
    );
    let out = cx.out();
    out.extend_from_slice(head.as_bytes());
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
}
