//! Batched UDP system calls (Linux `recvmmsg`/`sendmmsg`): up to
//! [`BATCH`] datagrams per call instead of one. Other systems get the same
//! interface with one `recvfrom`/`sendto` per datagram ([`portable`]).
//!
//! ```text
//!  recvmmsg ─▶ slot 0 [65,536 B] slot 1 [..] … slot 31      (one call, k ≤ 32 datagrams)
//!                 │ service answers each into one reply buffer
//!  sendmmsg ◀─ [reply 0][reply 1]…[reply k-1]                (one call; the unsent rest is queued)
//! ```
//!
//! Invariants:
//! * Each receive slot holds 65,536 bytes, more than the largest IPv4 UDP
//!   payload (65,507), so no datagram is truncated. The slots are one
//!   allocation per loop, touched only as far as datagrams fill them.
//! * Fewer than `BATCH` datagrams from one `recvmmsg` means the socket was
//!   emptied: readiness is edge-triggered, and a later datagram raises a
//!   new edge, so no extra call is made just to see `EAGAIN`. (The portable
//!   loop does make that call: it is how it learns the socket is empty.)
//! * All `unsafe` here builds `msghdr`s that point into buffers owned by
//!   this module, alive for the duration of the call.

use std::io;
#[cfg(target_os = "linux")]
use std::mem::size_of;
use std::mem::zeroed;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

#[cfg(target_os = "linux")]
use socket2::SockAddr;

mod portable;

/// Datagrams per call.
pub(crate) const BATCH: usize = 32;
const SLOT: usize = 65_536;

/// Receive slots, reused across calls.
pub(crate) struct RecvBatch {
    slots: Vec<u8>,
    names: Vec<libc::sockaddr_storage>,
    lens: [usize; BATCH],
    count: usize,
}

/// Replies waiting to be sent, reused across calls.
#[derive(Default)]
pub(crate) struct SendBatch {
    /// Replies laid end to end, and (peer, start, len) for each.
    out: Vec<u8>,
    replies: Vec<(SocketAddr, usize, usize)>,
}

impl RecvBatch {
    pub(crate) fn new() -> Box<RecvBatch> {
        Box::new(RecvBatch {
            slots: vec![0; BATCH * SLOT],
            // SAFETY: sockaddr_storage is plain old data; all zeroes is valid.
            names: vec![unsafe { zeroed() }; BATCH],
            lens: [0; BATCH],
            count: 0,
        })
    }

    /// Datagram `i` of the last `recv`, and its sender (`None` for an
    /// address family other than IPv4/IPv6).
    pub(crate) fn datagram(&self, i: usize) -> (&[u8], Option<SocketAddr>) {
        debug_assert!(i < self.count);
        (&self.slots[i * SLOT..i * SLOT + self.lens[i]], to_socket_addr(&self.names[i]))
    }
}

#[cfg(target_os = "linux")]
impl RecvBatch {
    /// One `recvmmsg`: returns how many datagrams arrived (0 never; an
    /// empty socket is `WouldBlock`).
    pub(crate) fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        // SAFETY: iovec and mmsghdr are plain old data; zeroed is valid.
        let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        // One base pointer per buffer, offsets from it: no reborrow in the
        // loop invalidates a pointer taken earlier.
        let slots = self.slots.as_mut_ptr();
        let names = self.names.as_mut_ptr();
        for i in 0..BATCH {
            // SAFETY: `slots` holds BATCH * SLOT bytes and `names` BATCH
            // entries, so both offsets stay inside their allocations.
            let (slot, name) = unsafe { (slots.add(i * SLOT), names.add(i)) };
            iovs[i] = libc::iovec { iov_base: slot.cast(), iov_len: SLOT };
            hdrs[i].msg_hdr.msg_name = name.cast();
            hdrs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points at an iovec and a name buffer that
        // live until the call returns, with their true sizes.
        let n = unsafe {
            libc::recvmmsg(fd, hdrs.as_mut_ptr(), BATCH as libc::c_uint, libc::MSG_DONTWAIT, std::ptr::null_mut())
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for (len, hdr) in self.lens.iter_mut().zip(&hdrs).take(n) {
            *len = hdr.msg_len as usize;
        }
        self.count = n;
        Ok(n)
    }
}

#[cfg(not(target_os = "linux"))]
impl RecvBatch {
    /// Up to [`BATCH`] `recvfrom` calls (see [`portable`]): returns how many
    /// datagrams arrived (0 never; an empty socket is `WouldBlock`).
    pub(crate) fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.recv_each(fd)
    }
}

impl SendBatch {
    /// Appends a reply to the batch to send.
    pub(crate) fn push_reply(&mut self, peer: SocketAddr, bytes: &[u8]) {
        let start = self.out.len();
        self.out.extend_from_slice(bytes);
        self.replies.push((peer, start, bytes.len()));
    }

    pub(crate) fn replies_len(&self) -> usize {
        self.replies.len()
    }

    /// Reply `i` of the batch.
    pub(crate) fn reply(&self, i: usize) -> (SocketAddr, &[u8]) {
        let (peer, start, len) = self.replies[i];
        (peer, &self.out[start..start + len])
    }

    /// Forgets the replies (after they were sent or queued).
    pub(crate) fn clear_replies(&mut self) {
        self.out.clear();
        self.replies.clear();
    }
}

#[cfg(target_os = "linux")]
impl SendBatch {
    /// One `sendmmsg` of the batched replies from `first` on: returns how
    /// many the kernel took (a prefix). `WouldBlock` means none.
    pub(crate) fn send(&mut self, fd: RawFd, first: usize) -> io::Result<usize> {
        let k = self.replies.len().saturating_sub(first).min(BATCH);
        if k == 0 {
            return Ok(0);
        }
        let names: Vec<SockAddr> = self.replies[first..first + k].iter().map(|(p, _, _)| SockAddr::from(*p)).collect();
        // SAFETY: as in `recv`.
        let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        let out = self.out.as_mut_ptr();
        for i in 0..k {
            let (_, start, len) = self.replies[first + i];
            // SAFETY: `start + len <= self.out.len()` for every reply.
            iovs[i] = libc::iovec { iov_base: unsafe { out.add(start) }.cast(), iov_len: len };
            hdrs[i].msg_hdr.msg_name = names[i].as_ptr() as *mut libc::c_void;
            hdrs[i].msg_hdr.msg_namelen = names[i].len();
            hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: the headers point at iovecs into `self.out` and at the
        // addresses in `names`, all alive until the call returns.
        let n = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), k as libc::c_uint, libc::MSG_DONTWAIT) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

#[cfg(not(target_os = "linux"))]
impl SendBatch {
    /// Up to [`BATCH`] `sendto` calls of the batched replies from `first` on
    /// (see [`portable`]): returns how many the kernel took (a prefix).
    /// `WouldBlock` means none.
    pub(crate) fn send(&mut self, fd: RawFd, first: usize) -> io::Result<usize> {
        self.send_each(fd, first)
    }
}

fn to_socket_addr(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}
