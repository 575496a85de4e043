//! # wireloop
//!
//! Event-driven socket programs on one thread, one `mio::Poll` and a slab of
//! connection state machines — no async runtime. Servers, clients and
//! proxies: the loop accepts and connects (TCP and Unix sockets), serves
//! UDP, runs child processes, fires timers and watches any other fd.
//!
//! Follow one byte from the socket to a handler and back:
//!
//! 1. [`EventLoop::poll_once`] gets a readiness event; its token names a
//!    source's slot and serial.
//! 2. A connection reads into the loop's scratch buffer and hands everything
//!    unconsumed to its [`Handler`] as an [`Input`].
//! 3. The handler parses with a pure codec ([`codec`]), appends its reply to
//!    [`Context::out`] — or to any other connection with [`Loop::send`] —
//!    and returns a [`Flow`].
//! 4. The loop writes the replies at once, registering `WRITABLE` only if
//!    bytes remain, and stops reading while too much output is queued; a
//!    handler stops taking requests then too ([`Context::over_high_water`]),
//!    and gets the rest once the output has drained.
//!
//! Any stream connection, accepted or outbound, may run over TLS (the `tls`
//! feature: `Loop::listen_tls`, `Loop::connect_tls`): a rustls session
//! sits between the socket and the two buffers, and the handler still reads
//! and writes plaintext.
//!
//! Every callback gets the loop, and through it the program's shared state
//! `S` ([`EventLoop::with_state`], [`Loop::state_mut`]): handlers share
//! state without `Rc<RefCell<…>>`.
//!
//! Layers, each using only those before it: [`codec`] (pure, no I/O); the
//! loop's parts (buffers, deadlines, the timer heap, child processes,
//! sockets); the loop with its callback API ([`EventLoop`], [`Loop`],
//! [`Handler`], [`Service`], [`Context`]); [`services`]; the `wireloop`
//! command (its own crate root, `src/main.rs`, behind the `cli` feature).
//!
//! ```no_run
//! use wireloop::{Config, EventLoop, services};
//! let mut lp = EventLoop::new(Config::default())?;
//! let tcp = lp.listen("127.0.0.1:0".parse().unwrap(), services::echo::service())?;
//! let rate = wireloop::ratelimit::RateConfig::default();
//! let udp = lp.bind_udp("127.0.0.1:0".parse().unwrap(), services::udp_echo::service(rate))?;
//! println!("echo on {} and {}", tcp.addr, udp.addr);
//! lp.run(std::time::Duration::from_secs(3))?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Watch it happen: run a program on the loop with `RUST_LOG=wireloop=trace`
//! (every readiness event, read, write and state change, naming its
//! connection), and `WIRELOOP_TRACE_BYTES=64` to add the first 64 bytes of
//! each read and write. `docs/nonblocking.md` explains each line. The loop's
//! private modules (the connection state machine, the UDP batches, the
//! trace's pieces) have their own docs: `cargo doc --document-private-items`.
//!
//! Linux-first: see the README's "Platforms" section for what is Linux-only.
#![deny(missing_docs)]

#[doc(hidden)]
pub mod bench_support;
mod buffer;
mod child;
pub mod codec;
mod config;
mod deadline;
mod event_loop;
mod id;
pub mod listener;
pub mod logline;
mod mmsg;
mod peer;
pub mod ratelimit;
pub mod services;
mod stream;
mod timer;
pub mod tls;
mod tracefmt;

pub use buffer::OutBuf;
pub use child::{ChildId, ChildStream};
pub use config::Config;
pub use deadline::Activity;
pub use event_loop::handler::{CloseReason, DatagramService, Flow, Handler, Input, Reply, Service, Timeout};
pub use event_loop::{
    Bound, Context, EventLoop, Handle, ListenerStats, Loop, PassStats, Readiness, Receipt, SendError, Sent, Stats,
    UdpStats, CLOSE_SLICE, PASS_BUCKETS_US, PENDING_SLICE,
};
pub use id::{SourceId, TimerId};
pub use mio::Interest;
pub use peer::PeerAddr;

/// The README's code, compiled as a doctest so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
