//! `wireloop serve`: wires every service into one event loop, prints one
//! `listening <name> <tcp|udp> <ip:port>` line per socket, and stops
//! gracefully on SIGINT, SIGTERM or SIGHUP (a second signal exits at once).
//! SIGHUP is the graceful stop too: there is no configuration file to
//! re-read and no log file to reopen (logs go to stderr), and dying at once
//! would orphan running commands.
//!
//! With `--workers N` it runs N independent loops on N threads; each binds
//! the stateless services' addresses itself with `SO_REUSEPORT` and the
//! kernel spreads connections across them. The loops share nothing.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use clap::Args;
use log::info;
use wireloop::services::exec::ExecService;
use wireloop::services::files::storage::FilesCounters;
use wireloop::services::framed::FramedConfig;
use wireloop::services::handshake::HandshakeConfig;
use wireloop::services::metrics::{self, Catalog, MetricsService, Published};
use wireloop::tls::rustls::ServerConfig;
use wireloop::{services, Bound, Config, EventLoop};

use super::{command_metrics, parse_addr, values, Order};

/// Every service `serve` knows, in the order it binds them.
const SERVICES: &[&str] =
    &["echo", "udp-echo", "exec", "shell", "files", "framed", "handshake", "time", "sntp", "rfc868", "daytime"];

#[derive(Debug, Args)]
#[command(after_help = "Each service has a flag `--<name> ADDR`; `--only` picks which run.\n\
    Example: wireloop serve --only echo --echo 127.0.0.1:9000\n\n\
    Signals: SIGINT, SIGTERM and SIGHUP stop gracefully (no new connections; requests in\n\
    flight get --grace seconds, then running commands are killed); exit status 0.\n\
    A second signal exits at once (status 1).")]
pub struct ServeArgs {
    /// TCP uppercase echo: every byte answered at once with its uppercase form.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080", value_parser = parse_addr)]
    echo: SocketAddr,
    /// UDP uppercase echo: one datagram in, one uppercase datagram out.
    #[arg(long = "udp-echo", value_name = "ADDR", default_value = "127.0.0.1:8081", value_parser = parse_addr)]
    udp_echo: SocketAddr,
    /// `udp-echo`: datagrams per second answered per source (0: no limit).
    /// Replies are also bounded to the bytes each source sends, plus 512 a
    /// second, and none goes to a port below 1024.
    #[arg(long, value_name = "N", default_value_t = 50)]
    udp_echo_rate: u32,
    /// `udp-echo`: datagrams a source may send at once.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    udp_echo_burst: u32,
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
    #[arg(long, value_name = "BYTES", default_value_t = 16 * 1024 * 1024, value_parser = values::bytes_usize)]
    max_frame: usize,
    /// `handshake`: digits sent without a newline count once the client has
    /// been quiet this long.
    #[arg(long, value_name = "MS", default_value = "50", value_parser = values::millis)]
    handshake_quiet_ms: Duration,
    #[command(flatten)]
    exec: super::exec::ExecServeArgs,
    #[command(flatten)]
    shell: super::shell::ShellServeArgs,
    #[command(flatten)]
    time: super::time::TimeServeArgs,
    #[command(flatten)]
    files: super::files::FilesServeArgs,
    /// Run only these services (comma-separated), e.g. `--only echo,udp-echo`.
    #[arg(long, value_delimiter = ',', value_name = "NAME[,NAME...]", value_parser = clap::builder::PossibleValuesParser::new(SERVICES))]
    only: Option<Vec<String>>,
    /// Independent loops on as many threads, sharing each address through
    /// SO_REUSEPORT; `files` and `exec` run on the first only.
    #[arg(long, value_name = "N", default_value_t = 1)]
    workers: usize,
    /// Serve Prometheus metrics (`GET /metrics`, HTTP/1.1) on this address;
    /// off unless given. Keep it on loopback or a private network.
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    metrics: Option<SocketAddr>,
    #[command(flatten)]
    tls: super::tls::TlsServeArgs,
    #[command(flatten)]
    limits: super::limits::LimitArgs,
}

