//! The `files` state machine's long-running steps, one bounded chunk per
//! `on_drain`: hashing a file that has no cached MD5 before a download,
//! and sending a download's body; the minimum-rate check of an upload
//! body, once per rate window (`rate.rs`); and the listing of partial
//! uploads, answered at once from the store's index.

use super::*;

impl Files {
    /// Builds and sends the waiting listing's page, then goes back to `Idle`.
    pub(super) fn list_page<S: 'static>(&mut self, cx: &mut Context<'_, S>) -> Flow {
        let State::Listing(l) = self.take() else { return Flow::Continue };
        match self.store.list(&l.prefix, l.after, l.limit) {
            Ok((files, more)) => {
                let next = if more { files.last().map(|e| e.name.clone()) } else { None };
                let r = Reply { files: Some(files), truncated: Some(more), next, ..Reply::ok() };
                self.reply(&r, cx);
            }
            Err(e) => {
                self.set_state(State::Idle);
                return self.refuse(e, Some(0), cx);
            }
        }
        self.set_state(State::Idle);
        Flow::Continue
    }

    /// Answers a listing of partial uploads (from memory) at once.
    pub(super) fn list_partials<S: 'static>(
        &mut self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        cx: &mut Context<'_, S>,
    ) -> Flow {
        match self.store.list_partials(prefix, after, limit) {
            Ok((partials, more)) => {
                let next = if more { partials.last().map(|e| e.name.clone()) } else { None };
                let r = Reply { partials: Some(partials), truncated: Some(more), next, ..Reply::ok() };
                self.reply(&r, cx);
                Flow::Continue
            }
            Err(e) => self.refuse(e, Some(0), cx),
        }
    }

    pub(super) fn start_hash<S: 'static>(&mut self, h: Hash, cx: &mut Context<'_, S>) -> Flow {
        self.set_state(State::Hashing(h));
        cx.notify_on_drain();
        Flow::Continue
    }

    /// One chunk of a finished file's MD5; at the end, the reply.
    pub(super) fn hash_step<S: 'static>(&mut self, cx: &mut Context<'_, S>) -> Flow {
        let State::Hashing(h) = &mut self.state else { return Flow::Continue };
        let want = usize::try_from(h.size - h.pos).unwrap_or(CHUNK).min(CHUNK);
        if want > 0 {
            self.buf.clear();
            match read_chunk_at(&h.file, h.pos, want, &mut self.buf) {
                Ok(n) if n > 0 => {
                    h.md5.update(&self.buf[..n]);
                    h.pos += n as u64;
                }
                other => {
                    let why = match other {
                        Err(e) => format!("cannot read `{}`: {e}", h.name),
                        _ => format!("`{}` changed while it was being read; try again", h.name),
                    };
                    self.take();
                    self.set_state(State::Idle);
                    self.reply(&Reply::error(why), cx);
                    return Flow::Continue;
                }
            }
            if h.pos < h.size {
                cx.notify_on_drain();
                return Flow::Continue;
            }
        }
        let State::Hashing(h) = self.take() else { unreachable!("checked above") };
        let md5 = hex(&h.md5.finalize());
        self.store.remember_md5(&h.name, &h.file, &md5);
        match h.purpose {
            Purpose::Get { offset } => self.start_send(h.name, h.file, h.size, md5, offset, cx),
            Purpose::Stat { partial } => {
                self.reply(&stat_reply(h.name, Some((h.size, md5)), partial), cx);
                self.set_state(State::Idle);
                Flow::Continue
            }
        }
    }

    pub(super) fn start_send<S: 'static>(
        &mut self,
        name: String,
        file: File,
        size: u64,
        md5: String,
        offset: u64,
        cx: &mut Context<'_, S>,
    ) -> Flow {
        info!("files {}: sending {name} ({size} bytes, from byte {offset})", self.peer);
        let r =
            Reply { file_name: Some(name), file_size: Some(size), md5: Some(md5), offset: Some(offset), ..Reply::ok() };
        self.reply(&r, cx);
        self.set_state(State::Sending(Send { file, pos: offset, end: size }));
        self.send_chunk(cx)
    }

    /// Appends the next chunk of a download straight into the output buffer.
    pub(super) fn send_chunk<S: 'static>(&mut self, cx: &mut Context<'_, S>) -> Flow {
        let State::Sending(s) = &mut self.state else { return Flow::Continue };
        let want = usize::try_from(s.end - s.pos).unwrap_or(CHUNK).min(CHUNK);
        if want > 0 {
            // Straight into the output buffer: no intermediate copy.
            let (file, pos) = (&s.file, s.pos);
            match cx.out().append(|v| read_chunk_at(file, pos, want, v)) {
                Ok(n) if n == want => {
                    s.pos += n as u64;
                    FilesCounters::add(&self.store.counters().sent_bytes, n as u64);
                }
                // The size is already promised in the reply header: the only
                // honest thing left is to cut the stream.
                Ok(_) => return self.close_now("the file shrank during the download"),
                Err(e) => return self.close_now(&format!("read error during the download: {e}")),
            }
        }
        if s.pos < s.end {
            cx.notify_on_drain();
        } else {
            FilesCounters::add(&self.store.counters().downloads, 1);
            self.take();
            self.set_state(State::Idle);
        }
        Flow::Continue
    }

    /// A rate window ended: the upload goes on or is ended as too slow.
    pub(super) fn rate_check<S: 'static>(&mut self, cx: &mut Context<'_, S>) -> Flow {
        let State::Receiving(r) = &self.state else { return Flow::Continue };
        match self.rate.end_window() {
            Ok(next) => {
                cx.set_timer(next);
                Flow::Continue
            }
            Err(slow) => {
                let why = format!(
                    "upload of `{}` too slow: {} bytes in the last {:?}, the minimum is {} bytes/s ({} bytes); {}",
                    r.up.name(),
                    slow.seen,
                    self.rate.window(),
                    self.rate.min_rate(),
                    slow.needed,
                    kept(&r.up)
                );
                self.fail(why, cx)
            }
        }
    }
}

/// What an ended upload leaves, for its error reply: the bytes kept and
/// the offset to resume from, or nothing (no byte received).
pub(super) fn kept(up: &Upload) -> String {
    if up.keeps_partial() {
        format!("the {} bytes received are kept, resume with \"offset\": {}", up.written(), up.written())
    } else {
        "nothing was received, so nothing is kept; start again with \"offset\": 0".to_string()
    }
}
