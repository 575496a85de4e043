//! The loop's TLS operations (the `tls` feature): serve a listener over
//! TLS, connect with TLS, and ask a connection what its peer proved. The
//! session itself lives in `crate::tls`; the connection drives it
//! (`conn.rs`).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};

use super::handler::{CloseReason, Handler, Service};
use super::ops::{Loop, SendError, Source};
use super::Bound;
use crate::id::SourceId;
use crate::tls::Tls;

impl<S: 'static> Loop<S> {
    /// Binds a TCP listener as [`Loop::listen`] does, and serves every
    /// connection it accepts over TLS with `config`.
    pub fn listen_tls(
        &mut self,
        addr: SocketAddr,
        config: Arc<rustls::ServerConfig>,
        service: impl Service<S> + 'static,
    ) -> io::Result<Bound> {
        let bound = self.listen(addr, service)?;
        self.set_tls(bound.id, config)?;
        Ok(bound)
    }

    /// Serves listener `id` (TCP or Unix) over TLS from now on: each
    /// connection it accepts gets a session from `config`. Connections
    /// already accepted are unchanged. An error if `id` is not a listener.
    pub fn set_tls(&mut self, id: SourceId, config: Arc<rustls::ServerConfig>) -> io::Result<()> {
        match self.get_mut(id) {
            Some(Source::Listener(l)) => {
                l.tls = Some(config);
                Ok(())
            }
            _ => Err(io::Error::new(io::ErrorKind::InvalidInput, format!("source {id} is not a listener"))),
        }
    }

    /// Connects to `addr` as [`Loop::connect`] does, then runs TLS over the
    /// connection, verifying the server's certificate for `name` with
    /// `config`. The handler's `on_open` comes when TCP connects; output it
    /// queues waits in rustls until the handshake is done. A failed
    /// handshake reaches `on_close` like any other error.
    pub fn connect_tls(
        &mut self,
        addr: SocketAddr,
        name: ServerName<'static>,
        config: Arc<rustls::ClientConfig>,
        handler: impl Handler<S> + 'static,
    ) -> SourceId {
        let id = self.connect(addr, handler);
        let session = Tls::client(config, name);
        if let Ok(conn) = self.conn_mut(id) {
            match session {
                Ok(tls) => conn.set_tls(tls),
                Err(e) => {
                    conn.close_with(CloseReason::ConnectFailed(e));
                    self.mark_dirty(id);
                }
            }
        }
        id
    }

    /// Whether connection `id` runs over TLS.
    pub fn is_tls(&self, id: SourceId) -> Result<bool, SendError> {
        self.conn(id).map(|c| c.tls.is_some())
    }

    /// The certificate chain connection `id`'s peer presented and the
    /// handshake verified (leaf first): a client's, on a listener that
    /// requires client certificates. `None` before the handshake, without
    /// TLS, or when the peer presented none.
    pub fn peer_certificates(&self, id: SourceId) -> Option<Vec<CertificateDer<'static>>> {
        let tls = self.conn(id).ok()?.tls.as_ref()?;
        tls.peer_certificates().map(<[_]>::to_vec)
    }
}
