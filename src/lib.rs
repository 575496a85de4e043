//! # wireloop
//!
//! Event-driven socket servers on one thread, one `mio::Poll` and a slab of
//! connection state machines — no async runtime.
//!
//! Follow one byte from the socket to a service and back:
//!
//! 1. [`EventLoop::poll_once`] gets a readiness event; its token is the slab
//!    key of a source (`event_loop`).
//! 2. A connection reads into the loop's scratch buffer and hands everything
//!    unconsumed to its [`Handler`] as an [`Input`] (`conn`).
//! 3. The handler parses with a pure codec ([`codec`]), appends its reply to
//!    [`Context::out`] and returns a [`Flow`].
//! 4. The connection writes the reply at once, registering `WRITABLE` only if
//!    bytes remain, and stops reading while too much output is queued.
//!
//! Layers, each using only those above it in this list: [`codec`] (pure),
//! the loop ([`EventLoop`], [`Config`], [`listener`]), the service API
//! ([`Service`], [`Handler`], [`DatagramService`]), and [`services`].
//!
//! ```no_run
//! use wireloop::{Config, EventLoop, services};
//! let mut lp = EventLoop::new(Config::default())?;
//! let tcp = lp.listen("127.0.0.1:0".parse().unwrap(), services::echo::service())?;
//! let udp = lp.bind_udp("127.0.0.1:0".parse().unwrap(), services::udp_echo::answer)?;
//! println!("echo on {} and {}", tcp.addr, udp.addr);
//! lp.run(std::time::Duration::from_secs(3))?;
//! # Ok::<(), std::io::Error>(())
//! ```
#![deny(missing_docs)]

mod buffer;
mod child;
pub mod codec;
mod config;
mod conn;
mod deadline;
mod event_loop;
mod handle;
pub mod listener;
mod mmsg;
pub mod ratelimit;
mod service;
pub mod services;
mod timer;
mod udp;

pub use buffer::OutBuf;
pub use child::{ChildId, ChildStream};
pub use config::Config;
pub use deadline::Activity;
pub use event_loop::{Bound, EventLoop, SourceId, Stats};
pub use handle::Handle;
pub use mio::Token;
pub use service::{Context, DatagramService, Flow, Handler, Input, Reply, Service, TimerRequest};
pub use udp::UdpStats;
