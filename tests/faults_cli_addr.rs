//! Client addresses as `nc` takes them: `HOST:PORT` with a name looked up
//! (`localhost`, from /etc/hosts), `[v6]:PORT`, a bare port, and a bare host
//! for `sntp` (port 123). Loopback only.

mod util;

use util::{run_cli as run, Server};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn tcp_clients_take_a_host_name() {
    let srv = Server::start(&["echo", "framed", "exec"], &[]);
    let echo = format!("localhost:{}", srv.addr("echo").port());
    let out = run(&["echo", &echo], "hi\n");
    assert_eq!(text(&out.stdout), "HI\n", "stderr: {}", text(&out.stderr));
    let framed = format!("localhost:{}", srv.addr("framed").port());
    let out = run(&["send", &framed, "one"], "");
    assert_eq!(text(&out.stdout), "success\n", "stderr: {}", text(&out.stderr));
    let exec = format!("localhost:{}", srv.addr("exec").port());
    let out = run(&["exec", &exec, "--", "echo ok"], "");
    assert_eq!(text(&out.stdout), "ok\n", "stderr: {}", text(&out.stderr));
}

#[test]
fn udp_clients_take_a_host_name_and_sntp_a_bare_host() {
    let srv = Server::start(&["time", "sntp"], &[]);
    let time = format!("localhost:{}", srv.addr("time").port());
    let out = run(&["time", &time, "%Y"], "");
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let sntp = format!("localhost:{}", srv.addr("sntp").port());
    let out = run(&["sntp", &sntp], "");
    assert!(text(&out.stdout).contains("stratum"), "stderr: {}", text(&out.stderr));
    // Port 123: nothing serves it here, so the client must get as far as asking.
    for host in ["127.0.0.1", "localhost", "[::1]"] {
        let out = run(&["sntp", host, "--timeout", "1"], "");
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{host}: {err}");
        assert!(err.contains("no reply from") && !err.contains("not an address"), "{host}: {err}");
    }
}

#[test]
fn a_bracketed_v6_address_works() {
    let args: Vec<String> = ["serve", "--only", "echo", "--echo", "[::1]:0"].iter().map(|s| s.to_string()).collect();
    let srv = Server::start_args(&args, 1);
    let addr = srv.addr("echo");
    let out = run(&["echo", &format!("[::1]:{}", addr.port())], "v6\n");
    assert_eq!(text(&out.stdout), "V6\n", "stderr: {}", text(&out.stderr));
}

#[test]
fn a_bare_host_is_refused_where_there_is_no_default_port() {
    let out = run(&["echo", "localhost"], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("is not an address"), "{}", text(&out.stderr));
}
