//! A protocol in twenty lines: each complete line is answered with its
//! length in bytes; a partial line stays unconsumed until the rest arrives.
//! The primer (docs/nonblocking.md) drives it with `wireloop chop`.
//!
//! ```text
//! RUST_LOG=wireloop=trace cargo run --example line_len -- 127.0.0.1:9000
//! printf 'hello\nstraße\n' | cargo run -- chop 127.0.0.1:9000 -s 3 -d 20
//! ```

use wireloop::{Config, Context, EventLoop, Flow, Handler, Input};

struct LineLen;

impl Handler for LineLen {
    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_>) -> Flow {
        while let Some(i) = input.bytes().iter().position(|&b| b == b'\n') {
            cx.out().extend_from_slice(format!("{i}\n").as_bytes());
            input.consume(i + 1);
        }
        Flow::Continue
    }
}

fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9000".into());
    let mut lp = EventLoop::new(Config::default())?;
    let bound = lp.listen(addr.parse().map_err(std::io::Error::other)?, |_peer| LineLen)?;
    println!("listening {}", bound.addr);
    lp.run(std::time::Duration::from_secs(1))
}
