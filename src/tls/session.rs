//! One connection's TLS session: rustls between the socket and the
//! connection's two buffers, so every handler runs unchanged over it.
//!
//! ```text
//!   socket ──read_tls──▶ rustls ──process_new_packets──▶ plaintext ──read──▶ scratch ──▶ handler
//!   socket ◀─write_tls── rustls ◀────────writer().write──────────── OutBuf ◀──────────── handler
//! ```
//!
//! The session is a state machine like the connection's own: the handshake,
//! records split across reads and short writes of ciphertext all resume
//! from where the last pass stopped, because rustls keeps the partial
//! record and the unsent ciphertext, and this module only moves bytes.
//!
//! Invariants:
//! * Plaintext is taken from rustls before more ciphertext is read, so its
//!   received-plaintext buffer (16 KiB) never fills and `read_tls` never
//!   refuses.
//! * rustls holds at most [`SEND_LIMIT`] bytes of unsent ciphertext (plus a
//!   record); the rest of the output waits in the connection's `OutBuf`,
//!   where the high-water mark sees it.
//! * A protocol error ends the connection with `InvalidData` after a best-
//!   effort write of the alert rustls queued; it never reaches the handler
//!   as data.
//! * A peer's TCP EOF without `close_notify` is reported as EOF (many TLS
//!   peers close that way); the services' own framing (lengths, sizes,
//!   digests) is what detects a truncated message.

use std::io::{self, Read, Write};

/// Unsent ciphertext rustls may hold before the connection's own buffer
/// takes the rest of the output.
pub(crate) const SEND_LIMIT: usize = 64 * 1024;

/// Bytes a TLS read or write moved: plaintext for the handler, ciphertext on
/// the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Moved {
    pub(crate) plain: usize,
    pub(crate) wire: usize,
}

#[cfg(feature = "tls")]
mod imp {
    use super::*;
    use std::sync::Arc;

    /// A listener's TLS side: the configuration each accepted connection's
    /// session is made from.
    pub(crate) type ServerSide = Arc<rustls::ServerConfig>;

    /// One connection's TLS session.
    pub(crate) struct Tls {
        conn: rustls::Connection,
        close_notify_queued: bool,
    }

    impl Tls {
        pub(crate) fn server(cfg: &ServerSide) -> io::Result<Tls> {
            let mut conn = rustls::ServerConnection::new(cfg.clone()).map_err(io::Error::other)?;
            conn.set_buffer_limit(Some(SEND_LIMIT));
            Ok(Tls { conn: conn.into(), close_notify_queued: false })
        }

        pub(crate) fn client(
            cfg: Arc<rustls::ClientConfig>,
            name: rustls::pki_types::ServerName<'static>,
        ) -> io::Result<Tls> {
            let mut conn = rustls::ClientConnection::new(cfg, name).map_err(io::Error::other)?;
            conn.set_buffer_limit(Some(SEND_LIMIT));
            Ok(Tls { conn: conn.into(), close_notify_queued: false })
        }

        pub(crate) fn is_handshaking(&self) -> bool {
            self.conn.is_handshaking()
        }

        /// Ciphertext (a handshake message, an alert, records) waits to be
        /// written.
        pub(crate) fn wants_write(&self) -> bool {
            self.conn.wants_write()
        }

        /// Plaintext into `buf`: `Ok(Some(0))` is the peer's EOF (clean or
        /// not), `Ok(None)` means the socket said `WouldBlock` and nothing is
        /// decrypted. `moved.wire` counts the ciphertext read either way.
        pub(crate) fn read<T: Read + Write>(
            &mut self,
            sock: &mut T,
            buf: &mut [u8],
            moved: &mut Moved,
        ) -> io::Result<Option<usize>> {
            loop {
                match self.conn.reader().read(buf) {
                    Ok(n) => {
                        moved.plain += n;
                        return Ok(Some(n));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        let during = if self.conn.is_handshaking() { " during the handshake" } else { "" };
                        log::debug!("TLS peer closed{during} without close_notify");
                        return Ok(Some(0));
                    }
                    Err(e) => return Err(e),
                }
                match self.conn.read_tls(sock) {
                    Ok(n) => moved.wire += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
                // A TCP EOF (read_tls said 0) is processed too: the reader
                // then reports it, after any plaintext still held.
                if let Err(e) = self.conn.process_new_packets() {
                    // Best effort: the alert rustls queued tells the peer why.
                    let _ = self.conn.write_tls(sock);
                    return Err(io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}")));
                }
            }
        }

        /// Moves plaintext from `out` into rustls and ciphertext to the
        /// socket, until the socket says `WouldBlock`, nothing is left, or
        /// `budget` wire bytes were written. Returns whether the budget ran
        /// out with bytes left.
        pub(crate) fn write(
            &mut self,
            sock: &mut dyn Write,
            out: &mut crate::buffer::OutBuf,
            mut budget: usize,
            moved: &mut Moved,
        ) -> io::Result<bool> {
            loop {
                if !out.is_empty() && !self.close_notify_queued {
                    let n = self.conn.writer().write(out.unsent())?;
                    out.advance(n);
                    moved.plain += n;
                }
                if !self.conn.wants_write() {
                    return Ok(false);
                }
                if budget == 0 {
                    return Ok(true);
                }
                match self.conn.write_tls(sock) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        moved.wire += n;
                        budget = budget.saturating_sub(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
        }

        /// Queues `close_notify` once (after all queued output). Returns
        /// true the first time: there is a record to write before the FIN.
        pub(crate) fn close_notify(&mut self) -> bool {
            if std::mem::replace(&mut self.close_notify_queued, true) {
                return false;
            }
            self.conn.send_close_notify();
            true
        }

        /// The certificates the peer presented (a client's, with mutual
        /// TLS), once the handshake has them.
        pub(crate) fn peer_certificates(&self) -> Option<&[rustls::pki_types::CertificateDer<'static>]> {
            self.conn.peer_certificates()
        }

        /// The negotiated protocol version and cipher suite, for logs.
        pub(crate) fn describe(&self) -> String {
            let v = self.conn.protocol_version().map_or_else(|| "?".into(), |v| format!("{v:?}"));
            let s = self.conn.negotiated_cipher_suite().map_or_else(|| "?".into(), |s| format!("{:?}", s.suite()));
            format!("{v}, {s}")
        }
    }
}

#[cfg(not(feature = "tls"))]
mod imp {
    //! Without the `tls` feature nothing can make a session: the types are
    //! uninhabited, so every branch that would use one compiles away.
    use super::*;

    pub(crate) enum ServerSide {}

    pub(crate) enum Tls {}

    impl Tls {
        pub(crate) fn server(cfg: &ServerSide) -> io::Result<Tls> {
            match *cfg {}
        }
        pub(crate) fn is_handshaking(&self) -> bool {
            match *self {}
        }
        pub(crate) fn wants_write(&self) -> bool {
            match *self {}
        }
        pub(crate) fn read<T: Read + Write>(
            &mut self,
            _: &mut T,
            _: &mut [u8],
            _: &mut Moved,
        ) -> io::Result<Option<usize>> {
            match *self {}
        }
        pub(crate) fn write(
            &mut self,
            _: &mut dyn Write,
            _: &mut crate::buffer::OutBuf,
            _: usize,
            _: &mut Moved,
        ) -> io::Result<bool> {
            match *self {}
        }
        pub(crate) fn close_notify(&mut self) -> bool {
            match *self {}
        }
        pub(crate) fn describe(&self) -> String {
            match *self {}
        }
    }
}

pub(crate) use imp::{ServerSide, Tls};
