//! TLS options from PEM files, as Python programs make them:
//! `ssl.create_default_context(cafile=...)` for a client,
//! `ctx.load_cert_chain(certfile, keyfile)` for a server, and
//! `verify_mode = CERT_REQUIRED` with `load_verify_locations(cafile)` for
//! mutual TLS. A certificate in a CA file is trusted as an anchor and also
//! accepted as the peer's own certificate when it is exactly that
//! certificate, whatever its CA flag (see `anchor.rs`).

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use rustls::client::danger::ServerCertVerifier;

use super::anchor::{AnchorClientVerifier, AnchorServerVerifier, NoHostnameCheck};
use super::{tls_error, TlsClientOptions, TlsServerOptions};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// An error about `path`: its own `io::Error` when the file could not be
/// read, else `InvalidData` naming the file.
fn pem_error(path: &Path, what: &str, e: pem::Error) -> io::Error {
    match e {
        pem::Error::Io(e) => io::Error::new(e.kind(), format!("{}: {e}", path.display())),
        other => io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: bad {what} PEM: {other}", path.display()),
        ),
    }
}

/// Every `CERTIFICATE` block of a PEM file, in order (other blocks, such as
/// a key in the same file, are skipped); none is an `InvalidData` error.
pub(crate) fn load_certs(path: &Path) -> io::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, "certificate", e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, "certificate", e))?;
    if certs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: no certificate in the file", path.display()),
        ));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 RSA or SEC1 EC) of a PEM file.
pub(crate) fn load_key(path: &Path) -> io::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| pem_error(path, "private key", e))
}

/// The anchors of a CA file, and its certificates as they are.
fn load_roots(path: &Path) -> io::Result<(Arc<RootCertStore>, Vec<CertificateDer<'static>>)> {
    let certs = load_certs(path)?;
    let mut roots = RootCertStore::empty();
    for cert in &certs {
        roots.add(cert.clone()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: not a usable trust anchor: {e}", path.display()),
            )
        })?;
    }
    Ok((Arc::new(roots), certs))
}

fn builder_error(e: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e)
}

impl TlsClientOptions {
    /// A client that trusts the certificates of the PEM file `ca_file`
    /// (Python's `ssl.create_default_context(cafile=ca_file)`): a server
    /// certificate chaining to one of them is accepted, and so is a server
    /// certificate that *is* one of them, byte for byte, whatever its CA
    /// flag (the self-signed certificate of
    /// `openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost`,
    /// which rustls alone refuses as `CaUsedAsEndEntity`). Validity dates
    /// and the host name are checked in both cases.
    ///
    /// Errors: the file's `io::Error` (`NotFound`, ...); `InvalidData` for
    /// a file with no certificate or a bad one.
    ///
    /// ```no_run
    /// use loop_net::{ConnectOptions, TlsClientOptions};
    /// let tls = TlsClientOptions::from_ca_file("cert.pem")?.server_hostname("localhost");
    /// let options = ConnectOptions { tls: Some(tls), ..Default::default() };
    /// # let _ = options;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[doc(alias = "ssl.create_default_context")]
    #[doc(alias = "load_verify_locations")]
    #[doc(alias = "cafile")]
    pub fn from_ca_file(ca_file: impl AsRef<Path>) -> io::Result<Self> {
        let config = client_config(ca_file.as_ref(), None, true)?;
        Ok(TlsClientOptions::new(Arc::new(config)))
    }

    /// [`from_ca_file`](Self::from_ca_file), presenting the certificate
    /// chain of `cert_file` (leaf first) with the private key of `key_file`
    /// to a server that asks for one (mutual TLS; Python's
    /// `ctx.load_cert_chain(certfile, keyfile)` on a client context). The
    /// two may be the same file.
    #[doc(alias = "load_cert_chain")]
    pub fn from_ca_file_with_client_cert(
        ca_file: impl AsRef<Path>,
        cert_file: impl AsRef<Path>,
        key_file: impl AsRef<Path>,
    ) -> io::Result<Self> {
        let chain = load_certs(cert_file.as_ref())?;
        let key = load_key(key_file.as_ref())?;
        let config = client_config(ca_file.as_ref(), Some((chain, key)), true)?;
        Ok(TlsClientOptions::new(Arc::new(config)))
    }

