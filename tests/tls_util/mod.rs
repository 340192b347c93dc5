//! Helpers shared by the TLS tests (tls/, ownership.rs, net/streams.rs): a test PKI made
//! with rcgen (a CA, a server certificate for `localhost` and 127.0.0.1,
//! PEM files for the external peers), rustls configurations with the ring
//! provider, and the means to run external peers (`openssl`, `python3`)
//! under bounds.
//!
//! Every test binary that uses this module also declares `mod util;`. The
//! TLS tests record their protocols' callbacks with net_util's
//! `RecordingProtocol` / `Recorder`, the one recording protocol of the
//! stream tests.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use aioloop::prelude::*;
use aioloop::rustls;
use aioloop::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::util::{finish, Recorded};

/// A certificate authority and a server certificate it signed.
pub struct Pki {
    pub ca_der: CertificateDer<'static>,
    pub server_der: CertificateDer<'static>,
    pub server_key: Vec<u8>,
    /// PEM files for openssl and Python: `ca.pem`, `server.pem` (the
    /// chain), `server.key`.
    pub dir: PathBuf,
}

impl Pki {
    /// A fresh PKI whose server certificate names `names` (DNS names or IP
    /// addresses).
    pub fn new(names: &[&str]) -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!(
                "aioloop test CA {}",
                NEXT_DIR.load(std::sync::atomic::Ordering::Relaxed)
            ),
        );
        let ca = ca_params.self_signed(&ca_key).unwrap();

        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();

        let dir = std::env::temp_dir().join(format!(
            "aioloop-tls-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.join("server.pem"), cert.pem() + &ca.pem()).unwrap();
        std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
        Pki {
            ca_der: ca.der().clone(),
            server_der: cert.der().clone(),
            server_key: key.serialize_der(),
            dir,
        }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.clone()))
    }

    /// A server configuration presenting this PKI's certificate.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server_config_with(&[], None)
    }

    /// With ALPN protocols and, optionally, one protocol version only.
    pub fn server_config_with(
        &self,
        alpn: &[&[u8]],
        version: Option<&'static rustls::SupportedProtocolVersion>,
    ) -> Arc<rustls::ServerConfig> {
        let versions = versions(version);
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&versions)
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![self.server_der.clone(), self.ca_der.clone()],
                self.key(),
            )
            .unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// A client configuration trusting this PKI's CA.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        self.client_config_with(&[], None)
    }

    pub fn client_config_with(
        &self,
        alpn: &[&[u8]],
        version: Option<&'static rustls::SupportedProtocolVersion>,
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        let versions = versions(version);
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static NEXT_DIR: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn versions(
    version: Option<&'static rustls::SupportedProtocolVersion>,
) -> Vec<&'static rustls::SupportedProtocolVersion> {
    match version {
        Some(v) => vec![v],
        None => vec![&rustls::version::TLS13, &rustls::version::TLS12],
    }
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// [`finish`], after dropping the reports of failed server-side
/// handshakes (made in debug mode only, as asyncio: `AIOLOOP_DEBUG=1`).
pub fn finish_allowing_handshake_reports(lp: &EventLoop, seen: &Recorded) {
    seen.borrow_mut()
        .retain(|s| s.message != "SSL handshake failed");
    finish(lp, seen);
}

/// `len` bytes of a pattern that is unlikely to line up by chance.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// TLS client options trusting `pki` for `localhost`.
pub fn client_opts(pki: &Pki) -> TlsClientOptions {
    TlsClientOptions::new(pki.client_config()).server_hostname("localhost")
}

/// Connect options speaking TLS with `tls`.
pub fn connect_tls(tls: TlsClientOptions) -> ConnectOptions {
    ConnectOptions {
        tls: Some(tls),
        ..ConnectOptions::default()
    }
}

/// Server options speaking TLS with `tls`.
pub fn serve_tls(tls: TlsServerOptions) -> ServerOptions {
    ServerOptions {
        tls: Some(tls),
        ..ServerOptions::default()
    }
}

/// The rustls error inside an `io::Error` from a handshake, if any.
pub fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

// ---------------------------------------------------------------------------
// External peers (openssl, python3)

/// Asserts that `err` is rustls refusing a certificate not valid for the
/// name asked for.
pub fn assert_not_valid_for_name(err: &io::Error) {
    assert!(
        matches!(
            rustls_error(err),
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                    | rustls::CertificateError::NotValidForNameContext { .. }
            ))
        ),
        "{err:?}"
    );
}

/// A failure guard for a loaded machine, never a synchronisation.
pub const PEER_LIMIT: Duration = Duration::from_secs(60);

/// `false` (after saying so) when `program` cannot be run.
pub fn have(program: &str, arg: &str, test: &str) -> bool {
    match Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            eprintln!("{test}: skipped: {program} is not on the PATH");
            false
        }
        Err(e) => panic!("cannot run {program}: {e}"),
    }
}

/// Kills the process if it is still running when dropped (a failed test).
pub struct Reaper(pub Option<Child>);

impl Reaper {
    pub fn take(mut self) -> Child {
        self.0.take().expect("taken once")
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Waits (bounded) for a process to exit: a helper thread blocks in
/// `wait`; past [`PEER_LIMIT`] the process is killed and the test fails.
pub fn wait_bounded(child: Child, what: &str) -> (ExitStatus, String) {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(PEER_LIMIT) {
        Ok(out) => {
            let out = out.unwrap();
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            (out.status, text)
        }
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("{what} did not exit within {PEER_LIMIT:?}");
        }
    }
}

/// Reads a process's stdout on a helper thread; the first line that
/// `pick` accepts comes back (bounded), the rest is drained.
pub fn first_line_matching(
    child: &mut Child,
    what: &str,
    pick: impl Fn(&str) -> Option<u16> + Send + 'static,
) -> u16 {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if !sent {
                if let Some(port) = pick(&line) {
                    let _ = tx.send(port);
                    sent = true;
                }
            }
        }
    });
    rx.recv_timeout(PEER_LIMIT)
        .unwrap_or_else(|_| panic!("{what} printed no port within {PEER_LIMIT:?}"))
}

/// The Python peer, tests/python/tls_peer.py.
pub fn tls_peer_script() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python/tls_peer.py")
        .to_string_lossy()
        .into_owned()
}
