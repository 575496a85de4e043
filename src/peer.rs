//! The address of a connection's other end, TCP or Unix.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Who is on the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PeerAddr {
    /// A TCP peer.
    Tcp(SocketAddr),
    /// A Unix-domain stream peer: the path it is bound to, if any (clients
    /// usually are not bound, so an accepted connection mostly has `None`).
    Unix(Option<PathBuf>),
}

impl PeerAddr {
    /// The TCP address, if this is a TCP peer.
    pub fn tcp(&self) -> Option<SocketAddr> {
        match self {
            PeerAddr::Tcp(a) => Some(*a),
            PeerAddr::Unix(_) => None,
        }
    }

    /// Whether the peer is on this host: a loopback TCP address, or any
    /// Unix-domain peer.
    pub fn is_local(&self) -> bool {
        match self {
            PeerAddr::Tcp(a) => a.ip().is_loopback(),
            PeerAddr::Unix(_) => true,
        }
    }

    pub(crate) fn from_unix(addr: &std::os::unix::net::SocketAddr) -> Self {
        PeerAddr::Unix(addr.as_pathname().map(|p| p.to_path_buf()))
    }
}

impl From<SocketAddr> for PeerAddr {
    fn from(a: SocketAddr) -> Self {
        PeerAddr::Tcp(a)
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddr::Tcp(a) => write!(f, "{a}"),
            PeerAddr::Unix(Some(p)) => write!(f, "unix:{}", p.display()),
            PeerAddr::Unix(None) => write!(f, "unix:(unnamed)"),
        }
    }
}
