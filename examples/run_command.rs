//! The tutorial's `subprocess` example, through wireloop's child-process
//! support: run `ls` (or the given command) and print its `out :` and
//! `error :` sections — both of them, unlike the tutorial, and the exit
//! status too.
//!
//! An `EventLoop` with the `exec` service runs on a thread of its own; the
//! command's pipes are sources on that loop. This program is its client.
//!
//! ```text
//! cargo run --example run_command                 # ls
//! cargo run --example run_command -- ls /nonexistent /
//! ```

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};
use wireloop::codec::frame::ByteOrder;
use wireloop::codec::header::{encode_header, HeaderDecoder, Item};
use wireloop::services::exec::{ExecConfig, ExecService};
use wireloop::{Config, EventLoop};

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cmd = if args.is_empty() { "ls".to_string() } else { args.join(" ") };

    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || -> std::io::Result<()> {
        let mut lp = EventLoop::new(Config::default())?;
        let bound = lp.listen("127.0.0.1:0".parse().unwrap(), ExecService::new(ExecConfig::default()))?;
        tx.send((bound.addr, lp.handle())).expect("main thread");
        lp.run(Duration::from_secs(1))
    });
    let (addr, handle) = rx.recv().expect("loop thread");

    let mut s = TcpStream::connect(addr)?;
    let mut req = Vec::new();
    encode_header(ByteOrder::Little, &json!({"cmd": cmd}), &mut req).expect("a JSON object");
    s.write_all(&req)?;

    let (mut out, mut err, mut to_err) = (Vec::new(), Vec::new(), false);
    let mut dec = HeaderDecoder::default();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let exit = 'read: loop {
        while let Some(d) = dec.decode(&buf).expect("well-formed replies") {
            let n = d.consumed;
            match d.item {
                Item::Header(h) if h["type"] == "stdout" || h["type"] == "stderr" => {
                    to_err = h["type"] == "stderr";
                    dec.begin_body(h["len"].as_u64().unwrap_or(0));
                }
                Item::Header(h) => break 'read h,
                Item::Body(b) => if to_err { &mut err } else { &mut out }.extend_from_slice(b),
                Item::BodyEnd => {}
            }
            buf.drain(..n);
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            panic!("the loop closed the connection early");
        }
        buf.extend_from_slice(&chunk[..n]);
    };

    // The tutorial's layout, with both streams and the status.
    if !err.is_empty() {
        println!("error : {}", String::from_utf8_lossy(&err));
    }
    if !out.is_empty() {
        println!("out : {}", String::from_utf8_lossy(&out));
    }
    match (&exit["type"], &exit["code"], &exit["signal"]) {
        (Value::String(t), code, signal) if t == "exit" => println!("status : code {code}, signal {signal}"),
        _ => println!("status : error: {}", exit["error"]),
    }
    handle.stop();
    Ok(())
}
