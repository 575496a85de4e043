//! The UDP uppercase echo server, built on the library API.
//!
//! ```text
//! cargo run --example udp_echo_server -- 127.0.0.1:8081
//! ```

use std::time::Duration;

use wireloop::ratelimit::RateConfig;
use wireloop::{services, Config, EventLoop};

fn main() -> std::io::Result<()> {
    env_logger::init();
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8081".into());
    let mut lp = EventLoop::new(Config::default())?;
    // The guarded echo (`udp_echo::answer` alone is the bare function): a
    // per-source rate limit and byte credit, no reply to ports below 1024.
    let echo = services::udp_echo::service(RateConfig::default());
    let bound = lp.bind_udp(addr.parse().expect("an address like 127.0.0.1:8081"), echo)?;
    println!("udp echo server on {} (Ctrl-C to stop)", bound.addr);
    lp.run(Duration::from_secs(3))
}
