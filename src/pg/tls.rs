//! rustls client settings for the SQL connection, following libpq's `sslmode`:
//! `require` encrypts without checking the certificate, `verify-ca` checks the
//! chain but not the host name, `verify-full` checks both. The replication
//! connection gets the same mode through pgwire-replication's own TLS support.
//!
//! Both connections use these settings: the replication connection reaches
//! the server through ciosync's own socket and TLS session (see
//! [`super::relay`]), not pgwire-replication's TLS.
//!
//! A handshake refused for a reason no retry fixes (a certificate that fails
//! verification, a server without TLS when sslmode requires it) is a
//! [`TlsRefusal`]: a definite error that names the fix.

use std::path::Path;
use std::sync::Arc;

use pgwire_replication::SslMode;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, Error, RootCertStore, SignatureScheme,
};

/// Builds the client config for `mode`, trusting `root_cert` (PEM) when given
/// and the Mozilla roots otherwise. A root file that cannot be read leaves
/// the store without it, so verification fails at connect with rustls's error.
pub fn client_config(mode: SslMode, root_cert: Option<&Path>) -> ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = Arc::new(root_store(root_cert));
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|_| {
            ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(rustls::DEFAULT_VERSIONS)
                .expect("rustls default protocol versions are supported by ring")
        });
    match mode {
        SslMode::VerifyFull => builder.with_root_certificates(roots).with_no_client_auth(),
        // disable never uses it; prefer and require encrypt without
        // verifying, as libpq does; verify-ca checks the chain only.
        mode => {
            let chain = (mode == SslMode::VerifyCa).then(|| webpki_verifier(roots, &provider));
            let verifier = Verifier { chain, provider: provider.clone() };
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth()
        }
    }
}

/// Why a TLS handshake failed for good: retrying reaches the same server
/// with the same settings and fails the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsRefusal {
    /// The server's certificate failed verification (`verify-ca`, `verify-full`).
    Certificate,
    /// The server does not offer TLS, and sslmode requires it.
    ServerWithoutTls,
}

impl std::fmt::Display for TlsRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Certificate => {
                "the server's TLS certificate failed verification: check sslrootcert in \
                 postgres.url (the CA certificate that signed the server's) and, with \
                 sslmode=verify-full, that the URL's host is a name or address the \
                 certificate lists"
            }
            Self::ServerWithoutTls => {
                "the server does not offer TLS, which sslmode in postgres.url requires: \
                 turn on ssl in the server's postgresql.conf, or set sslmode=prefer"
            }
        })
    }
}

