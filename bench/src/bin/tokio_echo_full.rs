//! `tokio-echo-full`: a tokio echo server with what aioloop's echo_server
//! example serves: TCP, TLS on the TCP listener (`--tls CERT KEY`, PEM
//! files, tokio-rustls with ring), Unix (`--unix PATH`) and UDP (`--udp
//! HOST:PORT`), each printed as `listening on SCHEME://ADDR`; exit on stdin
//! EOF, SIGINT or SIGTERM. The like-for-like side of the fixed idle memory
//! comparison of `cargo xtask bench net` (`idle_rss`): the same features
//! linked, so the same kinds of code mapped.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, UdpSocket, UnixListener};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

#[path = "tokio_echo/common.rs"]
mod common;

/// The command line: `[--tls CERT KEY] [--unix PATH] [--udp HOST:PORT]`.
#[derive(Default)]
struct Args {
    tls: Option<(String, String)>,
    unix: Option<String>,
    udp: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--tls" => args.tls = Some((value()?, value()?)),
            "--unix" => args.unix = Some(value()?),
            "--udp" => args.udp = Some(value()?),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(args)
}

/// The TLS acceptor of `--tls CERT KEY`.
fn acceptor(cert: &str, key: &str) -> Result<TlsAcceptor, String> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{cert}: {e}"))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{key}: {e}"))?;
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("TLS configuration: {e}"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tokio-echo-full: {e}");
            std::process::exit(2);
        }
    };
    let tls = match args.tls.as_ref().map(|(c, k)| acceptor(c, k)).transpose() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tokio-echo-full: {e}");
            std::process::exit(1);
        }
    };
    common::run(async move {
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let scheme = if tls.is_some() { "tls" } else { "tcp" };
        let addr = tcp.local_addr().expect("local address");
        println!("listening on {scheme}://{addr}");
        let unix = args.unix.map(|p| {
            let l = UnixListener::bind(&p).expect("bind the Unix socket");
            println!("listening on unix://{p}");
            l
        });
        let udp = match args.udp {
            Some(a) => {
                let s = UdpSocket::bind(&a).await.expect("bind the UDP socket");
                println!(
                    "listening on udp://{}",
                    s.local_addr().expect("local address")
                );
                Some(s)
            }
            None => None,
        };
        let serve_tcp = async {
            loop {
                let Ok((s, _)) = tcp.accept().await else {
                    continue;
                };
                let _ = s.set_nodelay(true);
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        Some(a) => {
                            if let Ok(t) = a.accept(s).await {
                                common::echo(t).await;
                            }
                        }
                        None => common::echo(s).await,
                    }
                });
            }
        };
        let serve_unix = async {
            let Some(l) = unix else {
                return std::future::pending().await;
            };
            loop {
                if let Ok((s, _)) = l.accept().await {
                    tokio::spawn(common::echo(s));
                }
            }
        };
        let serve_udp = async {
            let Some(s) = udp else {
                return std::future::pending().await;
            };
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                if let Ok((n, from)) = s.recv_from(&mut buf).await {
                    let _ = s.send_to(&buf[..n], from).await;
                }
            }
        };
        tokio::join!(serve_tcp, serve_unix, serve_udp);
    });
}