    /// [`from_ca_file`](Self::from_ca_file) with host-name matching turned
    /// off: Python's `ctx.check_hostname = False` (with
    /// `server_hostname=''`, asyncio's way of connecting to a server by a
    /// name its certificate does not carry). The certificate must still
    /// come from (or be) a certificate of `ca_file` and be within its dates.
    ///
    /// **Insecure**: any certificate the CA file vouches for is accepted,
    /// whoever it was issued to, which lets anyone holding one stand in the
    /// middle. Use it only when asked for explicitly.
    ///
    /// ```no_run
    /// use loop_net::TlsClientOptions;
    /// // asyncio: ctx = ssl.create_default_context(cafile="ca.pem");
    /// //          ctx.check_hostname = False; server_hostname=""
    /// let tls = TlsClientOptions::from_ca_file_without_hostname_check("ca.pem")?.server_hostname("");
    /// # let _ = tls;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[doc(alias = "check_hostname")]
    pub fn from_ca_file_without_hostname_check(ca_file: impl AsRef<Path>) -> io::Result<Self> {
        let config = client_config(ca_file.as_ref(), None, false)?;
        Ok(TlsClientOptions::new(Arc::new(config)))
    }
}

fn client_config(
    ca_file: &Path,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    check_hostname: bool,
) -> io::Result<ClientConfig> {
    let provider = provider();
    let (roots, anchors) = load_roots(ca_file)?;
    let inner =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(builder_error)?;
    let mut verifier: Arc<dyn ServerCertVerifier> =
        Arc::new(AnchorServerVerifier { anchors, inner });
    if !check_hostname {
        verifier = Arc::new(NoHostnameCheck { inner: verifier });
    }
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).map_err(tls_error),
    }
}

impl TlsServerOptions {
    /// A server presenting the certificate chain of the PEM file
    /// `cert_file` (leaf first, then intermediates) with the private key of
    /// `key_file` (Python's `ctx.load_cert_chain(certfile, keyfile)` on a
    /// server context). The two may be the same file. A key that does not
    /// match the certificate is an `InvalidData` error.
    ///
    /// ```no_run
    /// use loop_net::{ServerOptions, TlsServerOptions};
    /// let tls = TlsServerOptions::from_pem_files("cert.pem", "key.pem")?;
    /// let options = ServerOptions { tls: Some(tls), ..Default::default() };
    /// # let _ = options;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[doc(alias = "load_cert_chain")]
    pub fn from_pem_files(
        cert_file: impl AsRef<Path>,
        key_file: impl AsRef<Path>,
    ) -> io::Result<Self> {
        let config = server_config(cert_file.as_ref(), key_file.as_ref(), None)?;
        Ok(TlsServerOptions::new(Arc::new(config)))
    }

    /// [`from_pem_files`](Self::from_pem_files), requiring every client to
    /// present a certificate that chains to (or is exactly) one of the
    /// certificates of `client_ca_file` (mutual TLS; Python's
    /// `verify_mode = ssl.CERT_REQUIRED` with
    /// `load_verify_locations(client_ca_file)`). A client without one, or
    /// with another, fails the handshake.
    #[doc(alias = "CERT_REQUIRED")]
    pub fn from_pem_files_requiring_client_certs(
        cert_file: impl AsRef<Path>,
        key_file: impl AsRef<Path>,
        client_ca_file: impl AsRef<Path>,
    ) -> io::Result<Self> {
        let config = server_config(
            cert_file.as_ref(),
            key_file.as_ref(),
            Some(client_ca_file.as_ref()),
        )?;
        Ok(TlsServerOptions::new(Arc::new(config)))
    }
}

fn server_config(
    cert_file: &Path,
    key_file: &Path,
    client_ca_file: Option<&Path>,
) -> io::Result<ServerConfig> {
    let provider = provider();
    let chain = load_certs(cert_file)?;
    let key = load_key(key_file)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?;
    let builder = match client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let (roots, anchors) = load_roots(ca)?;
            let inner =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(builder_error)?;
            builder.with_client_cert_verifier(Arc::new(AnchorClientVerifier { anchors, inner }))
        }
    };
    builder.with_single_cert(chain, key).map_err(tls_error)
}
