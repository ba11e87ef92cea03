//! A server that asks for the password in clear text or as MD5 gets
//! nothing, on the SQL connection and on the replication connection, with
//! sslmode disable, prefer (with and without TLS) and require: ciosync
//! refuses the request before its client library sees it, and the error
//! names the fix (`require_auth`) without the password. `run` stops at once
//! (exit 1). With `require_auth=password` in the URL the password is sent.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ciosync::error::error_chain;
use ciosync::pg::connection::ConnectionSettings;
use ciosync::pg::gated::Gated;
use ciosync::secret::Secret;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use ciosync_testkit::throwaway::ClusterOptions;

use crate::support::daemon::{config_file, config_text, run_stops, InProcess};
use crate::support::emulator::{self, wait_for_customers};
use crate::support::postgres::{TestDb, USERS_TABLE};
use crate::support::tls::{daemon_sessions, start_cluster, TestCa};

const PASSWORD: &str = "S3cret-pw-never-sent";
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

#[derive(Debug, Clone, Copy)]
enum Ask {
    ClearText,
    Md5,
}

/// What the fake server saw on one connection.
#[derive(Debug, Clone)]
struct Seen {
    replication: bool,
    tls: bool,
    /// Everything the client wrote after the authentication request.
    after_request: Vec<u8>,
}

impl Seen {
    fn got_the_password(&self) -> bool {
        self.after_request.first() == Some(&b'p')
            || self.after_request.windows(PASSWORD.len()).any(|w| w == PASSWORD.as_bytes())
    }
}

/// A server that speaks just enough of the protocol to ask for a password.
struct FakeServer {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

impl FakeServer {
    /// Answers SSLRequest with `S` and TLS when `tls` is given, else `N`.
    fn start(ask: Ask, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (tls, record) = (tls.clone(), record.clone());
                std::thread::spawn(move || {
                    if let Some(seen) = serve(stream, ask, tls) {
                        record.lock().unwrap().push(seen);
                    }
                });
            }
        });
        Self { port, seen }
    }

    fn url(&self, query: &str) -> String {
        format!("postgres://syncer:{PASSWORD}@127.0.0.1:{}/app?{query}", self.port)
    }

    /// The connections seen so far, once their clients have gone.
    async fn seen(&self, count: usize) -> Vec<Seen> {
        for _ in 0..100 {
            if self.seen.lock().unwrap().len() >= count {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.seen.lock().unwrap().clone()
    }
}

fn serve(mut stream: TcpStream, ask: Ask, tls: Option<Arc<rustls::ServerConfig>>) -> Option<Seen> {
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    let mut first = [0u8; 8];
    stream.read_exact(&mut first).ok()?;
    let (mut io, tls, startup): (Box<dyn ReadWrite>, bool, Vec<u8>) = if first == SSL_REQUEST {
        let used = tls.is_some();
        let mut io: Box<dyn ReadWrite> = match tls {
            Some(config) => {
                stream.write_all(b"S").ok()?;
                let session = rustls::ServerConnection::new(config).ok()?;
                Box::new(rustls::StreamOwned::new(session, stream))
            }
            None => {
                stream.write_all(b"N").ok()?;
                Box::new(stream)
            }
        };
        let mut len = [0u8; 4];
        io.read_exact(&mut len).ok()?;
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize - 4];
        io.read_exact(&mut body).ok()?;
        (io, used, body)
    } else {
        let len = u32::from_be_bytes(first[..4].try_into().unwrap()) as usize;
        let mut body = first[4..].to_vec();
        body.resize(len - 4, 0);
        stream.read_exact(&mut body[4..]).ok()?;
        (Box::new(stream), false, body)
    };
    let replication = startup.windows(21).any(|w| w == b"replication\0database\0");
    let request: &[u8] = match ask {
        Ask::ClearText => &[b'R', 0, 0, 0, 8, 0, 0, 0, 3],
        Ask::Md5 => &[b'R', 0, 0, 0, 12, 0, 0, 0, 5, 1, 2, 3, 4],
    };
    io.write_all(request).ok()?;
    io.flush().ok()?;
    let mut after_request = Vec::new();
    let mut chunk = [0u8; 1024];
    while let Ok(n @ 1..) = io.read(&mut chunk) {
        after_request.extend_from_slice(&chunk[..n]);
    }
    Some(Seen { replication, tls, after_request })
}

fn server_tls() -> Arc<rustls::ServerConfig> {
    let ca = TestCa::new("fake postgres CA");
    let tls = ca.server_tls(&["127.0.0.1"]);
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(tls.cert_pem.as_bytes()).map(Result::unwrap).collect();
    let key = PrivateKeyDer::from_pem_slice(tls.key_pem.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
    )
}

fn settings(url: &str) -> ConnectionSettings {
    ConnectionSettings::parse(&Secret::new(url), Duration::from_secs(5)).unwrap()
}

fn assert_names_the_fix(error: &str, what: &str) {
    assert!(error.contains("did not send the password"), "{what}: {error}");
    assert!(error.contains("require_auth"), "{what}: {error}");
    assert!(!error.contains(PASSWORD), "{what}: the password is in the error: {error}");
}

/// `step`'s outcome, or a panic naming it if it takes over a minute.
async fn within<T>(what: &str, step: &str, future: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(60), future).await {
        Ok(outcome) => outcome,
        Err(_) => panic!("{what}: {step} did not end within 60 s"),
    }
}

