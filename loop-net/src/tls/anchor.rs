//! Certificate verifiers that accept a peer certificate which *is* one of
//! the configured trust anchors, matched byte for byte, whatever its CA
//! flag; every other certificate goes to rustls' WebPki verifiers.
//!
//! Why: `openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost`
//! makes a self-signed certificate with `basicConstraints=CA:TRUE`. Given as
//! the CA file, OpenSSL (`s_client -CAfile`) and Python
//! (`ssl.create_default_context(cafile=)`) accept it as the server's
//! certificate, while webpki refuses it (`CaUsedAsEndEntity`): a CA
//! certificate may not be an end entity. An exact match with a configured
//! anchor is a pin, so the chain and its signature need no check; the
//! validity dates (read from the certificate's DER here) and, for a server,
//! the host name (rustls' `verify_server_name`) still are checked.
//!
//! The handshake signatures (TLS 1.2 and 1.3) and the supported schemes are
//! always the wrapped verifier's.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

/// A server verifier: exact anchor match first, else `inner`.
pub(crate) struct AnchorServerVerifier {
    pub(crate) anchors: Vec<CertificateDer<'static>>,
    pub(crate) inner: Arc<dyn ServerCertVerifier>,
}

/// A server verifier that checks everything `inner` checks but the host
/// name: the chain, dates and signatures as `inner` does, and a
/// `NotValidForName` from `inner` (which rustls' WebPki verifier and
/// [`AnchorServerVerifier`] return only after the chain and dates passed)
/// is accepted. Insecure: any certificate from a trusted issuer passes,
/// whoever it was issued to (asyncio's `check_hostname = False`).
pub(crate) struct NoHostnameCheck {
    pub(crate) inner: Arc<dyn ServerCertVerifier>,
}

impl fmt::Debug for NoHostnameCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoHostnameCheck").finish_non_exhaustive()
    }
}

/// A client-certificate verifier (mutual TLS): exact anchor match first,
/// else `inner`.
pub(crate) struct AnchorClientVerifier {
    pub(crate) anchors: Vec<CertificateDer<'static>>,
    pub(crate) inner: Arc<dyn ClientCertVerifier>,
}

impl fmt::Debug for AnchorServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnchorServerVerifier")
            .field("anchors", &self.anchors.len())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for AnchorClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnchorClientVerifier")
            .field("anchors", &self.anchors.len())
            .finish_non_exhaustive()
    }
}

fn is_anchor(anchors: &[CertificateDer<'static>], cert: &CertificateDer<'_>) -> bool {
    anchors.iter().any(|a| a.as_ref() == cert.as_ref())
}

/// The signature checks both verifiers leave to the verifier they wrap
/// (rustls asks for them in each of its two verifier traits).
macro_rules! forward_signature_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.inner.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.inner.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.inner.supported_verify_schemes()
        }
    };
}

impl ServerCertVerifier for AnchorServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        if is_anchor(&self.anchors, end_entity) {
            check_validity(end_entity, now)?;
            let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_name(&parsed, server_name)?;
            return Ok(ServerCertVerified::assertion());
        }
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    forward_signature_checks!();

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}

impl ServerCertVerifier for NoHostnameCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    forward_signature_checks!();

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}

impl ClientCertVerifier for AnchorClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        if is_anchor(&self.anchors, end_entity) {
            check_validity(end_entity, now)?;
            return Ok(ClientCertVerified::assertion());
        }
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
    }

    forward_signature_checks!();
}

/// `Expired` / `NotValidYet` unless `now` is within the certificate's
/// validity period (both ends included, as RFC 5280 says).
fn check_validity(cert: &CertificateDer<'_>, now: UnixTime) -> Result<(), Error> {
    let (not_before, not_after) =
        validity(cert.as_ref()).ok_or(Error::InvalidCertificate(CertificateError::BadEncoding))?;
    let now = now.as_secs() as i64;
    if now < not_before {
        return Err(Error::InvalidCertificate(CertificateError::NotValidYet));
    }
    if now > not_after {
        return Err(Error::InvalidCertificate(CertificateError::Expired));
    }
    Ok(())
}

/// One DER element: `(tag, contents, rest)`. Definite lengths only (DER).
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const VERSION: u8 = 0xa0; // [0] EXPLICIT
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// The `(notBefore, notAfter)` of an X.509 certificate, in seconds since
/// the Unix epoch: Certificate → tbsCertificate → [version] serialNumber
/// signature issuer validity.
fn validity(der: &[u8]) -> Option<(i64, i64)> {
    let (SEQUENCE, cert, _) = element(der)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = element(cert)? else {
        return None;
    };
    let mut rest = tbs;
    let (tag, _, after) = element(rest)?;
    if tag == VERSION {
        rest = after;
    }
    let (INTEGER, _, rest) = element(rest)? else {
        return None;
    };
    let (SEQUENCE, _, rest) = element(rest)? else {
        return None; // signature algorithm
    };
    let (SEQUENCE, _, rest) = element(rest)? else {
        return None; // issuer
    };
    let (SEQUENCE, validity, _) = element(rest)? else {
        return None;
    };
    let (tag, not_before, rest) = element(validity)?;
    let not_before = time(tag, not_before)?;
    let (tag, not_after, _) = element(rest)?;
    let not_after = time(tag, not_after)?;
    Some((not_before, not_after))
}

/// A `UTCTime` (`YYMMDDHHMMSSZ`, years 1950..2049) or `GeneralizedTime`
/// (`YYYYMMDDHHMMSSZ`), as DER requires them, in Unix seconds.
fn time(tag: u8, text: &[u8]) -> Option<i64> {
    let digits = |s: &[u8]| -> Option<i64> {
        s.iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    let (year, rest) = match (tag, text.len()) {
        (UTC_TIME, 13) => {
            let yy = digits(&text[..2])?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &text[2..])
        }
        (GENERALIZED_TIME, 15) => (digits(&text[..4])?, &text[4..]),
        _ => return None,
    };
    if rest[10] != b'Z' {
        return None;
    }
    let month = digits(&rest[0..2])?;
    let day = digits(&rest[2..4])?;
    let (h, m, s) = (
        digits(&rest[4..6])?,
        digits(&rest[6..8])?,
        digits(&rest[8..10])?,
    );
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_convert_to_unix_seconds() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(time(UTC_TIME, b"700101000000Z"), Some(0));
        assert_eq!(time(UTC_TIME, b"491231235959Z"), Some(2_524_607_999));
        assert_eq!(
            time(GENERALIZED_TIME, b"20500101000000Z"),
            Some(2_524_608_000)
        );
        assert_eq!(time(UTC_TIME, b"500101000000Z"), Some(-631_152_000));
        assert_eq!(time(UTC_TIME, b"701301000000Z"), None);
        assert_eq!(time(UTC_TIME, b"700101000000+"), None);
        assert_eq!(time(GENERALIZED_TIME, b"700101000000Z"), None);
    }

    #[test]
    fn truncated_der_is_refused() {
        assert_eq!(element(&[0x30, 0x05, 1, 2]), None);
        assert_eq!(element(&[0x30, 0x82, 0x01]), None);
        assert_eq!(validity(&[0x30, 0x00]), None);
        assert_eq!(
            element(&[0x02, 0x01, 7, 9]),
            Some((0x02, &[7u8][..], &[9u8][..]))
        );
    }
}
