//! `wireloop serve --tls …` and the clients' `--tls`/`--ca`/`--cert`: an
//! independent TLS client (Python's `ssl` module, and `openssl s_client`
//! where installed) gets exact bytes from echo, framed and files; the
//! wireloop clients round-trip through every TLS service; mutual TLS stands
//! in for the exec token; usage errors exit 2 before anything starts.

mod tls_util;
mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use tls_util::Pki;
use util::{python3, run_cli, serve_args, wait_until, Server};

fn tls_flags(pki: &Pki, services: &str) -> Vec<String> {
    vec![
        "--tls".into(),
        services.into(),
        "--tls-cert".into(),
        pki.path_str("cert.pem"),
        "--tls-key".into(),
        pki.path_str("key.pem"),
    ]
}

fn start(names: &[&str], pki: &Pki, services: &str, more: &[&str]) -> Server {
    let mut extra = tls_flags(pki, services);
    extra.extend(more.iter().map(|s| s.to_string()));
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    Server::start(names, &extra)
}

const PY_CLIENT: &str = r#"
import hashlib, json, socket, ssl, struct, sys
ca, echo_port, framed_port, files_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ctx = ssl.create_default_context(cafile=ca)

def conn(port):
    return ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")

def read_n(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise SystemExit("closed after %r" % b)
        b += c
    return b

s = conn(echo_port)
s.sendall("hello, straße\n".encode())
print("echo", read_n(s, 15))
s.close()

s = conn(framed_port)
s.sendall(struct.pack("<i", 5) + b"hello" + struct.pack("<i", 3) + b"abc")
print("framed", read_n(s, 14))
s.close()

body = b"over tls\n"
s = conn(files_port)
hdr = json.dumps({"file_name": "py.txt", "file_size": len(body), "md5": hashlib.md5(body).hexdigest()}).encode()
s.sendall(struct.pack("<i", len(hdr)) + hdr + body)
n = struct.unpack("<i", read_n(s, 4))[0]
print("files", json.loads(read_n(s, n)))
s.close()
s = conn(files_port)
hdr = json.dumps({"op": "get", "file_name": "py.txt"}).encode()
s.sendall(struct.pack("<i", len(hdr)) + hdr)
n = struct.unpack("<i", read_n(s, 4))[0]
reply = json.loads(read_n(s, n))
print("get", reply["file_size"], read_n(s, reply["file_size"]))
print("version", s.version())
"#;

#[test]
fn python_ssl_gets_exact_bytes_from_echo_framed_and_files() {
    let Some(py) = python3() else { return };
    let pki = Pki::new("python");
    let root = tempfile::tempdir().unwrap();
    let root_s = root.path().to_str().unwrap();
    let srv = start(&["echo", "framed", "files"], &pki, "echo,framed,files", &["--files-root", root_s]);
    let port = |n| srv.addr(n).port().to_string();
    let out = Command::new(py)
        .args(["-c", PY_CLIENT, &pki.path_str("ca.pem"), &port("echo"), &port("framed"), &port("files")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("echo b'HELLO, STRASSE\\n'"), "{text}");
    assert!(text.contains("framed b'successsuccess'"), "{text}");
    assert!(text.contains("files {'ok': True, 'file_name': 'py.txt', 'file_size': 9"), "{text}");
    assert!(text.contains("get 9 b'over tls\\n'"), "{text}");
    assert!(text.contains("version TLSv1.3"), "{text}");
    assert_eq!(std::fs::read(root.path().join("py.txt")).unwrap(), b"over tls\n");
}

#[test]
fn openssl_s_client_gets_the_uppercase_echo() {
    if Command::new("openssl").arg("version").output().map_or(true, |o| !o.status.success()) {
        eprintln!("SKIPPED: no openssl");
        return;
    }
    let pki = Pki::new("openssl");
    let srv = start(&["echo"], &pki, "echo", &[]);
    let mut child = Command::new("openssl")
        .args(["s_client", "-quiet", "-no_ign_eof", "-verify_return_error", "-servername", "localhost"])
        .args(["-connect", &srv.addr("echo").to_string(), "-CAfile", &pki.path_str("ca.pem")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Keep stdin open until the reply is in: s_client stops at stdin's EOF.
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"from openssl\n").unwrap();
    let mut reply = String::new();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut out, &mut reply).unwrap();
    drop(stdin);
    let done = child.wait_with_output().unwrap();
    assert_eq!(reply, "FROM OPENSSL\n", "stderr: {}", String::from_utf8_lossy(&done.stderr));
}

#[test]
fn the_wireloop_clients_round_trip_over_tls() {
    let pki = Pki::new("clients");
    let root = tempfile::tempdir().unwrap();
    let root_s = root.path().to_str().unwrap();
    let extra = ["--files-root", root_s];
    let srv = start(&["echo", "framed", "files", "exec"], &pki, "echo,framed,files,exec", &extra);
    let ca = pki.path_str("ca.pem");
    let addr = |n: &str| srv.addr(n).to_string();

    let out = run_cli(&["echo", &addr("echo"), "--ca", &ca], "one\ntwo\n");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ONE\nTWO\n", "{out:?}");

    let out = run_cli(&["send", &addr("framed"), "--ca", &ca, "hi"], "");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "success\n", "{out:?}");

    let out = run_cli(&["exec", &addr("exec"), "--ca", &ca, "--", "printf tls; exit 4"], "");
    assert_eq!(out.stdout, b"tls", "{out:?}");
    assert_eq!(out.status.code(), Some(4), "{out:?}");

    let file = root.path().join("..").join(format!("up-{}.bin", std::process::id()));
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    let out = run_cli(&["put", &addr("files"), file.to_str().unwrap(), "--name", "up.bin", "--ca", &ca], "");
    assert!(out.status.success(), "{out:?}");
    let out = run_cli(&["ls", &addr("files"), "--ca", &ca], "");
    assert!(String::from_utf8_lossy(&out.stdout).contains("300000"), "{out:?}");
    let back = root.path().join("back.bin");
    let out = run_cli(&["get", &addr("files"), "up.bin", "-o", back.to_str().unwrap(), "--ca", &ca], "");
    assert!(out.status.success(), "{out:?}");
    assert!(std::fs::read(&back).unwrap() == data);
    let _ = std::fs::remove_file(&file);

    let out = run_cli(&["chop", &addr("echo"), "--ca", &ca, "-s", "1", "-d", "5", "--raw"], "ß");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "\"SS\"\n", "{out:?}");

    // Every reply checked, 2 connections x 4 in flight, 300 requests.
    let out =
        run_cli(&["bench", "framed", &addr("framed"), "--ca", &ca, "-c", "2", "-P", "4", "-n", "300", "--json"], "");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{out:?}"));
    assert!(report["requests"].as_u64().unwrap() >= 300, "{report}");
}

