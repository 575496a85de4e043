//! The examples run as documented (cargo test builds them; this runs them).

mod util;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("examples").join(name);
    assert!(
        dir.exists(),
        "example {name} not built at {} (plain `cargo test` builds the examples)",
        dir.display()
    );
    dir
}

#[test]
fn embed_example_serves_its_own_protocol_and_stops_through_the_handle() {
    let out = Command::new(example("embed")).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "client: SET lang rust -> OK",
        "client: GET lang     -> rust",
        "client: GET missing  -> NIL",
        "client: FLY away     -> ERR unknown command: FLY away",
        r#"stopped; store holds {"lang": "rust"}"#,
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

#[test]
fn echo_server_and_client_examples_work_together() {
    let mut server = Command::new(example("echo_server"))
        .arg("127.0.0.1:0")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.split_whitespace().nth(3).expect("echo server on ADDR").to_string();
    let out = Command::new(example("echo_client"))
        .args([&addr, "hello", "straße"])
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "HELLO\nSTRASSE\n");
}

#[test]
fn udp_echo_server_and_client_examples_work_together() {
    let mut server = Command::new(example("udp_echo_server"))
        .arg("127.0.0.1:0")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split_whitespace()
        .nth(4)
        .expect("udp echo server on ADDR")
        .to_string();
    let out = Command::new(example("udp_echo_client"))
        .args([&addr, "hello", ""])
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "HELLO\n\n");
}
