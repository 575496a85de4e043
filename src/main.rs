//! The `wireloop` command: `serve` runs the services on one loop; the other
//! subcommands are thin clients for them.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_logging(args.log_format);
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            // Errors quote what peers sent: never raw control characters.
            eprintln!("wireloop: {}", cli::shown(&e));
            ExitCode::from(1)
        }
    }
}