#[test]
fn a_client_that_does_not_trust_the_server_says_so() {
    let pki = Pki::new("trusted");
    let other = Pki::new("untrusted");
    let srv = start(&["echo"], &pki, "echo", &[]);
    let out = run_cli(&["echo", &srv.addr("echo").to_string(), "--ca", &other.path_str("ca.pem")], "x\n");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect to") && err.contains("UnknownIssuer"), "{err}");
}

#[test]
fn mutual_tls_lets_exec_run_beyond_loopback_without_a_token() {
    let pki = Pki::new("mutual");
    pki.client_auth();
    // Without a token or client certificates, a non-loopback exec refuses to start.
    let args = serve_args(&["exec"], &[]);
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    let at = args.iter().position(|a| *a == "127.0.0.1:0").unwrap();
    args[at] = "0.0.0.0:0";
    let out = run_cli(&args, "");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-client-ca"), "{out:?}");
    // With them it serves, and only clients with a certificate get in.
    let mut extra = tls_flags(&pki, "exec");
    extra.extend(["--tls-client-ca".to_string(), pki.path_str("ca.pem")]);
    let mut full: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    full.extend(extra);
    let srv = Server::start_args(&full, 1);
    let addr = format!("127.0.0.1:{}", srv.addr("exec").port());
    let ca = pki.path_str("ca.pem");
    let (cert, key) = (pki.path_str("client-cert.pem"), pki.path_str("client-key.pem"));
    let out = run_cli(&["exec", &addr, "--ca", &ca, "--cert", &cert, "--key", &key, "--", "printf ok"], "");
    assert_eq!(out.stdout, b"ok", "{out:?}");
    let out = run_cli(&["exec", &addr, "--ca", &ca, "--", "printf ok"], "");
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
}

