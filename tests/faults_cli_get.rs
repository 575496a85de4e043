//! `wireloop get -o DIR` saves into the directory, as `cp` and `scp` do, and
//! a destination that cannot be written fails before the server is asked.

mod util;

use std::process::Command;

use util::{Server, BIN};

#[test]
fn get_into_a_directory_keeps_the_name() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("sub")).unwrap();
    std::fs::write(root.path().join("sub/a.txt"), b"hello").unwrap();
    let srv = Server::start(&["files"], &["--files-root", root.path().to_str().unwrap()]);
    let dest = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["get", &srv.addr("files").to_string(), "sub/a.txt", "-o", dest.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(dest.path().join("a.txt")).unwrap(), b"hello");
    assert_eq!(std::fs::read_dir(dest.path()).unwrap().count(), 1, "no leftover part file");
}

#[test]
fn an_unwritable_destination_fails_before_connecting() {
    // Nothing listens on this port: a client that checks the destination
    // first never gets as far as "cannot connect".
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain");
    std::fs::write(&file, b"").unwrap();
    let missing = dir.path().join("no/such/dir/x.txt");
    let under_file = file.join("x.txt");
    for dest in [&missing, &under_file] {
        let out = Command::new(BIN).args(["get", &addr, "a.txt", "-o", dest.to_str().unwrap()]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("cannot create") && !err.contains("cannot connect"), "{dest:?}: {err}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "nothing created");
}
