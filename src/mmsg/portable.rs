//! The batch interface without `recvmmsg`/`sendmmsg`: one `recvfrom` or
//! `sendto` per datagram, filling the same slots and returning the same
//! counts, so `udp.rs` cannot tell the difference. Used on every system but
//! Linux; compiled (and tested against the batched calls) on Linux too.
//!
//! * `recv_each` calls `recvfrom` until the socket is empty (`WouldBlock`)
//!   or [`BATCH`] datagrams are in, so "fewer than `BATCH`" still means
//!   "emptied". An error after some datagrams ends the batch with them, as
//!   `recvmmsg` does (which would report the error on the next call; here
//!   it is only logged).
//! * `send_each` calls `sendto` for up to [`BATCH`] replies and returns how
//!   many were taken, a prefix, as `sendmmsg` does: an error on the first
//!   reply is returned, an error on a later one ends the batch, and the
//!   caller's next call meets it on its first reply.

// On Linux only the tests call these.
#![cfg_attr(target_os = "linux", allow(dead_code))]

use std::io;
use std::mem::size_of;
use std::os::fd::RawFd;

use socket2::SockAddr;

use super::{RecvBatch, SendBatch, BATCH, SLOT};

impl RecvBatch {
    /// Receives up to [`BATCH`] datagrams, one `recvfrom` each: returns how
    /// many arrived (0 never; an empty socket is `WouldBlock`).
    pub(super) fn recv_each(&mut self, fd: RawFd) -> io::Result<usize> {
        let mut n = 0;
        while n < BATCH {
            let slot = &mut self.slots[n * SLOT..(n + 1) * SLOT];
            let name: *mut libc::sockaddr_storage = &mut self.names[n];
            let mut name_len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            // SAFETY: the slot and the name buffer are ours and passed with
            // their true sizes; both outlive the call.
            let got = unsafe {
                libc::recvfrom(fd, slot.as_mut_ptr().cast(), slot.len(), libc::MSG_DONTWAIT, name.cast(), &mut name_len)
            };
            if got >= 0 {
                self.lens[n] = got as usize;
                n += 1;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                _ if n == 0 => return Err(e),
                io::ErrorKind::WouldBlock => break,
                _ => {
                    log::debug!("udp: recvfrom failed after {n} datagrams: {e}");
                    break;
                }
            }
        }
        self.count = n;
        Ok(n)
    }
}

impl SendBatch {
    /// Sends the batched replies from `first` on, up to [`BATCH`] of them,
    /// one `sendto` each: returns how many the kernel took (a prefix).
    /// `WouldBlock` means none.
    pub(super) fn send_each(&mut self, fd: RawFd, first: usize) -> io::Result<usize> {
        let k = self.replies_len().saturating_sub(first).min(BATCH);
        let mut sent = 0;
        while sent < k {
            let (peer, bytes) = self.reply(first + sent);
            let name = SockAddr::from(peer);
            // SAFETY: `bytes` and `name` are alive for the call and passed
            // with their true lengths.
            let rc = unsafe {
                libc::sendto(
                    fd,
                    bytes.as_ptr().cast(),
                    bytes.len(),
                    libc::MSG_DONTWAIT,
                    name.as_ptr().cast(),
                    name.len(),
                )
            };
            if rc >= 0 {
                sent += 1;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                _ if sent == 0 => return Err(e),
                _ => break,
            }
        }
        Ok(sent)
    }
}

/// The fallback against the calls `udp.rs` uses on this system (on Linux,
/// `recvmmsg`/`sendmmsg`), over real loopback sockets: the same datagrams,
/// sizes, senders and counts per call.
#[cfg(test)]
mod tests {
    use std::io;
    use std::net::{SocketAddr, UdpSocket};
    use std::os::fd::{AsRawFd, RawFd};

    use crate::mmsg::{RecvBatch, SendBatch, BATCH};

    type Received = Vec<(Vec<u8>, Option<SocketAddr>)>;

