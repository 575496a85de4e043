//! Side-by-side peers for `benches/compare.sh`: the same services as `wireloop serve`, written the
//! way a tokio user would, so `wireloop bench` can measure both in one run. Same work, same replies:
//!
//! * `echo-ct ADDR` — uppercase echo on a current-thread runtime (one thread, like our loop);
//! * `echo-mt ADDR` — the same on the multi-thread runtime (one worker per core);
//! * `framed ADDR` — tokio-util `LengthDelimitedCodec` (4-byte little-endian length), `success`
//!   per frame; replies for frames already decoded are written together, as ours are;
//! * `udp ADDR` — one datagram in, its uppercase out, current-thread runtime;
//! * `copy ADDR` — the throughput ceiling: blocking std code, one thread per connection, reading
//!   into a 64 KiB buffer, uppercasing ASCII in place and writing it back (no runtime at all);
//! * `proxy LISTEN UPSTREAM` — a TCP proxy as a tokio user writes one: per accepted connection,
//!   connect to UPSTREAM and `tokio::io::copy_bidirectional` (8 KiB buffer per direction, half-close
//!   carried across), `TCP_NODELAY` on both sides, current-thread runtime (one thread, like
//!   `examples/proxy.rs`). For `benches/embed_peers.sh`;
//! * `proxy-64k LISTEN UPSTREAM` — the same with `copy_bidirectional_with_sizes`, 64 KiB per
//!   direction (a reference for bulk transfers: fewer, larger reads and writes);
//! * `echo-tls ADDR CERT KEY` — the uppercase echo over tokio-rustls (current-thread runtime),
//!   with the same rustls configuration as `wireloop serve --tls` (ring provider, the same
//!   certificate, so the same cipher suite). For `benches/tls.sh`.
//!
//! The payloads `wireloop bench` sends are lowercase ASCII, for which ASCII and Unicode uppercase
//! agree, so the peers use `make_ascii_uppercase` (ours runs its full UTF-8 uppercase).
//!
//! It prints `listening ADDR` once bound and serves until killed. Built by `cargo bench` /
//! `cargo build --release --benches` only, never by `cargo test`:
//!
//! ```text
//! cargo bench --bench peer_tokio -- echo-ct 127.0.0.1:0
//! ```

use std::io::{Read, Write};
use std::net::SocketAddr;

use futures::{FutureExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

const BUF: usize = 64 * 1024;

fn announce(addr: SocketAddr) {
    println!("listening {addr}");
    let _ = std::io::stdout().flush();
}

async fn echo_conn(mut s: TcpStream) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    let mut buf = vec![0u8; BUF];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        buf[..n].make_ascii_uppercase();
        s.write_all(&buf[..n]).await?;
    }
}

async fn framed_conn(s: TcpStream) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    let (r, mut w) = s.into_split();
    let codec = LengthDelimitedCodec::builder().little_endian().length_field_length(4).new_codec();
    let mut frames = FramedRead::new(r, codec);
    let mut out = Vec::with_capacity(BUF);
    while let Some(frame) = frames.next().await {
        frame?;
        out.extend_from_slice(b"success");
        // Every frame already decodable without waiting gets its reply in the same write.
        while let Some(Some(frame)) = frames.next().now_or_never() {
            frame?;
            out.extend_from_slice(b"success");
        }
        w.write_all(&out).await?;
        out.clear();
    }
    Ok(())
}

/// The echo over any stream (a TLS one): read, uppercase, write, flush.
async fn echo_any<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut s: S) -> std::io::Result<()> {
    let mut buf = vec![0u8; BUF];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return s.shutdown().await;
        }
        buf[..n].make_ascii_uppercase();
        s.write_all(&buf[..n]).await?;
        s.flush().await?;
    }
}

async fn serve_tls(addr: SocketAddr, cert: &str, key: &str) -> std::io::Result<()> {
    let certs = wireloop::tls::load_certs(cert.as_ref())?;
    let key = wireloop::tls::load_private_key(key.as_ref())?;
    let acceptor = tokio_rustls::TlsAcceptor::from(wireloop::tls::server_config(certs, key, None)?);
    let l = TcpListener::bind(addr).await?;
    announce(l.local_addr()?);
    loop {
        let (s, _) = l.accept().await?;
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _ = s.set_nodelay(true);
            if let Ok(tls) = acceptor.accept(s).await {
                let _ = echo_any(tls).await;
            }
        });
    }
}

