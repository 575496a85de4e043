//! The tutorial's first chapter: why a restarted server fails with "address
//! in use", and how `SO_REUSEADDR` fixes it.
//!
//! 1. A server binds a port, accepts one client and closes the connection
//!    first. The side that closes first keeps the connection in `TIME_WAIT`
//!    (for 60 s on Linux).
//! 2. The server's listener closes, as when the process stops.
//! 3. Rebinding that port *without* `SO_REUSEADDR` fails with `EADDRINUSE`.
//! 4. Rebinding it *with* `SO_REUSEADDR` set before `bind` — what
//!    `wireloop::listener::bind_tcp` does for every listener — succeeds.
//!
//! On Linux the option must be on both sides of the restart: the old
//! connection in `TIME_WAIT` inherited it from the old listener, and the new
//! socket asks for it. A server that never sets it blocks even a new one that
//! does, until its `TIME_WAIT`s expire. So the first server here sets it too,
//! as every wireloop listener does.
//!
//! ```text
//! cargo run --example reuseaddr
//! ```

use std::io::Read;
use std::net::{SocketAddr, TcpStream};

use socket2::{Domain, Protocol, Socket, Type};

/// A listener, with or without `SO_REUSEADDR`.
fn bind(addr: SocketAddr, reuse: bool) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(reuse)?;
    s.bind(&addr.into())?;
    s.listen(5)?;
    Ok(s)
}

fn main() -> std::io::Result<()> {
    let listener = bind("127.0.0.1:0".parse().unwrap(), true)?;
    let addr = listener.local_addr()?.as_socket().expect("an IP address");
    println!("bound {addr}");

    let mut client = TcpStream::connect(addr)?;
    let (conn, _) = listener.accept()?;
    drop(conn); // the server closes first: its side goes to TIME_WAIT
    let mut sink = Vec::new();
    client.read_to_end(&mut sink)?; // sees the server's FIN
    drop(client);
    drop(listener); // the server process "stops"
    std::thread::sleep(std::time::Duration::from_millis(50)); // let the FIN exchange finish
    println!("server closed its connection first (TIME_WAIT) and stopped");

    match bind(addr, false) {
        Ok(_) => println!("rebind without SO_REUSEADDR: ok (no TIME_WAIT left?)"),
        Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => {
            println!("rebind without SO_REUSEADDR: EADDRINUSE ({e})")
        }
        Err(e) => println!("rebind without SO_REUSEADDR: {e}"),
    }
    match wireloop::listener::bind_tcp(addr, 5) {
        Ok(l) => println!("rebind with SO_REUSEADDR: ok, listening on {}", l.local_addr()?),
        Err(e) => println!("rebind with SO_REUSEADDR: {e}"),
    }
    Ok(())
}
