//! The examples run as documented (cargo test builds them; this runs them).

mod util;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("examples").join(name);
    assert!(dir.exists(), "example {name} not built at {} (plain `cargo test` builds the examples)", dir.display());
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
    let mut server = Command::new(example("echo_server")).arg("127.0.0.1:0").stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.split_whitespace().nth(3).expect("echo server on ADDR").to_string();
    let out = Command::new(example("echo_client")).args([&addr, "hello", "straße"]).output().unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "HELLO\nSTRASSE\n");
}

#[test]
fn udp_echo_server_and_client_examples_work_together() {
    let mut server =
        Command::new(example("udp_echo_server")).arg("127.0.0.1:0").stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.split_whitespace().nth(4).expect("udp echo server on ADDR").to_string();
    let out = Command::new(example("udp_echo_client")).args([&addr, "hello", ""]).output().unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "HELLO\n\n");
}

const STRUCT_OUTPUT: &str = "12 8
Before :  b'0000000000000000000000000000000000000000'
After pack b'0100000061626300cdcc2c406465666765000000'
(1, b'abc', 2.700000047683716)
(b'defg', 101)
After pack b'7b0000007b000000cdcc2c406465666765000000'
(123, 123)
";

#[test]
fn struct_layout_prints_the_tutorials_bytes() {
    let out = Command::new(example("struct_layout")).output().unwrap();
    let ours = String::from_utf8_lossy(&out.stdout).into_owned();
    if cfg!(target_endian = "little") {
        assert_eq!(ours, STRUCT_OUTPUT);
    }
    if util::python3().is_some() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
        let py = Command::new("python3").arg("struct_layout.py").current_dir(dir).output().unwrap();
        assert_eq!(ours, String::from_utf8_lossy(&py.stdout), "differs from the Python original");
    }
}

/// Runs sticky_server with two read sizes against sticky_client in `mode`.
fn sticky(mode: &str, first: &str, second: &str) -> String {
    let mut server = Command::new(example("sticky_server"))
        .args(["127.0.0.1:0", first, second, "500"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let first_line = lines.next().unwrap().unwrap();
    let addr = first_line.strip_prefix("listening ").expect("listening line").to_string();
    let client = Command::new(example("sticky_client")).args([mode, &addr]).output().unwrap();
    assert!(client.status.success());
    let rest: Vec<String> = lines.map_while(Result::ok).filter(|l| l.starts_with("recv")).collect();
    let _ = server.wait();
    rest.join("\n")
}

#[test]
fn sticky_case_1_two_sends_arrive_as_one_read() {
    assert_eq!(sticky("merge", "10", "10"), "recv(10) -----> \"hellofeng\"\nrecv(10) -----> \"\"");
}

#[test]
fn sticky_case_2_a_short_read_leaves_the_rest_for_the_next() {
    assert_eq!(sticky("once", "2", "10"), "recv(2) -----> \"he\"\nrecv(10) -----> \"llo feng\"");
}

#[test]
fn run_command_prints_both_streams_and_the_status() {
    let out = Command::new(example("run_command")).args(["ls", "/nonexistent-dir", "Cargo.toml"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("error : ls: cannot access '/nonexistent-dir'"), "{text}");
    assert!(text.contains("out : Cargo.toml\n"), "{text}");
    assert!(text.contains("status : code 2, signal null"), "{text}");
}

#[test]
fn reuseaddr_shows_eaddrinuse_then_success() {
    let out = Command::new(example("reuseaddr")).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("rebind without SO_REUSEADDR: EADDRINUSE"), "{text}");
    assert!(text.contains("rebind with SO_REUSEADDR: ok, listening on 127.0.0.1:"), "{text}");
}

#[test]
fn tls_echo_example_answers_itself_and_the_wireloop_client() {
    let mut server = Command::new(example("tls_echo")).arg("127.0.0.1:0").stdout(Stdio::piped()).spawn().unwrap();
    let mut out = BufReader::new(server.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    // tls echo on ADDR (certificate: PATH)
    let words: Vec<&str> = line.split_whitespace().collect();
    let (addr, pem) = (words[3].to_string(), words[5].trim_end_matches(')').to_string());
    let mut reply = String::new();
    out.read_line(&mut reply).unwrap();
    let cli = util::run_cli(&["echo", &addr, "--ca", &pem], "and from the command line\n");
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(reply, "client (tls: true): HELLO OVER TLS, STRASSE\n", "{line}");
    assert_eq!(String::from_utf8_lossy(&cli.stdout), "AND FROM THE COMMAND LINE\n", "{cli:?}");
}