async fn serve_tcp(addr: SocketAddr, framed: bool) -> std::io::Result<()> {
    let l = TcpListener::bind(addr).await?;
    announce(l.local_addr()?);
    loop {
        let (s, _) = l.accept().await?;
        tokio::spawn(async move {
            let _ = if framed { framed_conn(s).await } else { echo_conn(s).await };
        });
    }
}

async fn serve_udp(addr: SocketAddr) -> std::io::Result<()> {
    let sock = UdpSocket::bind(addr).await?;
    announce(sock.local_addr()?);
    let mut buf = vec![0u8; BUF];
    loop {
        let (n, peer) = sock.recv_from(&mut buf).await?;
        buf[..n].make_ascii_uppercase();
        // Like ours, a reply that cannot be sent is dropped, not fatal.
        let _ = sock.send_to(&buf[..n], peer).await;
    }
}

fn serve_copy(addr: SocketAddr) -> std::io::Result<()> {
    let l = std::net::TcpListener::bind(addr)?;
    announce(l.local_addr()?);
    for s in l.incoming() {
        let mut s = s?;
        std::thread::spawn(move || {
            let _ = s.set_nodelay(true);
            let mut buf = vec![0u8; BUF];
            loop {
                let n = match s.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                buf[..n].make_ascii_uppercase();
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        });
    }
    Ok(())
}

async fn proxy_conn(mut client: TcpStream, upstream: SocketAddr, big: bool) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    let mut up = TcpStream::connect(upstream).await?;
    up.set_nodelay(true)?;
    if big {
        tokio::io::copy_bidirectional_with_sizes(&mut client, &mut up, BUF, BUF).await?;
    } else {
        tokio::io::copy_bidirectional(&mut client, &mut up).await?;
    }
    Ok(())
}

async fn serve_proxy(addr: SocketAddr, upstream: SocketAddr, big: bool) -> std::io::Result<()> {
    let l = TcpListener::bind(addr).await?;
    announce(l.local_addr()?);
    loop {
        let (s, _) = l.accept().await?;
        tokio::spawn(async move {
            if let Err(e) = proxy_conn(s, upstream, big).await {
                eprintln!("proxy: {e}");
            }
        });
    }
}

fn main() {
    // `cargo bench` appends `--bench`; ignore flags.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let (Some(mode), Some(addr)) = (args.first(), args.get(1).and_then(|a| a.parse::<SocketAddr>().ok())) else {
        eprintln!("usage: peer_tokio echo-ct|echo-mt|framed|udp|copy ADDR | proxy|proxy-64k LISTEN UPSTREAM");
        std::process::exit(2);
    };
    let ct = || tokio::runtime::Builder::new_current_thread().enable_all().build();
    let result = match mode.as_str() {
        "echo-ct" => ct().and_then(|rt| rt.block_on(serve_tcp(addr, false))),
        "echo-mt" => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .and_then(|rt| rt.block_on(serve_tcp(addr, false))),
        "framed" => ct().and_then(|rt| rt.block_on(serve_tcp(addr, true))),
        "udp" => ct().and_then(|rt| rt.block_on(serve_udp(addr))),
        "copy" => serve_copy(addr),
        "echo-tls" => match (args.get(2), args.get(3)) {
            (Some(cert), Some(key)) => ct().and_then(|rt| rt.block_on(serve_tls(addr, cert, key))),
            _ => {
                eprintln!("usage: peer_tokio echo-tls ADDR CERT KEY");
                std::process::exit(2);
            }
        },
        "proxy" | "proxy-64k" => match args.get(2).and_then(|a| a.parse::<SocketAddr>().ok()) {
            Some(up) => ct().and_then(|rt| rt.block_on(serve_proxy(addr, up, mode == "proxy-64k"))),
            None => {
                eprintln!("usage: peer_tokio proxy|proxy-64k LISTEN UPSTREAM");
                std::process::exit(2);
            }
        },
        other => {
            eprintln!("peer_tokio: unknown mode `{other}`");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("peer_tokio {mode}: {e}");
        std::process::exit(1);
    }
}
