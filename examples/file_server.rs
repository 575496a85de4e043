//! The `files` service on its own loop, built on the library API: upload,
//! download, resume and list over the tutorial's 4-byte length + JSON header
//! + body protocol.
//!
//! ```text
//! cargo run --example file_server -- 127.0.0.1:8086 ./wireloop-files
//! cargo run --example upload -- 127.0.0.1:8086 Cargo.toml
//! ```

use std::time::Duration;

use wireloop::services::files::{self, FilesConfig};
use wireloop::{Config, EventLoop};

fn main() -> std::io::Result<()> {
    env_logger::init();
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8086".into());
    let root = args.next().unwrap_or_else(|| "wireloop-files".into());
    let cfg = FilesConfig { root: root.into(), ..FilesConfig::default() };
    let mut lp = EventLoop::new(Config::default())?;
    // Opening the store creates the root and sweeps stale partial uploads.
    let service = files::service(&cfg)?;
    let bound = lp.listen(addr.parse().expect("an address like 127.0.0.1:8086"), service)?;
    println!("files server on {}, storing under {} (Ctrl-C to stop)", bound.addr, cfg.root.display());
    lp.run(Duration::from_secs(3))
}
