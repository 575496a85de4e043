//! An upload's body: each chunk written to the partial file (counted
//! against the bounds on partial uploads first) and fed to the MD5; a
//! resumed prefix hashed from disk a chunk at a time; the MD5 check and the
//! commit. Part of the `files` state machine (`mod.rs`).
//!
//! A chunk refused by a bound (nothing abandoned left to evict) ends the
//! upload with an error naming the byte reached; the partial keeps what
//! it held, for a resume. A chunk the disk refuses (after evicting
//! abandoned partials and retrying once) ends it and removes the partial,
//! as any disk error does.

use super::storage::WriteError;
use super::*;

impl Files {
    pub(super) fn on_body<S: 'static>(&mut self, chunk: &[u8], cx: &mut Context<'_, S>) -> Flow {
        let State::Receiving(r) = &mut self.state else {
            return self.fail("internal error: body bytes outside an upload".into(), cx);
        };
        let before = r.up.written();
        self.rate.count(chunk.len());
        if let Err(e) = r.up.write(chunk) {
            let name = r.up.name().to_string();
            if let WriteError::Over(over) = e {
                // Nothing written: the partial stays as it was, for a resume.
                let kept = if r.up.keeps_partial() {
                    format!("the {before} bytes received are kept; resume with \"offset\": {before} once there is room")
                } else {
                    "nothing was received, so nothing is kept".to_string()
                };
                return self.fail(format!("upload of `{name}` stopped at byte {before}: {over}; {kept}"), cx);
            }
            let kept = match self.take() {
                State::Receiving(r) => {
                    r.up.discard().err().map(|e| format!("removing the partial upload failed too ({e})"))
                }
                _ => None,
            };
            let state = kept.unwrap_or_else(|| "the partial upload was removed".into());
            return self.fail(format!("disk error while writing `{name}` at byte {before}: {e}; {state}"), cx);
        }
        if r.hashed == before {
            r.md5.update(chunk);
            r.hashed = r.up.written();
            Flow::Continue
        } else {
            // Resumed: the prefix on disk is not hashed yet; catch up a chunk.
            self.catch_up(cx)
        }
    }

    /// Hashes one more chunk of a resumed upload's prefix from disk.
    pub(super) fn catch_up<S: 'static>(&mut self, cx: &mut Context<'_, S>) -> Flow {
        let (State::Receiving(r) | State::Verifying(r)) = &mut self.state else {
            return Flow::Continue;
        };
        let want = usize::try_from(r.up.written() - r.hashed).unwrap_or(CHUNK).min(CHUNK);
        self.buf.clear();
        match r.up.read_chunk_at(r.hashed, want, &mut self.buf) {
            Ok(n) if n > 0 => {
                r.md5.update(&self.buf[..n]);
                r.hashed += n as u64;
                Flow::Continue
            }
            Ok(_) => self.fail("the partial file shrank while resuming; start over with offset 0".into(), cx),
            Err(e) => self.fail(format!("disk error while reading the partial file: {e}"), cx),
        }
    }

    pub(super) fn on_body_end<S: 'static>(&mut self, cx: &mut Context<'_, S>) -> Flow {
        match self.take() {
            State::Receiving(r) if r.hashed < r.up.written() => {
                self.set_state(State::Verifying(r));
                cx.notify_on_drain();
                Flow::Continue
            }
            State::Receiving(r) => self.finish(r, cx),
            other => {
                // The empty body of a get/stat/list (already answered).
                self.set_state(other);
                Flow::Continue
            }
        }
    }

    /// Compares the MD5 and commits or discards the upload.
    pub(super) fn finish<S: 'static>(&mut self, r: Receive, cx: &mut Context<'_, S>) -> Flow {
        let got = hex(&r.md5.finalize());
        let (name, size) = (r.up.name().to_string(), r.up.written());
        let reply = if got != r.expected {
            if let Err(e) = r.up.discard() {
                log::warn!("files {}: cannot remove the partial upload of {name}: {e}", self.peer);
            }
            Reply::error(format!(
                "md5 mismatch for `{name}`: the header said {}, but the {size} bytes received hash to {got}; \
                 nothing was stored, check the file and upload it again",
                r.expected
            ))
        } else {
            match r.up.commit(&got) {
                Ok(t) => {
                    info!(
                        "files {}: stored {name} ({size} bytes, fsync {:?}, rename {:?})",
                        self.peer, t.fsync, t.rename
                    );
                    Reply { file_name: Some(name), file_size: Some(size), md5: Some(got), ..Reply::ok() }
                }
                Err(e) => Reply::error(format!("could not store `{name}`: {e}")),
            }
        };
        self.reply(&reply, cx);
        self.set_state(State::Idle);
        cx.clear_timer();
        Flow::Continue
    }
}
