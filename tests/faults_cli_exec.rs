//! `wireloop exec` on the command line: arguments after `--` stay apart, as
//! `docker exec` and `kubectl exec` keep them; one argument is a shell line.

mod util;

use std::process::Command;

use util::{Server, BIN};

fn exec(addr: &str, cmd: &[&str]) -> std::process::Output {
    Command::new(BIN).args(["exec", addr, "--"]).args(cmd).output().unwrap()
}

#[test]
fn several_arguments_are_quoted_for_the_shell() {
    let srv = Server::start(&["exec"], &[]);
    let addr = srv.addr("exec").to_string();
    let out = exec(&addr, &["sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let out = exec(&addr, &["printf", "%s\\n", "a b"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a b\n");
    let out = exec(&addr, &["echo", "it's", "$HOME", "`x`", ""]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "it's $HOME `x` \n");
}

#[test]
fn a_single_argument_stays_a_shell_command_line() {
    let srv = Server::start(&["exec"], &[]);
    let out = exec(&srv.addr("exec").to_string(), &["echo a | tr a b; exit 3"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "b\n");
    assert_eq!(out.status.code(), Some(3));
}
