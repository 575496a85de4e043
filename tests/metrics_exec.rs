//! `serve --exec/--files … --metrics …`: the exec and files services' own
//! counters (commands started, running, killed by reason, request errors by
//! kind; uploads, downloads, bytes, partials kept) after known requests.

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

#[test]
fn files_counters_match_the_transfers() {
    use util::{files_header as header, files_reply as reply, md5_hex};
    let root = tempfile::tempdir().unwrap();
    let args: Vec<String> = [
        "serve",
        "--only",
        "files",
        "--files",
        "127.0.0.1:0",
        "--files-root",
        root.path().to_str().unwrap(),
        "--metrics",
        "127.0.0.1:0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let srv = Server::start_args(&args, 2);
    let (files, metrics) = (srv.addr("files"), srv.addr("metrics"));
    let data = vec![7u8; 3000];
    let mut s = TcpStream::connect(files).unwrap();
    s.write_all(&header(&json!({"file_name": "a.bin", "file_size": 3000, "md5": md5_hex(&data)}))).unwrap();
    s.write_all(&data).unwrap();
    assert_eq!(reply(&mut s)["ok"], true);
    s.write_all(&header(&json!({"op": "get", "file_name": "a.bin"}))).unwrap();
    assert_eq!(reply(&mut s)["ok"], true);
    let mut body = vec![0; 3000];
    s.read_exact(&mut body).unwrap();
    assert_eq!(body, data);
    // An upload cut after 1000 of its 3000 bytes keeps its partial.
    let mut cut = TcpStream::connect(files).unwrap();
    cut.write_all(&header(&json!({"file_name": "b.bin", "file_size": 3000, "md5": md5_hex(&data)}))).unwrap();
    cut.write_all(&data[..1000]).unwrap();
    let end = Instant::now() + Duration::from_secs(5);
    while value(&scrape(metrics), "wireloop_files_received_bytes_total{service=\"files\"}") != Some(4000.0) {
        assert!(Instant::now() < end, "the cut upload's bytes never arrived");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(cut);
    let mut body = scrape(metrics);
    while value(&body, "wireloop_files_partials_kept_total{service=\"files\"}") != Some(1.0) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
        body = scrape(metrics);
    }
    let v = |n: &str| value(&body, &format!("{n}{{service=\"files\"}}"));
    assert_eq!(v("wireloop_files_partials_kept_total"), Some(1.0), "{body}");
    assert_eq!(v("wireloop_files_uploads_total"), Some(1.0));
    assert_eq!(v("wireloop_files_downloads_total"), Some(1.0));
    assert_eq!(v("wireloop_files_received_bytes_total"), Some(4000.0));
    assert_eq!(v("wireloop_files_sent_bytes_total"), Some(3000.0));
}
