//! The TLS load client of `benches/tls.sh`, itself a wireloop loop
//! (`Loop::connect_tls`), so every server it measures meets the same client:
//!
//! * `handshakes ADDR CA SECS [C]` — C connections at a time (default 16), each a full handshake
//!   (no resumption), one byte echoed, a clean close; a new one replaces each as it closes. Prints
//!   `handshakes N failed F secs S`.
//! * `bulk ADDR CA SECS [C] [MSG]` — C connections (default 4) each sending MSG-byte messages
//!   (default 64 KiB of lowercase ASCII) and reading each echo back before the next. Prints
//!   `bytes N failed F secs S` (bytes echoed back).
//!
//! ```text
//! cargo bench --bench tls_load -- handshakes 127.0.0.1:8443 ca.pem 10
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wireloop::tls::rustls::client::Resumption;
use wireloop::tls::rustls::ClientConfig;
use wireloop::{tls, CloseReason, Config, Context, EventLoop, Flow, Handler, Input, Loop, SourceId};

struct Run {
    addr: SocketAddr,
    cfg: Arc<ClientConfig>,
    until: Instant,
    bulk: bool,
    msg: Arc<Vec<u8>>,
    done: u64,
    bytes: u64,
    failed: u64,
    open: usize,
}

impl Run {
    fn dial(lp: &mut Loop<Run>) {
        let (addr, cfg, msg, bulk) = {
            let r = lp.state();
            (r.addr, r.cfg.clone(), r.msg.clone(), r.bulk)
        };
        lp.state_mut().open += 1;
        let name = "localhost".try_into().expect("a name");
        lp.connect_tls(addr, name, cfg, Client { bulk, msg, got: 0, finished: false });
    }
}

struct Client {
    bulk: bool,
    msg: Arc<Vec<u8>>,
    got: usize,
    finished: bool,
}

impl Handler<Run> for Client {
    fn on_open(&mut self, cx: &mut Context<'_, Run>) -> Flow {
        if self.bulk {
            cx.out().extend_from_slice(&self.msg);
        } else {
            cx.out().extend_from_slice(b"p");
        }
        Flow::Continue
    }

    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_, Run>) -> Flow {
        let n = input.bytes().len();
        input.consume(n);
        self.got += n;
        if !self.bulk {
            self.finished = true;
            cx.state_mut().done += 1;
            return Flow::Close;
        }
        cx.state_mut().bytes += n as u64;
        if self.got >= self.msg.len() {
            self.got -= self.msg.len();
            if Instant::now() >= cx.state().until {
                self.finished = true;
                return Flow::Close;
            }
            let msg = self.msg.clone();
            cx.out().extend_from_slice(&msg);
        }
        Flow::Continue
    }

    fn on_close(&mut self, _id: SourceId, reason: CloseReason, lp: &mut Loop<Run>) {
        let r = lp.state_mut();
        r.open -= 1;
        if !self.finished {
            r.failed += 1;
            if r.failed <= 3 {
                eprintln!("tls_load: a connection failed: {reason:?}");
            }
        }
        if !r.bulk && Instant::now() < r.until {
            Run::dial(lp);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let usage = || -> ! {
        eprintln!("usage: tls_load handshakes ADDR CA SECS [C] | bulk ADDR CA SECS [C] [MSG]");
        std::process::exit(2)
    };
    if args.len() < 4 {
        usage();
    }
    let bulk = match args[0].as_str() {
        "handshakes" => false,
        "bulk" => true,
        _ => usage(),
    };
    let addr: SocketAddr = args[1].parse().unwrap_or_else(|_| usage());
    let secs: f64 = args[3].parse().unwrap_or_else(|_| usage());
    let conns: usize = args.get(4).map_or(if bulk { 4 } else { 16 }, |c| c.parse().unwrap_or_else(|_| usage()));
    let msg_len: usize = args.get(5).map_or(64 * 1024, |m| m.parse().unwrap_or_else(|_| usage()));
    let roots = tls::load_roots(args[2].as_ref()).unwrap_or_else(|e| {
        eprintln!("tls_load: {e}");
        std::process::exit(2)
    });
    let mut cfg = (*tls::client_config(roots, None).expect("a client configuration")).clone();
    // Every handshake a full one: no session tickets or IDs.
    cfg.resumption = Resumption::disabled();
    let start = Instant::now();
    let run = Run {
        addr,
        cfg: Arc::new(cfg),
        until: start + Duration::from_secs_f64(secs),
        bulk,
        msg: Arc::new((0..msg_len).map(|i| b'a' + (i % 26) as u8).collect()),
        done: 0,
        bytes: 0,
        failed: 0,
        open: 0,
    };
    let mut lp =
        EventLoop::with_state(Config { max_connections: 100_000, ..Config::default() }, run).expect("an event loop");
    for _ in 0..conns {
        Run::dial(&mut lp);
    }
    while lp.state().open > 0 {
        lp.poll_once(Some(Duration::from_millis(50))).expect("poll");
        if start.elapsed() > Duration::from_secs_f64(secs + 10.0) {
            eprintln!("tls_load: {} connections still open 10 s after the end", lp.state().open);
            break;
        }
    }
    let took = start.elapsed().as_secs_f64();
    let r = lp.state();
    if bulk {
        println!("bytes {} failed {} secs {took:.3}", r.bytes, r.failed);
    } else {
        println!("handshakes {} failed {} secs {took:.3}", r.done, r.failed);
    }
}
