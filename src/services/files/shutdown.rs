//! `on_shutdown`: transfers in flight get the grace period to finish.
//!
//! At the first call an idle connection closes at once; one receiving,
//! verifying, hashing, listing or sending goes on, and closes as soon as
//! that request is answered (no further request is taken). If the grace
//! period ends first, the second call answers an upload with an error that
//! names the resume offset (its partial file is kept, as after any
//! interruption, unless no byte of it had arrived), and a download is simply cut: its body cannot carry a
//! message, and the client sees a short file.

use std::time::Instant;

use super::*;

impl Files {
    pub(super) fn shutdown<S: 'static>(&mut self, cx: &mut Context<'_, S>) -> Flow {
        let grace_over = cx.grace_deadline().is_some_and(|d| Instant::now() >= d);
        if !grace_over {
            self.stopping = true;
            return match self.state {
                State::Idle | State::Closing => Flow::Close,
                _ => {
                    debug!("files {}: finishing a {} request before the shutdown", self.peer, self.state.name());
                    Flow::Continue
                }
            };
        }
        match &self.state {
            State::Receiving(r) | State::Verifying(r) => {
                let why = format!(
                    "the server is shutting down: the upload of `{}` stopped at byte {} of {}; {}",
                    r.up.name(),
                    r.up.written(),
                    r.up.file_size(),
                    super::transfer::kept(&r.up)
                );
                info!("files {}: {why}", self.peer);
                self.fail(why, cx)
            }
            State::Sending(s) => {
                info!("files {}: download cut by the shutdown at byte {} of {}", self.peer, s.pos, s.end);
                Flow::Close
            }
            _ => Flow::Close,
        }
    }
}
