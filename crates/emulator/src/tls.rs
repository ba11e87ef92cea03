//! TLS for the emulator's listener: a certificate and key from PEM files,
//! or a throwaway CA and a server certificate for `localhost`, `127.0.0.1`
//! and `::1` made at start-up, with the CA written where a client can be
//! told to trust it. Crypto is ring, the provider the daemon uses.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// File names `ServerTls::self_signed` writes in its directory.
pub const CA_FILE: &str = "ca.pem";
/// The server certificate (chain: server, CA).
pub const CERT_FILE: &str = "server.pem";
/// The server key (mode 0600 on Unix).
pub const KEY_FILE: &str = "server-key.pem";
/// The names every self-signed server certificate holds.
pub const LOCAL_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];
/// Longest a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS server configuration for the emulator's listener, and, when it
/// made its own CA, that CA's certificate (PEM), which `GET
/// /_emulator/ca.pem` serves.
#[derive(Clone)]
pub struct ServerTls(Arc<rustls::ServerConfig>, Option<Arc<str>>);

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls")
    }
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message.into())
}

impl ServerTls {
    /// From a PEM certificate chain (server first) and a PEM private key.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> io::Result<Self> {
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| invalid(format!("certificate PEM: {error}")))?;
        if chain.is_empty() {
            return Err(invalid("certificate PEM holds no certificate"));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|error| invalid(format!("key PEM: {error}")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| invalid(error.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|error| invalid(format!("certificate and key: {error}")))?;
        // The router speaks HTTP/1 only.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self(Arc::new(config), None))
    }

    /// The self-signed CA's certificate (PEM); `None` with a given one.
    pub fn ca_pem(&self) -> Option<&str> {
        self.1.as_deref()
    }

    /// From PEM files, naming the one that cannot be read.
    pub fn from_pem_files(cert: &Path, key: &Path) -> io::Result<Self> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|error| {
                io::Error::new(error.kind(), format!("cannot read {}: {error}", path.display()))
            })
        };
        Self::from_pem(&read(cert)?, &read(key)?)
    }

    /// Makes a CA and a server certificate it signs for `localhost`,
    /// `127.0.0.1`, `::1` and `extra_names` (host names or IP addresses, e.g.
    /// a CI service name), writes `ca.pem`, `server.pem` and
    /// `server-key.pem` into `dir` (created if missing), and returns the
    /// configuration with the CA file's path.
    pub fn self_signed(dir: &Path, extra_names: &[String]) -> io::Result<(Self, PathBuf)> {
        let generated = generate(extra_names).map_err(|error| invalid(error.to_string()))?;
        std::fs::create_dir_all(dir)?;
        let ca_path = dir.join(CA_FILE);
        std::fs::write(&ca_path, &generated.ca_pem)?;
        std::fs::write(dir.join(CERT_FILE), format!("{}{}", generated.cert_pem, generated.ca_pem))?;
        write_private(&dir.join(KEY_FILE), generated.key_pem.as_bytes())?;
        let tls = Self::from_pem(generated.cert_pem.as_bytes(), generated.key_pem.as_bytes())?;
        Ok((Self(tls.0, Some(generated.ca_pem.into())), ca_path))
    }
}

struct Generated {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn generate(extra_names: &[String]) -> Result<Generated, rcgen::Error> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name.push(DnType::CommonName, "ciosync-emulator local CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let names: Vec<String> = LOCAL_NAMES
        .iter()
        .map(|name| (*name).to_owned())
        .chain(extra_names.iter().cloned())
        .collect();
    let server_key = KeyPair::generate()?;
    let mut server = CertificateParams::new(names)?;
    server.distinguished_name.push(DnType::CommonName, "ciosync-emulator");
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    // Python 3.13's strict verification wants it.
    server.use_authority_key_identifier_extension = true;
    let server_cert = server.signed_by(&server_key, &issuer)?;
    Ok(Generated {
        ca_pem: ca_cert.pem(),
        cert_pem: server_cert.pem(),
        key_pem: server_key.serialize_pem(),
    })
}

fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    io::Write::write_all(&mut options.open(path)?, contents)
}

/// A listener whose connections have finished their TLS handshake. Each
/// handshake runs in its own task, so a slow client holds up no other.
pub struct TlsListener {
    addr: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    accepting: JoinHandle<()>,
}

impl TlsListener {
    /// Starts accepting on `listener` (in a task, stopped on drop).
    pub fn new(listener: TcpListener, tls: &ServerTls) -> io::Result<Self> {
        let addr = listener.local_addr()?;
        let (done, ready) = mpsc::channel(64);
        let accepting = tokio::spawn(accept_loop(listener, TlsAcceptor::from(tls.0.clone()), done));
        Ok(Self { addr, ready, accepting })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    done: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::debug!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (acceptor, done) = (acceptor.clone(), done.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let _ = done.send((stream, peer)).await;
                }
                Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                Err(_) => tracing::debug!("TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept task is gone: nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.addr)
    }
}
