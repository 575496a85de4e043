//! Accepting: a listener's pending connections become `Conn`s, until
//! `WouldBlock`, the batch budget, or descriptor exhaustion (then accepting
//! pauses on a timer, nginx's way). A connection over `max_connections`,
//! or whose service's descriptors would pass `max_descriptors`, hears the
//! service's refusal and is closed at once; the loop writes no protocol
//! bytes of its own.

use std::io::{self, Write};
use std::time::Instant;

use log::{debug, trace, warn};

use super::conn::Conn;
use super::ops::{Loop, Source};
use crate::id::SourceId;
use crate::tls::Tls;

impl<S: 'static> Loop<S> {
    /// Accepts until `WouldBlock`, the batch budget, or descriptor exhaustion.
    pub(crate) fn accept(&mut self, lid: SourceId) -> bool {
        let (retry, max, nodelay) = (self.cfg.accept_retry, self.cfg.max_connections, self.cfg.nodelay);
        for _ in 0..self.cfg.batch_budget {
            let (conns, fds_held, max_fds) = (self.conns, self.fds_held, self.cfg.max_descriptors);
            let Some(Source::Listener(l)) = self.get_mut(lid) else { return false };
            if l.paused {
                return false;
            }
            let (mut stream, peer) = match l.listener.accept() {
                Ok(pair) => pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_resource_exhaustion(&e) => {
                    // Stop accepting and retry on a timer (nginx's approach):
                    // neither a busy loop nor a stall.
                    warn!("listener {lid}: accept failed ({e}); retrying in {retry:?}");
                    l.paused = true;
                    self.stats.accept_pauses += 1;
                    let at = crate::timer::later(Instant::now(), retry);
                    self.timers.schedule(at, crate::timer::TimerKind::AcceptRetry, lid.key, lid.serial);
                    return false;
                }
                Err(e) => {
                    debug!("listener {lid}: accept error {e}");
                    continue;
                }
            };
            let fds = l.service.descriptors();
            if conns >= max || fds_held.saturating_add(fds) > max_fds {
                // The service says what a refused peer gets (by default
                // nothing): the loop writes no protocol bytes of its own.
                let mut reply = Vec::new();
                l.service.refuse(&peer, &mut reply);
                if !reply.is_empty() {
                    // Best effort: the socket is new, so its buffer has room.
                    let _ = stream.write(&reply);
                }
                l.stats.refused = l.stats.refused.saturating_add(1);
                let name = l.label.as_deref().map_or_else(|| format!("listener {lid}"), str::to_string);
                self.stats.refused += 1;
                crate::info_limited!(
                    "{name}: refused {peer}: {conns} connections open, holding {fds_held} descriptors (the limits: \
                     {max} connections, {max_fds} descriptors)"
                );
                continue;
            }
            l.stats.accepted = l.stats.accepted.saturating_add(1);
            l.stats.open = l.stats.open.saturating_add(1);
            let label = l.label.clone();
            let tls = match l.tls.as_ref().map(Tls::server).transpose() {
                Ok(tls) => tls,
                Err(e) => {
                    warn!("listener {lid}: no TLS session for {peer}: {e}");
                    continue;
                }
            };
            let handler = l.service.accept(peer.clone());
            if let Err(e) = stream.set_nodelay(nodelay) {
                debug!("set TCP_NODELAY for {peer}: {e}");
            }
            let id = self.reserve();
            let mut conn = Conn::new(id, stream, peer, handler, self.now);
            conn.fds = fds;
            conn.listener = Some(lid);
            if let Some(tls) = tls {
                conn.set_tls(tls);
            }
            if let Err(e) = conn.register(&self.registry) {
                warn!("registering a connection from {} failed: {e}", conn.peer);
                if let Some(Source::Listener(l)) = self.get_mut(lid) {
                    l.stats.open = l.stats.open.saturating_sub(1);
                }
                continue;
            }
            match &label {
                Some(name) => trace!("{name}: accepted {} as conn {id}", conn.peer),
                None => trace!("listener {lid}: accepted conn {id} from {}", conn.peer),
            }
            self.insert(id, Source::Conn(conn));
            self.conns += 1;
            self.fds_held += fds;
            self.stats.accepted += 1;
            self.open(id);
            // Write what `on_open` produced and arm the idle deadline.
            self.mark_dirty(id);
        }
        true
    }
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}
