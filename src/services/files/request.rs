//! A request header, served: parsed (`proto`), its token checked
//! (`super::auth`), its name cleaned, and turned into a state — an upload
//! begun, a download or hash started, a stat answered, a listing queued —
//! or refused with a sentence the client can act on.

use super::*;

impl Files {
    /// Serves a header, then tells the decoder its body length: the
    /// accepted upload's `file_size - offset`, otherwise 0.
    pub(super) fn on_header<S: 'static>(&mut self, map: Map<String, Value>, cx: &mut Context<'_, S>) -> Flow {
        let flow = self.serve_header(map, cx);
        let body = match &self.state {
            State::Receiving(r) => r.up.file_size() - r.up.written(),
            _ => 0,
        };
        self.decoder.begin_body(body);
        flow
    }

    fn serve_header<S: 'static>(&mut self, map: Map<String, Value>, cx: &mut Context<'_, S>) -> Flow {
        let body = announced_body(&map);
        if let Some(guard) = &self.guard {
            let given = map.get("token").and_then(Value::as_str);
            let ip = self.peer.tcp().map(|a| a.ip());
            let verdict = guard.check(ip, given, &mut self.tries, std::time::Instant::now());
            if let Some(why) = verdict.error() {
                // A refused upload's body is never read: the connection closes.
                return if verdict.closes() { self.fail(why, cx) } else { self.refuse(why, body, cx) };
            }
        }
        let req = match proto::parse(&map) {
            Ok(r) => r,
            Err(e) => return self.refuse(e, body, cx),
        };
        let name_of = |raw: &str| clean_name(raw).map_err(|e| e.to_string());
        match req {
            Request::Put(p) => {
                let body = p.body_len();
                let name = match name_of(&p.file_name) {
                    Ok(n) => n,
                    Err(e) => return self.refuse(e, body, cx),
                };
                let spec = UploadSpec {
                    name: &name,
                    file_size: p.file_size,
                    md5: &p.md5,
                    offset: p.offset,
                    overwrite: p.overwrite,
                    source: self.peer.tcp().map(|a| a.ip()),
                };
                match self.store.begin_upload(&spec) {
                    Err(e) => self.refuse(e, body, cx),
                    Ok(up) => {
                        self.set_state(State::Receiving(Receive { up, md5: Md5::new(), hashed: 0, expected: p.md5 }));
                        if let Some(window) = self.rate.start() {
                            cx.set_timer(window);
                        }
                        Flow::Continue
                    }
                }
            }
            Request::Get { file_name, offset } => {
                let name = match name_of(&file_name) {
                    Ok(n) => n,
                    Err(e) => return self.refuse(e, Some(0), cx),
                };
                let (file, size, md5) = match self.store.open_read(&name) {
                    Ok(t) => t,
                    Err(e) => return self.refuse(e, Some(0), cx),
                };
                if offset > size {
                    return self.refuse(
                        format!("offset {offset} is past the end of `{name}` ({size} bytes)"),
                        Some(0),
                        cx,
                    );
                }
                let purpose = Purpose::Get { offset };
                match md5 {
                    Some(md5) => self.start_send(name, file, size, md5, offset, cx),
                    None => self.start_hash(Hash { name, file, size, pos: 0, md5: Md5::new(), purpose }, cx),
                }
            }
            Request::Stat { file_name } => {
                let name = match name_of(&file_name) {
                    Ok(n) => n,
                    Err(e) => return self.refuse(e, Some(0), cx),
                };
                let partial = self.store.partial(&name);
                match self.store.open_read(&name) {
                    Ok((file, size, Some(md5))) => {
                        self.reply(&stat_reply(name, Some((size, md5)), partial), cx);
                        drop(file);
                        Flow::Continue
                    }
                    Ok((file, size, None)) => {
                        let purpose = Purpose::Stat { partial };
                        self.start_hash(Hash { name, file, size, pos: 0, md5: Md5::new(), purpose }, cx)
                    }
                    Err(_) if partial.is_some() => {
                        self.reply(&stat_reply(name, None, partial), cx);
                        Flow::Continue
                    }
                    Err(e) => self.refuse(e, Some(0), cx),
                }
            }
            Request::List { prefix, after, limit, partials } => {
                let limit = limit.map_or(PAGE_MAX, |l| usize::try_from(l).unwrap_or(PAGE_MAX));
                if partials {
                    // From the store's index in memory: answered at once.
                    return self.list_partials(&prefix, after.as_deref(), limit, cx);
                }
                // A page walks directories and stats its files: built in
                // `on_drain` after the loop has served the other ready
                // peers, so a burst of listings never stalls them.
                self.set_state(State::Listing(List { prefix, after, limit }));
                cx.yield_now();
                Flow::Continue
            }
        }
    }
}