    /// Calls `recv` until `WouldBlock`: the count of each call and every
    /// datagram with its sender.
    fn drain(socket: &UdpSocket, recv: fn(&mut RecvBatch, RawFd) -> io::Result<usize>) -> (Vec<usize>, Received) {
        let mut batch = RecvBatch::new();
        let (mut counts, mut got) = (Vec::new(), Vec::new());
        loop {
            match recv(&mut batch, socket.as_raw_fd()) {
                Ok(n) => {
                    counts.push(n);
                    for i in 0..n {
                        let (data, peer) = batch.datagram(i);
                        got.push((data.to_vec(), peer));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return (counts, got),
                Err(e) => panic!("recv: {e}"),
            }
        }
    }

    /// Sends `sizes.len()` datagrams to `to`, alternating between the
    /// `from` sockets, and returns what the receiver should see.
    fn send_all(from: &[UdpSocket], to: SocketAddr, sizes: &[usize]) -> Received {
        let mut want = Vec::new();
        for (i, &size) in sizes.iter().enumerate() {
            let tx = &from[i % from.len()];
            let data: Vec<u8> = (0..size).map(|j| (i * 7 + j) as u8).collect();
            assert_eq!(tx.send_to(&data, to).unwrap(), size);
            want.push((data, Some(tx.local_addr().unwrap())));
        }
        want
    }

    fn recv_matches(ip: &str) {
        let Ok(rx) = UdpSocket::bind((ip, 0)) else {
            eprintln!("no {ip} here; skipped");
            return;
        };
        rx.set_nonblocking(true).unwrap();
        let tx = [UdpSocket::bind((ip, 0)).unwrap(), UdpSocket::bind((ip, 0)).unwrap()];
        let to = rx.local_addr().unwrap();
        // More than one batch of small datagrams (an empty one first), then
        // the largest datagram a slot must hold, whole.
        let small: Vec<usize> = (0..BATCH + 9).map(|i| i * 37 % 1500).collect();
        for (sizes, per_call) in [(&small[..], vec![BATCH, 9]), (&[65_507, 1, 0][..], vec![3])] {
            let want = send_all(&tx, to, sizes);
            let batched = drain(&rx, RecvBatch::recv);
            assert_eq!(send_all(&tx, to, sizes), want);
            let each = drain(&rx, RecvBatch::recv_each);
            assert_eq!(batched, (per_call.clone(), want.clone()), "recv on {ip}");
            assert_eq!(each, (per_call, want), "recv_each on {ip}");
        }
    }

    #[test]
    fn recv_each_gives_what_recv_gives_ipv4() {
        recv_matches("127.0.0.1");
    }

    #[test]
    fn recv_each_gives_what_recv_gives_ipv6() {
        recv_matches("::1");
    }

    /// Sends every reply of `batch` as `udp.rs` does (advancing past what
    /// was taken, skipping a failing first reply): the result of each call.
    fn flush(
        batch: &mut SendBatch,
        socket: &UdpSocket,
        send: fn(&mut SendBatch, RawFd, usize) -> io::Result<usize>,
    ) -> Vec<Result<usize, i32>> {
        let (mut next, mut calls) = (0, Vec::new());
        while next < batch.replies_len() {
            match send(batch, socket.as_raw_fd(), next) {
                Ok(m) => {
                    calls.push(Ok(m));
                    next += m;
                }
                Err(e) => {
                    calls.push(Err(e.raw_os_error().unwrap()));
                    next += 1;
                }
            }
        }
        calls
    }

    #[test]
    fn send_each_sends_what_send_sends() {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.set_nonblocking(true).unwrap();
        let rx = [UdpSocket::bind("127.0.0.1:0").unwrap(), UdpSocket::bind("127.0.0.1:0").unwrap()];
        for r in &rx {
            r.set_nonblocking(true).unwrap();
        }
        // Port 0 cannot be sent to: a failing reply in the middle of the
        // batch (it ends the call) and another right after it (refused).
        let bad: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let fill = |batch: &mut SendBatch| {
            for i in 0..BATCH + 9 {
                let peer = if i == 5 || i == 6 { bad } else { rx[i % 2].local_addr().unwrap() };
                batch.push_reply(peer, &vec![i as u8; i * 37 % 1500]);
            }
        };
        let mut results = Vec::new();
        for send in [SendBatch::send, SendBatch::send_each] {
            let mut batch = SendBatch::default();
            fill(&mut batch);
            let calls = flush(&mut batch, &tx, send);
            let received: Vec<_> = rx.iter().map(|r| drain(r, RecvBatch::recv_each).1).collect();
            let mut want: Vec<Received> = vec![Vec::new(), Vec::new()];
            for i in (0..batch.replies_len()).filter(|&i| i != 5 && i != 6) {
                want[i % 2].push((batch.reply(i).1.to_vec(), Some(tx.local_addr().unwrap())));
            }
            assert_eq!(received, want);
            results.push(calls);
        }
        assert_eq!(results[1], results[0], "per-call results of send_each and send");
        // Linux refuses port 0 with EINVAL: replies 0..5 go, 5 ends the
        // first call, 5 and 6 are refused alone, then the rest in batches.
        #[cfg(target_os = "linux")]
        assert_eq!(results[0], [Ok(5), Err(libc::EINVAL), Err(libc::EINVAL), Ok(BATCH), Ok(2)]);
    }
}
