//! The floor for `benches/compare.sh`: the least a TCP uppercase-echo server can do per request on
//! Linux with readiness I/O, written the way a bare C epoll echo is — raw `epoll_wait`, one `read`
//! into one shared 64 KiB buffer per readable event, ASCII uppercase in place, one `write`. No
//! framework, no timers, no per-connection state besides what a short write leaves behind, no
//! limits: it is a yardstick, not a server (a peer that never reads would make it buffer forever).
//!
//! Level-triggered, so a connection with more queued than one read takes comes back on the next
//! `epoll_wait`; a short write keeps its tail in a per-fd buffer and waits for `EPOLLOUT`.
//!
//! `udp` mode is the UDP floor without batching: one blocking socket, `recv_from`, uppercase,
//! `send_to`, two syscalls per datagram and no readiness API at all.
//!
//! ```text
//! cargo bench --bench peer_floor -- tcp 127.0.0.1:0  # prints `listening ADDR`, serves until killed
//! cargo bench --bench peer_floor -- udp 127.0.0.1:0
//! ```

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{IntoRawFd, RawFd};

const BUF: usize = 64 * 1024;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn ctl(ep: RawFd, op: libc::c_int, fd: RawFd, events: u32) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: fd as u64 };
    // SAFETY: `ev` is a valid epoll_event for the duration of the call.
    cvt(unsafe { libc::epoll_ctl(ep, op, fd, &mut ev) }).map(drop)
}

fn close(fd: RawFd, pending: &mut HashMap<RawFd, Vec<u8>>) {
    pending.remove(&fd);
    // SAFETY: `fd` came from `accept4` and is closed once (closing removes it from the epoll set).
    unsafe { libc::close(fd) };
}

/// Writes `data` to `fd`; returns what the socket did not take. `Err` means the peer is gone.
fn write_some(fd: RawFd, mut data: &[u8]) -> io::Result<Vec<u8>> {
    while !data.is_empty() {
        // SAFETY: `data` is a valid slice for the duration of the call.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => break,
                io::ErrorKind::Interrupted => continue,
                _ => return Err(e),
            }
        }
        data = &data[n as usize..];
    }
    Ok(data.to_vec())
}

fn serve(addr: SocketAddr) -> io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    println!("listening {}", listener.local_addr()?);
    io::stdout().flush()?;
    let lfd = listener.into_raw_fd();
    // SAFETY: plain syscall.
    let ep = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    ctl(ep, libc::EPOLL_CTL_ADD, lfd, libc::EPOLLIN as u32)?;
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut buf = vec![0u8; BUF];
    let mut pending: HashMap<RawFd, Vec<u8>> = HashMap::new();
    let one: libc::c_int = 1;
    loop {
        // SAFETY: `events` has room for `events.len()` entries.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as libc::c_int, -1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for ev in &events[..n as usize] {
            let fd = ev.u64 as RawFd;
            if fd == lfd {
                loop {
                    // SAFETY: null address arguments are allowed.
                    let c =
                        unsafe { libc::accept4(lfd, std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_NONBLOCK) };
                    if c < 0 {
                        break;
                    }
                    // SAFETY: `one` outlives the call; the size matches.
                    unsafe {
                        libc::setsockopt(
                            c,
                            libc::IPPROTO_TCP,
                            libc::TCP_NODELAY,
                            (&one as *const libc::c_int).cast(),
                            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                        )
                    };
                    ctl(ep, libc::EPOLL_CTL_ADD, c, libc::EPOLLIN as u32)?;
                }
                continue;
            }
            if ev.events & libc::EPOLLOUT as u32 != 0 {
                let tail = pending.remove(&fd).unwrap_or_default();
                match write_some(fd, &tail) {
                    Ok(rest) if rest.is_empty() => ctl(ep, libc::EPOLL_CTL_MOD, fd, libc::EPOLLIN as u32)?,
                    Ok(rest) => {
                        pending.insert(fd, rest);
                    }
                    Err(_) => close(fd, &mut pending),
                }
                continue;
            }
            if pending.contains_key(&fd) {
                continue; // still flushing: read again once the tail is out
            }
            // SAFETY: `buf` has room for `buf.len()` bytes.
            let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if r == 0 || (r < 0 && io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock) {
                close(fd, &mut pending);
                continue;
            }
            if r < 0 {
                continue;
            }
            let data = &mut buf[..r as usize];
            data.make_ascii_uppercase();
            match write_some(fd, data) {
                Ok(rest) if rest.is_empty() => {}
                Ok(rest) => {
                    pending.insert(fd, rest);
                    ctl(ep, libc::EPOLL_CTL_MOD, fd, libc::EPOLLOUT as u32)?;
                }
                Err(_) => close(fd, &mut pending),
            }
        }
    }
}

fn serve_udp(addr: SocketAddr) -> io::Result<()> {
    let sock = UdpSocket::bind(addr)?;
    println!("listening {}", sock.local_addr()?);
    io::stdout().flush()?;
    let mut buf = vec![0u8; BUF];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        buf[..n].make_ascii_uppercase();
        let _ = sock.send_to(&buf[..n], peer); // a reply that cannot be sent is dropped
    }
}

fn main() {
    // `cargo bench` appends `--bench`; ignore flags.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let (Some(mode), Some(addr)) = (args.first(), args.get(1).and_then(|a| a.parse::<SocketAddr>().ok())) else {
        eprintln!("usage: peer_floor tcp|udp ADDR");
        std::process::exit(2);
    };
    let result = match mode.as_str() {
        "tcp" => serve(addr),
        "udp" => serve_udp(addr),
        other => {
            eprintln!("peer_floor: unknown mode `{other}`");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("peer_floor: {e}");
        std::process::exit(1);
    }
}
