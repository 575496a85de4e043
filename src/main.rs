//! The `wireloop` command: `serve` runs the services on one loop; the other
//! subcommands are thin clients for them.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            // Errors quote what peers sent: never raw control characters.
            eprintln!("wireloop: {}", cli::shown(&e));
            ExitCode::from(1)
        }
    }
}
