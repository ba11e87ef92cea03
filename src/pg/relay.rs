//! Sockets to Postgres, and the relay the replication connection goes through.
//!
//! pgwire-replication opens its own socket and answers a clear-text password
//! request with the password; it cannot be given a stream. So ciosync opens
//! the replication connection's way to the server itself: the socket, TLS
//! as `sslmode` says (with [`super::tls::client_config`], the same checks as
//! the SQL connection), and an [`AuthGuard`] above it; pgwire-replication
//! then connects to a relay on 127.0.0.1 (a port chosen by the system,
//! accepting one connection, for `connect_timeout`) that copies bytes both
//! ways. Between pgwire-replication and the relay the bytes stay on this
//! host; between the relay and the server they are as `sslmode` says.

use std::io;
use std::net::Ipv4Addr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pgwire_replication::SslMode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpSocket};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_util::sync::CancellationToken;

use super::auth::{AuthGuard, RequireAuth};
use super::connection::Host;

/// A byte stream to a server: TCP, a Unix socket, a TLS session.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Relay buffer per direction: a replication stream's messages pass through.
const RELAY_BUFFER: usize = 64 * 1024;

/// How long the relay waits for the server to close its side once the
/// client's side has closed.
const SERVER_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The relay's client side, which cancels `ended` when it closes (end of
/// stream or an error): the session has ended then, whatever the server
/// does (see [`super::gated`]).
struct EndsWith<S> {
    inner: S,
    ended: CancellationToken,
}

impl<S: AsyncRead + Unpin> AsyncRead for EndsWith<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        match &read {
            Poll::Ready(Ok(())) if buf.filled().len() == before => this.ended.cancel(),
            Poll::Ready(Err(_)) => this.ended.cancel(),
            _ => {}
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for EndsWith<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Opens a socket to `host` within `timeout`: each address the name
/// resolves to in turn (TCP, no Nagle delay, keepalives on), or the Unix
/// socket `<dir>/.s.PGSQL.<port>`.
pub async fn open_socket(host: &Host, timeout: Duration) -> io::Result<Box<dyn Io>> {
    let opening = async {
        if host.name.starts_with('/') {
            let path = format!("{}/.s.PGSQL.{}", host.name, host.port);
            return Ok(Box::new(tokio::net::UnixStream::connect(path).await?) as Box<dyn Io>);
        }
        let mut last = None;
        for address in tokio::net::lookup_host((host.name.clone(), host.port)).await? {
            let socket =
                if address.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
            socket.set_keepalive(true)?;
            match socket.connect(address).await {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    return Ok(Box::new(stream) as Box<dyn Io>);
                }
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("could not resolve any addresses")))
    };
    tokio::time::timeout(timeout, opening)
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "connection timed out")))
}

/// What the relay's server side needs: where, TLS, and which methods.
pub struct Upstream<'a> {
    pub host: &'a Host,
    pub ssl_mode: SslMode,
    pub tls: rustls::ClientConfig,
    pub require_auth: RequireAuth,
    pub timeout: Duration,
}

/// Opens the server side (socket, TLS as `ssl_mode` says, the guard) and a
/// relay to it; returns the relay's port on 127.0.0.1 and a token cancelled
/// when the relay has ended (see [`super::gated`]). A failure to reach the
/// server or to agree on TLS is returned here, before the relay opens.
pub async fn start(upstream: Upstream<'_>) -> io::Result<(u16, CancellationToken)> {
    let timeout = upstream.timeout;
    let server = tokio::time::timeout(timeout, negotiate(upstream))
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "connection timed out")))?;
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let port = listener.local_addr()?.port();
    let ended = CancellationToken::new();
    let end_when_done = ended.clone().drop_guard();
    let (ended_inside, client_closed) = (ended.clone(), ended.clone());
    tokio::spawn(async move {
        let _end_when_done = end_when_done;
        let mut server = server;
        let Ok(Ok((client, _))) = tokio::time::timeout(timeout, listener.accept()).await else {
            return;
        };
        drop(listener);
        let _ = client.set_nodelay(true);
        let mut client = EndsWith { inner: client, ended: ended_inside };
        let copying = tokio::io::copy_bidirectional_with_sizes(
            &mut client,
            &mut server,
            RELAY_BUFFER,
            RELAY_BUFFER,
        );
        // Once the client's side closed, the server has a moment to close
        // its own; one that never does (a stuck proxy) holds nothing.
        let client_gone = async {
            client_closed.cancelled().await;
            tokio::time::sleep(SERVER_CLOSE_GRACE).await;
        };
        tokio::select! {
            copied = copying => {
                if let Err(error) = copied {
                    tracing::debug!(%error, "postgres replication relay ended");
                }
            }
            () = client_gone => tracing::debug!("postgres replication relay closed: the server kept its side open"),
        }
    });
    Ok((port, ended))
}

/// The socket, then the SSLRequest and TLS handshake as libpq does them
/// for `ssl_mode`, then the guard above whatever carries the messages.
async fn negotiate(upstream: Upstream<'_>) -> io::Result<Box<dyn Io>> {
    let mut socket = open_socket(upstream.host, upstream.timeout).await?;
    let unix = upstream.host.name.starts_with('/');
    if upstream.ssl_mode == SslMode::Disable || unix {
        return Ok(Box::new(AuthGuard::negotiated(socket, upstream.require_auth)));
    }
    socket.write_all(&super::auth::SSL_REQUEST).await?;
    let answer = socket.read_u8().await?;
    if answer != b'S' {
        if upstream.ssl_mode.requires_tls() {
            return Err(io::Error::other("server does not support TLS"));
        }
        return Ok(Box::new(AuthGuard::negotiated(socket, upstream.require_auth)));
    }
    let mut make = tokio_postgres_rustls::MakeRustlsConnect::new(upstream.tls);
    let connect =
        <_ as MakeTlsConnect<Box<dyn Io>>>::make_tls_connect(&mut make, &upstream.host.name)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let session = connect.connect(socket).await?;
    Ok(Box::new(AuthGuard::negotiated(session, upstream.require_auth)))
}

/// `error` as tokio-postgres's own error type (which only tokio-postgres can
/// build): the error of a connection whose stream fails with it at once.
pub async fn local_error(error: std::io::Error) -> tokio_postgres::Error {
    struct Failed(Option<std::io::Error>);
    impl tokio::io::AsyncRead for Failed {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Err(self.get_mut().take()))
        }
    }
    impl tokio::io::AsyncWrite for Failed {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::task::Poll::Ready(Err(self.get_mut().take()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Err(self.get_mut().take()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }
    impl Failed {
        fn take(&mut self) -> std::io::Error {
            self.0.take().unwrap_or_else(|| std::io::Error::other("connection failed"))
        }
    }
    let mut pg = tokio_postgres::Config::new();
    pg.user("-").ssl_mode(tokio_postgres::config::SslMode::Disable);
    match pg.connect_raw(Failed(Some(error)), tokio_postgres::NoTls).await {
        Err(error) => error,
        Ok(_) => unreachable!("a stream that fails at once never connects"),
    }
}
