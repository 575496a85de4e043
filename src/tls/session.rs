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
//! * Plaintext is taken from rustls before more ciphertext is given to it,
//!   so its received-plaintext buffer (16 KiB) never fills and `read_tls`
//!   never refuses.
//! * Ciphertext is read from the socket in one `read` into the loop's
//!   scratch buffer (rustls alone would read 4 KiB per call) and given to
//!   rustls from there; what rustls cannot take yet waits in `cipher`,
//!   which holds at most one scratch buffer's worth and is freed once empty,
//!   so an idle connection holds none.
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
        /// Ciphertext read but not yet taken by rustls: `cipher[cipher_at..]`.
        cipher: Vec<u8>,
        cipher_at: usize,
        /// This pass read the socket short: it was empty then, and bytes
        /// arriving since raise a new readiness edge.
        short: bool,
        /// The socket's EOF, to tell rustls once `cipher` is used up.
        eof: bool,
    }

    impl Tls {
        pub(crate) fn server(cfg: &ServerSide) -> io::Result<Tls> {
            rustls::ServerConnection::new(cfg.clone()).map(|c| Tls::over(c.into())).map_err(io::Error::other)
        }

        pub(crate) fn client(
            cfg: Arc<rustls::ClientConfig>,
            name: rustls::pki_types::ServerName<'static>,
        ) -> io::Result<Tls> {
            rustls::ClientConnection::new(cfg, name).map(|c| Tls::over(c.into())).map_err(io::Error::other)
        }

        fn over(mut conn: rustls::Connection) -> Tls {
            conn.set_buffer_limit(Some(SEND_LIMIT));
            Tls { conn, close_notify_queued: false, cipher: Vec::new(), cipher_at: 0, short: false, eof: false }
        }

        pub(crate) fn is_handshaking(&self) -> bool {
            self.conn.is_handshaking()
        }

        /// A new pass over the connection: the socket may have bytes again.
        pub(crate) fn new_pass(&mut self) {
            self.short = false;
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
            trust_short: bool,
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
                if self.cipher_at == self.cipher.len() && !self.eof {
                    if trust_short && self.short {
                        // The short-read rule, at the socket: no `read`
                        // that could only say `WouldBlock`.
                        return Ok(None);
                    }
                    // Nothing waiting: read the socket, into `buf` (its
                    // plaintext has been taken), and keep what was read.
                    let n = match sock.read(buf) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    };
                    moved.wire += n;
                    self.eof = n == 0;
                    self.short = n < buf.len();
                    // A piece rustls takes whole is never copied.
                    let taken = self.feed(&buf[..n], sock)?;
                    self.cipher.extend_from_slice(&buf[taken..n]);
                    continue;
                }
                let cipher = std::mem::take(&mut self.cipher);
                let taken = self.feed(&cipher[self.cipher_at..], sock);
                self.cipher = cipher;
                let taken = taken?;
                let left = self.cipher.len() - self.cipher_at;
                if taken == 0 && left > 0 && !self.conn.wants_read() {
                    // rustls takes nothing and has nothing to give: never
                    // spin on it.
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "TLS: records the session cannot take"));
                }
                // An offset, not a shift: what is left moves at most once.
                self.cipher_at += taken;
                if self.cipher_at == self.cipher.len() {
                    self.cipher = Vec::new();
                    self.cipher_at = 0;
                }
            }
        }

        /// Gives rustls ciphertext from `bytes` until it holds a full
        /// buffer of plaintext or `bytes` is used up (an empty `bytes` after
        /// the socket's EOF tells it of the EOF); returns how much it took.
        fn feed<T: Write>(&mut self, bytes: &[u8], sock: &mut T) -> io::Result<usize> {
            let mut rest = bytes;
            loop {
                let n = match self.conn.read_tls(&mut rest) {
                    Ok(n) => n,
                    Err(e) => {
                        // Its plaintext buffer is full: the reader takes
                        // that first. Anything else is the peer's doing.
                        let full = self.conn.process_new_packets().is_ok_and(|s| s.plaintext_bytes_to_read() > 0);
                        if full {
                            return Ok(bytes.len() - rest.len());
                        }
                        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}")));
                    }
                };
                if n == 0 && bytes.is_empty() {
                    self.eof = false; // told
                }
                if let Err(e) = self.conn.process_new_packets() {
                    // Best effort: the alert rustls queued tells the peer why.
                    let _ = self.conn.write_tls(sock);
                    return Err(io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}")));
                }
                if n == 0 || rest.is_empty() {
                    return Ok(bytes.len() - rest.len());
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
            _: bool,
        ) -> io::Result<Option<usize>> {
            match *self {}
        }
        pub(crate) fn new_pass(&mut self) {
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

#[cfg(all(test, feature = "tls"))]
mod tests {
    //! The session against a rustls client, over in-memory pipes: no
    //! sockets, every split of the ciphertext chosen by the test.
    use super::*;
    use std::collections::VecDeque;

    /// One direction of a connection: what one side wrote, read by the
    /// other at most `chunk` bytes at a time; `WouldBlock` when empty.
    #[derive(Default)]
    struct Pipe {
        to_server: VecDeque<u8>,
        to_client: VecDeque<u8>,
        chunk: usize,
    }

    /// The server's view of the pipe.
    struct ServerSock<'a>(&'a mut Pipe);

    impl Read for ServerSock<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.to_server.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.0.chunk).min(self.0.to_server.len());
            for b in buf.iter_mut().take(n) {
                *b = self.0.to_server.pop_front().unwrap();
            }
            Ok(n)
        }
    }

    impl Write for ServerSock<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.to_client.extend(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn pair() -> (Tls, rustls::ClientConnection) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let cert = made.cert.der().clone();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(made.key_pair.serialize_der().into());
        let server = crate::tls::server_config(vec![cert.clone()], key, None).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let client = crate::tls::client_config(roots, None).unwrap();
        let mut client = rustls::ClientConnection::new(client, "localhost".try_into().unwrap()).unwrap();
        client.set_buffer_limit(None);
        (Tls::server(&server).unwrap(), client)
    }

    /// Runs the client's bytes through the server session until `want`
    /// plaintext bytes came out, with reads of `chunk` ciphertext bytes and
    /// a `scratch`-byte buffer.
    fn deliver(message: &[u8], chunk: usize, scratch: usize) -> Vec<u8> {
        let (mut server, mut client) = pair();
        let mut pipe = Pipe { chunk, ..Pipe::default() };
        client.writer().write_all(message).unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; scratch];
        for _ in 0..1_000_000 {
            while client.wants_write() {
                let mut out = Vec::new();
                client.write_tls(&mut out).unwrap();
                pipe.to_server.extend(out);
            }
            let mut moved = Moved::default();
            server.new_pass();
            match server.read(&mut ServerSock(&mut pipe), &mut buf, &mut moved, true).unwrap() {
                Some(0) => panic!("EOF"),
                Some(n) => got.extend_from_slice(&buf[..n]),
                None => {}
            }
            let mut out = crate::buffer::OutBuf::default();
            server.write(&mut ServerSock(&mut pipe), &mut out, usize::MAX, &mut moved).unwrap();
            if !pipe.to_client.is_empty() {
                let bytes: Vec<u8> = pipe.to_client.drain(..).collect();
                client.read_tls(&mut &bytes[..]).unwrap();
                client.process_new_packets().unwrap();
            }
            if got.len() >= message.len() {
                return got;
            }
        }
        panic!("stalled after {} of {} bytes", got.len(), message.len());
    }

    #[test]
    fn every_byte_arrives_in_order_whatever_the_ciphertext_reads_and_plaintext_buffer() {
        let message: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        // One huge read (ciphertext left over for rustls to take later), one
        // byte at a time, and sizes that cut records anywhere.
        for (chunk, scratch) in [(1 << 20, 64 * 1024), (1, 64 * 1024), (4_999, 64 * 1024), (70_000, 1_000)] {
            let got = deliver(&message, chunk, scratch);
            assert!(got == message, "chunk {chunk}, scratch {scratch}: {} bytes differ", got.len());
        }
    }
}
