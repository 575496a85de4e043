//! The loop's thread-safe handle: stop it, wake it, or hand it a task, from
//! any thread.
//!
//! The handle holds a `mio::Waker` (an eventfd registered in the loop's
//! poll under a token of its own) and a small shared block: the stop flag
//! and a queue of tasks. Waking makes `poll` return; the loop then runs the
//! queued tasks on its own thread, where they may touch it freely.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use log::warn;
use mio::Waker;

use crate::event_loop::EventLoop;

pub(crate) type Task = Box<dyn FnOnce(&mut EventLoop) + Send>;

struct Shared {
    stop: AtomicBool,
    tasks: Mutex<Vec<Task>>,
}

/// A thread-safe handle to an [`EventLoop`]: stop it, wake it, or run code
/// on its thread. Cheap to clone.
#[derive(Clone)]
pub struct Handle {
    waker: Arc<Waker>,
    shared: Arc<Shared>,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle").finish_non_exhaustive()
    }
}

impl Handle {
    pub(crate) fn new(waker: Waker) -> Self {
        let shared = Shared { stop: AtomicBool::new(false), tasks: Mutex::new(Vec::new()) };
        Handle { waker: Arc::new(waker), shared: Arc::new(shared) }
    }

    pub(crate) fn stop_requested(&self) -> bool {
        self.shared.stop.load(Ordering::SeqCst)
    }

    pub(crate) fn take_tasks(&self) -> Vec<Task> {
        std::mem::take(&mut *self.shared.tasks.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Asks the loop to stop: [`EventLoop::run`] then stops accepting,
    /// flushes pending replies (bounded by its grace period) and returns.
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
    /// a listener while the loop runs.
    pub fn submit(&self, task: impl FnOnce(&mut EventLoop) + Send + 'static) {
        self.shared.tasks.lock().unwrap_or_else(|p| p.into_inner()).push(Box::new(task));
        self.wake();
    }
}
