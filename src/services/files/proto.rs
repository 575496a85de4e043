//! The `files` service's messages: requests parsed from a decoded JSON header,
//! and replies encoded as a header (4-byte little-endian length + JSON).
//!
//! ```text
//!  request  [len i32 LE][{"op":"put"?, "file_name", "file_size", "md5", "offset"?, "overwrite"?}][body: file_size - offset]
//!           [len i32 LE][{"op":"get", "file_name", "offset"?}]
//!           [len i32 LE][{"op":"stat", "file_name"}]
//!           [len i32 LE][{"op":"list", "prefix"?, "after"?, "limit"?, "partials"?}]
//!  reply    [len i32 LE][{"ok": true, ...}][body: only for get, file_size - offset bytes]
//!           [len i32 LE][{"ok": true, "files": [...], "truncated", "next"?}]   (list: one page; ask
//!                                                      again with "after": next for the following one)
//!           [len i32 LE][{"ok": true, "partials": [...], "truncated", "next"?}]   (list with "partials":
//!                                                      true: the unfinished uploads, paged the same way)
//!           [len i32 LE][{"ok": false, "error": "..."}]
//! ```
//!
//! Requests are read field by field (not with a derived `Deserialize`) so
//! that an error names the field and says what it must be; a request with
//! no `op` is an upload, as in the tutorial. Unknown fields are ignored.
//!
//! Invariants: every number is a `u64` checked here (negative or fractional
//! numbers are refused), `md5` is 32 hex digits, lowercased; names are only
//! cleaned by `storage`. [`announced_body`] tells, even for a request that is
//! refused, how many body bytes the peer will send (`None`: unknown), which is
//! what decides whether the connection can be kept.

use serde::Serialize;
use serde_json::{Map, Value};

use super::storage::{Entry, PartialEntry};
use crate::codec::frame::{encode_frame, ByteOrder};

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Upload `file_size - offset` body bytes.
    Put(Put),
    /// Download from `offset`.
    Get {
        /// The raw name.
        file_name: String,
        /// First byte to send.
        offset: u64,
    },
    /// Size and MD5 of a file, or the size of its interrupted upload.
    Stat {
        /// The raw name.
        file_name: String,
    },
    /// One page of the files (or, with `partials`, of the unfinished
    /// uploads) whose names start with `prefix`.
    List {
        /// The raw prefix ("" for all).
        prefix: String,
        /// List names after this one (the previous page's `next`).
        after: Option<String>,
        /// Most entries wanted (the server caps it at
        /// [`super::storage::page::PAGE_MAX`]).
        limit: Option<u64>,
        /// List the partial (unfinished) uploads instead of the files.
        partials: bool,
    },
}

/// An upload request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Put {
    /// The raw name.
    pub file_name: String,
    /// The whole file's size.
    pub file_size: u64,
    /// The whole file's MD5, lowercase hex.
    pub md5: String,
    /// Bytes the server already holds; the body is the rest.
    pub offset: u64,
    /// Replace an existing file.
    pub overwrite: bool,
}

impl Put {
    /// Body bytes that follow the header (`file_size - offset`, checked).
    pub fn body_len(&self) -> Option<u64> {
        self.file_size.checked_sub(self.offset)
    }
}

fn field<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).filter(|v| !v.is_null())
}

fn req_str(map: &Map<String, Value>, key: &str, what: &str) -> Result<String, String> {
    match field(map, key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v) => Err(format!("`{key}` must be a string, got {v}")),
        None => Err(format!("the {what} header is missing `{key}`")),
    }
}

fn opt_str(map: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match field(map, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(format!("`{key}` must be a string, got {v}")),
    }
}

fn opt_u64(map: &Map<String, Value>, key: &str) -> Result<Option<u64>, String> {
    match field(map, key) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| format!("`{key}` must be a whole number >= 0, got {v}")),
    }
}

fn opt_bool(map: &Map<String, Value>, key: &str) -> Result<bool, String> {
    match field(map, key) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(format!("`{key}` must be true or false, got {v}")),
    }
}

/// How many body bytes follow this header, as far as it can be told
/// (an upload whose `file_size`/`offset` cannot be read: `None`).
pub fn announced_body(map: &Map<String, Value>) -> Option<u64> {
    match field(map, "op").and_then(Value::as_str) {
        None | Some("put") => {}
        Some(_) => return Some(0),
    }
    let size = opt_u64(map, "file_size").ok()??;
    let offset = opt_u64(map, "offset").ok()?.unwrap_or(0);
    size.checked_sub(offset)
}

