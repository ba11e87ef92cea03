//! `require_auth`: which authentication methods the server may ask ciosync
//! for, as in libpq, and the guard that holds to it on both connections.
//!
//! libpq sends the password to whatever server asks for it in clear text
//! unless `require_auth` says otherwise; tokio-postgres and
//! pgwire-replication have no such setting. ciosync reads the server's
//! authentication requests itself ([`AuthGuard`], a stream between the
//! client library and the socket or TLS session) and refuses a method the
//! URL does not allow before the client library ever sees the request, so
//! no password, and no MD5 hash of it, is written. The client then reads a
//! `FATAL` error (SQLSTATE 28000, definite) that names the method and the fix.
//!
//! The default is libpq's `require_auth=!password,!md5`: the password goes
//! out only through SCRAM-SHA-256, and a server that asks for no password
//! (trust, peer) is still accepted, since nothing secret is sent.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// An authentication method, as `require_auth` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Password,
    Md5,
    Gss,
    Sspi,
    ScramSha256,
    /// The server asks for nothing (trust, peer).
    None,
}

const METHODS: [(Method, &str); 6] = [
    (Method::Password, "password"),
    (Method::Md5, "md5"),
    (Method::Gss, "gss"),
    (Method::Sspi, "sspi"),
    (Method::ScramSha256, "scram-sha-256"),
    (Method::None, "none"),
];

impl Method {
    fn bit(self) -> u8 {
        1 << (self as u8)
    }

    /// The name `require_auth` uses.
    pub fn name(self) -> &'static str {
        METHODS.iter().find(|(m, _)| *m == self).map_or("?", |(_, n)| n)
    }

    fn described(self) -> &'static str {
        match self {
            Self::Password => "a clear-text password",
            Self::Md5 => "an MD5 password hash",
            Self::Gss => "GSSAPI",
            Self::Sspi => "SSPI",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::None => "no authentication at all",
        }
    }
}

/// The methods a connection accepts (`require_auth` in `postgres.url`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequireAuth(u8);

impl Default for RequireAuth {
    /// libpq's `!password,!md5`: never the password in clear or as MD5.
    fn default() -> Self {
        Self(Self::all() & !Method::Password.bit() & !Method::Md5.bit())
    }
}

impl RequireAuth {
    fn all() -> u8 {
        METHODS.iter().fold(0, |bits, (m, _)| bits | m.bit())
    }

    /// Parses libpq's syntax: a comma-separated list of methods that are
    /// allowed (`scram-sha-256,none`), or of methods that are not, each with
    /// `!` (`!password,!md5`); not both kinds in one list.
    pub fn parse(value: &str) -> Result<Self, String> {
        let (mut listed, mut negated, mut plain) = (0u8, false, false);
        for item in value.split(',') {
            let (not, name) = match item.strip_prefix('!') {
                Some(name) => (true, name),
                None => (false, item),
            };
            let Some((method, _)) = METHODS.iter().find(|(_, n)| *n == name) else {
                return Err(format!(
                    "require_auth `{item}` is not one of password, md5, gss, sspi, \
                     scram-sha-256, none (each may be negated with `!`)"
                ));
            };
            if listed & method.bit() != 0 {
                return Err(format!("require_auth lists `{name}` twice"));
            }
            listed |= method.bit();
            (negated, plain) = (negated || not, plain || !not);
        }
        if negated && plain {
            return Err("require_auth cannot mix negated (`!`) and plain methods".to_owned());
        }
        Ok(Self(if negated { Self::all() & !listed } else { listed }))
    }

    /// Whether `method` is allowed.
    pub fn allows(self, method: Method) -> bool {
        self.0 & method.bit() != 0
    }

    /// Without MD5, which pgwire-replication cannot answer: refused with
    /// that said, rather than failing inside it as a missing privilege.
    pub fn for_replication(self) -> Self {
        Self(self.0 & !Method::Md5.bit())
    }
}

impl std::fmt::Display for RequireAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> =
            METHODS.iter().filter(|(m, _)| self.allows(*m)).map(|(_, n)| *n).collect();
        f.write_str(&names.join(","))
    }
}

