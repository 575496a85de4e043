//! The shared secret of `exec` and `files`: read from a flag or a file on
//! the server side, from `--token` or `WIRELOOP_TOKEN` on the client side.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use wireloop::services::auth::Secret;

/// A server's token from `--<service>-token` or `--<service>-token-file`
/// (its first line), at least 16 bytes; refused on a non-loopback `addr`
/// when there is none.
pub(crate) fn server_secret(
    service: &str,
    addr: SocketAddr,
    value: Option<&str>,
    file: Option<&PathBuf>,
    mutual_tls: bool,
) -> Result<Option<Secret>, String> {
    let flag = format!("--{service}-token");
    let token = match (value, file) {
        (Some(t), _) => Some(t.to_string()),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let line = text.lines().next().unwrap_or("").trim().to_string();
            if line.is_empty() {
                return Err(format!("{} holds no token", path.display()));
            }
            Some(line)
        }
        (None, None) => None,
    };
    if token.is_none() && !addr.ip().is_loopback() && !mutual_tls {
        return Err(format!(
            "refusing to run {service} on {addr}, which is not a loopback address, without {flag} or {flag}-file \
             (or client certificates: --tls {service} --tls-client-ca PEM)"
        ));
    }
    token.map(|t| Secret::new(&t, &flag)).transpose()
}

/// A client's token.
#[derive(Debug, Clone, Args)]
pub(crate) struct ClientToken {
    /// Token for a server that requires one (or set WIRELOOP_TOKEN).
    #[arg(long, env = "WIRELOOP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(flatten)]
    pub tls: super::tls::TlsClientArgs,
}
