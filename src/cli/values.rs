//! The value parsers every command's duration and size flags share, so that
//! a value the program cannot use is refused when the command line is parsed:
//! clap prints one `error: invalid value …` line naming the flag, and the
//! exit code is 2. Nothing out of range reaches the loop, where it would
//! panic or misbehave later (a deadline past the clock's range, an
//! allocation of a petabyte).
//!
//! Bounds (docs/limits.md lists them):
//! * a duration is 0 to [`MAX_SECS`] (a year), given in seconds (`SECS`,
//!   fractions allowed; finite, not negative) or whole milliseconds (`MS`);
//!   the `positive_` forms exclude 0, for waits that must end;
//! * a size is 0 to [`MAX_BYTES`] (1 PiB): beyond any disk or memory here,
//!   and far from where `u64` sums and products of sizes could overflow.

use std::time::Duration;

/// The longest duration any flag takes: a year, in seconds.
pub const MAX_SECS: u64 = 365 * 24 * 3600;

/// The largest size any flag takes: 1 PiB, in bytes.
pub const MAX_BYTES: u64 = 1 << 50;

const TOO_LONG: &str = "more than a year (31536000 seconds), the longest allowed";

/// Seconds, fractions allowed: 0 to a year.
pub fn secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s.trim().parse().map_err(|_| "not a number of seconds".to_string())?;
    if !v.is_finite() {
        return Err("not a finite number of seconds".into());
    }
    if v < 0.0 {
        return Err("negative".into());
    }
    if v > MAX_SECS as f64 {
        return Err(TOO_LONG.into());
    }
    Duration::try_from_secs_f64(v).map_err(|e| e.to_string())
}

/// Seconds as [`secs`], above 0.
pub fn positive_secs(s: &str) -> Result<Duration, String> {
    secs(s).and_then(|d| if d.is_zero() { Err("must be above 0".into()) } else { Ok(d) })
}

/// Whole seconds: 0 to a year.
pub fn whole_secs(s: &str) -> Result<Duration, String> {
    let v: u64 = s.trim().parse().map_err(|_| "not a whole number of seconds".to_string())?;
    if v > MAX_SECS {
        return Err(TOO_LONG.into());
    }
    Ok(Duration::from_secs(v))
}

/// Whole seconds as [`whole_secs`], at least 1.
pub fn positive_whole_secs(s: &str) -> Result<Duration, String> {
    whole_secs(s).and_then(|d| if d.is_zero() { Err("must be at least 1".into()) } else { Ok(d) })
}

/// Whole milliseconds: 0 to a year.
pub fn millis(s: &str) -> Result<Duration, String> {
    let v: u64 = s.trim().parse().map_err(|_| "not a whole number of milliseconds".to_string())?;
    if v > MAX_SECS * 1000 {
        return Err("more than a year (31536000000 ms), the longest allowed".into());
    }
    Ok(Duration::from_millis(v))
}

/// A size in bytes: 0 to 1 PiB.
pub fn bytes(s: &str) -> Result<u64, String> {
    let v: u64 = s.trim().parse().map_err(|_| "not a whole number of bytes".to_string())?;
    if v > MAX_BYTES {
        return Err(format!("more than 1 PiB ({MAX_BYTES} bytes), the largest allowed"));
    }
    Ok(v)
}

/// A size as [`bytes`], at least 1.
pub fn positive_bytes(s: &str) -> Result<u64, String> {
    bytes(s).and_then(|v| if v == 0 { Err("must be at least 1".into()) } else { Ok(v) })
}

/// A size in bytes as [`bytes`], as a `usize`.
pub fn bytes_usize(s: &str) -> Result<usize, String> {
    bytes(s).and_then(|v| usize::try_from(v).map_err(|_| "too large for this machine".into()))
}

/// A size as [`bytes_usize`], at least 1.
pub fn positive_bytes_usize(s: &str) -> Result<usize, String> {
    bytes_usize(s).and_then(|v| if v == 0 { Err("must be at least 1".into()) } else { Ok(v) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_bounded_finite_and_not_negative() {
        assert_eq!(secs("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(secs("0"), Ok(Duration::ZERO));
        assert_eq!(secs("31536000"), Ok(Duration::from_secs(MAX_SECS)));
        for bad in ["31536000.5", "1e19", "1e300", "inf", "-inf", "nan", "-1", "-0.5", "", "ten"] {
            assert!(secs(bad).is_err(), "{bad}");
        }
        assert!(positive_secs("0").is_err());
        assert_eq!(positive_secs("0.001"), Ok(Duration::from_millis(1)));
        assert_eq!(whole_secs("31536000"), Ok(Duration::from_secs(MAX_SECS)));
        assert!(whole_secs("31536001").is_err());
        assert!(whole_secs("10000000000000000000").is_err());
        assert!(positive_whole_secs("0").is_err());
        assert_eq!(millis("31536000000"), Ok(Duration::from_secs(MAX_SECS)));
        assert!(millis("31536000001").is_err());
        assert!(millis("18446744073709551615").is_err());
    }

    #[test]
    fn sizes_are_bounded() {
        assert_eq!(bytes("0"), Ok(0));
        assert_eq!(bytes("1125899906842624"), Ok(MAX_BYTES));
        for bad in ["1125899906842625", "18446744073709551615", "18446744073709551616", "-1", "1e6", ""] {
            assert!(bytes(bad).is_err(), "{bad}");
        }
        assert!(positive_bytes_usize("0").is_err());
        assert!(positive_bytes("0").is_err());
        assert!(positive_bytes("1125899906842625").is_err());
        assert_eq!(positive_bytes("1"), Ok(1));
        assert_eq!(positive_bytes_usize("64"), Ok(64));
    }
}