/// The message a refused `method` gets; never holds the password.
pub fn refusal_message(method: Method, allowed: RequireAuth) -> String {
    let fix = match method {
        Method::Password | Method::Md5 => {
            "store the role's password as SCRAM (password_encryption = 'scram-sha-256', then \
             set the password again) with a scram-sha-256 line in pg_hba.conf; or, if you \
             accept the risk, allow it with require_auth in postgres.url (see README, \
             \"Password authentication\"; the replication connection cannot use MD5 at all)"
        }
        _ => "change the server's pg_hba.conf, or require_auth in postgres.url",
    };
    format!(
        "ciosync did not send the password: the server asked for {} (require_auth \
         `{}`), which postgres.url does not allow (it allows {allowed}): {fix}",
        method.described(),
        method.name()
    )
}

/// The first bytes of an SSLRequest (length 8, code 80877103).
pub const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// Messages read during authentication are small; a bigger one is not from
/// a Postgres server.
const MAX_AUTH_MESSAGE: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing written yet: an SSLRequest may come first.
    Start,
    /// An SSLRequest was written: the next byte read is `S` or `N`.
    SslAnswer,
    /// Reading the server's messages until ReadyForQuery.
    Authenticating,
    /// Authenticated (or TLS started, below the TLS session): bytes pass.
    Through,
    /// A method was refused: the error is delivered, then end of stream.
    Refused,
}

/// A stream that reads the server's authentication requests and refuses
/// those [`RequireAuth`] does not allow (see the module doc). Below a TLS
/// session it lets the session pass once the server accepts the
/// SSLRequest (the guard above the session takes over).
pub struct AuthGuard<S> {
    inner: S,
    allowed: RequireAuth,
    phase: Phase,
    /// Bytes read and not yet judged (a message not complete yet).
    pending: Vec<u8>,
    /// Judged bytes not yet handed to the reader.
    ready: Vec<u8>,
    /// Whether the server asked for any authentication (for `none`).
    asked: bool,
}

impl<S> AuthGuard<S> {
    /// For a socket: an SSLRequest may be written first.
    pub fn new(inner: S, allowed: RequireAuth) -> Self {
        Self {
            inner,
            allowed,
            phase: Phase::Start,
            pending: Vec::new(),
            ready: Vec::new(),
            asked: false,
        }
    }

