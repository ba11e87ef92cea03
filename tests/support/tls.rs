//! TLS and password fixtures: certificates made at test time (a CA and the
//! server certificates it signs), clusters of their own that serve them, and
//! what Postgres reports about the daemon's sessions.

use std::path::{Path, PathBuf};

use ciosync_testkit::throwaway::{ClusterOptions, ServerTls, ThrowawayPostgres};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tempfile::TempDir;

use super::postgres::TestDb;

/// A certificate authority made for one test; its certificate is written
/// to a PEM file for `sslrootcert`.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    dir: TempDir,
    /// The CA certificate's file.
    pub pem_file: PathBuf,
}

impl TestCa {
    /// A new CA whose certificate is named `name`.
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("self-signed CA certificate");
        let dir = tempfile::tempdir().expect("temp dir");
        let pem_file = dir.path().join("ca.pem");
        std::fs::write(&pem_file, cert.pem()).expect("write the CA certificate");
        Self { issuer: Issuer::new(params, key), dir, pem_file }
    }

    /// A server certificate for `names` (host names, or IP addresses that
    /// become IP SANs), signed by this CA.
    pub fn server_tls(&self, names: &[&str]) -> ServerTls {
        let key = KeyPair::generate().expect("server key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("server params");
        params.distinguished_name.push(DnType::CommonName, "ciosync test server");
        let cert = params.signed_by(&key, &self.issuer).expect("signed server certificate");
        ServerTls { cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }

    /// Where this CA's files live.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Starts a cluster of its own with `options` (off the async thread).
pub async fn start_cluster(options: ClusterOptions) -> ThrowawayPostgres {
    tokio::task::spawn_blocking(move || ThrowawayPostgres::start_with(&options))
        .await
        .expect("the start thread does not panic")
        .expect("throwaway postgres starts")
}

/// A cluster serving `tls`, trust authentication as usual.
pub async fn tls_cluster(tls: ServerTls) -> ThrowawayPostgres {
    start_cluster(ClusterOptions { tls: Some(tls), ..ClusterOptions::default() }).await
}

/// `db`'s URL for the `postgres` role with `host` and `query` (`sslmode=…`)
/// in place of 127.0.0.1 and `sslmode=disable`.
pub fn url_with(db: &TestDb, host: &str, query: &str) -> String {
    db.url.replace("127.0.0.1", host).replace("sslmode=disable", query)
}

/// `sslmode=MODE&sslrootcert=PATH`.
pub fn verify_query(mode: &str, root: &Path) -> String {
    format!("sslmode={mode}&sslrootcert={}", root.display())
}

/// (backend type, uses TLS) of every session of `application_name =
/// 'ciosync'` on `db`: the SQL backend is a `client backend`, the
/// replication connection a `walsender` (also listed in `pg_stat_replication`).
pub async fn daemon_sessions(db: &TestDb) -> Vec<(String, bool)> {
    let rows = db
        .client
        .query(
            "SELECT a.backend_type, s.ssl FROM pg_stat_activity a \
             JOIN pg_stat_ssl s ON s.pid = a.pid \
             WHERE a.application_name = 'ciosync' AND a.datname = $1 \
             ORDER BY a.backend_type",
            &[&db.name],
        )
        .await
        .expect("read pg_stat_ssl");
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// Whether the walsender streaming this database's slot uses TLS, read
/// through `pg_stat_replication` (`None`: no such walsender).
pub async fn walsender_uses_tls(db: &TestDb) -> Option<bool> {
    db.client
        .query_opt(
            "SELECT s.ssl FROM pg_stat_replication r \
             JOIN pg_replication_slots slot ON slot.active_pid = r.pid \
             JOIN pg_stat_ssl s ON s.pid = r.pid WHERE slot.slot_name = $1",
            &[&db.name],
        )
        .await
        .expect("read pg_stat_replication")
        .map(|r| r.get(0))
}
