//! TLS on the loop (the `tls` feature): any TCP or Unix stream connection,
//! accepted or outbound, can run over a rustls session, and its handler
//! never knows — it reads and writes plaintext as before.
//!
//! ```text
//!  listener ──accept──▶ Conn ─┬─ Stream (socket: ciphertext)
//!  (Loop::listen_tls,         ├─ Tls (rustls: handshake, records, close_notify)
//!   Loop::set_tls)            ├─ InBuf / OutBuf (plaintext)
//!                             └─ Handler (unchanged)
//! ```
//!
//! What applies unchanged over TLS: backpressure (the high-water mark sees
//! the plaintext not yet handed to rustls; rustls holds at most 64 KiB of
//! ciphertext), deadlines (the handshake counts as receiving a message, so
//! a slow handshake meets the message deadline), lingering close, the
//! connection and descriptor caps. A graceful close sends `close_notify`
//! before the FIN. A handshake or record error closes that connection only,
//! with a log line at info level (rate-limited).
//!
//! This module also builds the rustls configurations from PEM files
//! (`server_config`, `client_config`); `rustls` is re-exported so an
//! embedder uses the same version. The crypto provider is `ring`.
#![cfg_attr(not(feature = "tls"), allow(dead_code))]

mod session;

pub(crate) use session::{Moved, ServerSide, Tls};

#[cfg(feature = "tls")]
mod config;
#[cfg(feature = "tls")]
pub use config::{client_config, load_certs, load_private_key, load_roots, server_config, ClientAuth};
#[cfg(feature = "tls")]
pub use rustls;