    /// For a stream whose TLS (if any) is already negotiated.
    pub fn negotiated(inner: S, allowed: RequireAuth) -> Self {
        Self { phase: Phase::Authenticating, ..Self::new(inner, allowed) }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Judges the complete messages in `pending`, moving them to `ready`.
    fn judge(&mut self) {
        while self.phase == Phase::Authenticating && self.pending.len() >= 5 {
            let len = u32::from_be_bytes(self.pending[1..5].try_into().expect("4 bytes"));
            let total = 1 + len as usize;
            if len < 4 || total > MAX_AUTH_MESSAGE {
                // Not Postgres: let the client library fail on it.
                self.pass_the_rest();
                return;
            }
            if self.pending.len() < total {
                return;
            }
            let message: Vec<u8> = self.pending.drain(..total).collect();
            match message[0] {
                b'R' if message.len() >= 9 => {
                    let code = i32::from_be_bytes(message[5..9].try_into().expect("4 bytes"));
                    if let Err(method) = self.judge_request(code) {
                        self.refuse(method);
                        return;
                    }
                    self.ready.extend_from_slice(&message);
                }
                b'Z' => {
                    self.ready.extend_from_slice(&message);
                    self.pass_the_rest();
                }
                _ => self.ready.extend_from_slice(&message),
            }
        }
    }

    /// `Err(method)` when authentication request `code` is refused.
    fn judge_request(&mut self, code: i32) -> Result<(), Method> {
        let method = match code {
            0 if self.asked => return Ok(()),
            0 => Method::None,
            3 => Method::Password,
            5 => Method::Md5,
            7 | 8 => Method::Gss,
            9 => Method::Sspi,
            10 => Method::ScramSha256,
            // SASL continue and final: judged at the start of the exchange.
            11 | 12 if self.asked => return Ok(()),
            // Unknown methods: the client library refuses them itself.
            _ => return Ok(()),
        };
        self.asked |= method != Method::None;
        if self.allowed.allows(method) {
            Ok(())
        } else {
            Err(method)
        }
    }

    fn pass_the_rest(&mut self) {
        self.ready.append(&mut self.pending);
        self.phase = Phase::Through;
    }

    fn refuse(&mut self, method: Method) {
        tracing::warn!(
            method = method.name(),
            require_auth = %self.allowed,
            "postgres asked for an authentication method postgres.url does not allow; \
             nothing was sent"
        );
        self.pending.clear();
        self.ready.extend(error_response(&refusal_message(method, self.allowed)));
        self.phase = Phase::Refused;
    }
}

/// A `FATAL` ErrorResponse with SQLSTATE 28000 (invalid authorization).
fn error_response(message: &str) -> Vec<u8> {
    let mut fields = Vec::new();
    for (code, value) in [(b'S', "FATAL"), (b'V', "FATAL"), (b'C', "28000"), (b'M', message)] {
        fields.push(code);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut out = vec![b'E'];
    out.extend_from_slice(&(fields.len() as u32 + 4).to_be_bytes());
    out.extend(fields);
    out
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthGuard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..n]);
                this.ready.drain(..n);
                return Poll::Ready(Ok(()));
            }
            match this.phase {
                Phase::Through => return Pin::new(&mut this.inner).poll_read(cx, buf),
                Phase::Refused => return Poll::Ready(Ok(())),
                Phase::Start | Phase::SslAnswer | Phase::Authenticating => {}
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            let bytes = read.filled();
            if bytes.is_empty() {
                // End of stream: what is left is incomplete; the reader
                // fails on it.
                this.pass_the_rest();
                continue;
            }
            this.pending.extend_from_slice(bytes);
            if this.phase == Phase::SslAnswer {
                // `S`: TLS follows, which this guard cannot read; `N`: plain.
                let answer = this.pending.remove(0);
                this.ready.push(answer);
                if answer == b'S' {
                    this.pass_the_rest();
                } else {
                    this.phase = Phase::Authenticating;
                    this.judge();
                }
                continue;
            }
            this.phase = Phase::Authenticating;
            this.judge();
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthGuard<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match this.phase {
            // Nothing more goes to a server that was refused.
            Phase::Refused => return Poll::Ready(Ok(buf.len())),
            Phase::Start => {
                this.phase = if buf.starts_with(&SSL_REQUEST) {
                    Phase::SslAnswer
                } else {
                    Phase::Authenticating
                };
            }
            _ => {}
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: tokio_postgres::tls::TlsStream + Unpin> tokio_postgres::tls::TlsStream for AuthGuard<S> {
    fn channel_binding(&self) -> tokio_postgres::tls::ChannelBinding {
        self.inner.channel_binding()
    }
}

/// A TLS connector whose sessions are guarded: the server's requests are
/// read above the TLS session, where they are plain.
pub struct GuardedTls<T> {
    pub inner: T,
    pub allowed: RequireAuth,
}

impl<S, T> tokio_postgres::tls::TlsConnect<S> for GuardedTls<T>
where
    T: tokio_postgres::tls::TlsConnect<S>,
    T::Future: Send + 'static,
    T::Stream: Unpin,
{
    type Stream = AuthGuard<T::Stream>;
    type Error = T::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Self::Stream, T::Error>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        let allowed = self.allowed;
        let session = self.inner.connect(stream);
        Box::pin(async move { Ok(AuthGuard::negotiated(session.await?, allowed)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn parses_libpq_lists() {
        let d = RequireAuth::default();
        assert!(d.allows(Method::ScramSha256) && d.allows(Method::None));
        assert!(!d.allows(Method::Password) && !d.allows(Method::Md5));
        assert_eq!(RequireAuth::parse("!password,!md5").unwrap(), d);
        let strict = RequireAuth::parse("scram-sha-256").unwrap();
        assert!(!strict.allows(Method::None));
        assert_eq!(strict.to_string(), "scram-sha-256");
        let md5 = RequireAuth::parse("md5,scram-sha-256").unwrap();
        assert!(md5.allows(Method::Md5) && !md5.for_replication().allows(Method::Md5));
        for bad in ["md5,!password", "plain", "md5,md5", ""] {
            assert!(RequireAuth::parse(bad).is_err(), "{bad}");
        }
    }

    fn request(code: i32, extra: &[u8]) -> Vec<u8> {
        let mut m = vec![b'R'];
        m.extend_from_slice(&(8 + extra.len() as u32).to_be_bytes());
        m.extend_from_slice(&code.to_be_bytes());
        m.extend_from_slice(extra);
        m
    }

    /// What a client reads from a server that sends `server`, one byte at a time.
    async fn read_through(server: Vec<u8>, allowed: RequireAuth) -> Vec<u8> {
        let (mut far, near) = tokio::io::duplex(1);
        tokio::spawn(async move {
            let _ = far.write_all(&server).await;
        });
        let mut guard = AuthGuard::negotiated(near, allowed);
        let mut out = Vec::new();
        guard.read_to_end(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn a_refused_request_never_reaches_the_client() {
        for (code, extra) in [(3, &[][..]), (5, &[1, 2, 3, 4][..])] {
            let out = read_through(request(code, extra), RequireAuth::default()).await;
            assert_eq!(out[0], b'E', "{out:?}");
            let text = String::from_utf8_lossy(&out);
            assert!(text.contains("28000") && text.contains("require_auth"), "{text}");
            let refused = request(code, extra);
            assert!(!out.windows(9).any(|w| w == &refused[..9]));
        }
    }

    #[tokio::test]
    async fn allowed_requests_and_everything_after_pass_unchanged() {
        let mut server = request(10, b"SCRAM-SHA-256\0\0");
        server.extend(request(12, b"v=x"));
        server.extend(request(0, b""));
        server.extend(b"Z\0\0\0\x05I");
        // After ReadyForQuery nothing is judged, even what looks like a request.
        server.extend(request(3, b""));
        assert_eq!(read_through(server.clone(), RequireAuth::default()).await, server);
        let trust = [request(0, b""), b"Z\0\0\0\x05I".to_vec()].concat();
        assert_eq!(read_through(trust.clone(), RequireAuth::default()).await, trust);
        let strict = RequireAuth::parse("scram-sha-256").unwrap();
        assert_eq!(read_through(trust, strict).await[0], b'E');
        let password = RequireAuth::parse("password").unwrap();
        assert_eq!(read_through(request(3, b""), password).await, request(3, b""));
    }

    /// What a client that sent an SSLRequest reads when the server answers
    /// `answer` and then a clear-text password request.
    async fn after_ssl_answer(answer: u8) -> Vec<u8> {
        let (mut far, near) = tokio::io::duplex(64);
        let mut guard = AuthGuard::new(near, RequireAuth::default());
        guard.write_all(&SSL_REQUEST).await.unwrap();
        let mut sent = [0u8; 8];
        far.read_exact(&mut sent).await.unwrap();
        assert_eq!(sent, SSL_REQUEST);
        far.write_all(&[vec![answer], request(3, b"")].concat()).await.unwrap();
        drop(far);
        let mut out = Vec::new();
        guard.read_to_end(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn below_tls_only_a_plain_answer_is_judged() {
        let plain = after_ssl_answer(b'N').await;
        assert_eq!((plain[0], plain[1]), (b'N', b'E'), "{plain:?}");
        // TLS follows `S`: its bytes are not messages (the guard above judges).
        assert_eq!(after_ssl_answer(b'S').await, [vec![b'S'], request(3, b"")].concat());
    }

    #[tokio::test]
    async fn a_request_after_notices_or_ok_is_still_judged() {
        let server = [b"S\0\0\0\x06a\0".to_vec(), request(0, b""), request(3, b"")].concat();
        let out = read_through(server, RequireAuth::default()).await;
        assert!(out.ends_with(&[0]) && out.contains(&b'E'), "{out:?}");
        assert!(!out.windows(9).any(|w| w == request(3, b"").as_slice()));
    }
}
