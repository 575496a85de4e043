//! `serve --exec … --metrics …`: the exec service's own counters (commands
//! started, running, killed by reason, request errors by kind) after known
//! requests.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use util::Server;
use wireloop::codec::frame::ByteOrder;
use wireloop::codec::header::{encode_header, HeaderDecoder, Item};

fn request(addr: SocketAddr, req: Value) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut msg = Vec::new();
    encode_header(ByteOrder::Little, &req, &mut msg).unwrap();
    s.write_all(&msg).unwrap();
    s
}

/// The `type` of the final message (`exit` or `error`) and its header.
fn final_message(s: &mut TcpStream) -> Value {
    let (mut dec, mut buf, mut chunk) = (HeaderDecoder::default(), Vec::new(), [0u8; 4096]);
    loop {
        while let Some(d) = dec.decode(&buf).unwrap() {
            let n = d.consumed;
            if let Item::Header(h) = d.item {
                let kind = h["type"].as_str().unwrap().to_string();
                if kind == "exit" || kind == "error" {
                    return Value::Object(h);
                }
                dec.begin_body(h["len"].as_u64().unwrap());
            }
            buf.drain(..n);
        }
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed before the final message");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply.split_once("\r\n\r\n").unwrap().1.to_string()
}

fn value(body: &str, sample: &str) -> Option<f64> {
    body.lines().find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn exec_counters_match_the_requests() {
    let args: Vec<String> = ["serve", "--only", "exec", "--exec", "127.0.0.1:0", "--metrics", "127.0.0.1:0"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let srv = Server::start_args(&args, 2);
    let (exec, metrics) = (srv.addr("exec"), srv.addr("metrics"));
    assert_eq!(final_message(&mut request(exec, json!({"cmd": "true"})))["type"], "exit");
    let timed = final_message(&mut request(exec, json!({"cmd": "sleep 5", "timeout_ms": 200})));
    assert_eq!(timed["type"], "exit", "{timed}");
    assert_eq!(final_message(&mut request(exec, json!({"nocmd": 1})))["type"], "error");
    // A client that goes away while its command runs.
    let gone = request(exec, json!({"cmd": "sleep 5"}));
    let end = Instant::now() + Duration::from_secs(5);
    while value(&scrape(metrics), "wireloop_exec_commands_running{service=\"exec\"}") != Some(1.0) {
        assert!(Instant::now() < end, "the command never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(gone);
    let mut body = scrape(metrics);
    while value(&body, "wireloop_exec_commands_running{service=\"exec\"}") != Some(0.0) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
        body = scrape(metrics);
    }
    let v = |s: &str| value(&body, s);
    assert_eq!(v("wireloop_exec_commands_running{service=\"exec\"}"), Some(0.0), "{body}");
    assert_eq!(v("wireloop_exec_commands_started_total{service=\"exec\"}"), Some(3.0));
    assert_eq!(v("wireloop_exec_commands_killed_total{service=\"exec\",reason=\"timeout\"}"), Some(1.0));
    assert_eq!(v("wireloop_exec_commands_killed_total{service=\"exec\",reason=\"closed\"}"), Some(1.0));
    assert_eq!(v("wireloop_exec_commands_killed_total{service=\"exec\",reason=\"output_cap\"}"), Some(0.0));
    assert_eq!(v("wireloop_exec_request_errors_total{service=\"exec\",kind=\"bad_request\"}"), Some(1.0));
    assert_eq!(v("wireloop_exec_request_errors_total{service=\"exec\",kind=\"busy\"}"), Some(0.0));
    assert_eq!(v("wireloop_tcp_connections_accepted_total{service=\"exec\"}"), Some(4.0));
}
