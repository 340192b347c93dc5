//! The TLS echo servers of `bench-net server --system aioloop-tls|tokio-rustls
//! --tls-dir DIR`, and the TLS side of `bench-net client --tls-dir DIR`.
//!
//! The server makes a self-signed certificate for `localhost` (rcgen) and
//! writes it to `DIR/cert.der` before it prints `listening on PORT`; the
//! client trusts exactly that certificate. Both servers use rustls with the
//! ring provider and its default protocol versions and suites (TLS 1.3,
//! AES-256-GCM with this client): the same crypto, so the comparison is of
//! the event loops and their TLS glue.
//!
//! - `aioloop-tls`: the plain server's `Echo` protocol (`data_received`
//!   calls `transport.write`) behind `ServerOptions::tls`.
//! - `tokio-rustls`: a current-thread runtime, `TlsAcceptor`, one task per
//!   connection reading into a 64 KiB buffer, `write_all` + `flush`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use loop_net::rustls;
use loop_net::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use loop_net::{StreamLoopExt, TlsServerOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use aioloop_bench::load::{announce_and_serve, tokio_accept_loop};

use super::{Echo, Opts, Res};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A fresh self-signed certificate for `localhost`, written to
/// `dir/cert.der`; the server configuration that presents it.
fn server_config(dir: &str) -> Res<Arc<rustls::ServerConfig>> {
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])?.self_signed(&key)?;
    std::fs::create_dir_all(dir)?;
    std::fs::write(Path::new(dir).join("cert.der"), cert.der().as_ref())?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)?;
    Ok(Arc::new(config))
}

/// The client's connector, trusting the server's `dir/cert.der`.
pub(super) fn connector(dir: &str) -> Res<tokio_rustls::TlsConnector> {
    let der = std::fs::read(Path::new(dir).join("cert.der"))?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(der))?;
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

fn tls_dir(o: &Opts) -> Res<&str> {
    o.tls_dir
        .as_deref()
        .ok_or_else(|| "--tls-dir is required for a TLS server".into())
}

pub(super) fn server_aioloop(addr: SocketAddr, o: &Opts, system: &str) -> Res<()> {
    let config = server_config(tls_dir(o)?)?;
    let lp = aioloop_bench::aioloop_loop(aioloop_bench::backend_of_system(system))?;
    let lp2 = lp.clone();
    let host = addr.ip().to_string();
    lp.run_until_complete(async move {
        let hosts = [host.as_str()];
        let options = loop_net::ServerOptions {
            tls: Some(TlsServerOptions::new(config)),
            ..Default::default()
        };
        let server = lp2
            .create_server(|| Echo(None), &hosts, addr.port(), options)
            .await?;
        announce_and_serve(server).await
    })??;
    Ok(())
}

pub(super) fn server_tokio(addr: SocketAddr, o: &Opts) -> Res<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config(tls_dir(o)?)?);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(addr).await?;
        tokio_accept_loop(listener, "bench-net server tokio-rustls", |sock| {
            let acceptor = acceptor.clone();
            async move {
                let Ok(mut tls) = acceptor.accept(sock).await else {
                    return;
                };
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if tls.write_all(&buf[..n]).await.is_err() || tls.flush().await.is_err() {
                        return;
                    }
                }
            }
        })
        .await?;
        Ok(())
    })
}
