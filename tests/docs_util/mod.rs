//! The docs' runnable blocks, and how their shown output is compared with a
//! real run. Pure: parsing markdown, rewriting commands, normalising lines.
//!
//! A fenced block whose info string holds one of these words takes part:
//!
//! ```text
//!  ```sh doc-server      a `wireloop serve` to start in the background (its stderr is the trace);
//!                        the next doc-expect lists its `listening` lines
//!  ```sh doc-bg          another server (an example) to start in the background; the next
//!                        doc-expect lists its `listening` line
//!  ```sh doc-run         commands to run to the end (bash, stdout and stderr together)
//!  ```text doc-expect    lines the block before printed, in this order (others may come between)
//!  ```text doc-expect bg lines the last doc-bg printed (waited for until it exits)
//!  ```text doc-trace     lines the doc-server's trace printed during the last doc-run, in order
//! ```
//!
//! `id=NAME` on a doc-run and `of=NAME` on a later doc-expect or doc-trace
//! check an excerpt shown further down against that run.
//!
//! Before comparing, both sides are normalised: the `[2026-…Z ` log prefix is
//! cut, and what varies from run to run (ports, connection and slab numbers,
//! pids, dates and times) is replaced by a placeholder. A line that is just
//! `…` in an excerpt stands for lines left out and is not compared; a `…`
//! inside a line stands for any text there (a byte count that varies).
#![allow(dead_code)]

/// What a marked block asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Server,
    Bg,
    Run,
    Expect,
    ExpectBg,
    Trace,
}

/// One marked block.
#[derive(Debug, Clone)]
pub struct Block {
    pub kind: Kind,
    pub body: Vec<String>,
    /// Its first line in the markdown file (1-based), for messages.
    pub line: usize,
    /// `id=NAME` on a doc-run, `of=NAME` on a doc-trace or doc-expect.
    pub name: Option<String>,
}

/// The marked blocks of a markdown text, in order.
pub fn blocks(md: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut lines = md.lines().enumerate();
    while let Some((i, l)) = lines.next() {
        // A block may be indented (inside a list item): its lines lose that indent.
        let indent = l.len() - l.trim_start().len();
        let Some(info) = l.trim_start().strip_prefix("```") else { continue };
        let words: Vec<&str> = info.split_whitespace().collect();
        let kind = if words.contains(&"doc-server") {
            Some(Kind::Server)
        } else if words.contains(&"doc-bg") {
            Some(Kind::Bg)
        } else if words.contains(&"doc-run") {
            Some(Kind::Run)
        } else if words.contains(&"doc-expect") {
            Some(if words.contains(&"bg") { Kind::ExpectBg } else { Kind::Expect })
        } else if words.contains(&"doc-trace") {
            Some(Kind::Trace)
        } else {
            None
        };
        let mut body = Vec::new();
        for (_, l) in lines.by_ref() {
            if l.trim_start().starts_with("```") {
                break;
            }
            let cut = l.len() - l.trim_start().len();
            body.push(l[cut.min(indent)..].to_string());
        }
        let name = words.iter().find_map(|w| w.strip_prefix("id=").or_else(|| w.strip_prefix("of=")));
        if let Some(kind) = kind {
            out.push(Block { kind, body, line: i + 1, name: name.map(str::to_string) });
        }
    }
    out
}

