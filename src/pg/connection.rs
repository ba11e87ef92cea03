//! How to reach Postgres: the `[postgres] url` parsed once into settings for
//! the SQL connection (tokio-postgres) and the replication connection
//! (pgwire-replication), with the same TLS mode for both.
//!
//! # Several hosts
//!
//! Like libpq, the URL may list several hosts (`postgres://u@db1:5432,db2:5432/app`,
//! or `?host=db1,db2&port=5432,5432`) with `target_session_attrs=read-write`:
//! each connection tries the hosts in order and keeps the first that allows
//! writes (a primary; a standby in recovery is read only), so after a
//! failover ciosync finds the promoted server by itself. The replication
//! connection cannot ask that question, so it goes to the host the SQL
//! connection opened just before it found ([`Located::host`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pgwire_replication::{ReplicationConfig, SslMode, TlsConfig};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_util::sync::CancellationToken;

use super::auth::{AuthGuard, GuardedTls, RequireAuth};
use super::gated::Relayed;
use super::PgError;
use crate::secret::Secret;

/// Session settings pinned on every connection, whatever the server's
/// defaults: text values (timestamps, floats, bytea, intervals) always
/// arrive in one parseable form, the same in the replication stream and in
/// queries (event ids hash key values' text: `mapping::events`), and every commit is durable before it returns
/// (`synchronous_commit = on`). ciosync acknowledges a transaction once its
/// changes are delivered *or stored* (a held removal, a dead letter, a
/// superseded hold, a webhook answered 200); with a server or role set to
/// `off`, a crash of Postgres would lose such a commit while the
/// acknowledgement stands, and the change would never come again.
pub const SESSION_OPTIONS: &str = "-c TimeZone=UTC -c DateStyle=ISO,MDY -c extra_float_digits=3 \
     -c standard_conforming_strings=on -c synchronous_commit=on -c bytea_output=hex \
     -c IntervalStyle=postgres";

/// `application_name` of ciosync's sessions, visible in `pg_stat_activity`.
pub const APPLICATION_NAME: &str = "ciosync";

/// One host of the URL: a name, an IP address, or a Unix socket directory
/// (starts with `/`), and its port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    pub port: u16,
}

/// `target_session_attrs`: which of the listed hosts a connection may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The first host that accepts the connection (libpq's `any`, the default).
    Any,
    /// The first host whose sessions allow writes (libpq's `read-write`:
    /// `transaction_read_only` is off), i.e. the primary.
    ReadWrite,
}

/// An open SQL connection and where it went.
pub struct Located {
    pub client: tokio_postgres::Client,
    /// Cancelled when the connection ends (the server shutting down or
    /// restarting, the session terminated, the network gone).
    pub ended: CancellationToken,
    /// The index in [`ConnectionSettings::hosts`] of the server it reached:
    /// where the replication connection must go too.
    pub host: usize,
}

/// What is wrong with a connection URL, in words that never repeat the URL
/// (it holds the password); the config names the field.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadUrl(String);

/// Everything needed to open a connection, parsed from the URL.
#[derive(Clone)]
pub struct ConnectionSettings {
    /// The hosts to try, in order (at least one).
    pub hosts: Vec<Host>,
    /// Which host a connection may settle on.
    pub target: Target,
    pub user: String,
    password: Secret,
    pub dbname: String,
    pub ssl_mode: SslMode,
    pub ssl_root_cert: Option<PathBuf>,
    /// The authentication methods the server may ask for (see [`super::auth`]).
    pub require_auth: RequireAuth,
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for ConnectionSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display())
    }
}