type Install = Box<dyn FnOnce(&mut EventLoop, SocketAddr) -> io::Result<Bound>>;

/// (name, transport, address, how to add it to the loop)
/// Services with counters of their own register probes in `catalog`.
fn plan(
    args: &ServeArgs,
    catalog: &Rc<RefCell<Catalog>>,
) -> Result<Vec<(&'static str, &'static str, SocketAddr, Install)>, String> {
    let framed = FramedConfig { order: args.byte_order.into(), max: args.max_frame };
    let handshake = HandshakeConfig { max: args.max_frame as u64, quiet: args.handshake_quiet_ms };
    let line_requests = requests_probe(catalog);
    let all: Vec<(&'static str, &'static str, SocketAddr, Install)> = vec![
        ("echo", "tcp", args.echo, Box::new(|lp, a| lp.listen(a, services::echo::service()))),
        ("udp-echo", "udp", args.udp_echo, {
            let svc = services::udp_echo::service(args.time.rate(args.udp_echo_rate, args.udp_echo_burst));
            let limited = svc.guard().limited_counter();
            catalog.borrow_mut().udp_rate_limited("udp-echo", move || limited.get());
            Box::new(move |lp, a| lp.bind_udp(a, svc))
        }),
        ("framed", "tcp", args.framed, {
            let requests = line_requests.0.clone();
            Box::new(move |lp, a| lp.listen(a, services::framed::counted(framed, requests)))
        }),
        ("handshake", "tcp", args.handshake, {
            let requests = line_requests.1.clone();
            Box::new(move |lp, a| lp.listen(a, services::handshake::counted(handshake, requests)))
        }),
        ("files", "tcp", args.files.files, {
            let cfg = args.files.config(args.tls.mutual("files"))?;
            let catalog = Rc::clone(catalog);
            Box::new(move |lp, a| {
                let (svc, counters) = services::files::service_counted(&cfg)?;
                files_probe(&catalog, counters);
                lp.listen(a, svc)
            })
        }),
        ("time", "udp", args.time.time, Box::new(args.time.install_time(catalog))),
        ("sntp", "udp", args.time.sntp, Box::new(args.time.install_sntp())),
    ];
    let mut all = all;
    let wants = |name: &str| args.only.as_ref().map_or(true, |only| only.iter().any(|o| o == name));
    // `sanity` has refused `--only exec` without an address.
    if let Some(addr) = args.exec.exec {
        let svc = ExecService::new(args.exec.config(addr, args.tls.mutual("exec"))?);
        command_metrics::probe(catalog, &command_metrics::EXEC_LABELS, svc.running(), svc.counters());
        all.push(("exec", "tcp", addr, Box::new(move |lp, a| lp.listen(a, svc))));
    }
    if let Some(addr) = args.shell.shell {
        let svc = args.shell.service(&args.exec)?;
        command_metrics::probe(catalog, &command_metrics::SHELL_LABELS, svc.running(), svc.counters());
        all.push(("shell", "tcp", addr, Box::new(move |lp, a| lp.listen(a, svc))));
    }
    // RFC 868 and 867 are off unless an address is given.
    if let Some(addr) = args.time.rfc868 {
        all.push(("rfc868", "udp", addr, Box::new(args.time.install_rfc868(catalog))));
    }
    if let Some(addr) = args.time.daytime {
        all.push(("daytime", "udp", addr, Box::new(args.time.install_daytime(catalog))));
    }
    Ok(all.into_iter().filter(|(name, ..)| wants(name)).collect())
}

/// Registers the files service's figures with the metrics catalog.
fn files_probe(catalog: &RefCell<Catalog>, counters: Rc<FilesCounters>) {
    use wireloop::services::metrics::Family;
    catalog.borrow_mut().probe(move |out| {
        let c = &counters;
        let rows: [(&'static str, &'static str, u64); 5] = [
            ("wireloop_files_uploads_total", "Uploads committed.", c.uploads.get()),
            ("wireloop_files_downloads_total", "Downloads sent whole.", c.downloads.get()),
            ("wireloop_files_received_bytes_total", "File bytes written by uploads.", c.received_bytes.get()),
            ("wireloop_files_sent_bytes_total", "File bytes read for downloads.", c.sent_bytes.get()),
            (
                "wireloop_files_partials_kept_total",
                "Uploads ended without a commit whose partial file was kept for a resume.",
                c.partials_kept.get(),
            ),
        ];
        for (name, help, v) in rows {
            out.push(Family { name, kind: "counter", help, samples: vec![("service=\"files\"", v)] });
        }
    });
}