/// Parses a decoded header into a request.
pub fn parse(map: &Map<String, Value>) -> Result<Request, String> {
    let op = match field(map, "op") {
        None => "put".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => return Err(format!("`op` must be a string, got {v}")),
    };
    match op.as_str() {
        "put" => {
            let file_name = req_str(map, "file_name", "upload")?;
            let file_size = opt_u64(map, "file_size")?.ok_or("the upload header is missing `file_size`")?;
            let md5 = req_str(map, "md5", "upload")?.to_ascii_lowercase();
            if md5.len() != 32 || !md5.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("`md5` must be 32 hex digits, got {md5:?}"));
            }
            let offset = opt_u64(map, "offset")?.unwrap_or(0);
            let overwrite = opt_bool(map, "overwrite")?;
            if offset > file_size {
                return Err(format!("offset {offset} is past file_size {file_size}"));
            }
            Ok(Request::Put(Put { file_name, file_size, md5, offset, overwrite }))
        }
        "get" => Ok(Request::Get {
            file_name: req_str(map, "file_name", "download")?,
            offset: opt_u64(map, "offset")?.unwrap_or(0),
        }),
        "stat" => Ok(Request::Stat { file_name: req_str(map, "file_name", "stat")? }),
        "list" => Ok(Request::List {
            prefix: opt_str(map, "prefix")?.unwrap_or_default(),
            after: opt_str(map, "after")?,
            limit: match opt_u64(map, "limit")? {
                Some(0) => return Err("`limit` must be at least 1".into()),
                l => l,
            },
            partials: opt_bool(map, "partials")?,
        }),
        other => Err(format!("unknown op {other:?}; use put, get, stat or list")),
    }
}

/// A reply header. Absent fields are left out of the JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Reply {
    /// Whether the request succeeded.
    pub ok: bool,
    /// What went wrong, in words a user can act on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The cleaned name the request was about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    /// Size of the complete file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_size: Option<u64>,
    /// MD5 of the complete file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    /// Download: where the body starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Stat: bytes an interrupted upload holds (resume with this `offset`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partial_size: Option<u64>,
    /// Stat: the interrupted upload's announced `file_size`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partial_file_size: Option<u64>,
    /// Stat: the interrupted upload's announced `md5`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partial_md5: Option<String>,
    /// Listing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<Entry>>,
    /// Listing of partial uploads: name, bytes held, announced size, age
    /// in seconds, source, and whether one is being written now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partials: Option<Vec<PartialEntry>>,
    /// Listing: more files matched than were returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<bool>,
    /// Listing: the `after` that asks for the next page (the last name
    /// returned), when `truncated`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

impl Reply {
    /// `{"ok": false, "error": why}`.
    pub fn error(why: impl Into<String>) -> Reply {
        Reply { ok: false, error: Some(why.into()), ..Reply::default() }
    }

    /// `{"ok": true}`, to fill in.
    pub fn ok() -> Reply {
        Reply { ok: true, ..Reply::default() }
    }

    /// Appends the 4-byte little-endian length and the JSON to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        // Serialized straight from the struct, so `ok` comes first.
        let json = serde_json::to_vec(self).expect("a reply is always valid JSON");
        // A JSON header is a frame's payload. A listing is one page of at
        // most `PAGE_BYTES` of names, far below the i32::MAX a frame carries.
        encode_frame(ByteOrder::Little, &json, out).expect("a reply fits a 4-byte length");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn the_tutorials_header_is_an_upload() {
        let h =
            map(json!({"file_size": 3, "file_name": "/a/b/c/d/e/a.txt", "md5": "900150983CD24FB0D6963F7D28E17F72"}));
        let Request::Put(p) = parse(&h).unwrap() else { panic!() };
        assert_eq!(p.md5, "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!((p.file_size, p.offset, p.overwrite), (3, 0, false));
        assert_eq!(announced_body(&h), Some(3));
    }

    #[test]
    fn errors_name_the_field() {
        assert!(parse(&map(json!({"file_name": "x", "md5": "0"}))).unwrap_err().contains("missing `file_size`"));
        assert!(parse(&map(json!({"file_name": "x", "file_size": -1, "md5": "0"}))).unwrap_err().contains(">= 0"));
        assert!(parse(&map(json!({"file_name": "x", "file_size": 1, "md5": "xyz"}))).unwrap_err().contains("32 hex"));
        assert!(parse(&map(json!({"op": "nope"}))).unwrap_err().contains("unknown op"));
        assert_eq!(announced_body(&map(json!({"op": "get", "file_name": "x"}))), Some(0));
        assert_eq!(announced_body(&map(json!({"file_name": "x"}))), None);
        assert_eq!(announced_body(&map(json!({"file_size": 5, "offset": 2}))), Some(3));
        assert!(parse(&map(json!({"op": "list", "partials": 1}))).unwrap_err().contains("`partials` must be true"));
        let list = parse(&map(json!({"op": "list", "partials": true, "limit": 2}))).unwrap();
        assert_eq!(list, Request::List { prefix: String::new(), after: None, limit: Some(2), partials: true });
    }

    #[test]
    fn replies_leave_out_absent_fields() {
        let mut out = Vec::new();
        Reply::error("no").encode(&mut out);
        assert_eq!(&out[4..], br#"{"ok":false,"error":"no"}"#);
        assert_eq!(i32::from_le_bytes(out[..4].try_into().unwrap()) as usize, out.len() - 4);
    }
}
