//! `wireloop send` with a frame over the server's limit shows the server's
//! refusal, not the `Broken pipe` its write ran into.

mod util;

use std::io::Write;
use std::process::{Command, Stdio};

use util::{Server, BIN};

#[test]
fn an_oversized_frame_shows_the_servers_error() {
    let srv = Server::start(&["framed"], &[]);
    let mut child = Command::new(BIN)
        .args(["send", &srv.addr("framed").to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = vec![b'x'; 17 * 1024 * 1024];
    line.push(b'\n');
    let mut stdin = child.stdin.take().unwrap();
    std::thread::spawn(move || {
        let _ = stdin.write_all(&line);
    });
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("server said: error: ") && err.contains("frame"), "{err}");
    assert!(!err.contains("Broken pipe"), "{err}");
}
