//! A blocking client for the `files` service, for the CLI (`put`, `get`,
//! `ls`), the examples and the benchmark. Plain `std::net`, one request at
//! a time.
//!
//! ```text
//!  put:  [len][{"file_name","file_size","md5","offset","overwrite"}][body in CHUNKs] ──▶
//!        (between chunks: a non-blocking peek; an early reply is a refusal: stop, read it)
//!        ◀── [len][{"ok":true,"file_name","file_size","md5"}]
//!  get:  [len][{"op":"get","file_name"}] ──▶   ◀── [len][{"ok","file_size","md5","offset"}][body]
//!  list: [len][{"op":"list","prefix","after"?,"partials"?}] ──▶   ◀── [len][{"ok","files"|"partials","truncated","next"?}]
//! ```
//!
//! Invariants: a reply header over [`MAX_REPLY`] bytes is refused before it
//! is allocated; a download's body is streamed to the writer in chunks and
//! its MD5 is checked against the reply's.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};

use byteorder::{LittleEndian, WriteBytesExt};
use md5::{Digest, Md5};
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

use super::storage::{hex, Entry, PartialEntry, CHUNK};
use crate::services::client_io::ClientStream;
use crate::services::foreign;

/// Largest reply header the client accepts (a listing page is at most
/// 64 KiB of names; this leaves room for servers that page differently).
pub const MAX_REPLY: usize = 16 * 1024 * 1024;

/// What can go wrong talking to the service.
#[derive(Debug)]
pub enum ClientError {
    /// The connection failed.
    Io(io::Error),
    /// The server said `{"ok": false, "error": …}`.
    Server(String),
    /// The server's reply made no sense, or a download failed its MD5 check.
    Protocol(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Io(e) => write!(f, "connection error: {e}"),
            ClientError::Server(e) => write!(f, "server: {e}"),
            ClientError::Protocol(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        ClientError::Io(e)
    }
}

/// The MD5 of everything `r` yields, as lowercase hex; `progress` gets the
/// running byte count.
pub fn md5_of(mut r: impl Read, mut progress: impl FnMut(u64)) -> io::Result<String> {
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        md5.update(&buf[..n]);
        total += n as u64;
        progress(total);
    }
    Ok(hex(&md5.finalize()))
}

/// What a finished upload or download reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// The name as the server stored it.
    pub file_name: String,
    /// The whole file's size.
    pub file_size: u64,
    /// The whole file's MD5 (verified, for a download).
    pub md5: String,
}

/// One connection to a `files` server.
#[derive(Debug)]
pub struct Client {
    stream: ClientStream,
    token: Option<String>,
    /// A well-formed reply has come: later nonsense is a broken reply, not
    /// a server of another protocol.
    spoke: bool,
}

impl Client {
    /// Connects to `addr`.
    pub fn connect(addr: SocketAddr) -> io::Result<Client> {
        Client::from_stream(TcpStream::connect(addr)?)
    }

    /// Uses a connection already made (to a name with several addresses, say).
    pub fn from_stream(stream: impl Into<ClientStream>) -> io::Result<Client> {
        let stream = stream.into();
        stream.tcp().set_nodelay(true)?;
        Ok(Client { stream, token: None, spoke: false })
    }

    /// Sends `token` in every request (for a server started with a token).
    pub fn with_token(mut self, token: Option<String>) -> Client {
        self.token = token;
        self
    }

