//! A minimal HTTP/1.x request-head parser for the metrics endpoint: pure
//! (bytes in, no I/O), incremental (`Ok(None)` asks for more bytes), and
//! bounded (a head longer than the limit is an error, whatever its bytes).
//!
//! It reads the request line and checks that every header line looks like
//! `name: value`; header values are not interpreted. Anything that is not an
//! HTTP/1.x request head is [`HeadError::Malformed`], reported as soon as
//! the bytes seen prove it (a peer speaking another protocol is closed at
//! once, not when the size limit is reached).

/// A request head: its method and target, and how many bytes it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head<'a> {
    /// The method, e.g. `GET`.
    pub method: &'a str,
    /// The request target with any query string removed, e.g. `/metrics`.
    pub path: &'a str,
    /// Bytes of the head, up to and including the empty line.
    pub len: usize,
}

/// Why a request head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Not an HTTP/1.x request head.
    Malformed,
    /// The head is longer than the limit.
    TooLarge,
}

/// Longest method accepted.
const MAX_METHOD: usize = 16;

/// Parses the request head at the start of `buf`, at most `max` bytes long.
/// `Ok(None)`: the bytes so far are a valid beginning; more are needed.
pub fn parse_head(buf: &[u8], max: usize) -> Result<Option<Head<'_>>, HeadError> {
    let mut pos = 0;
    let mut line_no = 0;
    loop {
        let rest = &buf[pos..];
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            check_partial(rest, line_no)?;
            return if buf.len() > max { Err(HeadError::TooLarge) } else { Ok(None) };
        };
        let end = pos.checked_add(nl).and_then(|e| e.checked_add(1)).ok_or(HeadError::TooLarge)?;
        if end > max {
            return Err(HeadError::TooLarge);
        }
        let line = strip_cr(&rest[..nl])?;
        if line_no == 0 {
            request_line(line)?;
        } else if line.is_empty() {
            let (method, path) = request_line(strip_cr(first_line(buf))?)?;
            return Ok(Some(Head { method, path, len: end }));
        } else {
            header_line(line)?;
        }
        line_no += 1;
        pos = end;
    }
}

fn first_line(buf: &[u8]) -> &[u8] {
    let nl = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    &buf[..nl]
}

fn strip_cr(line: &[u8]) -> Result<&[u8], HeadError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().any(|&b| b == b'\r' || b == 0) {
        return Err(HeadError::Malformed);
    }
    Ok(line)
}

/// `METHOD SP target SP HTTP/1.x`: the method and the target's path.
fn request_line(line: &[u8]) -> Result<(&str, &str), HeadError> {
    let text = std::str::from_utf8(line).map_err(|_| HeadError::Malformed)?;
    let mut parts = text.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Malformed);
    };
    if !is_method(method) || !target.starts_with('/') || target.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(HeadError::Malformed);
    }
    if !(version.len() == 8 && version.starts_with("HTTP/1.") && version.as_bytes()[7].is_ascii_digit()) {
        return Err(HeadError::Malformed);
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    Ok((method, path))
}

fn is_method(m: &str) -> bool {
    !m.is_empty() && m.len() <= MAX_METHOD && m.bytes().all(|b| b.is_ascii_uppercase())
}

fn header_line(line: &[u8]) -> Result<(), HeadError> {
    let colon = line.iter().position(|&b| b == b':').ok_or(HeadError::Malformed)?;
    let name = &line[..colon];
    if name.is_empty() || !name.iter().all(|&b| is_token(b)) {
        return Err(HeadError::Malformed);
    }
    Ok(())
}

fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Rejects an unfinished line that can no longer become valid: the request
/// line's method must be uppercase letters followed by a space.
fn check_partial(rest: &[u8], line_no: usize) -> Result<(), HeadError> {
    if line_no > 0 {
        return if rest.contains(&0) { Err(HeadError::Malformed) } else { Ok(()) };
    }
    let method_end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
    let method = &rest[..method_end];
    if method.len() > MAX_METHOD || !method.iter().all(u8::is_ascii_uppercase) {
        return Err(HeadError::Malformed);
    }
    if method_end < rest.len() && method.is_empty() {
        return Err(HeadError::Malformed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GET: &[u8] = b"GET /metrics?x=1 HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n";

    #[test]
    fn a_whole_head() {
        let head = parse_head(GET, 8192).unwrap().unwrap();
        assert_eq!(head, Head { method: "GET", path: "/metrics", len: GET.len() });
    }

    #[test]
    fn every_prefix_asks_for_more() {
        for i in 0..GET.len() {
            assert_eq!(parse_head(&GET[..i], 8192), Ok(None), "prefix of {i} bytes");
        }
    }

    #[test]
    fn bare_newlines_and_http_1_0() {
        let head = parse_head(b"HEAD / HTTP/1.0\n\nrest", 8192).unwrap().unwrap();
        assert_eq!((head.method, head.path, head.len), ("HEAD", "/", 17));
    }

    #[test]
    fn not_http_is_malformed_at_once() {
        for bad in [
            &b"hello"[..],
            b"\x16\x03\x01\x02\x00",
            b"get /metrics HTTP/1.1\r\n",
            b"GET metrics HTTP/1.1\r\n",
            b"GET /metrics HTTP/2.0\r\n",
            b"GET /metrics\r\n",
            b"GET  /metrics HTTP/1.1\r\n",
            b"GET /metrics HTTP/1.1\r\nno colon\r\n",
            b"GET /metrics HTTP/1.1\r\n: empty name\r\n",
            b"GET /a\rb HTTP/1.1\r\n",
            b" GET",
        ] {
            assert_eq!(parse_head(bad, 8192), Err(HeadError::Malformed), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_head_over_the_limit_is_refused() {
        let mut long = b"GET /metrics HTTP/1.1\r\n".to_vec();
        while long.len() <= 100 {
            long.extend_from_slice(b"X-Pad: 0123456789\r\n");
        }
        assert_eq!(parse_head(&long, 100), Err(HeadError::TooLarge));
        assert_eq!(parse_head(b"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaa", 16), Err(HeadError::TooLarge));
        assert_eq!(parse_head(GET, GET.len()).unwrap().unwrap().len, GET.len());
        assert_eq!(parse_head(GET, GET.len() - 1), Err(HeadError::TooLarge));
    }

    proptest! {
        /// Split at any offset, the first part asks for more (or is already
        /// whole) and the whole parses to the same head.
        #[test]
        fn split_anywhere(cut in 0usize..GET.len() + 1, pad in "[A-Za-z0-9-]{1,20}") {
            let mut req = b"GET /metrics HTTP/1.1\r\n".to_vec();
            req.extend_from_slice(format!("{pad}: {pad}\r\n\r\n").as_bytes());
            let cut = cut.min(req.len());
            let first = parse_head(&req[..cut], 8192).unwrap();
            prop_assert!(first.is_none() || cut == req.len());
            let whole = parse_head(&req, 8192).unwrap().unwrap();
            prop_assert_eq!(whole.len, req.len());
            prop_assert_eq!(whole.path, "/metrics");
        }

        /// No input makes it panic, and what it accepts fits the limit.
        #[test]
        fn any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300), max in 1usize..400) {
            if let Ok(Some(head)) = parse_head(&bytes, max) {
                prop_assert!(head.len <= max && head.len <= bytes.len());
            }
        }
    }
}