impl ConnectionSettings {
    /// Parses `postgres://user:password@host:port/db?sslmode=…&sslrootcert=…`,
    /// with several `host:port` pairs separated by commas if wanted.
    /// Errors never repeat the URL (it holds the password); the config
    /// names the field.
    pub fn parse(url: &Secret, connect_timeout: Duration) -> Result<Self, BadUrl> {
        let (single, listed) = split_host_list(url.expose());
        let url = url::Url::parse(&single).map_err(|e| {
            BadUrl(format!("not a URL ({e}); expected postgres://user:password@host:port/db"))
        })?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(BadUrl(format!(
                "scheme `{}` is not supported; use postgres://",
                url.scheme()
            )));
        }
        let user = decode(url.username())?;
        let password = decode(url.password().unwrap_or(""))?;
        let (names, ports) = authority_hosts(&url, listed)?;
        let query = Query::read(&url)?;
        let hosts = pair_ports(query.names.unwrap_or(names), query.ports.unwrap_or(ports))?;
        if hosts.iter().any(|h| h.name.is_empty()) {
            return Err(BadUrl("has no host".to_owned()));
        }
        if user.is_empty() {
            return Err(BadUrl("has no user name".to_owned()));
        }
        if hosts.iter().any(|h| h.name.starts_with('/')) && query.ssl_mode.requires_tls() {
            return Err(BadUrl("TLS cannot be used over a Unix socket".to_owned()));
        }
        if query.ssl_mode == SslMode::VerifyCa && query.ssl_root_cert.is_none() {
            // As libpq: without a root file, verify-ca would trust any
            // certificate a public CA signed, for any name.
            return Err(BadUrl(
                "sslmode=verify-ca needs sslrootcert=<file of the CA certificate that signed \
                 the server's>; or use sslmode=verify-full, which also checks the host name"
                    .to_owned(),
            ));
        }
        let dbname = match url.path().trim_start_matches('/') {
            "" => user.clone(),
            db => decode(db)?,
        };
        Ok(Self {
            hosts,
            target: query.target,
            user,
            password: Secret::new(password),
            dbname,
            ssl_mode: query.ssl_mode,
            ssl_root_cert: query.ssl_root_cert,
            require_auth: query.require_auth,
            connect_timeout,
        })
    }

    /// A copy with `connect_timeout`.
    pub fn fresh(&self, connect_timeout: Duration) -> Self {
        Self { connect_timeout, ..self.clone() }
    }

    /// `user@host:port/db` (`user@h1:p1,h2:p2/db` with several hosts), for
    /// logs: never the password.
    pub fn display(&self) -> String {
        let hosts: Vec<String> =
            self.hosts.iter().map(|h| format!("{}:{}", h.name, h.port)).collect();
        format!("{}@{}/{}", self.user, hosts.join(","), self.dbname)
    }

    /// The replication connection's settings for `slot` and `publication`,
    /// to `self.hosts[host]` (the host a [`Located`] SQL connection reached),
    /// through a relay just opened to it (see [`super::relay`]): use them at
    /// once, the relay waits `connect_timeout` for its one connection.
    /// Start the session with [`super::gated::Gated::connect`].
    pub async fn replication_config(
        &self,
        host: usize,
        slot: &str,
        publication: &str,
        status_interval: Duration,
    ) -> Result<Relayed, PgError> {
        let host = &self.hosts[host.min(self.hosts.len() - 1)];
        let (port, ended) = super::relay::start(super::relay::Upstream {
            host,
            ssl_mode: self.ssl_mode,
            tls: self.tls_config(),
            require_auth: self.require_auth.for_replication(),
            timeout: self.connect_timeout,
        })
        .await
        .map_err(|error| match super::tls::refusal(&error) {
            Some(refusal) => PgError::Tls { refusal, source: Box::new(error) },
            None => PgError::Replication(pgwire_replication::PgWireError::Io(Arc::new(error))),
        })?;
        let config = ReplicationConfig::new(
            "127.0.0.1",
            &self.user,
            self.password.expose(),
            &self.dbname,
            slot,
            publication,
        );
        let config = config
            .with_port(port)
            .with_tls(TlsConfig::disabled())
            .with_options(SESSION_OPTIONS)
            .with_application_name(APPLICATION_NAME)
            .with_status_interval(status_interval)
            // Wake at least this often so an idle stream still reports acks.
            .with_wakeup_interval(status_interval.max(Duration::from_secs(1)));
        Ok(Relayed { config, ended, login_timeout: self.connect_timeout })
    }

    /// The TLS connector of a SQL connection to `server_name`.
    fn sql_tls(&self, server_name: &str) -> std::io::Result<SqlTls> {
        let mut make = tokio_postgres_rustls::MakeRustlsConnect::new(self.tls_config());
        MakeTlsConnect::<SqlSocket>::make_tls_connect(&mut make, server_name)
            .map_err(std::io::Error::other)
    }

    fn tls_config(&self) -> rustls::ClientConfig {
        super::tls::client_config(self.ssl_mode, self.ssl_root_cert.as_deref())
    }

    /// Opens an ordinary SQL connection and drives it on a background task.
    pub async fn connect_sql(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        self.connect_sql_located().await.map(|located| located.client)
    }

    /// Like [`connect_sql`](Self::connect_sql), saying which host it reached
    /// and with a token cancelled when the connection ends. Tries the hosts
    /// in order; under [`Target::ReadWrite`] a host whose sessions are read
    /// only (a standby) is passed over. The last host's error when none fits.
    pub async fn connect_sql_located(&self) -> Result<Located, tokio_postgres::Error> {
        let mut last = None;
        for (index, host) in self.hosts.iter().enumerate() {
            match self.connect_sql_to(host).await {
                Ok((client, ended)) => return Ok(Located { client, ended, host: index }),
                Err(error) => {
                    if self.hosts.len() > 1 {
                        tracing::debug!(
                            host = %host.name,
                            port = host.port,
                            error = %crate::error::error_chain(&error),
                            "postgres host passed over"
                        );
                    }
                    last = Some(error);
                }
            }
        }
        Err(last.expect("a URL names at least one host"))
    }

    async fn connect_sql_to(
        &self,
        host: &Host,
    ) -> Result<(tokio_postgres::Client, CancellationToken), tokio_postgres::Error> {
        let mut pg = tokio_postgres::Config::new();
        pg.user(&self.user)
            .password(self.password.expose())
            .dbname(&self.dbname)
            .options(SESSION_OPTIONS)
            .application_name(APPLICATION_NAME);
        let unix = host.name.starts_with('/');
        pg.ssl_mode(match self.ssl_mode {
            _ if unix => tokio_postgres::config::SslMode::Disable,
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        let tls = match self.sql_tls(if unix { "localhost" } else { &host.name }) {
            Ok(inner) => GuardedTls { inner, allowed: self.require_auth },
            Err(error) => return Err(super::relay::local_error(error).await),
        };
        // The socket is ciosync's, so the guard sees the server's requests.
        // As in libpq, `connect_timeout` bounds the whole attempt: the
        // socket, TLS and the login (a server that accepts and then says
        // nothing would otherwise hold the daemon's start for ever).
        let attempt = async {
            let socket = match super::relay::open_socket(host, self.connect_timeout).await {
                Ok(socket) => AuthGuard::new(socket, self.require_auth),
                Err(error) => return Err(super::relay::local_error(error).await),
            };
            connect_raw(&pg, socket, tls).await
        };
        let (client, connection) = match tokio::time::timeout(self.connect_timeout, attempt).await {
            Ok(connected) => connected?,
            Err(_) => {
                let timed_out = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no answer within connect_timeout_secs (socket, TLS and login)",
                );
                return Err(super::relay::local_error(timed_out).await);
            }
        };
        let ended = CancellationToken::new();
        let cancel_when_ended = ended.clone().drop_guard();
        tokio::spawn(async move {
            let _cancel_when_ended = cancel_when_ended;
            if let Err(error) = connection.await {
                tracing::debug!(%error, "postgres SQL connection ended");
            }
        });
        if self.target == Target::ReadWrite && read_only(&client).await? {
            let refused = std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "database does not allow writes",
            );
            return Err(super::relay::local_error(refused).await);
        }
        Ok((client, ended))
    }
}

