//! `wireloop put`, `get` and `ls`: clients of the `files` service, and the
//! `serve` flags for it ([`FilesServeArgs`]).
//!
//! * `put [ADDR] FILE [--name NAME] [--overwrite]`: hashes the file, asks
//!   `stat` whether the server holds an interrupted upload of the same name,
//!   size and MD5, and resumes it from there if so; otherwise uploads all.
//! * `get [ADDR] NAME [-o PATH]`: downloads to `PATH.wireloop-part`, checks
//!   the MD5, then renames to PATH (`-o -` writes to stdout).
//! * `ls [ADDR] [PREFIX]`: size, modification time (UTC) and name per line;
//!   `ls --partials`: the unfinished uploads instead — bytes held, announced
//!   size, age, `uploading` or `abandoned`, source address and name.
//!
//! Progress bars (bytes, rate, ETA) are drawn on stderr only when it is a
//! terminal. Any failure prints the reason (the server's words if it sent
//! some) and exits 1.

use std::fs::{self, File};
use std::io::{self, IsTerminal, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use wireloop::services::files::client::{md5_of, Client, ClientError};
use wireloop::services::files::storage::{PartialBounds, DEFAULT_MAX_PARTIALS, DEFAULT_MAX_PARTIALS_PER_SOURCE};
use wireloop::services::files::{self, FilesConfig};

use super::token::{self, ClientToken};
use super::{parse_addr, peer, shown, values, Peer};

/// The files service's default address.
const DEFAULT_ADDR: &str = "127.0.0.1:8086";

/// `serve` flags of the files service.
#[derive(Debug, Args)]
pub struct FilesServeArgs {
    /// Files: upload, download, resume and list (4-byte length + JSON header + body).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_ADDR, value_parser = parse_addr)]
    pub files: SocketAddr,
    /// Files: where files are stored (created if missing).
    #[arg(long, value_name = "DIR", default_value = "./wireloop-files")]
    pub files_root: PathBuf,
    /// Files: largest accepted upload (default: unlimited, but never more than the free disk space
    /// or what one source's partial uploads may hold).
    #[arg(long, value_name = "BYTES", value_parser = values::bytes)]
    pub files_max_size: Option<u64>,
    /// Files: interrupted uploads untouched for this long are removed.
    #[arg(long, value_name = "SECS", default_value = "86400", value_parser = values::whole_secs)]
    pub files_partial_max_age: Duration,
    /// Files: slowest accepted upload, in bytes per second over each rate window (0: no minimum);
    /// a slower upload is ended with an error and keeps its partial file for a resume.
    #[arg(long, value_name = "BYTES", default_value_t = files::DEFAULT_MIN_RATE, value_parser = values::bytes)]
    pub files_min_rate: u64,
    /// Files: the window the minimum upload rate is averaged over.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = values::positive_whole_secs)]
    pub files_rate_window: Duration,
    /// Files: most partial (unfinished) uploads held at once, in progress or abandoned; past it the
    /// oldest abandoned one is removed, or the upload refused if all are in progress.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_PARTIALS as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub files_max_partials: u32,
    /// Files: most partial uploads from one address (IPv6: one /64) at once.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_PARTIALS_PER_SOURCE as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub files_max_partials_per_source: u32,
    /// Files: most bytes all partial uploads hold, counted as they are written (default: half of
    /// the space free, or held by partial uploads, at start).
    #[arg(long, value_name = "BYTES", value_parser = values::positive_bytes)]
    pub files_max_partial_bytes: Option<u64>,
    /// Files: most bytes the partial uploads of one address hold; also the largest upload that
    /// address can make (default: a quarter of --files-max-partial-bytes).
    #[arg(long, value_name = "BYTES", value_parser = values::positive_bytes)]
    pub files_max_partial_bytes_per_source: Option<u64>,
    /// Files: token every request must carry (at least 16 bytes). Required
    /// for a non-loopback --files address.
    #[arg(long, value_name = "TOKEN", conflicts_with = "files_token_file")]
    pub files_token: Option<String>,
    /// Files: read the token from a file (first line).
    #[arg(long, value_name = "PATH")]
    pub files_token_file: Option<PathBuf>,
}

impl FilesServeArgs {
    /// The service settings these flags describe, refusing a non-loopback
    /// address without a token; a per-source bound over its total is an error.
    /// `mutual_tls`: clients must present a certificate, so a token is optional.
    pub fn config(&self, mutual_tls: bool) -> Result<FilesConfig, String> {
        let (value, file) = (self.files_token.as_deref(), self.files_token_file.as_ref());
        let token = token::server_secret("files", self.files, value, file, mutual_tls)?;
        if self.files_max_partials_per_source > self.files_max_partials {
            return Err("--files-max-partials-per-source must not exceed --files-max-partials".into());
        }
        if let (Some(all), Some(one)) = (self.files_max_partial_bytes, self.files_max_partial_bytes_per_source) {
            if one > all {
                return Err("--files-max-partial-bytes-per-source must not exceed --files-max-partial-bytes".into());
            }
        }
        let count = |n: u32| usize::try_from(n).unwrap_or(usize::MAX);
        Ok(FilesConfig {
            root: self.files_root.clone(),
            max_size: self.files_max_size,
            partial_max_age: self.files_partial_max_age,
            min_rate: self.files_min_rate,
            rate_window: self.files_rate_window,
            token,
            partials: PartialBounds {
                count: count(self.files_max_partials),
                count_per_source: count(self.files_max_partials_per_source),
                bytes: self.files_max_partial_bytes,
                bytes_per_source: self.files_max_partial_bytes_per_source,
            },
            ..FilesConfig::default()
        })
    }
}

#[derive(Debug, Args)]
pub struct PutArgs {
    /// `[ADDR] FILE`: the address (default 127.0.0.1:8086) and the file to upload.
    #[arg(value_name = "[ADDR] FILE", num_args = 1..=2, required = true)]
    words: Vec<String>,
    /// Name on the server (default: the file's name without its directories).
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Replace the file if the server already has one of that name.
    #[arg(long)]
    overwrite: bool,
    #[command(flatten)]
    auth: ClientToken,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// `[ADDR] NAME`: the address (default 127.0.0.1:8086) and the name on the server.
    #[arg(value_name = "[ADDR] NAME", num_args = 1..=2, required = true)]
    words: Vec<String>,
    /// Where to write it (default: the name's last component, here); `-` is stdout.
    #[arg(short, long, value_name = "PATH")]
    output: Option<PathBuf>,
    #[command(flatten)]
    auth: ClientToken,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// `[ADDR] [PREFIX]`: the address (default 127.0.0.1:8086) and a name prefix such as `dir/`.
    #[arg(value_name = "[ADDR] [PREFIX]", num_args = 0..=2)]
    words: Vec<String>,
    /// List the partial (unfinished) uploads instead: bytes held, announced size, age since the
    /// last write, `uploading` or `abandoned`, source address, name.
    #[arg(long)]
    partials: bool,
    #[command(flatten)]
    auth: ClientToken,
}

/// Splits `[ADDR] REST…`: the first word is the address when there are
/// more words than `rest` needs, or when it parses as one.
fn split_addr(words: &[String], rest: usize) -> Result<(Peer, Vec<String>), String> {
    let default = || peer(DEFAULT_ADDR).expect("literal");
    match words.first() {
        Some(w) if words.len() > rest => Ok((peer(w)?, words[1..].to_vec())),
        Some(w) if rest == 0 => peer(w).map(|a| (a, Vec::new())),
        _ => Ok((default(), words.to_vec())),
    }
}

fn connect(addr: &Peer, auth: &ClientToken) -> Result<Client, String> {
    let stream = auth.tls.connect(addr)?;
    let client = Client::from_stream(stream).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    Ok(client.with_token(auth.token.clone()))
}

/// A byte progress bar on stderr, hidden when stderr is not a terminal.
fn bar(len: u64, what: &str) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    let style =
        ProgressStyle::with_template("{msg:>9} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}")
            .expect("valid template")
            .progress_chars("=> ");
    pb.set_style(style);
    pb.set_message(what.to_string());
    pb
}

