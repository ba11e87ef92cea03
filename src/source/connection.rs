//! How to reach Postgres: the `[postgres] url` parsed once into settings for
//! the SQL connection (tokio-postgres) and the replication connection
//! (pgwire-replication), with the same TLS mode for both.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pgwire_replication::{ReplicationConfig, SslMode, TlsConfig};
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, PostgresConfig, Secret};

/// Session settings pinned on every connection, so text values (timestamps,
/// floats) always arrive in one parseable form, whatever the server's defaults.
pub const SESSION_OPTIONS: &str =
    "-c TimeZone=UTC -c DateStyle=ISO,MDY -c extra_float_digits=3 -c standard_conforming_strings=on";

/// `application_name` of ciosync's sessions, visible in `pg_stat_activity`.
pub const APPLICATION_NAME: &str = "ciosync";

/// Everything needed to open a connection, parsed from the URL.
#[derive(Clone)]
pub struct ConnectionSettings {
    /// Host name, IP address, or a Unix socket directory (starts with `/`).
    pub host: String,
    pub port: u16,
    pub user: String,
    password: Secret,
    pub dbname: String,
    pub ssl_mode: SslMode,
    pub ssl_root_cert: Option<PathBuf>,
    pub connect_timeout: Duration,
    /// What the SQL connection's `verify-ca` learned for the replication
    /// connection (see [`super::tls`]).
    certified_name: super::tls::CertifiedName,
}

impl std::fmt::Debug for ConnectionSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display())
    }
}

impl ConnectionSettings {
    /// Parses `postgres://user:password@host:port/db?sslmode=…&sslrootcert=…`.
    /// Errors name `postgres.url` and never repeat the URL (it holds the password).
    pub fn parse(config: &PostgresConfig) -> Result<Self, ConfigError> {
        let invalid =
            |message: String| ConfigError::Invalid { field: "postgres.url".to_owned(), message };
        let url = url::Url::parse(config.url.expose()).map_err(|e| {
            invalid(format!("not a URL ({e}); expected postgres://user:password@host:port/db"))
        })?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(invalid(format!(
                "scheme `{}` is not supported; use postgres://",
                url.scheme()
            )));
        }
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| invalid("user name or password is not valid UTF-8".to_owned()))
        };
        let user = decode(url.username())?;
        let password = decode(url.password().unwrap_or(""))?;
        let mut host = url.host_str().map(&decode).transpose()?.unwrap_or_default();
        if host.starts_with('[') && host.ends_with(']') {
            host = host[1..host.len() - 1].to_owned();
        }
        let mut port = url.port().unwrap_or(5432);
        let mut ssl_mode = SslMode::Prefer;
        let mut ssl_root_cert = None;
        for (key, value) in url.query_pairs() {
            match key.as_ref() {
                "sslmode" => {
                    ssl_mode = match value.as_ref() {
                        "disable" => SslMode::Disable,
                        "prefer" | "allow" => SslMode::Prefer,
                        "require" => SslMode::Require,
                        "verify-ca" => SslMode::VerifyCa,
                        "verify-full" => SslMode::VerifyFull,
                        other => {
                            return Err(invalid(format!(
                                "sslmode `{other}` is not one of disable, prefer, require, \
                                 verify-ca, verify-full"
                            )))
                        }
                    }
                }
                "sslrootcert" => ssl_root_cert = Some(PathBuf::from(value.as_ref())),
                "host" => host = value.into_owned(),
                "port" => {
                    port = value.parse().map_err(|_| invalid("port must be a number".to_owned()))?
                }
                "application_name" | "connect_timeout" => {}
                other => {
                    return Err(invalid(format!(
                        "parameter `{other}` is not supported (supported: sslmode, \
                         sslrootcert, host, port)"
                    )))
                }
            }
        }
        if host.is_empty() {
            return Err(invalid("has no host".to_owned()));
        }
        if user.is_empty() {
            return Err(invalid("has no user name".to_owned()));
        }
        if host.starts_with('/') && ssl_mode.requires_tls() {
            return Err(invalid("TLS cannot be used over a Unix socket".to_owned()));
        }
        let dbname = match url.path().trim_start_matches('/') {
            "" => user.clone(),
            db => decode(db)?,
        };
        Ok(Self {
            host,
            port,
            user,
            password: Secret::new(password),
            dbname,
            ssl_mode,
            ssl_root_cert,
            connect_timeout: Duration::from_secs(config.connect_timeout_secs),
            certified_name: super::tls::CertifiedName::default(),
        })
    }

    /// `user@host:port/db`, for logs: never the password.
    pub fn display(&self) -> String {
        format!("{}@{}:{}/{}", self.user, self.host, self.port, self.dbname)
    }

    /// The replication connection's settings for `slot` and `publication`.
    pub fn replication_config(
        &self,
        slot: &str,
        publication: &str,
        status_interval: Duration,
    ) -> ReplicationConfig {
        // verify-ca: ask for a name the CA signed (see `super::tls`); the
        // SQL connection, opened first, has verified the chain and learned it.
        let sni_hostname = match self.ssl_mode {
            SslMode::VerifyCa => self.certified_name.get(),
            _ => None,
        };
        let tls = TlsConfig {
            mode: self.ssl_mode,
            ca_pem_path: self.ssl_root_cert.clone(),
            sni_hostname,
            ..TlsConfig::default()
        };
        let base = if self.host.starts_with('/') {
            ReplicationConfig::unix(
                &self.host,
                self.port,
                &self.user,
                self.password.expose(),
                &self.dbname,
                slot,
                publication,
            )
        } else {
            ReplicationConfig::new(
                &self.host,
                &self.user,
                self.password.expose(),
                &self.dbname,
                slot,
                publication,
            )
            .with_port(self.port)
            .with_tls(tls)
        };
        base.with_options(SESSION_OPTIONS)
            .with_application_name(APPLICATION_NAME)
            .with_status_interval(status_interval)
            // Wake at least this often so an idle stream still reports acks.
            .with_wakeup_interval(status_interval.max(Duration::from_secs(1)))
    }

    /// Opens an ordinary SQL connection and drives it on a background task.
    pub async fn connect_sql(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        self.connect_sql_watched().await.map(|(client, _ended)| client)
    }

    /// Like [`connect_sql`](Self::connect_sql), with a token cancelled when
    /// the connection ends (the server shutting down or restarting, the
    /// session terminated, the network gone).
    pub async fn connect_sql_watched(
        &self,
    ) -> Result<(tokio_postgres::Client, CancellationToken), tokio_postgres::Error> {
        let mut pg = tokio_postgres::Config::new();
        pg.host(&self.host)
            .port(self.port)
            .user(&self.user)
            .password(self.password.expose())
            .dbname(&self.dbname)
            .options(SESSION_OPTIONS)
            .application_name(APPLICATION_NAME)
            .connect_timeout(self.connect_timeout);
        pg.ssl_mode(match self.ssl_mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(super::tls::client_config(
            self.ssl_mode,
            self.ssl_root_cert.as_deref(),
            &self.certified_name,
        ));
        let (client, connection) = pg.connect(tls).await?;
        let ended = CancellationToken::new();
        let cancel_when_ended = ended.clone().drop_guard();
        tokio::spawn(async move {
            let _cancel_when_ended = cancel_when_ended;
            if let Err(error) = connection.await {
                tracing::debug!(%error, "postgres SQL connection ended");
            }
        });
        Ok((client, ended))
    }
}

