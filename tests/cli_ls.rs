//! `wireloop ls` prints names a peer chose: control characters come out
//! escaped (as `ls -b` writes them), never raw, and a listing of more than
//! one page is followed to its end.

mod util;

use std::process::Command;

use util::{files_header, files_reply, Server, BIN};

#[test]
fn ls_escapes_control_characters_in_names() {
    let root = tempfile::tempdir().unwrap();
    let name = "evil\x1b]0;pwned\x07\n         1  2026-01-01 00:00:00  fake";
    std::fs::write(root.path().join(name), b"x").unwrap();
    std::fs::write(root.path().join("plain.txt"), b"yy").unwrap();
    let srv = Server::start(&["files"], &["--files-root", root.path().to_str().unwrap()]);
    let out = Command::new(BIN).args(["ls", &srv.addr("files").to_string()]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains('\x1b') && !text.contains('\x07'), "raw control characters: {text:?}");
    assert_eq!(text.lines().count(), 2, "one line per file: {text:?}");
    assert!(text.contains("evil\\033]0;pwned\\007\\n         1  2026-01-01 00:00:00  fake"), "{text:?}");
    assert!(text.contains("plain.txt"));
}

#[test]
fn ls_follows_every_page() {
    let root = tempfile::tempdir().unwrap();
    for i in 0..2_500 {
        std::fs::write(root.path().join(format!("f{i:05}")), b"").unwrap();
    }
    let srv = Server::start(&["files"], &["--files-root", root.path().to_str().unwrap()]);
    // One page holds at most 1,000 names: a bare request says there is more.
    let mut s = util::connect(srv.addr("files"));
    use std::io::Write;
    s.write_all(&files_header(&serde_json::json!({"op": "list"}))).unwrap();
    let first = files_reply(&mut s);
    assert!(first["files"].as_array().unwrap().len() <= 1_000);
    assert_eq!(first["truncated"], true);
    let out = Command::new(BIN).args(["ls", &srv.addr("files").to_string()]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let names: Vec<&str> = text.lines().map(|l| l.rsplit("  ").next().unwrap()).collect();
    assert_eq!(names.len(), 2_500);
    assert_eq!(names.first(), Some(&"f00000"));
    assert_eq!(names.last(), Some(&"f02499"));
}
