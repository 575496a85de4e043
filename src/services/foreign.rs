//! The one line a client prints when the server it reached speaks another
//! protocol: `ADDR does not speak the files protocol (its first reply was
//! 7 bytes: "success")`.
//!
//! Invariant: at most [`SHOWN`] bytes are read and quoted, waiting at most
//! [`SETTLE`] for them. They are quoted as text (invalid UTF-8 replaced), not
//! escaped: whoever prints the line must escape control characters, as the
//! `wireloop` command does for every error it prints.

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

/// Reply bytes shown at most.
pub const SHOWN: usize = 64;

/// How long the rest of a short reply is waited for.
pub const SETTLE: Duration = Duration::from_millis(200);

/// The line for a peer at `peer` whose first reply began with `got`;
/// `more` (reading from `stream`) yields the bytes after it. The stream's
/// read timeout is restored afterwards.
pub fn foreign_reply(
    peer: impl std::fmt::Display,
    protocol: &str,
    got: &[u8],
    more: &mut dyn Read,
    stream: &TcpStream,
) -> String {
    let mut all = got[..got.len().min(SHOWN)].to_vec();
    let mut ended = got.len() < SHOWN;
    if all.len() < SHOWN {
        let old = stream.read_timeout().ok().flatten();
        if stream.set_read_timeout(Some(SETTLE)).is_ok() {
            let mut buf = [0u8; SHOWN];
            while all.len() < SHOWN {
                match more.read(&mut buf[..SHOWN - all.len()]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => all.extend_from_slice(&buf[..n]),
                }
            }
            let _ = stream.set_read_timeout(old);
        }
        ended = all.len() < SHOWN;
    }
    describe(peer, protocol, &all, ended)
}

/// The line itself (pure): `all` is what came, `ended` says whether that was
/// the whole reply or only its start.
pub fn describe(peer: impl std::fmt::Display, protocol: &str, all: &[u8], ended: bool) -> String {
    let shown = String::from_utf8_lossy(all);
    match (all.len(), ended) {
        (0, _) => format!("{peer} does not speak the {protocol} protocol (it closed the connection without a reply)"),
        (n, true) => {
            format!("{peer} does not speak the {protocol} protocol (its first reply was {n} bytes: \"{shown}\")")
        }
        (_, false) => format!("{peer} does not speak the {protocol} protocol (its first reply began \"{shown}\"…)"),
    }
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[test]
    fn the_line_quotes_the_reply() {
        assert_eq!(
            describe("127.0.0.1:1", "files", b"success", true),
            "127.0.0.1:1 does not speak the files protocol (its first reply was 7 bytes: \"success\")"
        );
        assert_eq!(
            describe("h:1", "framed", b"\x03\0\0\0ONE\x1b]", true),
            "h:1 does not speak the framed protocol (its first reply was 9 bytes: \"\x03\0\0\0ONE\x1b]\")"
        );
        assert!(describe("h:1", "exec", b"", true).ends_with("(it closed the connection without a reply)"));
        assert!(describe("h:1", "exec", b"abc", false).ends_with("began \"abc\"…)"));
    }
}