/// The request counters of `framed` and `handshake`, registered with the
/// metrics catalog as one family each.
fn requests_probe(catalog: &RefCell<Catalog>) -> (services::Requests, services::Requests) {
    use wireloop::services::metrics::Family;
    let (framed, handshake) = (services::Requests::default(), services::Requests::default());
    let (f, h) = (framed.clone(), handshake.clone());
    const LABELS: [&str; 2] = ["service=\"framed\"", "service=\"handshake\""];
    catalog.borrow_mut().probe(move |out| {
        out.push(Family {
            name: "wireloop_requests_total",
            kind: "counter",
            help: "Requests answered (framed frames, handshake messages).",
            samples: vec![(LABELS[0], f.answered.get()), (LABELS[1], h.answered.get())],
        });
        out.push(Family {
            name: "wireloop_request_errors_total",
            kind: "counter",
            help: "Requests refused with an error line (bad length, EOF mid-message).",
            samples: vec![(LABELS[0], f.errors.get()), (LABELS[1], h.errors.get())],
        });
    });
    (framed, handshake)
}

/// Services every worker runs; the others keep state on disk or limit
/// commands across connections, so with `--workers` they run on the first
/// worker only.
const PER_WORKER: &[&str] = &["echo", "udp-echo", "framed", "handshake", "time", "sntp", "rfc868", "daytime"];

/// A listening socket a worker bound: (service, transport, address).
type Bound3 = (&'static str, &'static str, SocketAddr);

/// Checks that the command line makes sense before anything starts: every
/// service `--only` names can run, every optional service given an address
/// runs, something is served, and the files root is a directory. Warns when
/// a token-guarded service is reachable beyond loopback.
fn sanity(args: &ServeArgs) -> Result<(), String> {
    let named = |name: &str| args.only.as_ref().is_some_and(|o| o.iter().any(|n| n == name));
    let wants = |name: &str| args.only.is_none() || named(name);
    let optional = [
        ("exec", args.exec.exec),
        ("shell", args.shell.shell),
        ("rfc868", args.time.rfc868),
        ("daytime", args.time.daytime),
    ];
    for (name, addr) in optional {
        match addr {
            None if named(name) => return Err(format!("{name} is off unless --{name} ADDR is given")),
            Some(a) if !wants(name) => return Err(format!("--{name} {a} is given but --only leaves {name} out")),
            _ => {}
        }
    }
    if wants("shell") {
        args.shell.check()?;
    }
    if let Some(only) = &args.only {
        if only.is_empty() {
            return Err("--only names no service: there is nothing to serve".into());
        }
    }
    args.tls.check()?;
    for name in args.tls.services.iter().flatten() {
        let runs = match name.as_str() {
            "exec" => args.exec.exec.is_some() && wants("exec"),
            "shell" => args.shell.shell.is_some() && wants("shell"),
            "metrics" => args.metrics.is_some(),
            other => wants(other),
        };
        if !runs {
            return Err(format!("--tls names {name}, which this command line does not serve"));
        }
    }
    let root = &args.files.files_root;
    if wants("files") && root.exists() && !root.is_dir() {
        return Err(format!("--files-root {} is not a directory", root.display()));
    }
    let files_token = args.files.files_token.is_some() || args.files.files_token_file.is_some();
    let guarded = [("exec", args.exec.exec, args.exec.has_token()), ("files", Some(args.files.files), files_token)];
    for (name, addr, token) in guarded {
        // Without a token the service refuses to start (`token::server_secret`).
        let clear = !args.tls.covers(name);
        if let Some(a) = addr.filter(|a| token && clear && wants(name) && !a.ip().is_loopback()) {
            log::warn!(
                "{name} on {a}: the token and all data travel in clear text; serve it with \
                 --tls {name} (--tls-cert, --tls-key), or use it only on a network you trust"
            );
        }
    }
    Ok(())
}

