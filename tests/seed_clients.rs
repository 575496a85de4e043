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

#[test]
fn tutorial_method_1_client_gets_ready_and_success() {
    if python3().is_none() {
        return;
    }
    let srv = Server::start(&["handshake"], &[]);
    let (_dir, script) = client_script("handshake_client.py", srv.addr("handshake"));
    let out = run_python_until(&script, "hello\nstraße ok\n", &[], Duration::from_secs(20));
    assert_eq!(out.matches("数据发送成功").count(), 2, "output: {out}");
    assert!(out.contains("数据长度 5\n") && out.contains("数据长度 10\n"), "output: {out}");
}

#[test]
fn tutorial_method_2_client_gets_success() {
    if python3().is_none() {
        return;
    }
    let srv = Server::start(&["framed"], &[]);
    let (_dir, script) = client_script("framed_client.py", srv.addr("framed"));
    let out = run_python_until(&script, "hello\n你好\nthird\n", &[], Duration::from_secs(20));
    assert_eq!(out.matches("数据发送成功").count(), 3, "output: {out}");
    assert!(!out.contains("数据发送失败"), "output: {out}");
}
