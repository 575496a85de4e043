//! The uppercase echo over TLS, on the library API: a self-signed
//! certificate made at start-up (rcgen), the echo service served with
//! `Loop::listen_tls`, and a client on the same loop (`Loop::connect_tls`)
//! that trusts that certificate, says hello and prints the reply. The
//! server then keeps running for other clients.
//!
//! ```text
//! cargo run --example tls_echo -- 127.0.0.1:8443
//! wireloop echo 127.0.0.1:8443 --ca <the certificate file it names>
//! ```

use std::time::Duration;

use wireloop::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use wireloop::tls::rustls::RootCertStore;
use wireloop::{services, tls, Config, Context, EventLoop, Flow, Handler, Input};

/// The client: sends a line once TCP is up (rustls holds it until the
/// handshake is done), prints the reply line, and closes.
struct Hello {
    reply: Vec<u8>,
}

impl Handler for Hello {
    fn on_open(&mut self, cx: &mut Context<'_>) -> Flow {
        cx.out().extend_from_slice("hello over tls, straße\n".as_bytes());
        Flow::Continue
    }

    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_>) -> Flow {
        self.reply.extend_from_slice(input.bytes());
        input.consume(input.bytes().len());
        if !self.reply.ends_with(b"\n") {
            return Flow::Continue;
        }
        let id = cx.id();
        let over_tls = cx.is_tls(id).unwrap_or(false);
        print!("client (tls: {over_tls}): {}", String::from_utf8_lossy(&self.reply));
        Flow::Close
    }
}

fn main() -> std::io::Result<()> {
    env_logger::init();
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8443".into());
    let addr = addr.parse().expect("an address like 127.0.0.1:8443");

    // A certificate for localhost and 127.0.0.1, signed by its own key.
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .map_err(std::io::Error::other)?;
    let cert: CertificateDer<'static> = made.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.key_pair.serialize_der()));
    let pem = std::env::temp_dir().join(format!("wireloop-tls-echo-{}.pem", std::process::id()));
    std::fs::write(&pem, made.cert.pem())?;

    let mut lp = EventLoop::new(Config::default())?;
    let server = tls::server_config(vec![cert.clone()], key, None)?;
    let bound = lp.listen_tls(addr, server, services::echo::service())?;
    println!("tls echo on {} (certificate: {})", bound.addr, pem.display());

    // The client trusts exactly that certificate.
    let mut roots = RootCertStore::empty();
    roots.add(cert).map_err(std::io::Error::other)?;
    let client = tls::client_config(roots, None)?;
    let name = "localhost".try_into().expect("a valid name");
    lp.connect_tls(bound.addr, name, client, Hello { reply: Vec::new() });
    let result = lp.run(Duration::from_secs(3));
    let _ = std::fs::remove_file(&pem);
    result
}
