//! The tutorial's own Python clients (tests/clients, verbatim), run with
//! python3 against our servers, with only their `ip_port` pointed at them.

mod util;

use std::time::Duration;

use util::{client_script, python3, run_python_until, Server};

#[test]
fn tutorial_tcp_echo_client_gets_uppercase_replies() {
    if python3().is_none() {
        return;
    }
    let srv = Server::start(&["echo"], &[]);
    let (_dir, script) = client_script("tcp_echo_client.py", srv.addr("echo"));
    let out = run_python_until(&script, "hello\n\nstraße\nquit\n", &[], Duration::from_secs(20));
    assert!(out.contains("客户端接收数据 HELLO\n"), "output: {out}");
    assert!(out.contains("客户端接收数据 STRASSE\n"), "output: {out}");
    assert_eq!(out.matches("客户端接收数据").count(), 2, "output: {out}");
}

#[test]
fn tutorial_udp_echo_client_gets_uppercase_replies() {
    if python3().is_none() {
        return;
    }
    let srv = Server::start(&["udp-echo"], &[]);
    let (_dir, script) = client_script("udp_echo_client.py", srv.addr("udp-echo"));
    // This client never exits on its own (it loops on EOFError), so stop it
    // once the three replies are in.
    let want = ["接收的数据 HELLO\n", "接收的数据 \n", "接收的数据 WORLD\n"];
    let out = run_python_until(&script, "hello\n\nworld\n", &want, Duration::from_secs(20));
    for w in want {
        assert!(out.contains(w), "missing {w:?} in output: {out}");
    }
}
