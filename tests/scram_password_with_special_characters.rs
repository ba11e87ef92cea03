//! A role that logs in with a SCRAM-SHA-256 password full of URL syntax
//! (`@ / : % ? # &` and a space), percent-encoded in `postgres.url`, streams
//! end to end: SQL and replication connections both authenticate. A wrong
//! password stops `run` with exit 1, and no output repeats the password.

use ciosync_testkit::throwaway::ClusterOptions;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

use crate::support::daemon::{config_file, config_text, run_stops, InProcess};
use crate::support::emulator::{self, wait_for_customers};
use crate::support::postgres::{TestDb, USERS_TABLE};
use crate::support::tls::{daemon_sessions, start_cluster};

const PASSWORD: &str = "p@ss/w:rd%?#& x";

/// `db`'s URL for `role` with `password` percent-encoded.
fn role_url(db: &TestDb, role: &str, password: &str) -> String {
    let password = utf8_percent_encode(password, NON_ALPHANUMERIC);
    db.url.replace("postgres@", &format!("{role}:{password}@"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scram_password_with_url_syntax_streams_and_a_wrong_one_stops_run() {
    let pg = start_cluster(ClusterOptions { scram: true, ..ClusterOptions::default() }).await;
    let db = TestDb::on(&pg, "scram_password").await;
    db.exec(USERS_TABLE).await;
    // A replication role that owns the synced table, so it can publish it.
    db.add_replication_owner("syncer", PASSWORD).await;
    let stored: String = db
        .client
        .query_one("SELECT rolpassword FROM pg_authid WHERE rolname = 'syncer'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(stored.starts_with("SCRAM-SHA-256$"), "stored as {stored}");

    let emulator = emulator::start().await;
    let url = role_url(&db, "syncer", PASSWORD);
    let daemon = InProcess::start(&config_text(&url, &db.name, &emulator.url(), ""));
    db.wait_for_streaming().await;
    db.exec("INSERT INTO users (id, email) VALUES (1, 'a@x.io')").await;
    assert!(wait_for_customers(&emulator, |c| c.contains_key("1")).await, "no customer 1");
    let sessions = daemon_sessions(&db).await;
    assert!(sessions.iter().any(|(kind, _)| kind == "walsender"), "{sessions:?}");
    assert!(sessions.iter().any(|(kind, _)| kind == "client backend"), "{sessions:?}");
    daemon.stop().await.unwrap();

    let wrong = "wr0ng p@ss/word";
    let file = config_file(&config_text(
        &role_url(&db, "syncer", wrong),
        &db.name,
        "http://127.0.0.1:9",
        "",
    ));
    let stderr = run_stops(file.path()).await;
    assert!(stderr.contains("password authentication failed for user \"syncer\""), "{stderr}");
    let encoded = utf8_percent_encode(wrong, NON_ALPHANUMERIC).to_string();
    for secret in [wrong, encoded.as_str(), "p@ss/word", PASSWORD] {
        assert!(!stderr.contains(secret), "the password leaked: {stderr}");
    }
}
