//! The command runner's messages, pure: parsing a request header and
//! encoding the streamed replies. No processes, no sockets.
//!
//! Every message in either direction is a 4-byte little-endian signed
//! length, a UTF-8 JSON header, then an optional body:
//!
//! ```text
//!  client → server   [len][{"cmd": "ls -l", "timeout_ms"?: N, "token"?: "…"}]
//!  server → client   [len][{"type": "stdout", "len": N}][N bytes]      } any number, in the
//!                    [len][{"type": "stderr", "len": N}][N bytes]      } order the child wrote
//!                    [len][{"type": "exit", "code": 3, "signal": null,
//!                           "timed_out": false, "truncated": false,
//!                           "duration_ms": 12}]                          exactly one final message,
//!                 or [len][{"type": "error", "error": "…"}]             one or the other
//! ```

use std::process::ExitStatus;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::codec::frame::ByteOrder;
use crate::codec::header::encode_header;
use crate::ChildStream;

/// Longest command line accepted, in bytes.
pub const MAX_CMD: usize = 16 * 1024;

/// A validated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The shell command line, run as `/bin/sh -c <cmd>`.
    pub cmd: String,
    /// The client's timeout, if it gave one.
    pub timeout: Option<Duration>,
    /// The token the client sent, if any.
    pub token: Option<String>,
}

/// Checks a request header. The error is a sentence for the client.
pub fn parse_request(header: &Map<String, Value>) -> Result<Request, String> {
    let cmd = match header.get("cmd") {
        Some(Value::String(s)) if s.trim().is_empty() => return Err("\"cmd\" is empty".into()),
        Some(Value::String(s)) if s.len() > MAX_CMD => {
            return Err(format!("\"cmd\" is {} bytes; the limit is {MAX_CMD}", s.len()))
        }
        Some(Value::String(s)) if s.contains('\0') => return Err("\"cmd\" contains a NUL byte".into()),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err("\"cmd\" must be a string".into()),
        None => return Err("missing \"cmd\": send {\"cmd\": \"<shell command>\"}".into()),
    };
    let timeout = match header.get("timeout_ms") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(0) | None => return Err("\"timeout_ms\" must be a positive whole number of milliseconds".into()),
            Some(ms) => Some(Duration::from_millis(ms)),
        },
    };
    let token = match header.get("token") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err("\"token\" must be a string".into()),
    };
    Ok(Request { cmd, timeout, token })
}

fn push(out: &mut Vec<u8>, header: &Value) {
    // Encoding a JSON object we built cannot fail.
    let _ = encode_header(ByteOrder::Little, header, out);
}

/// Appends one chunk of child output.
pub fn encode_output(out: &mut Vec<u8>, stream: ChildStream, data: &[u8]) {
    let kind = match stream {
        ChildStream::Stdout => "stdout",
        ChildStream::Stderr => "stderr",
    };
    push(out, &json!({"type": kind, "len": data.len()}));
    out.extend_from_slice(data);
}

/// How a command ended, for the final message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The exit code, if it exited.
    pub code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// It ran past its timeout and was killed.
    pub timed_out: bool,
    /// Its output passed the cap and it was killed.
    pub truncated: bool,
    /// Wall-clock run time.
    pub duration: Duration,
}

impl Outcome {
    /// Builds an outcome from an exit status.
    pub fn new(status: ExitStatus, timed_out: bool, truncated: bool, duration: Duration) -> Self {
        use std::os::unix::process::ExitStatusExt;
        Outcome { code: status.code(), signal: status.signal(), timed_out, truncated, duration }
    }
}

/// Appends the final `exit` message.
pub fn encode_exit(out: &mut Vec<u8>, o: &Outcome) {
    let ms = u64::try_from(o.duration.as_millis()).unwrap_or(u64::MAX);
    push(
        out,
        &json!({"type": "exit", "code": o.code, "signal": o.signal, "timed_out": o.timed_out,
                "truncated": o.truncated, "duration_ms": ms}),
    );
}

/// Appends the final `error` message.
pub fn encode_error(out: &mut Vec<u8>, error: &str) {
    push(out, &json!({"type": "error", "error": error}));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn requests() {
        let r = parse_request(&obj(json!({"cmd": "ls", "timeout_ms": 500, "token": "t"}))).unwrap();
        assert_eq!(r, Request { cmd: "ls".into(), timeout: Some(Duration::from_millis(500)), token: Some("t".into()) });
        for (bad, why) in [
            (json!({}), "missing \"cmd\""),
            (json!({"cmd": 5}), "must be a string"),
            (json!({"cmd": "  "}), "is empty"),
            (json!({"cmd": "ls", "timeout_ms": 0}), "positive whole number"),
            (json!({"cmd": "ls", "timeout_ms": -1}), "positive whole number"),
            (json!({"cmd": "ls", "timeout_ms": "5"}), "positive whole number"),
            (json!({"cmd": "ls", "token": 1}), "\"token\" must be a string"),
            (json!({"cmd": "a\u{0}b"}), "NUL"),
        ] {
            let err = parse_request(&obj(bad.clone())).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn output_message_bytes() {
        let mut out = Vec::new();
        encode_output(&mut out, ChildStream::Stderr, b"oops\n");
        let header = br#"{"len":5,"type":"stderr"}"#;
        let mut want = (header.len() as i32).to_le_bytes().to_vec();
        want.extend_from_slice(header);
        want.extend_from_slice(b"oops\n");
        assert_eq!(out, want);
    }
}
