//! Text a peer controls (file names, error messages), made safe to print on
//! a terminal: control characters are written as escapes, as `ls -b` does,
//! so a name holding `\x1b]0;…\x07` or `\n` cannot retitle the terminal or
//! fake a line of output.

use std::borrow::Cow;
use std::fmt::Write;

/// `s` with backslashes doubled and every control character (C0, DEL and
/// the C1 range U+0080–U+009F) escaped: `\n`, `\t`, `\r` by name, the rest
/// as octal bytes (`\033`, `\302\233`). Text without any is borrowed.
pub(crate) fn shown(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c == '\\' || c.is_control()) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\{b:03o}");
                }
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn controls_are_escaped_and_plain_text_is_untouched() {
        assert!(matches!(shown("a/b c-ß.txt"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(shown("x\x1b]0;pwned\x07y"), "x\\033]0;pwned\\007y");
        assert_eq!(shown("fake\n  1  2026-01-01 00:00:00  entry"), "fake\\n  1  2026-01-01 00:00:00  entry");
        assert_eq!(shown("a\\n"), "a\\\\n");
        assert_eq!(shown("\u{9b}31m\u{7f}"), "\\302\\23331m\\177");
    }
}