/// `Config::connect_raw`, its future said to be `Send` where the types are
/// known (the compiler cannot prove it inside a generic async caller).
fn connect_raw<'a>(
    pg: &'a tokio_postgres::Config,
    socket: SqlSocket,
    tls: GuardedTls<SqlTls>,
) -> impl std::future::Future<
    Output = Result<
        (tokio_postgres::Client, tokio_postgres::Connection<SqlSocket, AuthGuard<SqlStream>>),
        tokio_postgres::Error,
    >,
> + Send
       + 'a {
    pg.connect_raw(socket, tls)
}

/// libpq's `read-write` test: the session's `transaction_read_only`.
async fn read_only(client: &tokio_postgres::Client) -> Result<bool, tokio_postgres::Error> {
    let messages = client.simple_query("SHOW transaction_read_only").await?;
    Ok(messages.iter().any(|message| {
        matches!(message, tokio_postgres::SimpleQueryMessage::Row(row) if row.get(0) == Some("on"))
    }))
}

/// The SQL connection's socket: guarded (see [`super::auth`]).
type SqlSocket = AuthGuard<Box<dyn super::relay::Io>>;

/// The SQL connection's TLS connector, before its guard.
type SqlTls = <tokio_postgres_rustls::MakeRustlsConnect as MakeTlsConnect<SqlSocket>>::TlsConnect;

