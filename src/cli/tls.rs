//! TLS on the command line: `serve --tls SERVICE,… --tls-cert PEM
//! --tls-key PEM [--tls-client-ca PEM]`, and the clients' `--tls [--ca PEM]
//! [--cert PEM --key PEM]`. Files are read and checked before anything
//! starts; every error names the file.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use wireloop::services::client_io::ClientStream;
use wireloop::tls::rustls::pki_types::ServerName;
use wireloop::tls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use wireloop::tls::{self, ClientAuth};

use super::Peer;

/// The TCP services `--tls` can name.
pub const TLS_SERVICES: &[&str] = &["echo", "framed", "handshake", "files", "exec", "shell", "metrics"];

#[derive(Debug, Clone, Args)]
pub struct TlsServeArgs {
    /// Serve these TCP services over TLS, at their usual addresses
    /// (comma-separated), e.g. `--tls exec,files`. Needs --tls-cert and --tls-key.
    #[arg(long = "tls", value_delimiter = ',', value_name = "SERVICE[,SERVICE...]",
          value_parser = clap::builder::PossibleValuesParser::new(TLS_SERVICES))]
    pub services: Option<Vec<String>>,
    /// The server's certificate chain (PEM, leaf first).
    #[arg(long, value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// Require a client certificate signed by a CA in this PEM file on the
    /// --tls services (mutual TLS). exec and files then need no token.
    #[arg(long, value_name = "PEM")]
    pub tls_client_ca: Option<PathBuf>,
}

impl TlsServeArgs {
    /// Whether `name` is served over TLS.
    pub fn covers(&self, name: &str) -> bool {
        self.services.as_ref().is_some_and(|s| s.iter().any(|n| n == name))
    }

    /// Whether `name`'s clients must present a certificate.
    pub fn mutual(&self, name: &str) -> bool {
        self.covers(name) && self.tls_client_ca.is_some()
    }

    /// The flags agree with each other (a usage error otherwise).
    pub fn check(&self) -> Result<(), String> {
        let named = self.services.as_ref().is_some_and(|s| !s.is_empty());
        match (named, &self.tls_cert, &self.tls_key) {
            (true, Some(_), Some(_)) => Ok(()),
            (true, None, _) => Err("--tls needs --tls-cert PEM (and --tls-key PEM)".into()),
            (true, _, None) => Err("--tls needs --tls-key PEM".into()),
            (false, None, None) if self.tls_client_ca.is_none() => Ok(()),
            (false, ..) => Err("--tls-cert, --tls-key and --tls-client-ca need --tls SERVICE[,SERVICE...]".into()),
        }
    }

    /// The server configuration, loaded from the files (`None` without `--tls`).
    pub fn config(&self) -> Result<Option<Arc<ServerConfig>>, String> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else { return Ok(None) };
        if !self.services.as_ref().is_some_and(|s| !s.is_empty()) {
            return Ok(None);
        }
        let certs = tls::load_certs(cert).map_err(|e| e.to_string())?;
        let key = tls::load_private_key(key).map_err(|e| e.to_string())?;
        let client_ca = self.tls_client_ca.as_deref().map(tls::load_roots).transpose().map_err(|e| e.to_string())?;
        tls::server_config(certs, key, client_ca).map(Some).map_err(|e| e.to_string())
    }
}

#[derive(Debug, Clone, Default, Args)]
pub struct TlsClientArgs {
    /// Connect over TLS, verifying the server's certificate against the
    /// system's trusted roots (or --ca) and the name or address given.
    #[arg(long)]
    pub tls: bool,
    /// Trust the CA certificates in this PEM file instead of the system's
    /// (implies --tls).
    #[arg(long, value_name = "PEM")]
    pub ca: Option<PathBuf>,
    /// Present this certificate (PEM) to a server that requires one; with --key.
    #[arg(long, value_name = "PEM", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The private key of --cert (PEM).
    #[arg(long, value_name = "PEM", requires = "cert")]
    pub key: Option<PathBuf>,
}

impl TlsClientArgs {
    pub fn enabled(&self) -> bool {
        self.tls || self.ca.is_some() || self.cert.is_some()
    }

    /// Connects to `peer`, over TLS if asked (the handshake done).
    pub fn connect(&self, peer: &Peer) -> Result<ClientStream, String> {
        let sock = peer.tcp()?;
        let Some((cfg, name)) = self.session(peer)? else { return Ok(ClientStream::Plain(sock)) };
        ClientStream::tls(sock, cfg, name).map_err(|e| explain(&e.to_string(), peer))
    }

    /// What a TLS session with `peer` is made from (`None` without `--tls`).
    pub fn session(&self, peer: &Peer) -> Result<Option<(Arc<ClientConfig>, ServerName<'static>)>, String> {
        if !self.enabled() {
            return Ok(None);
        }
        let roots = match &self.ca {
            Some(path) => tls::load_roots(path).map_err(|e| e.to_string())?,
            None => system_roots()?,
        };
        let auth = match (&self.cert, &self.key) {
            (Some(c), Some(k)) => Some(ClientAuth {
                certs: tls::load_certs(c).map_err(|e| e.to_string())?,
                key: tls::load_private_key(k).map_err(|e| e.to_string())?,
            }),
            _ => None,
        };
        let cfg = tls::client_config(roots, auth).map_err(|e| e.to_string())?;
        let host = peer.host();
        let name = ServerName::try_from(host.clone()).map_err(|_| format!("`{host}` is not a name TLS can verify"))?;
        Ok(Some((cfg, name)))
    }
}

/// A TLS error from connecting to `peer`, with what to do about it.
pub fn explain(error: &str, peer: &Peer) -> String {
    format!("cannot connect to {peer}: {error}{}", hint(error, &peer.host()))
}

/// What to do about the certificate errors people meet first.
fn hint(error: &str, host: &str) -> String {
    if error.contains("CaUsedAsEndEntity") {
        " (the server's certificate is marked as a CA; `openssl req -x509` makes one so unless given \
         `-addext basicConstraints=critical,CA:FALSE`)"
            .into()
    } else if error.contains("UnknownIssuer") {
        " (the certificate is not signed by a CA this client trusts: give --ca PEM with it or its CA)".into()
    } else if error.contains("NotValidForName") {
        format!(" (the certificate does not name `{host}`: connect by a name or address it lists)")
    } else {
        String::new()
    }
}

/// The system's trusted roots (as `openssl` and `curl` find them).
fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        return Err("no trusted root certificates found on this system; give --ca PEM".into());
    }
    Ok(roots)
}