pub fn run(args: ServeArgs) -> Result<ExitCode, String> {
    if let Err(e) = sanity(&args) {
        // A usage error: nothing has started.
        eprintln!("wireloop: {e}");
        return Ok(ExitCode::from(2));
    }
    let tls = match args.tls.config() {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("wireloop: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let (cfg, grace, limits_note) = args.limits.config()?;
    let workers = args.workers.max(1);
    // Handlers first: a signal sent as soon as the listening lines appear
    // must find them installed.
    let stopper = Stopper::default();
    watch_signals(stopper.clone())?;
    let args = Arc::new(args);
    let mut resolved: HashMap<&'static str, SocketAddr> = HashMap::new();
    let mut lines = Vec::new();
    let mut joins = Vec::new();
    let published = Published::default();
    for w in 0..workers {
        let (tx, rx) = mpsc::channel();
        let (args, stopper2, known, tls) = (args.clone(), stopper.clone(), resolved.clone(), tls.clone());
        let shared = (workers > 1).then(|| published.clone());
        // A subreaper: commands' descendants that leave their process group
        // are reparented here, so the exec service can kill and reap them.
        let cfg = Config { reuse_port: workers > 1, subreaper: true, ..cfg.clone() };
        let join = std::thread::Builder::new()
            .name(format!("loop-{w}"))
            .spawn(move || worker(Worker { w, args: &args, cfg, grace, known: &known, shared, tls }, &tx, &stopper2))
            .map_err(|e| format!("cannot start worker {w}: {e}"))?;
        match rx.recv() {
            Ok(Ok(bound)) if w == 0 => {
                for (name, transport, addr) in bound {
                    resolved.insert(name, addr);
                    lines.push(format!("listening {name} {transport} {addr}"));
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                stopper.stop_all();
                return Err(e);
            }
            Err(_) => {
                stopper.stop_all();
                return Err(join.join().map_or("a worker panicked".into(), |r| r.err().unwrap_or_default()));
            }
        }
        joins.push(join);
    }
    // Everything is bound: all lines, or an error and no lines.
    let mut stdout = io::stdout().lock();
    for line in lines {
        writeln!(stdout, "{line}").map_err(|e| e.to_string())?;
    }
    stdout.flush().map_err(|e| e.to_string())?;
    drop(stdout);
    info!("{limits_note}");
    let mut failed = None;
    for join in joins {
        match join.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed = failed.or(Some(e)),
            Err(_) => failed = failed.or(Some("a worker panicked".to_string())),
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// How often workers other than the first publish their figures for the
/// metrics endpoint (which reads the first worker's live).
const PUBLISH_EVERY: Duration = Duration::from_millis(250);

/// What one worker is given.
struct Worker<'a> {
    w: usize,
    args: &'a ServeArgs,
    cfg: Config,
    grace: Duration,
    known: &'a HashMap<&'static str, SocketAddr>,
    /// The workers' published metrics, with more than one worker.
    shared: Option<Published>,
    /// The TLS configuration of the services `--tls` names.
    tls: Option<Arc<ServerConfig>>,
}

/// One loop on its own thread: binds its share of the services (the
/// addresses the first worker resolved, for port 0), reports them, and runs
/// until stopped.
fn worker(wk: Worker<'_>, tx: &mpsc::Sender<Result<Vec<Bound3>, String>>, stopper: &Stopper) -> Result<(), String> {
    let Worker { w, args, cfg, grace, known, shared, tls } = wk;
    let serve_tls = |lp: &mut EventLoop, name: &str, id| -> Result<(), String> {
        match &tls {
            Some(t) if args.tls.covers(name) => {
                lp.set_tls(id, t.clone()).map_err(|e| e.to_string())?;
                if w == 0 {
                    let mutual = if args.tls.mutual(name) { ", client certificates required" } else { "" };
                    info!("{name}: TLS{mutual}");
                }
                Ok(())
            }
            _ => Ok(()),
        }
    };
    let setup = || -> Result<(EventLoop, Vec<Bound3>), String> {
        let mut lp = EventLoop::new(cfg).map_err(|e| format!("cannot create the event loop: {e}"))?;
        let mut bound = Vec::new();
        let catalog = Rc::new(RefCell::new(Catalog::default()));
        for (name, transport, addr, install) in plan(args, &catalog)? {
            if w > 0 && !PER_WORKER.contains(&name) {
                continue;
            }
            let addr = known.get(name).copied().unwrap_or(addr);
            let b = install(&mut lp, addr).map_err(|e| format!("cannot bind {name} ({transport}) on {addr}: {e}"))?;
            lp.set_label(b.id, name);
            serve_tls(&mut lp, name, b.id)?;
            match transport {
                "tcp" => catalog.borrow_mut().tcp(name, b.id),
                _ => catalog.borrow_mut().udp(name, b.id),
            }
            bound.push((name, transport, b.addr));
        }
        match (w, args.metrics, shared) {
            (0, Some(addr), shared) => {
                let svc = MetricsService::new(catalog.clone(), shared.map(|s| (s, 0)));
                let b = lp.listen(addr, svc).map_err(|e| format!("cannot bind metrics (tcp) on {addr}: {e}"))?;
                lp.set_label(b.id, "metrics");
                serve_tls(&mut lp, "metrics", b.id)?;
                catalog.borrow_mut().tcp("metrics", b.id);
                bound.push(("metrics", "tcp", b.addr));
            }
            (w, Some(_), Some(shared)) => metrics::publish_every(&mut lp, catalog, shared, w, PUBLISH_EVERY),
            _ => {}
        }
        Ok((lp, bound))
    };
    match setup() {
        Err(e) => {
            let _ = tx.send(Err(e));
            Ok(())
        }
        Ok((mut lp, bound)) => {
            stopper.register(lp.handle());
            let _ = tx.send(Ok(bound));
            lp.run(grace).map_err(|e| format!("event loop failed: {e}"))
        }
    }
}

/// The loops a signal must stop; one that registers after the signal is
/// stopped at once.
#[derive(Clone, Default)]
struct Stopper(Arc<Mutex<(bool, Vec<wireloop::Handle>)>>);

impl Stopper {
    fn register(&self, handle: wireloop::Handle) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if g.0 {
            handle.stop();
        }
        g.1.push(handle);
    }

    fn stop_all(&self) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        g.0 = true;
        for h in &g.1 {
            h.stop();
        }
    }
}

/// First SIGINT/SIGTERM/SIGHUP: graceful stop. Second: exit at once.
fn watch_signals(stopper: Stopper) -> Result<(), String> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| format!("cannot watch signals: {e}"))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut seen = 0;
            for sig in signals.forever() {
                seen += 1;
                if seen == 1 {
                    if sig == SIGHUP {
                        // Nothing to reload or reopen: the operator's HUP
                        // (or a closed terminal) gets the graceful stop.
                        info!("signal {sig} (SIGHUP): no configuration to reload; stopping gracefully, as on SIGTERM (send again to exit at once)");
                    } else {
                        info!("signal {sig}: stopping (send again to exit at once)");
                    }
                    stopper.stop_all();
                } else {
                    eprintln!("wireloop: second signal, exiting now");
                    kill_child_groups();
                    std::process::exit(1);
                }
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    Ok(())
}

/// On a forced exit, kills the process group of every direct child that
/// leads one (the commands `exec` started): the loops cannot do it, as
/// they are not given the time to shut down.
fn kill_child_groups() {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else { return };
    for entry in dir.filter_map(Result::ok) {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let (Some((_, rest)), Ok(pid)) = (stat.rsplit_once(')'), entry.file_name().to_string_lossy().parse::<i32>())
        else {
            continue;
        };
        // After the command name: state ppid pgrp …
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(1) == Some(&me.as_str()) && fields.get(2) == Some(&pid.to_string().as_str()) {
            // SAFETY: kill(2) on a process group we created; no memory involved.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }
}
