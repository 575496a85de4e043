//! Embedding the loop in a program that has other work to do.
//!
//! The program owns its main loop: it calls `poll_once` with a short timeout
//! and does its own periodic work (a status line) between passes. The
//! protocol — a tiny in-memory key-value store — is written here, outside the
//! crate, in a few dozen lines. The store is the loop's shared state: every
//! handler call reaches it as `cx.state_mut()`, without locks or
//! `Rc<RefCell<…>>`, because everything runs on one thread.
//!
//! A client thread plays a session against it, then stops the loop through
//! the thread-safe `Handle`.
//!
//! ```text
//! cargo run --example embed
//! ```

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use wireloop::{Config, Context, EventLoop, Flow, Handler, Input};

/// The loop's shared state.
type Store = HashMap<String, String>;

/// `SET key value\n` → `OK`, `GET key\n` → the value or `NIL`; anything else
/// gets `ERR …` and the connection closes.
struct Kv;

impl Handler<Store> for Kv {
    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_, Store>) -> Flow {
        // Complete lines only; a partial line stays unconsumed until more arrives.
        while let Some(end) = input.bytes().iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&input.bytes()[..end]).into_owned();
            input.consume(end + 1);
            let mut words = line.trim_end().splitn(3, ' ');
            let reply = match (words.next(), words.next(), words.next()) {
                (Some("SET"), Some(k), Some(v)) => {
                    cx.state_mut().insert(k.into(), v.into());
                    "OK".to_string()
                }
                (Some("GET"), Some(k), None) => cx.state().get(k).cloned().unwrap_or_else(|| "NIL".into()),
                _ => {
                    let _ = writeln!(cx.out(), "ERR unknown command: {line}");
                    return Flow::Close;
                }
            };
            let _ = writeln!(cx.out(), "{reply}");
        }
        Flow::Continue
    }
}

fn main() -> std::io::Result<()> {
    let mut lp = EventLoop::with_state(Config::default(), Store::new())?;
    let bound = lp.listen("127.0.0.1:0".parse().unwrap(), |_peer| Kv)?;
    println!("kv store on {}", bound.addr);

    let handle = lp.handle();
    let client = std::thread::spawn(move || -> std::io::Result<()> {
        let mut s = TcpStream::connect(bound.addr)?;
        let mut r = BufReader::new(s.try_clone()?);
        for cmd in ["SET lang rust", "GET lang", "GET missing", "FLY away"] {
            s.write_all(format!("{cmd}\n").as_bytes())?;
            let mut reply = String::new();
            r.read_line(&mut reply)?;
            println!("client: {cmd:<12} -> {}", reply.trim_end());
        }
        handle.stop(); // from another thread
        Ok(())
    });

    let mut last_status = Instant::now();
    while !lp.stop_requested() {
        lp.poll_once(Some(Duration::from_millis(50)))?;
        // The program's own work, between passes.
        if last_status.elapsed() >= Duration::from_millis(200) {
            println!("status: {} connection(s), {} key(s)", lp.connections(), lp.state().len());
            last_status = Instant::now();
        }
    }
    client.join().expect("client thread")?;
    lp.shutdown(Duration::from_secs(1))?;
    println!("stopped; store holds {:?}", lp.state());
    Ok(())
}