#[test]
fn tls_usage_errors_exit_2_before_anything_starts() {
    let pki = Pki::new("usage");
    std::fs::write(pki.path("junk.pem"), "not a certificate\n").unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--tls".into(), "echo".into()], "--tls needs --tls-cert"),
        (vec!["--tls-cert".into(), pki.path_str("cert.pem")], "need --tls SERVICE"),
        (tls_flags(&pki, "exec"), "--tls names exec, which this command line does not serve"),
        (
            vec!["--tls", "echo", "--tls-cert", &pki.path_str("junk.pem"), "--tls-key", &pki.path_str("key.pem")]
                .into_iter()
                .map(String::from)
                .collect(),
            "junk.pem: no CERTIFICATE block",
        ),
        (
            vec!["--tls", "echo", "--tls-cert", &pki.path_str("cert.pem"), "--tls-key", &pki.path_str("cert.pem")]
                .into_iter()
                .map(String::from)
                .collect(),
            "cert.pem: no usable PRIVATE KEY",
        ),
    ];
    for (extra, want) in cases {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let args = serve_args(&["echo"], &extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run_cli(&args, "");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {err}");
        assert!(err.contains(want), "{extra:?}: wanted {want:?} in {err}");
        assert!(out.stdout.is_empty(), "nothing listens: {:?}", String::from_utf8_lossy(&out.stdout));
    }
}

#[test]
fn a_failed_handshake_is_logged_and_the_server_goes_on() {
    let pki = Pki::new("logged");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr");
    let args = serve_args(&["echo"], &["--metrics", "127.0.0.1:0"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_wireloop"))
        .args(&args)
        .args(tls_flags(&pki, "echo,metrics"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let mut listening = |name: &str| -> std::net::SocketAddr {
        let line = lines.next().unwrap().unwrap();
        assert!(line.starts_with(&format!("listening {name} ")), "{line}");
        line.split_whitespace().nth(3).unwrap().parse().unwrap()
    };
    let addr = listening("echo");
    let metrics = listening("metrics");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(child);
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"plain text, not a ClientHello\n").unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("the server closes it");
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(wait_until(Duration::from_secs(5), || logged().contains("TLS:")), "{}", logged());
    let line = logged().lines().find(|l| l.contains("TLS:")).map(str::to_string).unwrap_or_default();
    assert!(line.contains("127.0.0.1") && line.contains("closing"), "{line}");
    let out = run_cli(&["echo", &addr.to_string(), "--ca", &pki.path_str("ca.pem")], "still\n");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "STILL\n", "{out:?}");
    // The metrics, themselves over TLS, count it.
    let Some(py) = python3() else { return };
    let script = "import ssl, sys, urllib.request\n\
                  ctx = ssl.create_default_context(cafile=sys.argv[1])\n\
                  print(urllib.request.urlopen(sys.argv[2], context=ctx).read().decode())";
    let url = format!("https://localhost:{}/metrics", metrics.port());
    let out = Command::new(py).args(["-c", script, &pki.path_str("ca.pem"), &url]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let want = "wireloop_tcp_connection_errors_total{service=\"echo\",kind=\"tls\"} 1";
    assert!(text.contains(want), "{text}{}", String::from_utf8_lossy(&out.stderr));
}
