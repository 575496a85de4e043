//! Streaming Unicode uppercase: the echo services' only "codec".
//!
//! The echo services answer every byte as soon as it arrives, so the input is
//! an unframed stream cut at arbitrary points. The rules:
//!
//! * valid UTF-8 is uppercased per Unicode (`straße` → `STRASSE`, so the output
//!   may be longer than the input);
//! * a UTF-8 sequence cut off at the end of the input is *not consumed*: the
//!   caller keeps those 1–3 bytes and offers them again with the next read;
//! * bytes that can never be valid UTF-8 are passed through unchanged;
//! * at end of stream an incomplete trailing sequence is passed through
//!   unchanged too. Nothing is ever dropped.
//!
//! ```text
//!  read 1: 73 74 72 61 c3 | read 2: 9f 65      (bytes of "straße" split inside ß)
//!          S  T  R  A  (held)        SS E       → "STRA" then "SSE"
//! ```
//!
//! Invariant: the unconsumed remainder after [`upper_into`] with `eof == false`
//! is always shorter than 4 bytes, so a caller's leftover never grows.

/// Uppercases as much of `input` as can be decided now, appending to `out`.
///
/// Returns how many bytes of `input` were consumed. With `eof == false`, a
/// trailing incomplete UTF-8 sequence (at most 3 bytes) is left unconsumed;
/// with `eof == true`, everything is consumed.
///
/// ```
/// use wireloop::codec::upper::upper_into;
/// let mut out = Vec::new();
/// let n = upper_into(b"stra\xc3", false, &mut out);
/// assert_eq!((n, &out[..]), (4, &b"STRA"[..]));
/// let n = upper_into(b"\xc3\x9fe", false, &mut out);
/// assert_eq!((n, &out[..]), (3, &b"STRASSE"[..]));
/// ```
pub fn upper_into(input: &[u8], eof: bool, out: &mut Vec<u8>) -> usize {
    if input.is_ascii() {
        // The common case, in two passes (check, then uppercase into `out`)
        // instead of validating UTF-8 first.
        push_ascii_upper(input, out);
        return input.len();
    }
    let mut pos = 0;
    while pos < input.len() {
        let rest = &input[pos..];
        match std::str::from_utf8(rest) {
            Ok(s) => {
                push_upper(s, out);
                return input.len();
            }
            Err(e) => {
                let valid = e.valid_up_to();
                if valid > 0 {
                    // The prefix was just validated by from_utf8; this re-check
                    // only runs on inputs that contain a bad or cut sequence.
                    let s = std::str::from_utf8(&rest[..valid]).unwrap_or_default();
                    push_upper(s, out);
                }
                match e.error_len() {
                    Some(bad) => {
                        out.extend_from_slice(&rest[valid..valid + bad]);
                        pos += valid + bad;
                    }
                    None if eof => {
                        out.extend_from_slice(&rest[valid..]);
                        return input.len();
                    }
                    None => return pos + valid,
                }
            }
        }
    }
    input.len()
}

/// Appends the ASCII uppercase of `ascii` (all bytes < 0x80) in one pass:
/// each byte is read once and written once, straight into `out`'s spare
/// capacity (no copy-then-uppercase, which walks the output twice).
fn push_ascii_upper(ascii: &[u8], out: &mut Vec<u8>) {
    out.reserve(ascii.len());
    let start = out.len();
    let spare = &mut out.spare_capacity_mut()[..ascii.len()];
    for (dst, &b) in spare.iter_mut().zip(ascii) {
        dst.write(b.to_ascii_uppercase());
    }
    // SAFETY: the loop above initialised the `ascii.len()` bytes after `start`
    // (the zip covers all of `spare`, which is exactly that long), and
    // `reserve` guaranteed the capacity.
    unsafe { out.set_len(start + ascii.len()) };
}

fn push_upper(s: &str, out: &mut Vec<u8>) {
    if s.is_ascii() {
        push_ascii_upper(s.as_bytes(), out);
        return;
    }
    let mut tmp = [0u8; 4];
    for c in s.chars() {
        for u in c.to_uppercase() {
            out.extend_from_slice(u.encode_utf8(&mut tmp).as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::upper_into;

    /// Feeds `input` split at `cut`, as two reads, carrying the leftover.
    fn two_reads(input: &[u8], cut: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut pending = input[..cut].to_vec();
        let n = upper_into(&pending, false, &mut out);
        pending.drain(..n);
        pending.extend_from_slice(&input[cut..]);
        let n = upper_into(&pending, true, &mut out);
        assert_eq!(n, pending.len());
        out
    }

    #[test]
    fn fixtures() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b""),
            (b"hello", b"HELLO"),
            ("straße".as_bytes(), b"STRASSE"),
            ("ﬁx ǆ".as_bytes(), "FIX Ǆ".as_bytes()),
            ("你好 abc".as_bytes(), "你好 ABC".as_bytes()),
            (b"a\xffb", b"A\xffB"),
            (b"\xc3(", b"\xc3("),
            (b"x\xed\xa0\x80y", b"X\xed\xa0\x80Y"),
            (b"end\xe4\xbd", b"END\xe4\xbd"),
        ];
        for (input, want) in cases {
            let mut out = Vec::new();
            assert_eq!(upper_into(input, true, &mut out), input.len());
            assert_eq!(&out[..], *want, "input {input:?}");
        }
    }

    #[test]
    fn holds_incomplete_tail_only() {
        let mut out = Vec::new();
        assert_eq!(upper_into("ab你".as_bytes()[..4].as_ref(), false, &mut out), 2);
        assert_eq!(out, b"AB");
        let mut out = Vec::new();
        assert_eq!(upper_into(b"\xff\xe4", false, &mut out), 1);
        assert_eq!(out, b"\xff");
    }

    #[test]
    fn every_split_point_gives_the_same_output() {
        let inputs: [&[u8]; 3] = [
            "Grüße, 你好, ǆ, straße!".as_bytes(),
            b"mixed \xff\xfe bad \xc3 and \xe4\xbd\xa0 ok",
            b"\xf0\x9f\x98\x80 emoji \xf0\x9f",
        ];
        for input in inputs {
            let mut whole = Vec::new();
            upper_into(input, true, &mut whole);
            for cut in 0..=input.len() {
                assert_eq!(two_reads(input, cut), whole, "cut at {cut}");
            }
        }
    }
}
