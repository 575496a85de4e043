//! Server addresses as clients take them, the way `nc` and `ssh` do:
//! `HOST:PORT` (a name is resolved, every address it has is kept),
//! `[v6]:PORT`, `IP:PORT`, a bare `PORT` (loopback), and for clients with a
//! well-known port (`sntp`) a bare `HOST`.
//!
//! Invariant: a [`Peer`] holds at least one address. Parsing does no I/O but
//! the name lookup, and only for text shaped like a host name.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, ToSocketAddrs};

/// A server a client talks to: the text the user gave and its addresses.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    text: String,
    addrs: Vec<SocketAddr>,
}

impl Peer {
    /// A loopback peer on `port` (the clients' defaults).
    pub(crate) fn loopback(port: u16) -> Peer {
        let a = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        Peer { text: a.to_string(), addrs: vec![a] }
    }

    /// Connects over TCP, trying each address in turn as `nc` does; the
    /// error names what the user wrote and the last address's failure.
    pub(crate) fn tcp(&self) -> Result<TcpStream, String> {
        TcpStream::connect(&self.addrs[..]).map_err(|e| format!("cannot connect to {}: {e}", self.text))
    }

    /// The address a UDP client sends to: the first one the name has.
    pub(crate) fn udp(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// The host as the user gave it (a name or an address, without the
    /// port): what a TLS certificate is checked against.
    pub(crate) fn host(&self) -> String {
        let t = self.text.as_str();
        if t.parse::<u16>().is_ok() {
            return self.addrs[0].ip().to_string();
        }
        if let Ok(a) = t.parse::<SocketAddr>() {
            return a.ip().to_string();
        }
        let host = match t.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() && !h.is_empty() => h,
            _ => t,
        };
        host.trim_start_matches('[').trim_end_matches(']').to_string()
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// `HOST:PORT`, `[v6]:PORT`, `IP:PORT` or a bare port (on 127.0.0.1).
pub(crate) fn peer(s: &str) -> Result<Peer, String> {
    parse(s, None)
}

/// As [`peer`], and a bare `HOST` (name, IPv4 or IPv6) means port `port`.
pub(crate) fn peer_or_host(s: &str, port: u16) -> Result<Peer, String> {
    parse(s, Some(port))
}

fn parse(s: &str, default_port: Option<u16>) -> Result<Peer, String> {
    let text = s.to_string();
    let one = |a: SocketAddr| Ok(Peer { text: text.clone(), addrs: vec![a] });
    if let Ok(port) = s.parse::<u16>() {
        return one(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return one(a);
    }
    if let Some(port) = default_port {
        let bare = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(s);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return one(SocketAddr::new(ip, port));
        }
        if host_name(s) {
            return resolve(s, port, text);
        }
    }
    let shape = if default_port.is_some() { "HOST, HOST:PORT" } else { "HOST:PORT" };
    let bad =
        || format!("`{s}` is not an address like 127.0.0.1:8080, localhost:8080, [::1]:8080 ({shape} or a bare port)");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port = port.parse::<u16>().map_err(|_| bad())?;
    if !host_name(host) {
        return Err(bad());
    }
    resolve(host, port, text)
}

/// Letters, digits, `-`, `_` and `.`: the shape of a DNS name (checked before
/// any lookup, so a message word is never sent to the resolver by mistake).
fn host_name(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.bytes().any(|b| b.is_ascii_alphabetic())
        && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn resolve(host: &str, port: u16, text: String) -> Result<Peer, String> {
    let addrs: Vec<SocketAddr> =
        (host, port).to_socket_addrs().map_err(|e| format!("cannot resolve `{host}`: {e}"))?.collect();
    if addrs.is_empty() {
        return Err(format!("`{host}` has no address"));
    }
    Ok(Peer { text, addrs })
}

#[cfg(test)]
mod tests {
    use super::{peer, peer_or_host};
    use std::net::SocketAddr;

    fn first(s: &str) -> SocketAddr {
        peer(s).unwrap().udp()
    }

    #[test]
    fn the_shapes_clients_take() {
        assert_eq!(first("8080"), "127.0.0.1:8080".parse().unwrap());
        assert_eq!(first("10.0.0.1:9"), "10.0.0.1:9".parse().unwrap());
        assert_eq!(first("[::1]:9"), "[::1]:9".parse().unwrap());
        assert!(peer("localhost:8080").unwrap().addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 8080));
        assert_eq!(peer_or_host("127.0.0.1", 123).unwrap().udp(), "127.0.0.1:123".parse().unwrap());
        assert_eq!(peer_or_host("::1", 123).unwrap().udp(), "[::1]:123".parse().unwrap());
        assert_eq!(peer_or_host("localhost", 123).unwrap().udp().port(), 123);
        assert_eq!(peer_or_host("localhost:9", 123).unwrap().udp().port(), 9);
    }

    #[test]
    fn what_is_not_an_address_is_refused_without_a_lookup() {
        for s in ["localhost", "127.0.0.1", "hello world:80", "%H:%M", "host:99999", ":80", "::1:80", ""] {
            assert!(peer(s).is_err(), "{s}");
        }
        assert!(peer_or_host("%Y", 123).is_err());
    }

    #[test]
    fn tcp_tries_each_address_in_turn() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = closed.local_addr().unwrap();
        drop(closed);
        let live = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = super::Peer { text: "two".into(), addrs: vec![dead, live.local_addr().unwrap()] };
        assert_eq!(p.tcp().unwrap().peer_addr().unwrap(), live.local_addr().unwrap());
        let p = super::Peer { text: "one".into(), addrs: vec![dead] };
        assert!(p.tcp().unwrap_err().starts_with("cannot connect to one: "));
    }
}