/// A shared, cheaply cloned handle on the settings.
pub type SharedSettings = Arc<ConnectionSettings>;

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> Result<ConnectionSettings, ConfigError> {
        let config: PostgresConfig =
            toml::from_str(&format!("url = \"{url}\"")).expect("valid toml");
        ConnectionSettings::parse(&config)
    }

    #[test]
    fn parses_a_full_url() {
        let s = settings("postgres://app%40x:p%3Ass%2Fw@db.example:6543/users?sslmode=verify-full&sslrootcert=/ca.pem").unwrap();
        assert_eq!(s.user, "app@x");
        assert_eq!(s.password.expose(), "p:ss/w");
        assert_eq!((s.host.as_str(), s.port, s.dbname.as_str()), ("db.example", 6543, "users"));
        assert_eq!(s.ssl_mode, SslMode::VerifyFull);
        assert_eq!(s.ssl_root_cert.as_deref(), Some(std::path::Path::new("/ca.pem")));
        assert_eq!(s.display(), "app@x@db.example:6543/users");
    }

    #[test]
    fn replication_asks_for_the_certified_name_under_verify_ca_only() {
        let interval = Duration::from_secs(1);
        for (mode, expected) in [("verify-ca", Some("db.internal")), ("verify-full", None)] {
            let s = settings(&format!("postgres://u@10.0.0.5/db?sslmode={mode}")).unwrap();
            let before = s.replication_config("slot", "publication", interval);
            assert_eq!(before.tls.sni_hostname, None, "nothing learned yet");
            s.certified_name.set("db.internal");
            let after = s.clone().replication_config("slot", "publication", interval);
            assert_eq!(after.tls.sni_hostname.as_deref(), expected, "{mode}");
        }
    }

    #[test]
    fn defaults_port_database_and_sslmode() {
        let s = settings("postgresql://u@localhost").unwrap();
        assert_eq!((s.port, s.dbname.as_str(), s.ssl_mode), (5432, "u", SslMode::Prefer));
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
            assert!(err.contains("postgres.url"), "{err}");
            assert!(!err.contains("secretpw"), "{err}");
        }
    }
}