/// `cargo run [--release] [-q] [--example NAME] [--] ARGS` becomes the
/// binary itself: `"$WIRELOOP" ARGS` or `"$EXAMPLES/NAME" ARGS`.
pub fn rewrite_cargo(cmd: &str) -> String {
    let mut out = String::new();
    let mut rest = cmd;
    while let Some(at) = rest.find("cargo run") {
        out.push_str(&rest[..at]);
        let mut tail = &rest[at + "cargo run".len()..];
        let mut example = None;
        loop {
            let t = tail.trim_start_matches(' ');
            if let Some(r) =
                t.strip_prefix("--release").or_else(|| t.strip_prefix("-q ")).or_else(|| t.strip_prefix("-q\n"))
            {
                tail = r;
            } else if let Some(r) = t.strip_prefix("--example ") {
                let end = r.find([' ', '\n', ';', '|', '&', ')']).unwrap_or(r.len());
                example = Some(r[..end].to_string());
                tail = &r[end..];
            } else if let Some(r) = t.strip_prefix("-- ") {
                tail = r;
                break;
            } else {
                tail = t;
                break;
            }
        }
        match example {
            Some(name) => out.push_str(&format!("\"$EXAMPLES/{name}\" ")),
            None => out.push_str("\"$WIRELOOP\" "),
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// `s` with every whole-number occurrence of `from` replaced by `to`.
pub fn replace_number(s: &str, from: u16, to: u16) -> String {
    let from = from.to_string();
    let bytes = s.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < s.len() {
        if s[i..].starts_with(&from) {
            let before = i.checked_sub(1).map(|j| bytes[j].is_ascii_digit()).unwrap_or(false);
            let end = i + from.len();
            let after = bytes.get(end).is_some_and(|b| b.is_ascii_digit());
            if !before && !after {
                out.push_str(&to.to_string());
                i = end;
                continue;
            }
        }
        let c = s[i..].chars().next().unwrap();
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// Every `127.0.0.1:PORT` in `s` (the ports, in order).
pub fn ports_in(s: &str) -> Vec<u16> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(at) = rest.find("127.0.0.1:") {
        rest = &rest[at + "127.0.0.1:".len()..];
        let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if let Ok(p) = rest[..end].parse() {
            out.push(p);
        }
    }
    out
}

/// Words followed by a number that varies from run to run.
const VARYING: &[&str] =
    &["127.0.0.1:", "conn ", "slot ", "serial ", "pipe ", "child ", "pid ", "listener ", "udp ", "source "];

/// A line as compared: log prefix cut, varying numbers and times replaced,
/// trailing blanks dropped.
pub fn normalise(line: &str) -> String {
    let mut l = line.trim_end();
    if l.starts_with('[') {
        if let Some(z) = l.find("Z ") {
            if z < 32 {
                l = &l[z + 2..];
            }
        }
    }
    let mut s = l.to_string();
    for word in VARYING {
        s = blank_after(&s, word);
    }
    s = blank_pattern(&s, "####-##-## ##:##:##", "<time>");
    s = blank_pattern(&s, "##:##:##", "<time>");
    s
}

/// Digits right after `word` become `N`.
fn blank_after(s: &str, word: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(at) = rest.find(word) {
        let boundary = at == 0 || !rest[..at].ends_with(|c: char| c.is_alphanumeric());
        out.push_str(&rest[..at + word.len()]);
        rest = &rest[at + word.len()..];
        let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if boundary && end > 0 {
            out.push('N');
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

/// Each match of `pat` (`#` a digit, anything else itself) becomes `with`.
fn blank_pattern(s: &str, pat: &str, with: &str) -> String {
    let (b, p) = (s.as_bytes(), pat.as_bytes());
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        let hit = i + p.len() <= b.len()
            && p.iter().zip(&b[i..]).all(|(&pc, &c)| if pc == b'#' { c.is_ascii_digit() } else { pc == c });
        if hit {
            out.push_str(with);
            i += p.len();
        } else {
            let c = s[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// Whether `actual` is `want`, where each `…` inside `want` stands for
/// any text (a number that varies, say).
fn matches(want: &str, actual: &str) -> bool {
    let mut parts = want.split('…');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = actual.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else { return rest.is_empty() };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Checks that every shown line of `expected` appears, in order, among the
/// lines of `actual` (both normalised). `Err` names the first line missing.
pub fn check_in_order(expected: &[String], actual: &str) -> Result<(), String> {
    let actual: Vec<String> = actual.lines().map(normalise).collect();
    let mut from = 0;
    for want in expected {
        let want_n = normalise(want);
        if want_n.is_empty() || want_n == "…" {
            continue;
        }
        match actual[from..].iter().position(|a| matches(&want_n, a)) {
            Some(p) => from += p + 1,
            None => {
                let anywhere = actual.iter().any(|a| matches(&want_n, a));
                return Err(format!(
                    "line {want:?} {}",
                    if anywhere { "is there, but not in this order" } else { "is not in the real output" }
                ));
            }
        }
    }
    Ok(())
}