pub fn run_put(args: PutArgs) -> Result<ExitCode, String> {
    let (addr, rest) = split_addr(&args.words, 1)?;
    let path = PathBuf::from(&rest[0]);
    let name = match &args.name {
        Some(n) => n.clone(),
        None => path.file_name().and_then(|n| n.to_str()).ok_or("give --name for this file")?.to_string(),
    };
    let open = || File::open(&path).map_err(|e| format!("cannot open {}: {e}", path.display()));
    let size = open()?.metadata().map_err(|e| e.to_string())?.len();
    let pb = bar(size, "hashing");
    let md5 = md5_of(open()?, |n| pb.set_position(n)).map_err(|e| format!("reading {}: {e}", path.display()))?;
    pb.finish_and_clear();
    let mut client = connect(&addr, &args.auth)?;
    // Resume when the server holds an interrupted upload of this very file.
    let mut offset = 0;
    // A refusal (no such file, say) is answered by the upload itself; a
    // broken connection or a server of another protocol ends here.
    let stat = match client.stat(&name) {
        Err(e @ (ClientError::Io(_) | ClientError::Protocol(_))) => {
            return Err(format!("upload of {} failed: {e}", path.display()))
        }
        other => other,
    };
    if let Ok(st) = stat {
        let same = st.get("partial_file_size").and_then(Value::as_u64) == Some(size)
            && st.get("partial_md5").and_then(Value::as_str) == Some(md5.as_str());
        if same {
            offset = st.get("partial_size").and_then(Value::as_u64).unwrap_or(0);
            eprintln!("resuming {name} at byte {offset} of {size}");
        }
    }
    let mut file = open()?;
    file.seek(SeekFrom::Start(offset)).map_err(|e| e.to_string())?;
    let pb = bar(size, "uploading");
    pb.set_position(offset);
    let info = client
        .put(&name, size, &md5, offset, args.overwrite, file, |n| pb.set_position(n))
        .map_err(|e| format!("upload of {} failed: {e}", path.display()))?;
    pb.finish_and_clear();
    println!("stored {} ({} bytes, md5 {})", shown(&info.file_name), info.file_size, info.md5);
    Ok(ExitCode::SUCCESS)
}

