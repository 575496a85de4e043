//! Certificates for the TLS tests, made with rcgen at start: a CA, a server
//! certificate it signs for `localhost` and `127.0.0.1`, and client
//! certificates for mutual TLS; written as PEM files for the command-line
//! tests and kept as DER for the loop tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use wireloop::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use wireloop::tls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use wireloop::tls::{self, ClientAuth};

/// A CA and what it signed, with PEM files in `dir`.
pub struct Pki {
    pub dir: tempfile::TempDir,
    ca: Certificate,
    ca_key: KeyPair,
    pub server_cert: CertificateDer<'static>,
    server_key: Vec<u8>,
}

impl Pki {
    /// A CA named `name`, and a server certificate signed by it.
    pub fn new(name: &str) -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        p.distinguished_name.push(DnType::CommonName, format!("{name} test CA"));
        let ca = p.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, "localhost");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        Pki { dir, ca, ca_key, server_cert: cert.der().clone(), server_key: key.serialize_der() }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    pub fn path_str(&self, file: &str) -> String {
        self.path(file).to_str().unwrap().to_string()
    }

    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        roots
    }

    /// The server's configuration; with `client_ca`, clients must present
    /// a certificate that CA signed.
    pub fn server_config(&self, client_ca: Option<&Pki>) -> Arc<ServerConfig> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.clone()));
        tls::server_config(vec![self.server_cert.clone()], key, client_ca.map(Pki::roots)).unwrap()
    }

    /// A client certificate signed by this CA, as `ClientAuth`, and written
    /// to `client-cert.pem` / `client-key.pem`.
    pub fn client_auth(&self) -> ClientAuth {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, "test client");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = p.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        std::fs::write(self.path("client-cert.pem"), cert.pem()).unwrap();
        std::fs::write(self.path("client-key.pem"), key.serialize_pem()).unwrap();
        ClientAuth {
            certs: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        }
    }

    /// A client configuration trusting this CA.
    pub fn client_config(&self, auth: Option<ClientAuth>) -> Arc<ClientConfig> {
        tls::client_config(self.roots(), auth).unwrap()
    }
}
