//! TLS options from PEM files (issue 13, item 5): `TlsClientOptions::from_ca_file`
//! (Python's `create_default_context(cafile=)`), `TlsServerOptions::from_pem_files`
//! (`load_cert_chain`), and mutual TLS, against certificates made by the
//! `openssl` command line in a temporary directory for each test: the
//! self-signed `CA:TRUE` certificate of `openssl req -x509`, a CA-signed
//! leaf, an expired certificate, one for another host, and client
//! certificates. Peers are aioloop itself and `openssl s_server` /
//! `s_client`. Without `openssl` on the PATH each test says so and returns.
#![cfg(feature = "tls")]

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::net_util::{Accepted, Ev, Hooks, Recorder, RecordingProtocol};
use crate::tls_util::*;
use crate::util::{new_loop, on_loop, record_exceptions, run};
use aioloop::prelude::*;
use aioloop::rustls::{self, CertificateError};

/// A temporary directory of certificates made by `openssl`.
struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn new() -> Certs {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "aioloop-pem-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("newcerts")).unwrap();
        Certs { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn p(&self, name: &str) -> String {
        self.path(name).to_string_lossy().into_owned()
    }

    /// Runs `openssl args` in the directory; panics with its output on failure.
    fn openssl(&self, args: &[&str]) -> String {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .expect("running openssl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "openssl {args:?} failed: {text}");
        text
    }

    /// `openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=<cn>` with a
    /// DNS name: `<name>.pem`, `<name>.key` (CA:TRUE, as openssl makes it).
    fn self_signed(&self, name: &str, dns: &str) {
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={dns}"),
            "-addext",
            &format!("subjectAltName=DNS:{dns}"),
            "-keyout",
            &self.p(&format!("{name}.key")),
            "-out",
            &self.p(&format!("{name}.pem")),
        ]);
    }

    /// A leaf signed by the CA `ca` (made by [`self_signed`]) with the
    /// extensions `ext` (an openssl extension file's lines).
    fn leaf(&self, name: &str, ca: &str, cn: &str, ext: &str) {
        let ext_file = self.p(&format!("{name}.ext"));
        std::fs::write(&ext_file, ext).unwrap();
        self.openssl(&[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            &self.p(&format!("{name}.key")),
            "-out",
            &self.p(&format!("{name}.csr")),
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &self.p(&format!("{name}.csr")),
            "-CA",
            &self.p(&format!("{ca}.pem")),
            "-CAkey",
            &self.p(&format!("{ca}.key")),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext_file,
            "-out",
            &self.p(&format!("{name}.pem")),
        ]);
    }

    /// A self-signed CA:TRUE certificate for `localhost` valid only on
    /// 2020-01-01 (`openssl ca -selfsign` with explicit dates).
    fn expired_self_signed(&self, name: &str) {
        std::fs::write(self.path("index.txt"), "").unwrap();
        std::fs::write(self.path("serial"), "01\n").unwrap();
        std::fs::write(
            self.path("ca.cnf"),
            "[ca]\ndefault_ca = d\n[d]\ndatabase = ./index.txt\nnew_certs_dir = ./newcerts\n\
             serial = ./serial\ndefault_md = sha256\npolicy = p\ncopy_extensions = copy\n\
             unique_subject = no\n[p]\ncommonName = supplied\n",
        )
        .unwrap();
        self.openssl(&[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-keyout",
            &self.p(&format!("{name}.key")),
            "-out",
            &self.p(&format!("{name}.csr")),
        ]);
        self.openssl(&[
            "ca",
            "-batch",
            "-notext",
            "-config",
            "ca.cnf",
            "-selfsign",
            "-keyfile",
            &self.p(&format!("{name}.key")),
            "-in",
            &self.p(&format!("{name}.csr")),
            "-startdate",
            "20200101000000Z",
            "-enddate",
            "20200102000000Z",
            "-out",
            &self.p(&format!("{name}.pem")),
        ]);
    }

    /// The certificate's DER bytes.
    fn der(&self, name: &str) -> Vec<u8> {
        let out = Command::new("openssl")
            .args([
                "x509",
                "-outform",
                "DER",
                "-in",
                &self.p(&format!("{name}.pem")),
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
        out.stdout
    }

    /// What openssl says of the certificate's basic constraints.
    fn basic_constraints(&self, name: &str) -> String {
        self.openssl(&[
            "x509",
            "-noout",
            "-ext",
            "basicConstraints",
            "-in",
            &self.p(&format!("{name}.pem")),
        ])
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const LEAF_EXT: &str = "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n";
const CLIENT_EXT: &str = "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n";

/// What one client connection through an aioloop TLS server came to.
struct Outcome {
    /// The client's `create_connection` (its error, if it failed).
    connect: io::Result<()>,
    /// Bytes echoed back to the client.
    echoed: Vec<u8>,
    /// The client's `connection_lost` error kind (`Some(None)`: clean).
    client_lost: Option<Option<io::ErrorKind>>,
    /// The server's view: `connection_made` ran, and the client's
    /// certificate (DER) it saw.
    server_made: bool,
    server_peer_cert: Option<Vec<u8>>,
}

/// Serves `server` on 127.0.0.1, connects with `client`, writes a line,
/// waits for the echo (or the end), closes.
fn connect_through(server: TlsServerOptions, client: TlsClientOptions) -> Outcome {
    let lp = new_loop();
    let _seen = record_exceptions(&lp);
    let l = lp.clone();
    let out = run(&lp, async move {
        let acc = Accepted::new();
        let srv = l
            .create_server(
                acc.factory(Hooks::echo_paced),
                &["127.0.0.1"],
                0,
                serve_tls(server),
            )
            .await
            .unwrap();
        let port = srv.sockets()[0].as_inet().unwrap().port();
        let log = Recorder::new();
        let lg = log.clone();
        let connected = l
            .create_connection(
                move || RecordingProtocol::new(&lg, Hooks::none()),
                Some("127.0.0.1"),
                port,
                connect_tls(client),
            )
            .await;
        let mut out = Outcome {
            connect: connected.as_ref().map(|_| ()).map_err(clone_err),
            echoed: Vec::new(),
            client_lost: None,
            server_made: false,
            server_peer_cert: None,
        };
        if let Ok((t, _h)) = connected {
            t.write(b"hello over pem\n").unwrap();
            log.until_data_or_lost(15).await;
            t.close();
            log.until_lost().await;
            out.echoed = log.data.borrow().clone();
            out.client_lost = log.lost_outcome();
        }
        // The server's connection. It echoed: it was made; wait for its
        // end. Else the handshake failed on one side, which ends it on
        // both (TLS 1.3: the server completes only on the client's
        // Finished), so what it did so far is all it will do.
        if acc.len() > 0 {
            let server_log = acc.get(0);
            out.server_made = server_log.events().contains(&Ev::Made);
            if !out.echoed.is_empty() {
                assert!(out.server_made, "an echo without connection_made");
                out.server_peer_cert = server_log.transport().peer_certificate();
                server_log.until_lost().await;
            }
        }
        srv.close();
        srv.wait_closed().await;
        out
    });
    lp.close().unwrap();
    out
}

fn clone_err(e: &io::Error) -> io::Error {
    match rustls_error(e) {
        Some(r) => io::Error::new(e.kind(), r.clone()),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

fn have_openssl(test: &str) -> bool {
    have("openssl", "version", test)
}

#[test]
fn a_self_signed_ca_true_certificate_given_as_the_ca_file_is_accepted() {
    if !have_openssl("a_self_signed_ca_true_certificate_given_as_the_ca_file_is_accepted") {
        return;
    }
    let c = Certs::new();
    c.self_signed("cert", "localhost");
    assert!(c.basic_constraints("cert").contains("CA:TRUE"));

    // rustls' own verifier refuses it as an end entity.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(c.der("cert").into()).unwrap();
    let plain = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server = TlsServerOptions::from_pem_files(c.path("cert.pem"), c.path("cert.key")).unwrap();
    let refused = connect_through(
        server.clone(),
        TlsClientOptions::new(std::sync::Arc::new(plain)).server_hostname("localhost"),
    );
    let err = refused.connect.unwrap_err();
    assert!(
        format!("{:?}", rustls_error(&err)).contains("CaUsedAsEndEntity"),
        "{err:?}"
    );

    // from_ca_file accepts it: the exact trust anchor.
    let client = TlsClientOptions::from_ca_file(c.path("cert.pem"))
        .unwrap()
        .server_hostname("localhost");
    let ok = connect_through(server, client);
    ok.connect.unwrap();
    assert_eq!(ok.echoed, b"hello over pem\n");
    assert_eq!(ok.client_lost, Some(None));
    assert!(ok.server_made);
}

#[test]
fn a_ca_signed_leaf_is_accepted_through_its_ca_and_refused_under_another() {
    if !have_openssl("a_ca_signed_leaf_is_accepted_through_its_ca_and_refused_under_another") {
        return;
    }
    let c = Certs::new();
    c.self_signed("ca", "aioloop test ca");
    c.leaf("leaf", "ca", "localhost", LEAF_EXT);
    // The chain file: leaf then CA; the key in a file of its own.
    let chain = std::fs::read_to_string(c.path("leaf.pem")).unwrap()
        + &std::fs::read_to_string(c.path("ca.pem")).unwrap();
    std::fs::write(c.path("chain.pem"), chain).unwrap();
    let server = TlsServerOptions::from_pem_files(c.path("chain.pem"), c.path("leaf.key")).unwrap();
    for host in ["localhost", "127.0.0.1"] {
        let client = TlsClientOptions::from_ca_file(c.path("ca.pem"))
            .unwrap()
            .server_hostname(host);
        let ok = connect_through(server.clone(), client);
        ok.connect.unwrap();
        assert_eq!(ok.echoed, b"hello over pem\n", "{host}");
    }
    // A client trusting another CA refuses the leaf.
    c.self_signed("other", "other ca");
    let client = TlsClientOptions::from_ca_file(c.path("other.pem"))
        .unwrap()
        .server_hostname("localhost");
    let err = connect_through(server, client).connect.unwrap_err();
    assert!(
        matches!(
            rustls_error(&err),
            Some(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer
            ))
        ),
        "{err:?}"
    );
}

#[test]
fn an_expired_self_signed_anchor_is_refused_as_expired() {
    if !have_openssl("an_expired_self_signed_anchor_is_refused_as_expired") {
        return;
    }
    let c = Certs::new();
    c.expired_self_signed("old");
    assert!(c.basic_constraints("old").contains("CA:TRUE"));
    let server = TlsServerOptions::from_pem_files(c.path("old.pem"), c.path("old.key")).unwrap();
    let client = TlsClientOptions::from_ca_file(c.path("old.pem"))
        .unwrap()
        .server_hostname("localhost");
    let out = connect_through(server, client);
    let err = out.connect.unwrap_err();
    assert!(
        matches!(
            rustls_error(&err),
            Some(rustls::Error::InvalidCertificate(CertificateError::Expired))
        ),
        "{err:?}"
    );
    assert!(!out.server_made);
}

#[test]
fn a_certificate_for_another_host_is_refused_even_as_the_exact_anchor() {
    if !have_openssl("a_certificate_for_another_host_is_refused_even_as_the_exact_anchor") {
        return;
    }
    let c = Certs::new();
    c.self_signed("other", "other.example");
    let server =
        TlsServerOptions::from_pem_files(c.path("other.pem"), c.path("other.key")).unwrap();
    let client = TlsClientOptions::from_ca_file(c.path("other.pem"))
        .unwrap()
        .server_hostname("localhost");
    let err = connect_through(server.clone(), client).connect.unwrap_err();
    assert!(
        matches!(
            rustls_error(&err),
            Some(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            ))
        ),
        "{err:?}"
    );
    // The name it does carry is accepted.
    let client = TlsClientOptions::from_ca_file(c.path("other.pem"))
        .unwrap()
        .server_hostname("other.example");
    connect_through(server, client).connect.unwrap();
}

/// asyncio's `server_hostname=''` with `ctx.check_hostname = False`: no
/// SNI and no host-name matching, only when asked for by the options; the
/// certificate must still be one the CA file vouches for.
#[test]
fn server_hostname_empty_turns_name_matching_off_only_when_asked() {
    if !have_openssl("server_hostname_empty_turns_name_matching_off_only_when_asked") {
        return;
    }
    let c = Certs::new();
    c.self_signed("other", "other.example");
    c.self_signed("stranger", "other.example");
    let server =
        TlsServerOptions::from_pem_files(c.path("other.pem"), c.path("other.key")).unwrap();
    // By default the name is still checked (against the host connected to).
    let client = TlsClientOptions::from_ca_file(c.path("other.pem"))
        .unwrap()
        .server_hostname("");
    let err = connect_through(server.clone(), client).connect.unwrap_err();
    assert!(
        matches!(
            rustls_error(&err),
            Some(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            ))
        ),
        "{err:?}"
    );
    // Turned off explicitly: the certificate for another name is accepted.
    let client = TlsClientOptions::from_ca_file_without_hostname_check(c.path("other.pem"))
        .unwrap()
        .server_hostname("");
    connect_through(server.clone(), client).connect.unwrap();
    // The chain is still checked: a certificate the file does not vouch for
    // is refused (here a self-signed CA certificate that is not the anchor:
    // `CaUsedAsEndEntity`), for a reason other than its name.
    let client = TlsClientOptions::from_ca_file_without_hostname_check(c.path("stranger.pem"))
        .unwrap()
        .server_hostname("");
    let err = connect_through(server, client).connect.unwrap_err();
    assert!(
        matches!(
            rustls_error(&err),
            Some(rustls::Error::InvalidCertificate(e)) if !matches!(
                e,
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            )
        ),
        "{err:?}"
    );
}

#[test]
fn mutual_tls_requires_a_client_certificate_from_the_client_ca() {
    if !have_openssl("mutual_tls_requires_a_client_certificate_from_the_client_ca") {
        return;
    }
    let c = Certs::new();
    c.self_signed("ca", "aioloop test ca");
    c.leaf("server", "ca", "localhost", LEAF_EXT);
    c.leaf("client", "ca", "aioloop client", CLIENT_EXT);
    c.self_signed("pinned", "pinned client");
    c.self_signed("stranger", "stranger");
    // The client CA file: the CA, and a self-signed client certificate
    // trusted as itself.
    let client_cas = std::fs::read_to_string(c.path("ca.pem")).unwrap()
        + &std::fs::read_to_string(c.path("pinned.pem")).unwrap();
    std::fs::write(c.path("client-cas.pem"), client_cas).unwrap();
    let server = TlsServerOptions::from_pem_files_requiring_client_certs(
        c.path("server.pem"),
        c.path("server.key"),
        c.path("client-cas.pem"),
    )
    .unwrap();

    // A client certificate signed by the CA.
    let client = TlsClientOptions::from_ca_file_with_client_cert(
        c.path("ca.pem"),
        c.path("client.pem"),
        c.path("client.key"),
    )
    .unwrap()
    .server_hostname("localhost");
    let ok = connect_through(server.clone(), client);
    ok.connect.unwrap();
    assert_eq!(ok.echoed, b"hello over pem\n");
    assert_eq!(ok.server_peer_cert, Some(c.der("client")));

    // The self-signed (CA:TRUE) client certificate that is in the file.
    let pinned = TlsClientOptions::from_ca_file_with_client_cert(
        c.path("ca.pem"),
        c.path("pinned.pem"),
        c.path("pinned.key"),
    )
    .unwrap()
    .server_hostname("localhost");
    let ok = connect_through(server.clone(), pinned);
    ok.connect.unwrap();
    assert_eq!(ok.server_peer_cert, Some(c.der("pinned")));

    // No client certificate, and one the server does not trust: the
    // server never makes the connection and the client ends in an error.
    for client in [
        TlsClientOptions::from_ca_file(c.path("ca.pem")).unwrap(),
        TlsClientOptions::from_ca_file_with_client_cert(
            c.path("ca.pem"),
            c.path("stranger.pem"),
            c.path("stranger.key"),
        )
        .unwrap(),
    ] {
        let out = connect_through(server.clone(), client.server_hostname("localhost"));
        assert!(
            !out.server_made,
            "the server accepted a client it must refuse"
        );
        match out.connect {
            Err(_) => {}
            Ok(()) => assert!(
                matches!(out.client_lost, Some(Some(_))),
                "the refused client ended with {:?}",
                out.client_lost
            ),
        }
        assert!(out.echoed.is_empty());
    }
}

#[test]
fn bad_pem_inputs_are_typed_errors() {
    if !have_openssl("bad_pem_inputs_are_typed_errors") {
        return;
    }
    let c = Certs::new();
    c.self_signed("a", "localhost");
    c.self_signed("b", "localhost");
    let missing = TlsClientOptions::from_ca_file(c.path("nope.pem")).unwrap_err();
    assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    assert!(missing.to_string().contains("nope.pem"), "{missing}");
    // A key file holds no certificate.
    let no_cert = TlsClientOptions::from_ca_file(c.path("a.key")).unwrap_err();
    assert_eq!(no_cert.kind(), io::ErrorKind::InvalidData, "{no_cert}");
    // A certificate file holds no key.
    let no_key = TlsServerOptions::from_pem_files(c.path("a.pem"), c.path("a.pem")).unwrap_err();
    assert_eq!(no_key.kind(), io::ErrorKind::InvalidData, "{no_key}");
    // A key that is not the certificate's.
    let mismatch = TlsServerOptions::from_pem_files(c.path("a.pem"), c.path("b.key")).unwrap_err();
    assert_eq!(mismatch.kind(), io::ErrorKind::InvalidData, "{mismatch}");
    // Certificate and key in one file work.
    let both = std::fs::read_to_string(c.path("a.pem")).unwrap()
        + &std::fs::read_to_string(c.path("a.key")).unwrap();
    std::fs::write(c.path("both.pem"), both).unwrap();
    TlsServerOptions::from_pem_files(c.path("both.pem"), c.path("both.pem")).unwrap();
}

/// Spawns `openssl s_server` serving `cert`/`key` on an ephemeral port;
/// returns it and its port.
fn s_server(c: &Certs, cert: &str, key: &str, extra: &[&str]) -> (Reaper, u16) {
    let mut child = Command::new("openssl")
        .args([
            "s_server",
            "-accept",
            "127.0.0.1:0",
            "-naccept",
            "1",
            "-rev",
        ])
        .args(["-cert", &c.p(cert), "-key", &c.p(key)])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning openssl s_server");
    let port = first_line_matching(&mut child, "openssl s_server", |line| {
        line.strip_prefix("ACCEPT ")
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
    });
    (Reaper(Some(child)), port)
}

/// Connects `client` to an `openssl s_server -rev` and checks the reversed line.
fn talk_to_s_server(port: u16, client: TlsClientOptions) -> io::Result<Vec<u8>> {
    let got = on_loop(|l| async move {
        let log = Recorder::new();
        let lg = log.clone();
        let (t, _h) = l
            .create_connection(
                move || RecordingProtocol::new(&lg, Hooks::none()),
                Some("127.0.0.1"),
                port,
                connect_tls(client),
            )
            .await?;
        let peer = t.peer_certificate().unwrap_or_default();
        t.write(b"abc pem\n").unwrap();
        log.until_data_or_lost(8).await;
        assert_eq!(&log.data.borrow()[..], b"mep cba\n");
        t.close();
        log.until_lost().await;
        Ok(peer)
    });
    got
}

#[test]
fn from_ca_file_against_openssl_s_server_with_a_self_signed_certificate() {
    if !have_openssl("from_ca_file_against_openssl_s_server_with_a_self_signed_certificate") {
        return;
    }
    let c = Certs::new();
    c.self_signed("cert", "localhost");
    let (reaper, port) = s_server(&c, "cert.pem", "cert.key", &[]);
    let client = TlsClientOptions::from_ca_file(c.path("cert.pem"))
        .unwrap()
        .server_hostname("localhost");
    let peer = talk_to_s_server(port, client).expect("TLS to openssl s_server");
    assert_eq!(peer, c.der("cert"));
    let (status, out) = wait_bounded(reaper.take(), "openssl s_server");
    assert!(status.success(), "{out}");
}

#[test]
fn a_client_certificate_from_pem_files_is_verified_by_openssl_s_server() {
    if !have_openssl("a_client_certificate_from_pem_files_is_verified_by_openssl_s_server") {
        return;
    }
    let c = Certs::new();
    c.self_signed("ca", "aioloop test ca");
    c.leaf("server", "ca", "localhost", LEAF_EXT);
    c.leaf("client", "ca", "aioloop client", CLIENT_EXT);
    // -Verify: a client certificate is required and must verify.
    let (reaper, port) = s_server(
        &c,
        "server.pem",
        "server.key",
        &[
            "-Verify",
            "1",
            "-CAfile",
            &c.p("ca.pem"),
            "-verify_return_error",
        ],
    );
    let client = TlsClientOptions::from_ca_file_with_client_cert(
        c.path("ca.pem"),
        c.path("client.pem"),
        c.path("client.key"),
    )
    .unwrap()
    .server_hostname("localhost");
    talk_to_s_server(port, client).expect("mutual TLS with openssl s_server");
    let (status, out) = wait_bounded(reaper.take(), "openssl s_server");
    assert!(status.success(), "{out}");
}

/// Runs `openssl s_client` against `port` with `args`, sends a line, and
/// returns (exit success, the echo, its output).
fn s_client(port: u16, args: Vec<String>) -> (bool, Vec<u8>, String) {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args([
            "-quiet",
            "-no_ign_eof",
            "-nocommands",
            "-verify_return_error",
        ])
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning openssl s_client");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let _ = stdin.write_all(b"ping pem\n");
    let mut got = vec![0u8; 9];
    let read = stdout.read_exact(&mut got);
    drop(stdin);
    let (status, out) = wait_bounded(child, "openssl s_client");
    if read.is_err() {
        got.clear();
    }
    (status.success(), got, out)
}

#[test]
fn openssl_s_client_verifies_an_aioloop_server_made_from_pem_files() {
    if !have_openssl("openssl_s_client_verifies_an_aioloop_server_made_from_pem_files") {
        return;
    }
    let c = Certs::new();
    c.self_signed("ca", "aioloop test ca");
    c.leaf("server", "ca", "localhost", LEAF_EXT);
    c.leaf("client", "ca", "aioloop client", CLIENT_EXT);
    let plain =
        TlsServerOptions::from_pem_files(c.path("server.pem"), c.path("server.key")).unwrap();
    let mutual = TlsServerOptions::from_pem_files_requiring_client_certs(
        c.path("server.pem"),
        c.path("server.key"),
        c.path("ca.pem"),
    )
    .unwrap();
    let base = vec![
        "-CAfile".to_string(),
        c.p("ca.pem"),
        "-verify_hostname".into(),
        "localhost".into(),
    ];
    let with_cert = {
        let mut a = base.clone();
        a.extend([
            "-cert".into(),
            c.p("client.pem"),
            "-key".into(),
            c.p("client.key"),
        ]);
        a
    };
    // (server, s_client arguments, should the echo come back)
    let cases = vec![
        (plain, base.clone(), true),
        (mutual.clone(), with_cert, true),
        (mutual, base, false),
    ];
    for (i, (tls, args, should_work)) in cases.into_iter().enumerate() {
        let lp = new_loop();
        let seen = record_exceptions(&lp);
        let l = lp.clone();
        let (ok, got, out) = run(&lp, async move {
            let acc = Accepted::new();
            let server = l
                .create_server(
                    acc.factory(Hooks::echo_paced),
                    &["127.0.0.1"],
                    0,
                    serve_tls(tls),
                )
                .await
                .unwrap();
            let port = server.sockets()[0].as_inet().unwrap().port();
            let driver = l.run_in_executor(move || s_client(port, args)).unwrap();
            let result = driver.await.unwrap();
            server.close();
            server.abort_clients();
            server.wait_closed().await;
            result
        });
        if should_work {
            assert!(ok, "case {i}: s_client failed: {out}");
            assert_eq!(got, b"ping pem\n", "case {i}: {out}");
        } else {
            assert!(
                got.is_empty(),
                "case {i}: a client without a certificate got an echo"
            );
        }
        // A refused handshake is reported in debug mode only.
        finish_allowing_handshake_reports(&lp, &seen);
    }
}