pub fn run_get(args: GetArgs) -> Result<ExitCode, String> {
    let (addr, rest) = split_addr(&args.words, 1)?;
    let name = rest[0].clone();
    let to_stdout = args.output.as_deref() == Some(Path::new("-"));
    if to_stdout {
        let mut client = connect(&addr, &args.auth)?;
        let pb = bar(0, "receiving");
        let info = client
            .get(&name, io::stdout().lock(), |n, t| {
                pb.set_length(t);
                pb.set_position(n)
            })
            .map_err(|e| format!("download of {name} failed: {e}"))?;
        pb.finish_and_clear();
        io::stdout().flush().map_err(|e| e.to_string())?;
        eprintln!("received {} ({} bytes, md5 {} verified)", shown(&info.file_name), info.file_size, info.md5);
        return Ok(ExitCode::SUCCESS);
    }
    // The name's last component: the file's name here, as `cp` and `scp` keep it.
    let base = || name.rsplit('/').next().filter(|s| !s.is_empty()).ok_or("give -o PATH for this name");
    let out = match args.output {
        Some(p) if p.is_dir() => p.join(base()?),
        Some(p) => p,
        None => PathBuf::from(base()?),
    };
    let mut tmp = out.clone().into_os_string();
    tmp.push(".wireloop-part");
    let tmp = PathBuf::from(tmp);
    // The destination is checked (created) before the server is asked for a byte.
    let file = File::create(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    let mut client = match connect(&addr, &args.auth) {
        Ok(c) => c,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let mut w = io::BufWriter::with_capacity(256 * 1024, file);
    let pb = bar(0, "receiving");
    let got = client.get(&name, &mut w, |n, t| {
        pb.set_length(t);
        pb.set_position(n)
    });
    pb.finish_and_clear();
    let done = got.map_err(|e| e.to_string()).and_then(|info| {
        w.flush().map_err(|e| e.to_string())?;
        fs::rename(&tmp, &out).map_err(|e| format!("cannot rename to {}: {e}", out.display()))?;
        Ok(info)
    });
    match done {
        Ok(info) => {
            println!(
                "saved {} to {} ({} bytes, md5 {} verified)",
                shown(&info.file_name),
                out.display(),
                info.file_size,
                info.md5
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(format!("download of {name} failed: {e}"))
        }
    }
}

pub fn run_ls(args: LsArgs) -> Result<ExitCode, String> {
    let (addr, rest) = match args.words.len() {
        0 => split_addr(&[], 0)?,
        1 => match peer(&args.words[0]) {
            Ok(a) => (a, Vec::new()),
            Err(_) => split_addr(&args.words, 1)?,
        },
        _ => split_addr(&args.words, 1)?,
    };
    let prefix = rest.first().cloned().unwrap_or_default();
    let mut client = connect(&addr, &args.auth)?;
    let mut out = io::stdout().lock();
    let mut written = Ok(());
    if args.partials {
        client
            .list_partials(&prefix, |page| {
                for p in page {
                    if written.is_ok() {
                        let state = if p.uploading { "uploading" } else { "abandoned" };
                        written = writeln!(
                            out,
                            "{:>14}  {:>14}  {:>7}  {state}  {:<15}  {}",
                            p.size,
                            p.file_size,
                            age(p.age),
                            shown(&p.source),
                            shown(&p.name)
                        );
                    }
                }
            })
            .map_err(|e| format!("listing failed: {e}"))?;
        return written.map(|()| ExitCode::SUCCESS).map_err(|e| e.to_string());
    }
    client
        .list(&prefix, |page| {
            for f in page {
                if written.is_ok() {
                    written = writeln!(out, "{:>14}  {}  {}", f.size, utc(f.mtime), shown(&f.name));
                }
            }
        })
        .map_err(|e| format!("listing failed: {e}"))?;
    written.map_err(|e| e.to_string())?;
    Ok(ExitCode::SUCCESS)
}

/// An age in seconds, short: `42s`, `5m03s`, `2h05m`, `3d04h`.
fn age(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..=86_399 => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{:02}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) for Unix seconds (Howard Hinnant's civil-from-days).
fn utc(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        files: super::FilesServeArgs,
    }

    #[test]
    fn the_flag_defaults_are_the_services_defaults() {
        let (cli, lib) = (Flags::parse_from(["x"]).files.config(false).unwrap(), super::FilesConfig::default());
        assert_eq!(cli.partials, lib.partials);
        assert_eq!(cli.rate_window, super::files::DEFAULT_RATE_WINDOW);
        assert_eq!(cli.partial_max_age, lib.partial_max_age);
        assert_eq!(cli.min_rate, lib.min_rate);
        assert_eq!(cli.max_size, lib.max_size);
    }

    #[test]
    fn per_source_bounds_over_their_totals_are_refused() {
        let cfg = |args: &[&str]| Flags::parse_from([&["x"], args].concat()).files.config(false);
        assert!(cfg(&["--files-max-partials", "10", "--files-max-partials-per-source", "11"]).is_err());
        let bytes = ["--files-max-partial-bytes", "10", "--files-max-partial-bytes-per-source", "11"];
        assert!(cfg(&bytes).unwrap_err().contains("--files-max-partial-bytes-per-source"));
        assert_eq!(cfg(&["--files-max-partial-bytes-per-source", "5"]).unwrap().partials.bytes_per_source, Some(5));
    }

    #[test]
    fn ages_are_short() {
        assert_eq!(
            [0, 59, 60, 3599, 3600, 86_399, 86_400 * 3 + 3600 * 4].map(super::age),
            ["0s", "59s", "1m00s", "59m59s", "1h00m", "23h59m", "3d04h"]
        );
    }

    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00");
        assert_eq!(super::utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(super::utc(1_795_633_001), "2026-11-25 18:56:41");
    }
}