/// The SQL connection's TLS session, before its guard.
type SqlStream = <SqlTls as tokio_postgres::tls::TlsConnect<SqlSocket>>::Stream;

/// A percent-encoded part of the URL, decoded.
fn decode(part: &str) -> Result<String, BadUrl> {
    percent_encoding::percent_decode_str(part)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| BadUrl("user name or password is not valid UTF-8".to_owned()))
}

/// The hosts and ports of the URL's authority: the listed ones (`h1:p1,h2`)
/// or the one the URL parser found.
fn authority_hosts(
    url: &url::Url,
    listed: Option<Vec<String>>,
) -> Result<(Vec<String>, Vec<Option<u16>>), BadUrl> {
    let Some(list) = listed else {
        let mut host = url.host_str().map(decode).transpose()?.unwrap_or_default();
        if host.starts_with('[') && host.ends_with(']') {
            host = host[1..host.len() - 1].to_owned();
        }
        return Ok((vec![host], vec![url.port()]));
    };
    let mut names = Vec::new();
    let mut ports = Vec::new();
    for item in list {
        let (name, port) = split_host_port(&item)
            .ok_or_else(|| BadUrl("a listed host has a bad port".to_owned()))?;
        names.push(decode(name)?);
        ports.push(port);
    }
    Ok((names, ports))
}

/// What the query string says; `host` and `port` replace the authority's.
struct Query {
    ssl_mode: SslMode,
    ssl_root_cert: Option<PathBuf>,
    require_auth: RequireAuth,
    target: Target,
    names: Option<Vec<String>>,
    ports: Option<Vec<Option<u16>>>,
}

impl Query {
    fn read(url: &url::Url) -> Result<Self, BadUrl> {
        let mut query = Query {
            ssl_mode: SslMode::Prefer,
            ssl_root_cert: None,
            require_auth: RequireAuth::default(),
            target: Target::Any,
            names: None,
            ports: None,
        };
        for (key, value) in url.query_pairs() {
            match key.as_ref() {
                "sslmode" => query.ssl_mode = ssl_mode_of(&value)?,
                // libpq's `system`: the public roots (as no sslrootcert).
                "sslrootcert" if value == "system" => query.ssl_root_cert = None,
                "sslrootcert" => query.ssl_root_cert = Some(PathBuf::from(value.as_ref())),
                "require_auth" => {
                    query.require_auth = RequireAuth::parse(&value).map_err(BadUrl)?
                }
                "host" => query.names = Some(value.split(',').map(str::to_owned).collect()),
                "port" => {
                    let ports = value.split(',').map(|p| p.parse().map(Some));
                    query.ports = Some(
                        ports
                            .collect::<Result<_, _>>()
                            .map_err(|_| BadUrl("port must be a number".to_owned()))?,
                    );
                }
                "target_session_attrs" => query.target = target_of(&value)?,
                "application_name" | "connect_timeout" => {}
                other => {
                    return Err(BadUrl(format!(
                        "parameter `{other}` is not supported (supported: sslmode, \
                         sslrootcert, require_auth, host, port, target_session_attrs)"
                    )))
                }
            }
        }
        Ok(query)
    }
}

