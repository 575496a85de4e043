//! rustls configurations from PEM files: a server's certificate chain and
//! key (and, for mutual TLS, the CA its clients' certificates must chain
//! to), a client's trusted roots (and, optionally, its own certificate).
//! Every error names the file and what was wrong with it.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

fn bad(path: &Path, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{}: {what}", path.display()))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates in a PEM file, in order (a chain: the leaf first). An
/// error if the file holds none.
pub fn load_certs(path: &Path) -> io::Result<Vec<CertificateDer<'static>>> {
    let bytes = std::fs::read(path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(path, format!("not a PEM certificate file ({e})")))?;
    if certs.is_empty() {
        return Err(bad(path, "no CERTIFICATE block"));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_private_key(path: &Path) -> io::Result<PrivateKeyDer<'static>> {
    let bytes = std::fs::read(path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| bad(path, format!("no usable PRIVATE KEY block ({e})")))
}

/// A root store from the certificates in a PEM file (a CA bundle).
pub fn load_roots(path: &Path) -> io::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| bad(path, format!("not a usable CA certificate ({e})")))?;
    }
    Ok(roots)
}

/// A server configuration: `certs` (leaf first) and their `key`; with
/// `client_ca`, every client must present a certificate that chains to it
/// (mutual TLS), or the handshake fails.
pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_ca: Option<RootCertStore>,
) -> io::Result<Arc<ServerConfig>> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(roots) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("client CA: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let cfg = builder
        .with_single_cert(certs, key)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("certificate and key: {e}")))?;
    Ok(Arc::new(cfg))
}

/// A client's own certificate, for servers that require one.
pub struct ClientAuth {
    /// The chain, leaf first.
    pub certs: Vec<CertificateDer<'static>>,
    /// Its private key.
    pub key: PrivateKeyDer<'static>,
}

/// A client configuration trusting `roots`, presenting `auth` if given.
pub fn client_config(roots: RootCertStore, auth: Option<ClientAuth>) -> io::Result<Arc<ClientConfig>> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_root_certificates(roots);
    let cfg = match auth {
        None => builder.with_no_client_auth(),
        Some(a) => builder
            .with_client_auth_cert(a.certs, a.key)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("client certificate and key: {e}")))?,
    };
    Ok(Arc::new(cfg))
}
