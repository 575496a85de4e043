//! The UDP uppercase echo server, built on the library API.
//!
//! ```text
//! cargo run --example udp_echo_server -- 127.0.0.1:8081
//! ```

use std::time::Duration;

use wireloop::{services, Config, EventLoop};

fn main() -> std::io::Result<()> {
    env_logger::init();
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8081".into());
    let mut lp = EventLoop::new(Config::default())?;
    let bound = lp.bind_udp(addr.parse().expect("an address like 127.0.0.1:8081"), services::udp_echo::answer)?;
    println!("udp echo server on {} (Ctrl-C to stop)", bound.addr);
    lp.run(Duration::from_secs(3))
}
