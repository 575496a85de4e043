//! The blocking clients' connection (`wireloop echo`, `send`, `exec`, the
//! files [`Client`](super::files::client::Client)): a TCP stream, or (the `tls`
//! feature) a TLS session over one, behind one type that reads and writes
//! plaintext.
//!
//! A clone ([`ClientStream::try_clone`]) shares the TLS session, so one
//! thread may read replies while another writes requests, as the plain
//! clients do. The session's lock is never held across a blocking socket
//! call:
//!
//! ```text
//!  reader thread: read(socket) ──▶ lock session: read_tls, process, take plaintext ──▶ unlock
//!  writer thread: lock session: encrypt into a Vec, lock writes ──▶ unlock session ──▶ write(socket)
//! ```
//!
//! Ciphertext reaches the socket in the order it was made: whoever takes it
//! out of the session takes the write lock first.
//!
//! The handshake runs to the end in `ClientStream::tls`, so a certificate
//! error is reported at connect, and plaintext written later never waits,
//! unbounded, for a handshake nobody drives.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};

/// A client's connection: plain TCP, or TLS over TCP.
#[derive(Debug)]
pub enum ClientStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    #[cfg(feature = "tls")]
    Tls(tls::TlsStream),
}

impl From<TcpStream> for ClientStream {
    fn from(s: TcpStream) -> Self {
        ClientStream::Plain(s)
    }
}

impl ClientStream {
    /// The TCP stream under it (for addresses, timeouts, `TCP_NODELAY`).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            ClientStream::Plain(s) => s,
            #[cfg(feature = "tls")]
            ClientStream::Tls(t) => &t.sock,
        }
    }

    /// Whether it runs over TLS.
    pub fn is_tls(&self) -> bool {
        !matches!(self, ClientStream::Plain(_))
    }

    /// Another handle to the same connection (and TLS session), for a
    /// second thread.
    pub fn try_clone(&self) -> io::Result<ClientStream> {
        Ok(match self {
            ClientStream::Plain(s) => ClientStream::Plain(s.try_clone()?),
            #[cfg(feature = "tls")]
            ClientStream::Tls(t) => ClientStream::Tls(t.try_clone()?),
        })
    }

    /// Ends our sending side: TLS sends `close_notify` first; then the FIN.
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        #[cfg(feature = "tls")]
        if let ClientStream::Tls(t) = self {
            t.close_notify()?;
        }
        self.tcp().shutdown(Shutdown::Write)
    }

    /// Whether a read would return at once: plaintext (or the end) is
    /// waiting. Never blocks.
    pub fn readable_now(&mut self) -> bool {
        match self {
            ClientStream::Plain(s) => {
                let mut b = [0u8; 1];
                if s.set_nonblocking(true).is_err() {
                    return false;
                }
                let r = s.peek(&mut b);
                let _ = s.set_nonblocking(false);
                r.is_ok()
            }
            #[cfg(feature = "tls")]
            ClientStream::Tls(t) => t.readable_now(),
        }
    }
}

impl Read for ClientStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ClientStream::Plain(s) => s.read(buf),
            #[cfg(feature = "tls")]
            ClientStream::Tls(t) => t.read(buf),
        }
    }
}

impl Write for ClientStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ClientStream::Plain(s) => s.write(buf),
            #[cfg(feature = "tls")]
            ClientStream::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            ClientStream::Plain(s) => s.flush(),
            #[cfg(feature = "tls")]
            ClientStream::Tls(_) => Ok(()),
        }
    }
}

#[cfg(feature = "tls")]
impl ClientStream {
    /// Runs a TLS handshake over `sock` as a client of `name`, verified by
    /// `config`, and returns the stream once it is done.
    pub fn tls(
        sock: TcpStream,
        config: std::sync::Arc<rustls::ClientConfig>,
        name: rustls::pki_types::ServerName<'static>,
    ) -> io::Result<ClientStream> {
        tls::TlsStream::connect(sock, config, name).map(ClientStream::Tls)
    }
}

#[cfg(feature = "tls")]
mod tls {
    use std::io::{self, Read, Write};
    use std::net::TcpStream;
    use std::sync::{Arc, Mutex, MutexGuard};

    use rustls::ClientConnection;

    /// Plaintext taken into the session per write call.
    const WRITE_CHUNK: usize = 64 * 1024;
    /// Ciphertext read per socket read: its plaintext always fits the
    /// session's 16 KiB received-plaintext buffer.
    const READ_CHUNK: usize = 8 * 1024;

    /// The session and the ciphertext read from the socket but not yet
    /// given to it (rustls takes more only once its plaintext is read).
    struct Session {
        conn: ClientConnection,
        cipher: Vec<u8>,
        /// The socket said EOF; rustls is told once `cipher` is used up.
        eof: bool,
    }

    impl Session {
        /// Gives rustls the next piece of ciphertext (or the EOF) and
        /// decrypts it. False if there was nothing to give.
        fn pump(&mut self) -> io::Result<bool> {
            if self.cipher.is_empty() && !self.eof {
                return Ok(false);
            }
            let n = self.conn.read_tls(&mut &self.cipher[..])?;
            self.cipher.drain(..n);
            if n == 0 {
                self.eof = false; // told
            }
            self.conn.process_new_packets().map_err(tls_error)?;
            Ok(true)
        }
    }

