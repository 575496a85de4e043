//! The loop's thread-safe handle: stop it, wake it, send to a connection,
//! or hand it a task, from any thread.
//!
//! The handle holds a `mio::Waker` (an eventfd registered in the loop's
//! poll under a token of its own) and a small shared block: the stop flag
//! and a queue of tasks. Waking makes `poll` return; the loop then runs the
//! queued tasks on its own thread, where they may touch it freely, and
//! writes what they queued before that pass ends.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use log::warn;
use mio::Waker;

use super::ops::{Loop, SendError, Sent};
use crate::id::SourceId;

pub(crate) type Task<S> = Box<dyn FnOnce(&mut Loop<S>) + Send>;

struct Shared<S> {
    stop: AtomicBool,
    /// `None` once the loop is gone: a task submitted then is dropped at
    /// once (so a [`Receipt`] waiting on it resolves), never left queued.
    tasks: Mutex<Option<Vec<Task<S>>>>,
}

/// A thread-safe handle to an [`crate::EventLoop`]: stop it, wake it, send
/// to a connection, or run code on its thread. Cheap to clone.
pub struct Handle<S = ()> {
    waker: Arc<Waker>,
    shared: Arc<Shared<S>>,
}

impl<S> Clone for Handle<S> {
    fn clone(&self) -> Self {
        Handle { waker: self.waker.clone(), shared: self.shared.clone() }
    }
}

impl<S> fmt::Debug for Handle<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle").finish_non_exhaustive()
    }
}

/// The outcome of a [`Handle::send`], available once the loop has run it.
#[derive(Debug)]
pub struct Receipt(mpsc::Receiver<Result<Sent, SendError>>);

impl Receipt {
    /// Waits for the loop to take the bytes (or refuse them).
    /// [`SendError::Stopped`] if the loop ended first.
    pub fn wait(self) -> Result<Sent, SendError> {
        self.0.recv().unwrap_or(Err(SendError::Stopped))
    }

    /// As [`Receipt::wait`], for at most `timeout`; `None` if the loop has
    /// not run the send yet.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Result<Sent, SendError>> {
        match self.0.recv_timeout(timeout) {
            Ok(r) => Some(r),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => Some(Err(SendError::Stopped)),
        }
    }
}

impl<S> Handle<S> {
    pub(crate) fn new(waker: Waker) -> Self {
        let shared = Shared { stop: AtomicBool::new(false), tasks: Mutex::new(Some(Vec::new())) };
        Handle { waker: Arc::new(waker), shared: Arc::new(shared) }
    }

    pub(crate) fn stop_requested(&self) -> bool {
        self.shared.stop.load(Ordering::SeqCst)
    }

    pub(crate) fn take_tasks(&self) -> Vec<Task<S>> {
        self.shared.tasks.lock().unwrap_or_else(|p| p.into_inner()).as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// The loop is gone: drop every queued task, and every later one.
    pub(crate) fn close(&self) {
        let dropped = self.shared.tasks.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(dropped);
    }

    /// Asks the loop to stop: [`crate::EventLoop::run`] then stops
    /// accepting, flushes pending replies (bounded by its grace period) and
    /// returns.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.wake();
    }

    /// Wakes a loop blocked in `poll`.
    pub fn wake(&self) {
        if let Err(e) = self.waker.wake() {
            warn!("waking the loop failed: {e}");
        }
    }

    /// Runs `task` on the loop's thread at its next pass, for example to add
    /// a listener while the loop runs. Once the loop is dropped, a task is
    /// dropped unrun.
    pub fn submit(&self, task: impl FnOnce(&mut Loop<S>) + Send + 'static) {
        match self.shared.tasks.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            Some(tasks) => tasks.push(Box::new(task)),
            None => return,
        }
        self.wake();
    }
}

impl<S: 'static> Handle<S> {
    /// Sends `bytes` to connection `id` from any thread: the loop queues
    /// them at its next pass and writes them before that pass ends. The
    /// [`Receipt`] tells the outcome ([`crate::Loop::send`]'s), if the caller
    /// wants it.
    pub fn send(&self, id: SourceId, bytes: impl Into<Vec<u8>>) -> Receipt {
        let bytes = bytes.into();
        let (tx, rx) = mpsc::sync_channel(1);
        self.submit(move |lp| {
            let _ = tx.send(lp.send(id, &bytes));
        });
        Receipt(rx)
    }
}