/// The [`TlsRefusal`] behind `error`, if any: a rustls certificate error
/// anywhere in its causes (also inside an `io::Error`, which hides its inner
/// error from `source()`), or the text either Postgres client uses for a
/// server that answers the TLS request with "no" (pgwire-replication keeps
/// rustls's errors as text only).
pub fn refusal(error: &(dyn std::error::Error + 'static)) -> Option<TlsRefusal> {
    let mut cause = Some(error);
    while let Some(error) = cause {
        let inner = error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|inner| inner as &(dyn std::error::Error + 'static));
        for error in std::iter::once(error).chain(inner) {
            if let Some(Error::InvalidCertificate(_)) = error.downcast_ref::<Error>() {
                return Some(TlsRefusal::Certificate);
            }
            let text = error.to_string();
            if text.contains("invalid peer certificate") {
                return Some(TlsRefusal::Certificate);
            }
            if text.contains("server does not support TLS") {
                return Some(TlsRefusal::ServerWithoutTls);
            }
        }
        cause = error.source();
    }
    None
}

fn root_store(root_cert: Option<&Path>) -> RootCertStore {
    let mut store = RootCertStore::empty();
    match root_cert {
        Some(path) => {
            if let Ok(pem) = std::fs::read(path) {
                let mut reader = std::io::BufReader::new(pem.as_slice());
                for cert in rustls_pemfile_certs(&mut reader) {
                    let _ = store.add(cert);
                }
            }
        }
        None => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    store
}

/// Reads every CERTIFICATE block of a PEM file.
fn rustls_pemfile_certs(reader: &mut dyn std::io::BufRead) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    let mut pem = Vec::new();
    if reader.read_to_end(&mut pem).is_err() {
        return Vec::new();
    }
    CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok).collect()
}

fn webpki_verifier(
    roots: Arc<RootCertStore>,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Option<Arc<WebPkiServerVerifier>> {
    WebPkiServerVerifier::builder_with_provider(roots, provider.clone()).build().ok()
}

/// The certificate check of `verify-ca` (chain only, any host name) and of
/// `prefer`/`require` (no check: encryption without identity, as in libpq).
/// Handshake signatures are always checked.
#[derive(Debug)]
struct Verifier {
    /// `Some` for `verify-ca`: the chain must verify (`None` inside when no
    /// usable root was given, which refuses every certificate).
    chain: Option<Option<Arc<WebPkiServerVerifier>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let Some(chain) = &self.chain else { return Ok(ServerCertVerified::assertion()) };
        // No usable root: no issuer can be trusted.
        let chain =
            chain.as_ref().ok_or(Error::InvalidCertificate(CertificateError::UnknownIssuer))?;
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Ok(_)
            | Err(Error::InvalidCertificate(CertificateError::NotValidForName))
            | Err(Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. })) => {
                Ok(ServerCertVerified::assertion())
            }
            Err(other) => Err(other),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("could not connect")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn finds_a_certificate_error_inside_an_io_error() {
        let rustls = Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls);
        assert_eq!(refusal(&io), Some(TlsRefusal::Certificate));
        assert_eq!(refusal(&Outer(io)), Some(TlsRefusal::Certificate));
    }

    #[test]
    fn reads_refusals_kept_as_text() {
        let text = |t: &str| std::io::Error::other(t.to_owned());
        let name = "TLS handshake failed: invalid peer certificate: NotValidForName";
        assert_eq!(refusal(&text(name)), Some(TlsRefusal::Certificate));
        let plain = "server does not support TLS (SSLRequest rejected)";
        assert_eq!(refusal(&text(plain)), Some(TlsRefusal::ServerWithoutTls));
    }

    #[test]
    fn leaves_other_failures_transient() {
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        assert_eq!(refusal(&Outer(reset)), None);
        let alert = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            Error::AlertReceived(rustls::AlertDescription::InternalError),
        );
        assert_eq!(refusal(&alert), None);
    }

    /// A CA's root store and a certificate it signed for `names`.
    fn signed_for(names: &[&str]) -> (Arc<RootCertStore>, CertificateDer<'static>) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = CertificateParams::new(names).unwrap().signed_by(&key, &issuer).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(ca_cert.der().clone()).unwrap();
        (Arc::new(roots), cert.der().clone())
    }

    fn verify_ca(roots: Arc<RootCertStore>) -> Verifier {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = Some(webpki_verifier(roots, &provider));
        Verifier { chain, provider }
    }

    #[test]
    fn verify_ca_accepts_any_host() {
        let (roots, cert) = signed_for(&["db.internal", "10.0.0.5"]);
        let verifier = verify_ca(roots);
        let host = ServerName::try_from("10.9.9.9").unwrap();
        verifier.verify_server_cert(&cert, &[], &host, &[], UnixTime::now()).unwrap();
    }

    #[test]
    fn verify_ca_refuses_another_ca_and_records_nothing() {
        let (roots, _) = signed_for(&["db.internal"]);
        let (_, foreign) = signed_for(&["db.internal"]);
        let verifier = verify_ca(roots);
        let host = ServerName::try_from("db.internal").unwrap();
        let error =
            verifier.verify_server_cert(&foreign, &[], &host, &[], UnixTime::now()).unwrap_err();
        assert!(matches!(error, Error::InvalidCertificate(_)), "{error:?}");
    }

    #[test]
    fn refusals_name_the_setting_to_fix() {
        assert!(TlsRefusal::Certificate.to_string().contains("sslrootcert in postgres.url"));
        assert!(TlsRefusal::ServerWithoutTls.to_string().contains("sslmode"));
    }
}
