//! `serve` flags for the loop's limits, each with a safe default and checked
//! at parse ([`super::values`]: durations up to a year, sizes up to 1 PiB),
//! and the start-up adjustment of the open-file limit: the soft limit is
//! raised to the hard one and `--max-connections` defaults to what it allows
//! (both logged at start). docs/limits.md lists them.

use std::time::Duration;

use clap::Args;
use log::warn;
use wireloop::Config;

use super::values;

/// Descriptors kept free for files, child pipes and listeners when sizing
/// `--max-connections` to `RLIMIT_NOFILE`.
const FD_HEADROOM: u64 = 256;

#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Listen backlog for TCP services.
    #[arg(long, default_value_t = 1024)]
    backlog: u32,
    /// Stop reading from a client while this many reply bytes wait unsent.
    #[arg(long, value_name = "BYTES", default_value_t = 1024 * 1024, value_parser = values::bytes_usize)]
    high_water: usize,
    /// Resume reading once unsent replies fall to this many bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 256 * 1024, value_parser = values::bytes_usize)]
    low_water: usize,
    /// Close a client whose unsent replies still exceed this (it is not reading).
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024 * 1024, value_parser = values::bytes_usize)]
    max_output: usize,
    /// Connections at once [default: the open-file limit minus 256] (lowered to fit it); more get an error line.
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// A message that has begun must be complete within this many seconds (at most a year).
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = values::secs)]
    message_timeout: Duration,
    /// Close a connection with nothing in progress after this many seconds (at most a year).
    #[arg(long, value_name = "SECS", default_value = "300", value_parser = values::secs)]
    idle_timeout: Duration,
    /// Close a connection whose replies make no progress for this many seconds (at most a year).
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = values::secs)]
    send_timeout: Duration,
    /// On SIGINT/SIGTERM/SIGHUP, seconds allowed for in-flight requests to finish (at most a year).
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = values::secs)]
    grace: Duration,
}

impl LimitArgs {
    /// The loop's settings, the shutdown grace period, and the line to log
    /// once the server is up (the open-file limit and the connections it
    /// allows: logged then, so a start-up error stays a one-line error).
    pub fn config(&self) -> Result<(Config, Duration, String), String> {
        if self.low_water > self.high_water {
            return Err("--low-water must not exceed --high-water".into());
        }
        let (from, nofile) = raise_fd_limit();
        let fit = usize::try_from(nofile.saturating_sub(FD_HEADROOM).max(16)).unwrap_or(usize::MAX);
        let max_connections = match self.max_connections {
            Some(n) if n > fit => {
                warn!("--max-connections {n} lowered to {fit} to fit the open-file limit of {nofile}");
                fit
            }
            Some(n) => n,
            None => fit,
        };
        let raised = if from < nofile { format!(" (raised from {from})") } else { String::new() };
        let note = format!("open-file limit {nofile}{raised}; up to {max_connections} connections");
        let cfg = Config {
            backlog: self.backlog,
            high_water: self.high_water,
            low_water: self.low_water,
            max_output: self.max_output,
            max_connections,
            max_descriptors: fit,
            message_timeout: self.message_timeout,
            idle_timeout: self.idle_timeout,
            send_timeout: self.send_timeout,
            ..Config::default()
        };
        Ok((cfg, self.grace, note))
    }
}

/// Raises the soft limit on open files to the hard limit, so the server can
/// hold as many connections as the system allows. Returns the soft limit
/// found and the one now in force.
// `rlim_t` is u64 on Linux and macOS but i64 (never negative) on FreeBSD, so
// the cast that is a no-op here is needed there.
#[allow(clippy::unnecessary_cast)]
pub(crate) fn raise_fd_limit() -> (u64, u64) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return (1024, 1024);
        }
        let from = lim.rlim_cur as u64;
        if lim.rlim_cur < lim.rlim_max {
            let mut raised = lim;
            raised.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
        (from, lim.rlim_cur as u64)
    }
}