/// Both connections to a fake server asking `ask`, with `query`.
async fn both_connections_refuse(ask: Ask, tls: Option<Arc<rustls::ServerConfig>>, query: &str) {
    let what = format!("{ask:?} with {query} (server TLS: {})", tls.is_some());
    let server = FakeServer::start(ask, tls.clone());
    let settings = settings(&server.url(query));

    // Each step within a minute: a hang fails naming the step. (Once in
    // about 300 runs IDENTIFY_SYSTEM waited forever: pgwire-replication kept
    // the command in its closed channel when the worker ended as it went
    // out; `Gated` now ends it with the worker's error.)
    let sql = within(&what, "the SQL connection", settings.connect_sql()).await;
    let sql = sql.expect_err("the SQL connection is refused");
    assert_names_the_fix(&error_chain(&sql), &what);

    let config = settings.replication_config(0, "slot", "pub", Duration::from_secs(1)).await;
    let mut replication =
        Gated::connect(config.expect("reaches the server")).await.expect("the session starts");
    let refused =
        within(&what, "IDENTIFY_SYSTEM", replication.simple_query("IDENTIFY_SYSTEM")).await.err();
    let refused = refused.expect("the replication connection is refused").to_string();
    assert_names_the_fix(&refused, &what);
    assert!(refused.contains("SQLSTATE 28000"), "{what}: {refused}");

    let seen = server.seen(2).await;
    assert_eq!(seen.len(), 2, "{what}: both connections reached the server: {seen:?}");
    assert!(seen.iter().any(|s| s.replication), "{what}: {seen:?}");
    for connection in &seen {
        assert!(!connection.got_the_password(), "{what}: the server got {connection:?}");
        assert_eq!(connection.tls, tls.is_some() && !query.contains("disable"), "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_goes_to_a_server_asking_for_it_in_clear_or_as_md5() {
    for ask in [Ask::ClearText, Ask::Md5] {
        both_connections_refuse(ask, None, "sslmode=disable").await;
        both_connections_refuse(ask, None, "sslmode=prefer").await;
        both_connections_refuse(ask, Some(server_tls()), "sslmode=prefer").await;
        both_connections_refuse(ask, Some(server_tls()), "sslmode=require").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_stops_at_once_and_names_the_fix() {
    let server = FakeServer::start(Ask::ClearText, Some(server_tls()));
    let file = config_file(&config_text(&server.url(""), "app", "http://127.0.0.1:9", ""));
    let stderr = run_stops(file.path()).await;
    assert_names_the_fix(&stderr, "run");
    let seen = server.seen(1).await;
    assert!(seen.iter().all(|s| !s.got_the_password()), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_auth_password_sends_it_on_both_connections() {
    let server = FakeServer::start(Ask::ClearText, None);
    let settings = settings(&server.url("sslmode=disable&require_auth=password"));
    let _ = settings.connect_sql().await;
    let config = settings.replication_config(0, "slot", "pub", Duration::from_secs(1)).await;
    let mut replication = Gated::connect(config.unwrap()).await.unwrap();
    let _ = replication.simple_query("IDENTIFY_SYSTEM").await;
    drop(replication);
    let seen = server.seen(2).await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.iter().all(Seen::got_the_password), "{seen:?}");
}

/// `run` against a real server whose `pg_hba.conf` says `password`: it
/// stops; its stderr.
async fn run_stops_against(url: &str, slot: &str) -> String {
    run_stops(config_file(&config_text(url, slot, "http://127.0.0.1:9", "")).path()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_server_asking_in_clear_is_refused_unless_require_auth_allows_it() {
    let options =
        ClusterOptions { scram: true, password_method: Some("password"), ..Default::default() };
    let pg = start_cluster(options).await;
    let db = TestDb::on(&pg, "clear_text_password").await;
    db.exec(USERS_TABLE).await;
    db.add_replication_owner("syncer", PASSWORD).await;
    let url = db.url.replace("postgres@", &format!("syncer:{PASSWORD}@"));
    let stderr = run_stops_against(&url, &db.name).await;
    assert_names_the_fix(&stderr, "run against pg_hba `password`");
    assert_eq!(db.created_objects().await, (0, 0), "nothing created without a connection");

    let emulator = emulator::start().await;
    let allowed = format!("{url}&require_auth=!md5");
    let daemon = InProcess::start(&config_text(&allowed, &db.name, &emulator.url(), ""));
    db.wait_for_streaming().await;
    db.exec("INSERT INTO users (id, email) VALUES (1, 'a@x.io')").await;
    assert!(wait_for_customers(&emulator, |c| c.contains_key("1")).await, "no customer 1");
    let sessions = daemon_sessions(&db).await;
    assert!(sessions.iter().any(|(kind, _)| kind == "walsender"), "{sessions:?}");
    assert!(sessions.iter().any(|(kind, _)| kind == "client backend"), "{sessions:?}");
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_auth_md5_answers_on_the_sql_connection_only() {
    let server = FakeServer::start(Ask::Md5, None);
    let settings = settings(&server.url("sslmode=disable&require_auth=md5,scram-sha-256,none"));
    let _ = settings.connect_sql().await;
    let config = settings.replication_config(0, "slot", "pub", Duration::from_secs(1)).await;
    let mut replication = Gated::connect(config.unwrap()).await.unwrap();
    let refused = replication.simple_query("IDENTIFY_SYSTEM").await.unwrap_err().to_string();
    assert_names_the_fix(&refused, "replication under require_auth=md5");
    assert!(refused.contains("cannot use MD5"), "{refused}");
    let seen = server.seen(2).await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    for connection in seen {
        assert_eq!(connection.got_the_password(), !connection.replication, "{connection:?}");
    }
}
