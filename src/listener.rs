//! Socket creation with `socket2`: the options that must be set *before*
//! `bind` live here, and nowhere else.
//!
//! * TCP listeners get `SO_REUSEADDR` before `bind`, so a restarted server
//!   rebinds its port at once even while old connections sit in `TIME_WAIT`
//!   (the tutorial's first chapter). The backlog is the caller's.
//! * UDP sockets do *not* get `SO_REUSEADDR`: on Linux it would let a second
//!   process bind the same port and silently take half the datagrams.
//! * With `reuse_port`, both get `SO_REUSEPORT` too, so that several loops
//!   (`wireloop serve --workers N`) can each bind the same address and let
//!   the kernel spread connections (and UDP flows) across them.
//! * Everything is non-blocking from the start, then handed to mio.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Binds a non-blocking TCP listener with `SO_REUSEADDR` set before `bind`.
pub fn bind_tcp(addr: SocketAddr, backlog: u32) -> io::Result<mio::net::TcpListener> {
    bind_tcp_with(addr, backlog, false)
}

/// Binds a non-blocking TCP listener with `SO_REUSEADDR`, and
/// `SO_REUSEPORT` when `reuse_port` is set.
pub fn bind_tcp_with(addr: SocketAddr, backlog: u32, reuse_port: bool) -> io::Result<mio::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    socket.listen(backlog)?;
    Ok(mio::net::TcpListener::from_std(socket.into()))
}

/// Binds a non-blocking UDP socket.
pub fn bind_udp(addr: SocketAddr) -> io::Result<mio::net::UdpSocket> {
    bind_udp_with(addr, false)
}

/// Binds a non-blocking UDP socket, with `SO_REUSEPORT` when `reuse_port`
/// is set (the kernel then keeps each peer's datagrams on one socket).
pub fn bind_udp_with(addr: SocketAddr, reuse_port: bool) -> io::Result<mio::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(mio::net::UdpSocket::from_std(socket.into()))
}
