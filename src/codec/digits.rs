//! The tutorial's "method 1" length announcement: the length as ASCII
//! decimal digits, with nothing on the wire to say where the digits end.
//!
//! ```text
//!  client                          server
//!  "11" [ "\n" ]  ───────────▶     (digits, then an optional newline)
//!                 ◀───────────     "ready"
//!  "hello world"  ───────────▶     (exactly 11 bytes)
//!                 ◀───────────     "success"
//! ```
//!
//! The flaw this codec cannot fix: without the newline, `12` might be the
//! whole length or the start of `123`. The decoder therefore reports
//! *terminated* lengths (`digits "\n"` or `digits "\r\n"`) on its own, and
//! leaves unterminated digits to the caller, who decides that the digits are
//! complete when the client goes quiet ([`finish_unterminated`]), as the
//! tutorial's server does by taking whatever one `recv` returned.
//!
//! Bounds: the value is checked against the maximum digit by digit, so a long
//! run of digits is refused as soon as it exceeds it; no more than
//! `MAX_DIGITS` bytes of digits are ever buffered.

use std::fmt;

/// The most digits a length may have (`u64::MAX` has 20).
pub const MAX_DIGITS: usize = 20;

/// A length the client announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Length {
    /// The announced number of bytes.
    pub len: u64,
    /// Bytes of input the announcement took, terminator included.
    pub consumed: usize,
}

/// Why a length announcement was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DigitsError {
    /// A byte that is not a decimal digit (nor the terminating newline).
    NotADigit(u8),
    /// A newline with no digits before it.
    Empty,
    /// The value exceeds the maximum.
    TooLong {
        /// The maximum allowed.
        max: u64,
    },
}

impl fmt::Display for DigitsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DigitsError::NotADigit(b) => {
                write!(f, "expected the length as decimal digits, got byte 0x{b:02x}")
            }
            DigitsError::Empty => write!(f, "expected the length as decimal digits, got an empty line"),
            DigitsError::TooLong { max } => write!(f, "announced length exceeds the maximum of {max} bytes"),
        }
    }
}

impl std::error::Error for DigitsError {}

/// Scans `input` for `digits ["\r"] "\n"`. `Ok(None)`: only digits so far.
///
/// ```
/// use wireloop::codec::digits::{decode, DigitsError, Length};
///
/// // The length, its newline, and the start of the body: 3 bytes are the length's.
/// assert_eq!(decode(b"11\nhello", 100), Ok(Some(Length { len: 11, consumed: 3 })));
/// // Digits with no end yet: 11, or the start of 110? Need more (or a quiet client).
/// assert_eq!(decode(b"11", 100), Ok(None));
/// assert_eq!(decode(b"1x", 100), Err(DigitsError::NotADigit(b'x')));
/// // Refused as soon as the digits pass the maximum, before any newline.
/// assert_eq!(decode(b"5000", 100), Err(DigitsError::TooLong { max: 100 }));
/// ```
pub fn decode(input: &[u8], max: u64) -> Result<Option<Length>, DigitsError> {
    let mut value: u64 = 0;
    for (i, &b) in input.iter().enumerate() {
        match b {
            b'0'..=b'9' => value = push_digit(value, b, max)?,
            b'\n' | b'\r' if i == 0 => return Err(DigitsError::Empty),
            b'\n' => return Ok(Some(Length { len: value, consumed: i + 1 })),
            b'\r' => {
                return match input.get(i + 1) {
                    None => Ok(None),
                    Some(b'\n') => Ok(Some(Length { len: value, consumed: i + 2 })),
                    Some(&other) => Err(DigitsError::NotADigit(other)),
                };
            }
            other => return Err(DigitsError::NotADigit(other)),
        }
    }
    Ok(None)
}

/// The client went quiet after sending digits with no newline: take them
/// all as the length. `input` must be what [`decode`] answered `Ok(None)` for.
pub fn finish_unterminated(input: &[u8], max: u64) -> Result<Length, DigitsError> {
    let digits = input.strip_suffix(b"\r").unwrap_or(input);
    if digits.is_empty() {
        return Err(DigitsError::Empty);
    }
    let mut value = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return Err(DigitsError::NotADigit(b));
        }
        value = push_digit(value, b, max)?;
    }
    Ok(Length { len: value, consumed: input.len() })
}

fn push_digit(value: u64, b: u8, max: u64) -> Result<u64, DigitsError> {
    value
        .checked_mul(10)
        .and_then(|v| v.checked_add(u64::from(b - b'0')))
        .filter(|&v| v <= max)
        .ok_or(DigitsError::TooLong { max })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u64 = 16 * 1024 * 1024;

    #[test]
    fn fixtures() {
        assert_eq!(decode(b"11\nhello", MAX), Ok(Some(Length { len: 11, consumed: 3 })));
        assert_eq!(decode(b"0\r\n", MAX), Ok(Some(Length { len: 0, consumed: 3 })));
        assert_eq!(decode(b"", MAX), Ok(None));
        assert_eq!(decode(b"123", MAX), Ok(None));
        assert_eq!(decode(b"12\r", MAX), Ok(None));
        assert_eq!(finish_unterminated(b"123", MAX), Ok(Length { len: 123, consumed: 3 }));
        assert_eq!(finish_unterminated(b"7\r", MAX), Ok(Length { len: 7, consumed: 2 }));
    }

    #[test]
    fn malformed() {
        assert_eq!(decode(b"\n", MAX), Err(DigitsError::Empty));
        assert_eq!(decode(b"1x", MAX), Err(DigitsError::NotADigit(b'x')));
        assert_eq!(decode(b"-1\n", MAX), Err(DigitsError::NotADigit(b'-')));
        assert_eq!(decode(b"1\r1", MAX), Err(DigitsError::NotADigit(b'1')));
        assert_eq!(decode(b"16777217", MAX), Err(DigitsError::TooLong { max: MAX }));
        assert_eq!(decode(b"99999999999999999999999", MAX), Err(DigitsError::TooLong { max: MAX }));
        assert_eq!(decode(b"99999999999999999999999", u64::MAX), Err(DigitsError::TooLong { max: u64::MAX }));
        assert_eq!(finish_unterminated(b"", MAX), Err(DigitsError::Empty));
        assert_eq!(finish_unterminated(b"16777217", MAX), Err(DigitsError::TooLong { max: MAX }));
    }

    #[test]
    fn every_split_gives_the_same_answer() {
        let input = b"4096\r\nrest";
        let whole = decode(input, MAX);
        for cut in 0..input.len() {
            let first = decode(&input[..cut], MAX);
            assert!(first == Ok(None) || first == whole, "cut {cut}: {first:?}");
            assert_eq!(decode(input, MAX), whole);
        }
    }
}