fn ssl_mode_of(value: &str) -> Result<SslMode, BadUrl> {
    Ok(match value {
        "disable" => SslMode::Disable,
        "prefer" | "allow" => SslMode::Prefer,
        "require" => SslMode::Require,
        "verify-ca" => SslMode::VerifyCa,
        "verify-full" => SslMode::VerifyFull,
        other => {
            return Err(BadUrl(format!(
                "sslmode `{other}` is not one of disable, prefer, require, verify-ca, verify-full"
            )))
        }
    })
}

fn target_of(value: &str) -> Result<Target, BadUrl> {
    match value {
        "any" => Ok(Target::Any),
        "read-write" | "primary" => Ok(Target::ReadWrite),
        other => Err(BadUrl(format!(
            "target_session_attrs `{other}` is not one of any, read-write (ciosync needs the \
             primary)"
        ))),
    }
}

/// libpq's rule: one port for every host, or one port per host; 5432 where
/// none is given.
fn pair_ports(names: Vec<String>, ports: Vec<Option<u16>>) -> Result<Vec<Host>, BadUrl> {
    let ports: Vec<u16> = match ports.len() {
        1 => vec![ports[0].unwrap_or(5432); names.len()],
        n if n == names.len() => ports.iter().map(|p| p.unwrap_or(5432)).collect(),
        _ => {
            return Err(BadUrl(format!(
                "names {} hosts but {} ports; give one port, or one per host",
                names.len(),
                ports.len()
            )))
        }
    };
    Ok(names.into_iter().zip(ports).map(|(name, port)| Host { name, port }).collect())
}

/// Splits a URL whose authority lists several hosts (`u:p@h1:1,h2:2`) into
/// the URL with only the first (which `url` can parse, for everything else)
/// and the raw `host[:port]` items. `None` when it lists one host.
fn split_host_list(url: &str) -> (String, Option<Vec<String>>) {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return (url.to_owned(), None) };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let hosts_start = authority.rfind('@').map_or(0, |i| i + 1);
    let hosts = &authority[hosts_start..];
    if !hosts.contains(',') {
        return (url.to_owned(), None);
    }
    let items: Vec<String> = hosts.split(',').map(str::to_owned).collect();
    let single = format!(
        "{}{}{}{}",
        &url[..scheme_end],
        &authority[..hosts_start],
        items[0],
        &rest[authority_end..]
    );
    (single, Some(items))
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; `None` for a port that is
/// not a number.
fn split_host_port(item: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = match item.strip_prefix('[') {
        Some(bracketed) => {
            let (host, after) = bracketed.split_once(']')?;
            (host, after.strip_prefix(':'))
        }
        None => match item.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (item, None),
        },
    };
    match port {
        Some(port) => Some((host, Some(port.parse().ok()?))),
        None => Some((host, None)),
    }
}

