//! rustls client settings for the SQL connection, following libpq's `sslmode`:
//! `require` encrypts without checking the certificate, `verify-ca` checks the
//! chain but not the host name, `verify-full` checks both. The replication
//! connection gets the same mode through pgwire-replication's own TLS support.

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
        let chain = chain.as_ref().ok_or_else(|| {
            Error::General("no trusted root certificate (check sslrootcert)".to_owned())
        })?;
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(Error::InvalidCertificate(CertificateError::NotValidForName))
            | Err(Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. })) => {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
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