    struct Shared {
        session: Mutex<Session>,
        /// Held while ciphertext taken out of the session is written.
        writes: Mutex<TcpStream>,
    }

    /// A TLS client session over a blocking TCP stream; see the module
    /// documentation.
    pub struct TlsStream {
        shared: Arc<Shared>,
        pub(super) sock: TcpStream,
    }

    impl std::fmt::Debug for TlsStream {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("TlsStream").field("sock", &self.sock).finish_non_exhaustive()
        }
    }

    fn tls_error(e: rustls::Error) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}"))
    }

    impl TlsStream {
        pub(super) fn connect(
            mut sock: TcpStream,
            config: Arc<rustls::ClientConfig>,
            name: rustls::pki_types::ServerName<'static>,
        ) -> io::Result<TlsStream> {
            let mut conn = ClientConnection::new(config, name).map_err(tls_error)?;
            conn.set_buffer_limit(None);
            while conn.is_handshaking() {
                if let Err(e) = conn.complete_io(&mut sock) {
                    // rustls wraps its own errors; say what failed.
                    let text = e.get_ref().map_or_else(|| e.to_string(), |i| i.to_string());
                    let eof = e.kind() == io::ErrorKind::UnexpectedEof;
                    let why = if eof { "the server closed during the TLS handshake".to_string() } else { text };
                    return Err(io::Error::new(e.kind(), format!("TLS: {why}")));
                }
            }
            let writes = Mutex::new(sock.try_clone()?);
            let session = Mutex::new(Session { conn, cipher: Vec::new(), eof: false });
            Ok(TlsStream { shared: Arc::new(Shared { session, writes }), sock })
        }

        pub(super) fn try_clone(&self) -> io::Result<TlsStream> {
            Ok(TlsStream { shared: self.shared.clone(), sock: self.sock.try_clone()? })
        }

        fn session(&self) -> MutexGuard<'_, Session> {
            self.shared.session.lock().unwrap_or_else(|p| p.into_inner())
        }

        /// Takes the session's ciphertext out and writes it, holding the
        /// write lock but not the session's while the socket blocks.
        fn flush_session(&self, mut session: MutexGuard<'_, Session>) -> io::Result<()> {
            if !session.conn.wants_write() {
                return Ok(());
            }
            let mut writes = self.shared.writes.lock().unwrap_or_else(|p| p.into_inner());
            let mut records = Vec::new();
            while session.conn.wants_write() {
                session.conn.write_tls(&mut records)?;
            }
            drop(session);
            writes.write_all(&records)
        }

        /// Plaintext waiting, or what the session says instead (`WouldBlock`:
        /// it needs more ciphertext).
        fn take_plain(s: &mut Session, buf: &mut [u8]) -> io::Result<usize> {
            loop {
                match s.conn.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    // The server closed without close_notify: the end, as
                    // for plain TCP; the protocols' own lengths catch a cut.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if !s.pump()? {
                            return Err(e);
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
        }

        pub(super) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let mut cipher = [0u8; READ_CHUNK];
            loop {
                let mut s = self.session();
                let got = Self::take_plain(&mut s, buf);
                // Whatever the session must answer (an alert on error too).
                self.flush_session(s)?;
                match got {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    other => return other,
                }
                let n = match (&self.sock).read(&mut cipher) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                let mut s = self.session();
                s.cipher.extend_from_slice(&cipher[..n]);
                s.eof |= n == 0;
            }
        }

        pub(super) fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut s = self.session();
            let n = s.conn.writer().write(&buf[..buf.len().min(WRITE_CHUNK)])?;
            self.flush_session(s)?;
            Ok(n)
        }

        pub(super) fn close_notify(&mut self) -> io::Result<()> {
            let mut s = self.session();
            s.conn.send_close_notify();
            self.flush_session(s)
        }

        pub(super) fn readable_now(&mut self) -> bool {
            if self.sock.set_nonblocking(true).is_err() {
                return false;
            }
            let mut cipher = [0u8; READ_CHUNK];
            let ready = loop {
                let mut s = self.session();
                let waiting = loop {
                    match s.conn.process_new_packets() {
                        Ok(st) if st.plaintext_bytes_to_read() == 0 && !st.peer_has_closed() => match s.pump() {
                            Ok(true) => continue,
                            Ok(false) => break false,
                            Err(_) => break true,
                        },
                        // Plaintext, the end, or an error: a read returns at once.
                        Ok(_) | Err(_) => break true,
                    }
                };
                if waiting {
                    break true;
                }
                match (&self.sock).read(&mut cipher) {
                    Ok(n) => {
                        s.cipher.extend_from_slice(&cipher[..n]);
                        s.eof |= n == 0;
                        if n == 0 {
                            break true;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break false,
                }
            };
            let _ = self.sock.set_nonblocking(false);
            ready
        }
    }
}