/// A shared, cheaply cloned handle on the settings.
pub type SharedSettings = Arc<ConnectionSettings>;

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> Result<ConnectionSettings, BadUrl> {
        ConnectionSettings::parse(&Secret::new(url), Duration::from_secs(10))
    }

    #[test]
    fn parses_a_full_url() {
        let s = settings("postgres://app%40x:p%3Ass%2Fw@db.example:6543/users?sslmode=verify-full&sslrootcert=/ca.pem").unwrap();
        assert_eq!(s.user, "app@x");
        assert_eq!(s.password.expose(), "p:ss/w");
        assert_eq!(s.hosts, [Host { name: "db.example".into(), port: 6543 }]);
        assert_eq!(s.dbname, "users");
        assert_eq!(s.target, Target::Any);
        assert_eq!(s.ssl_mode, SslMode::VerifyFull);
        assert_eq!(s.ssl_root_cert.as_deref(), Some(std::path::Path::new("/ca.pem")));
        assert_eq!(s.display(), "app@x@db.example:6543/users");
    }

    #[test]
    fn reads_require_auth_and_refuses_verify_ca_without_a_root_file() {
        use super::super::auth::Method;
        let s = settings("postgres://u:secretpw@h/db").unwrap();
        assert_eq!(s.require_auth, RequireAuth::default());
        let s = settings("postgres://u@h/db?require_auth=!md5").unwrap();
        assert!(s.require_auth.allows(Method::Password) && !s.require_auth.allows(Method::Md5));
        let err = settings("postgres://u:secretpw@h/db?sslmode=verify-ca").unwrap_err().to_string();
        assert!(err.contains("sslrootcert") && !err.contains("secretpw"), "{err}");
        assert!(settings("postgres://u@h/db?sslmode=verify-ca&sslrootcert=/ca.pem").is_ok());
        assert!(settings("postgres://u@h/db?sslmode=verify-full").is_ok());
        let s = settings("postgres://u@h/db?sslmode=verify-full&sslrootcert=system").unwrap();
        assert_eq!(s.ssl_root_cert, None, "system: the public roots");
        assert!(settings("postgres://u@h/db?sslmode=verify-ca&sslrootcert=system").is_err());
    }

    #[test]
    fn defaults_port_database_and_sslmode() {
        let s = settings("postgresql://u@localhost").unwrap();
        assert_eq!((s.hosts[0].port, s.dbname.as_str(), s.ssl_mode), (5432, "u", SslMode::Prefer));
    }

    #[test]
    fn lists_several_hosts_as_libpq_does() {
        let s =
            settings("postgres://u:p%2Cw@db1:5433,[::1],db3/app?target_session_attrs=read-write")
                .unwrap();
        let names: Vec<(&str, u16)> = s.hosts.iter().map(|h| (h.name.as_str(), h.port)).collect();
        assert_eq!(names, [("db1", 5433), ("::1", 5432), ("db3", 5432)]);
        assert_eq!((s.password.expose(), s.dbname.as_str()), ("p,w", "app"));
        assert_eq!(s.target, Target::ReadWrite);
        assert_eq!(s.display(), "u@db1:5433,::1:5432,db3:5432/app");
        let s = settings("postgres://u@x/app?host=/run/a,/run/b&port=5432,6432").unwrap();
        let names: Vec<(&str, u16)> = s.hosts.iter().map(|h| (h.name.as_str(), h.port)).collect();
        assert_eq!(names, [("/run/a", 5432), ("/run/b", 6432)]);
        let s = settings("postgres://u@x/app?host=h1,h2&port=6000").unwrap();
        assert!(s.hosts.iter().all(|h| h.port == 6000));
        for bad in [
            "postgres://u:secretpw@h1,h2/db?port=1,2,3",
            "postgres://u:secretpw@h1:x,h2/db",
            "postgres://u:secretpw@h1,h2/db?target_session_attrs=standby",
        ] {
            let err = settings(bad).unwrap_err().to_string();
            assert!(!err.is_empty());
            assert!(!err.contains("secretpw"), "{err}");
        }
    }

    #[test]
    fn rejects_bad_urls_without_echoing_them() {
        for url in [
            "mysql://u:secretpw@h/db",
            "postgres://u:secretpw@h/db?sslmode=maybe",
            "postgres://u:secretpw@h/db?foo=1",
            "postgres://:secretpw@h/db",
            "not a url secretpw",
        ] {
            let err = settings(url).unwrap_err().to_string();
            assert!(!err.is_empty());
            assert!(!err.contains("secretpw"), "{err}");
        }
    }
}
