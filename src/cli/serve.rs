//! `wireloop serve`: wires every service into one event loop, prints one
//! `listening <name> <tcp|udp> <ip:port>` line per socket, and stops
//! gracefully on SIGINT or SIGTERM (a second signal exits at once).

use std::io::{self, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use log::info;
use wireloop::services::exec::ExecService;
use wireloop::services::framed::{Framed, FramedConfig};
use wireloop::services::handshake::{Handshake, HandshakeConfig};
use wireloop::{services, Bound, EventLoop};

use super::{parse_addr, Order};

/// Every service `serve` knows, in the order it binds them.
const SERVICES: &[&str] = &["echo", "udp-echo", "exec", "files", "framed", "handshake", "time", "sntp"];

#[derive(Debug, Args)]
#[command(after_help = "Each service has a flag `--<name> ADDR`; `--only` picks which run.\n\
    Example: wireloop serve --only echo --echo 127.0.0.1:9000")]
pub struct ServeArgs {
    /// TCP uppercase echo: every byte answered at once with its uppercase form.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080", value_parser = parse_addr)]
    echo: SocketAddr,
    /// UDP uppercase echo: one datagram in, one uppercase datagram out.
    #[arg(long = "udp-echo", value_name = "ADDR", default_value = "127.0.0.1:8081", value_parser = parse_addr)]
    udp_echo: SocketAddr,
    /// Length-prefixed frames (the tutorial's method 2), answered `success` per frame.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8084", value_parser = parse_addr)]
    framed: SocketAddr,
    /// Length, `ready`, data, `success` (the tutorial's method 1).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8085", value_parser = parse_addr)]
    handshake: SocketAddr,
    /// Byte order of 4-byte length prefixes (`framed`).
    #[arg(long, value_enum, default_value_t = Order::Little)]
    byte_order: Order,
    /// Largest message `framed` and `handshake` accept.
    #[arg(long, value_name = "BYTES", default_value_t = 16 * 1024 * 1024)]
    max_frame: usize,
    /// `handshake`: digits sent without a newline count once the client has
    /// been quiet this long.
    #[arg(long, value_name = "MS", default_value_t = 50)]
    handshake_quiet_ms: u64,
    #[command(flatten)]
    exec: super::exec::ExecServeArgs,
    #[command(flatten)]
    time: super::time::TimeServeArgs,
    #[command(flatten)]
    files: super::files::FilesServeArgs,
    /// Run only these services (comma-separated), e.g. `--only echo,udp-echo`.
    #[arg(long, value_delimiter = ',', value_name = "NAME[,NAME...]", value_parser = clap::builder::PossibleValuesParser::new(SERVICES))]
    only: Option<Vec<String>>,
    #[command(flatten)]
    limits: super::limits::LimitArgs,
}

type Install = Box<dyn FnOnce(&mut EventLoop, SocketAddr) -> io::Result<Bound>>;

/// (name, transport, address, how to add it to the loop)
fn plan(args: &ServeArgs) -> Result<Vec<(&'static str, &'static str, SocketAddr, Install)>, String> {
    let framed = FramedConfig { order: args.byte_order.into(), max: args.max_frame };
    let handshake =
        HandshakeConfig { max: args.max_frame as u64, quiet: Duration::from_millis(args.handshake_quiet_ms) };
    let all: Vec<(&'static str, &'static str, SocketAddr, Install)> = vec![
        ("echo", "tcp", args.echo, Box::new(|lp, a| lp.listen(a, services::echo::service()))),
        ("udp-echo", "udp", args.udp_echo, Box::new(|lp, a| lp.bind_udp(a, services::udp_echo::answer))),
        ("framed", "tcp", args.framed, Box::new(move |lp, a| lp.listen(a, move |_| Framed::new(framed)))),
        ("handshake", "tcp", args.handshake, Box::new(move |lp, a| lp.listen(a, move |_| Handshake::new(handshake)))),
        ("files", "tcp", args.files.files, {
            let cfg = args.files.config();
            Box::new(move |lp, a| lp.listen(a, services::files::service(&cfg)?))
        }),
        ("time", "udp", args.time.time, Box::new(args.time.install_time())),
        ("sntp", "udp", args.time.sntp, Box::new(args.time.install_sntp())),
    ];
    let mut all = all;
    let wants = |name: &str| args.only.as_ref().map_or(true, |only| only.iter().any(|o| o == name));
    match args.exec.exec {
        Some(addr) => {
            let svc = ExecService::new(args.exec.config(addr)?);
            all.push(("exec", "tcp", addr, Box::new(move |lp, a| lp.listen(a, svc))));
        }
        None if args.only.as_ref().is_some_and(|o| o.iter().any(|n| n == "exec")) => {
            return Err("exec is off unless --exec ADDR is given".into());
        }
        None => {}
    }
    Ok(all.into_iter().filter(|(name, ..)| wants(name)).collect())
}

pub fn run(args: ServeArgs) -> Result<ExitCode, String> {
    let (cfg, grace) = args.limits.config()?;
    let mut lp = EventLoop::new(cfg).map_err(|e| format!("cannot create the event loop: {e}"))?;
    // Handlers first: a signal sent as soon as the listening lines appear
    // must find them installed.
    watch_signals(lp.handle())?;
    // Bind everything before printing anything: all lines, or an error.
    let mut bound = Vec::new();
    for (name, transport, addr, install) in plan(&args)? {
        let b = install(&mut lp, addr).map_err(|e| format!("cannot bind {name} ({transport}) on {addr}: {e}"))?;
        bound.push((name, transport, b.addr));
    }
    let mut stdout = io::stdout().lock();
    for (name, transport, addr) in bound {
        writeln!(stdout, "listening {name} {transport} {addr}").map_err(|e| e.to_string())?;
    }
    stdout.flush().map_err(|e| e.to_string())?;
    drop(stdout);
    lp.run(grace).map_err(|e| format!("event loop failed: {e}"))?;
    info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// First SIGINT/SIGTERM: graceful stop. Second: exit at once.
fn watch_signals(handle: wireloop::Handle) -> Result<(), String> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).map_err(|e| format!("cannot watch signals: {e}"))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut seen = 0;
            for sig in signals.forever() {
                seen += 1;
                if seen == 1 {
                    info!("signal {sig}: stopping (send again to exit at once)");
                    handle.stop();
                } else {
                    eprintln!("wireloop: second signal, exiting now");
                    std::process::exit(1);
                }
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    Ok(())
}
