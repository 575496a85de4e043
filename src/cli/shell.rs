//! The `serve` flags of the `shell` service: the tutorial's unframed remote
//! shell (src/services/shell.rs). It is off unless `--shell ADDR` is given,
//! and bound to loopback unless `--shell-allow-remote` says otherwise: the
//! tutorial's client cannot send a token, so anyone who reaches the port
//! runs commands. Its commands run under the `exec` flags' limits.

use std::net::SocketAddr;

use clap::{Args, ValueEnum};
use wireloop::services::shell::{ShellEncoding, ShellService};

use super::exec::ExecServeArgs;
use super::parse_addr;

/// `serve` flags for the tutorial's remote shell.
#[derive(Debug, Args)]
pub struct ShellServeArgs {
    /// Run the tutorial's remote shell on ADDR (off unless given): each read
    /// of up to 1024 bytes is one command, the reply its stderr, else its
    /// stdout, else 命令执行成功, unframed. No token: loopback only unless
    /// --shell-allow-remote. Limits and environment: the --exec-* flags.
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    pub shell: Option<SocketAddr>,
    /// How `shell` encodes replies (the tutorial's client decodes GBK).
    #[arg(long, value_enum, default_value_t = Encoding::Gbk)]
    shell_encoding: Encoding,
    /// Let `shell` bind beyond loopback: anyone who reaches it runs commands.
    #[arg(long)]
    shell_allow_remote: bool,
}

/// `--shell-encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Encoding {
    /// The commands' bytes unchanged.
    #[value(name = "utf-8")]
    Utf8,
    /// GBK, as the tutorial's client decodes replies.
    Gbk,
}

impl ShellServeArgs {
    /// Refuses a bind beyond loopback without `--shell-allow-remote` (one
    /// line, for a usage error); warns when it is allowed.
    pub fn check(&self) -> Result<(), String> {
        match self.shell {
            Some(a) if !a.ip().is_loopback() && !self.shell_allow_remote => Err(format!(
                "--shell {a} is not a loopback address and the shell has no token; \
                 add --shell-allow-remote to serve it there anyway"
            )),
            Some(a) if !a.ip().is_loopback() => {
                log::warn!("shell on {a}: anyone who reaches it runs commands, with no token and in clear text");
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The service, under the exec flags' limits.
    pub fn service(&self, exec: &ExecServeArgs) -> Result<ShellService, String> {
        let encoding = match self.shell_encoding {
            Encoding::Utf8 => ShellEncoding::Utf8,
            Encoding::Gbk => ShellEncoding::Gbk,
        };
        Ok(ShellService::new(exec.limits()?, encoding))
    }
}