    /// Sends one request header.
    pub fn send_header(&mut self, header: &Value) -> io::Result<()> {
        let json = match (&self.token, header) {
            (Some(t), Value::Object(m)) => {
                let mut m = m.clone();
                m.insert("token".into(), Value::String(t.clone()));
                serde_json::to_vec(&m)?
            }
            _ => serde_json::to_vec(header)?,
        };
        let len = i32::try_from(json.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // Prefix and header in one write (with TCP_NODELAY, two writes could be two segments).
        let mut msg = Vec::with_capacity(4 + json.len());
        msg.write_i32::<LittleEndian>(len)?;
        msg.extend_from_slice(&json);
        self.stream.write_all(&msg)
    }

    /// Reads one reply header; `{"ok": false}` becomes [`ClientError::Server`].
    pub fn read_reply(&mut self) -> Result<Map<String, Value>, ClientError> {
        let mut prefix = [0u8; 4];
        self.stream.read_exact(&mut prefix)?;
        let len = i32::from_le_bytes(prefix);
        let Some(len) = usize::try_from(len).ok().filter(|&n| n > 0 && n <= MAX_REPLY) else {
            return Err(self
                .foreign(&prefix)
                .unwrap_or_else(|| ClientError::Protocol(format!("bad reply length {len}"))));
        };
        let mut raw = vec![0u8; len];
        self.stream.read_exact(&mut raw)?;
        let map = match serde_json::from_slice(&raw) {
            // Every reply of the service says `"ok": true` or `false`.
            Ok(Value::Object(map)) if map.get("ok").is_some_and(Value::is_boolean) => map,
            Ok(Value::Object(map)) => {
                raw.splice(0..0, prefix);
                let no_ok = ClientError::Server(
                    map.get("error").and_then(Value::as_str).unwrap_or("request failed, no reason given").to_string(),
                );
                return Err(self.foreign(&raw).unwrap_or(no_ok));
            }
            Ok(_) => {
                return Err(self
                    .foreign(&[&prefix[..], &raw].concat())
                    .unwrap_or(ClientError::Protocol("reply is not a JSON object".into())))
            }
            Err(e) => {
                return Err(self
                    .foreign(&[&prefix[..], &raw].concat())
                    .unwrap_or(ClientError::Protocol(format!("bad reply: {e}"))))
            }
        };
        self.spoke = true;
        if map.get("ok") == Some(&Value::Bool(true)) {
            Ok(map)
        } else {
            let err = map.get("error").and_then(Value::as_str).unwrap_or("request failed, no reason given");
            Err(ClientError::Server(err.to_string()))
        }
    }

    /// Before any well-formed reply, nonsense means the server speaks
    /// another protocol: says so, showing what came (`got`, then up to
    /// [`foreign::SHOWN`] bytes that follow at once). `None` once it has spoken.
    fn foreign(&mut self, got: &[u8]) -> Option<ClientError> {
        if self.spoke {
            return None;
        }
        let peer = self.stream.tcp().peer_addr().map_or_else(|_| "the server".to_string(), |a| a.to_string());
        let tcp = self.stream.tcp().try_clone().ok()?;
        Some(ClientError::Protocol(foreign::foreign_reply(peer, "files", got, &mut self.stream, &tcp)))
    }

    /// `stat`: the reply as is (`file_size`/`md5` and/or `partial_size`).
    pub fn stat(&mut self, name: &str) -> Result<Map<String, Value>, ClientError> {
        self.send_header(&json!({"op": "stat", "file_name": name}))?;
        self.read_reply()
    }

    /// `list`, one page: the files whose names start with `prefix` and sort
    /// after `after`, and the `after` of the next page if there is one.
    pub fn list_page(
        &mut self,
        prefix: &str,
        after: Option<&str>,
    ) -> Result<(Vec<Entry>, Option<String>), ClientError> {
        self.page(prefix, after, false)
    }

    /// `list`: every file whose name starts with `prefix`, page by page
    /// (`each` gets each page as it arrives).
    pub fn list(&mut self, prefix: &str, each: impl FnMut(&[Entry])) -> Result<usize, ClientError> {
        self.all_pages(prefix, false, each)
    }

    /// `list` with `"partials": true`: every unfinished upload whose name
    /// starts with `prefix` (bytes held, announced size, age, source,
    /// whether it is being written), page by page.
    pub fn list_partials(&mut self, prefix: &str, each: impl FnMut(&[PartialEntry])) -> Result<usize, ClientError> {
        self.all_pages(prefix, true, each)
    }

    fn all_pages<T: DeserializeOwned>(
        &mut self,
        prefix: &str,
        partials: bool,
        mut each: impl FnMut(&[T]),
    ) -> Result<usize, ClientError> {
        let (mut after, mut total) = (None, 0);
        loop {
            let (items, next) = self.page::<T>(prefix, after.as_deref(), partials)?;
            total += items.len();
            each(&items);
            match next {
                Some(n) => after = Some(n),
                None => return Ok(total),
            }
        }
    }

    /// One page of a listing: of files (`"files"`), or of partial uploads
    /// (`"partials"`).
    fn page<T: DeserializeOwned>(
        &mut self,
        prefix: &str,
        after: Option<&str>,
        partials: bool,
    ) -> Result<(Vec<T>, Option<String>), ClientError> {
        let mut req = json!({"op": "list", "prefix": prefix});
        if let Some(a) = after {
            req["after"] = Value::String(a.to_string());
        }
        let field = if partials {
            req["partials"] = Value::Bool(true);
            "partials"
        } else {
            "files"
        };
        self.send_header(&req)?;
        let r = self.read_reply()?;
        let items: Vec<T> = serde_json::from_value(r.get(field).cloned().unwrap_or(Value::Null))
            .map_err(|e| ClientError::Protocol(format!("bad listing: {e}")))?;
        let next = match (r.get("truncated"), r.get("next")) {
            (Some(Value::Bool(true)), Some(Value::String(n))) => Some(n.clone()),
            (Some(Value::Bool(true)), _) => {
                return Err(ClientError::Protocol("a truncated listing without `next`".into()));
            }
            _ => None,
        };
        if next.as_deref().is_some_and(|n| after.is_some_and(|a| n <= a)) {
            return Err(ClientError::Protocol("the listing's `next` does not advance".into()));
        }
        Ok((items, next))
    }

    /// Uploads `body` (the file's bytes from `offset` on) as `name`.
    /// `file_size` and `md5` describe the whole file. `progress` gets the
    /// bytes sent so far, `offset` included. A refusal the server sends
    /// while the body is still going out stops the upload and is returned.
    #[allow(clippy::too_many_arguments)]
    pub fn put(
        &mut self,
        name: &str,
        file_size: u64,
        md5: &str,
        offset: u64,
        overwrite: bool,
        mut body: impl Read,
        mut progress: impl FnMut(u64),
    ) -> Result<FileInfo, ClientError> {
        let header = json!({"op": "put", "file_name": name, "file_size": file_size, "md5": md5,
                            "offset": offset, "overwrite": overwrite});
        self.send_header(&header)?;
        let mut buf = vec![0u8; CHUNK];
        let mut sent = offset;
        while sent < file_size {
            if self.reply_waiting() {
                return Err(self.early_reply());
            }
            let want = usize::try_from(file_size - sent).unwrap_or(CHUNK).min(CHUNK);
            let n = body.read(&mut buf[..want])?;
            if n == 0 {
                return Err(ClientError::Protocol(format!("the file ended at {sent} of {file_size} bytes")));
            }
            if let Err(e) = self.stream.write_all(&buf[..n]) {
                // The server may have refused and closed: its reply says why.
                return Err(match self.read_reply() {
                    Err(ClientError::Server(s)) => ClientError::Server(s),
                    Err(ClientError::Protocol(p)) if !self.spoke => ClientError::Protocol(p),
                    _ => ClientError::Io(e),
                });
            }
            sent += n as u64;
            progress(sent);
        }
        let r = self.read_reply()?;
        info_of(&r)
    }

    /// True if the server has sent something (or closed) mid-upload.
    fn reply_waiting(&mut self) -> bool {
        self.stream.readable_now()
    }

    fn early_reply(&mut self) -> ClientError {
        match self.read_reply() {
            Ok(_) => ClientError::Protocol("the server replied before the upload was complete".into()),
            Err(e) => e,
        }
    }

    /// Downloads `name` into `out`, checking its MD5. `progress` gets the
    /// bytes received so far.
    pub fn get(
        &mut self,
        name: &str,
        mut out: impl Write,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<FileInfo, ClientError> {
        self.send_header(&json!({"op": "get", "file_name": name}))?;
        let r = self.read_reply()?;
        let info = info_of(&r)?;
        let mut md5 = Md5::new();
        let mut buf = vec![0u8; CHUNK];
        let mut got = 0u64;
        while got < info.file_size {
            let want = usize::try_from(info.file_size - got).unwrap_or(CHUNK).min(CHUNK);
            let n = self.stream.read(&mut buf[..want])?;
            if n == 0 {
                return Err(ClientError::Protocol(format!(
                    "the server closed the download at {got} of {} bytes",
                    info.file_size
                )));
            }
            md5.update(&buf[..n]);
            out.write_all(&buf[..n])?;
            got += n as u64;
            progress(got, info.file_size);
        }
        let local = hex(&md5.finalize());
        if local != info.md5 {
            return Err(ClientError::Protocol(format!(
                "md5 mismatch: the server said {}, the bytes received hash to {local}",
                info.md5
            )));
        }
        Ok(info)
    }
}

fn info_of(r: &Map<String, Value>) -> Result<FileInfo, ClientError> {
    let missing = |k: &str| ClientError::Protocol(format!("reply lacks `{k}`"));
    Ok(FileInfo {
        file_name: r.get("file_name").and_then(Value::as_str).ok_or_else(|| missing("file_name"))?.to_string(),
        file_size: r.get("file_size").and_then(Value::as_u64).ok_or_else(|| missing("file_size"))?,
        md5: r.get("md5").and_then(Value::as_str).ok_or_else(|| missing("md5"))?.to_string(),
    })
}
