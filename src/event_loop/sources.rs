//! Any other readiness source on the loop: a raw fd the embedder owns (a
//! pipe, an eventfd, a signalfd, a device) or any `mio::event::Source`, with
//! a callback that gets the source, the [`Readiness`] and the [`Loop`].
//!
//! Readiness is edge-triggered, as for every source here: a callback must
//! read (or write) until `WouldBlock`, or it may not hear of that source
//! again. The callback returns [`Flow::Close`] to deregister and drop the
//! source; [`Loop::remove`] does the same from anywhere.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use mio::event::Source;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use super::handler::Flow;
use super::ops::{Loop, Source as Slot};
use super::Readiness;
use crate::id::SourceId;

trait Callback<S> {
    fn ready(&mut self, id: SourceId, r: Readiness, lp: &mut Loop<S>) -> Flow;
    fn source(&mut self) -> &mut dyn Source;
}

struct Registered<T, F> {
    src: T,
    f: F,
}

impl<S, T, F> Callback<S> for Registered<T, F>
where
    T: Source,
    F: FnMut(&mut T, Readiness, &mut Loop<S>) -> Flow,
{
    fn ready(&mut self, _id: SourceId, r: Readiness, lp: &mut Loop<S>) -> Flow {
        (self.f)(&mut self.src, r, lp)
    }

    fn source(&mut self) -> &mut dyn Source {
        &mut self.src
    }
}

/// An owned fd as a mio source.
struct Fd(OwnedFd);

impl Source for Fd {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        SourceFd(&self.0.as_raw_fd()).register(r, t, i)
    }
    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        SourceFd(&self.0.as_raw_fd()).reregister(r, t, i)
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        SourceFd(&self.0.as_raw_fd()).deregister(r)
    }
}

/// A registered source in the slab; its callback is lent out while it runs.
pub(crate) struct CustomSource<S> {
    inner: Option<Box<dyn Callback<S>>>,
}

impl<S> CustomSource<S> {
    pub(crate) fn deregister(&mut self, registry: &Registry) {
        if let Some(cb) = &mut self.inner {
            let _ = registry.deregister(cb.source());
        }
    }
}

impl<S: 'static> Loop<S> {
    /// Registers any mio source (a `mio::net::UnixDatagram`, a
    /// `mio::unix::pipe::Receiver`, …) with `interest`; `f` is called with
    /// it on each readiness event. The loop owns the source and drops it
    /// when it is removed.
    pub fn add_source<T, F>(&mut self, mut source: T, interest: mio::Interest, f: F) -> io::Result<SourceId>
    where
        T: Source + 'static,
        F: FnMut(&mut T, Readiness, &mut Loop<S>) -> Flow + 'static,
    {
        let id = self.reserve();
        self.registry.register(&mut source, id.token(), interest)?;
        let cb: Box<dyn Callback<S>> = Box::new(Registered { src: source, f });
        self.insert(id, Slot::Custom(CustomSource { inner: Some(cb) }));
        Ok(id)
    }

    /// Registers a file descriptor the loop takes ownership of (and closes
    /// when the source is removed); `f` is called with it on each readiness
    /// event. Set it non-blocking first.
    pub fn add_fd<F>(&mut self, fd: OwnedFd, interest: mio::Interest, mut f: F) -> io::Result<SourceId>
    where
        F: FnMut(BorrowedFd<'_>, Readiness, &mut Loop<S>) -> Flow + 'static,
    {
        self.add_source(Fd(fd), interest, move |fd: &mut Fd, r, lp: &mut Loop<S>| f(fd.0.as_fd(), r, lp))
    }

    pub(crate) fn drive_custom(&mut self, id: SourceId, ready: Readiness) {
        let Some(Slot::Custom(s)) = self.get_mut(id) else { return };
        let Some(mut cb) = s.inner.take() else { return };
        let flow = cb.ready(id, ready, self);
        match self.get_mut(id) {
            Some(Slot::Custom(s)) if flow == Flow::Continue => s.inner = Some(cb),
            Some(Slot::Custom(s)) => {
                s.inner = Some(cb);
                self.reclaim(id);
            }
            // Removed during its own callback: deregister and drop it.
            _ => {
                let _ = self.registry.deregister(cb.source());
            }
        }
    }
}
