//! `sslmode=require` against a server without TLS stops `run` at once with
//! exit 1 and the fix, instead of retrying or falling back to plain text;
//! `prefer` falls back and streams.

use crate::support::daemon::{config_file, config_text, run_stops, InProcess};
use crate::support::emulator::{self, wait_for_customers};
use crate::support::postgres::{TestDb, USERS_TABLE};
use crate::support::tls::{daemon_sessions, url_with};

#[tokio::test]
async fn require_stops_run_against_a_server_without_tls() {
    let db = TestDb::new("tls_require").await;
    db.exec(USERS_TABLE).await;
    let url = url_with(&db, "127.0.0.1", "sslmode=require");
    let file = config_file(&config_text(&url, &db.name, "http://127.0.0.1:9", ""));
    let stderr = run_stops(file.path()).await;
    assert!(stderr.contains("the server does not offer TLS"), "{stderr}");
    assert!(stderr.contains("sslmode in postgres.url requires"), "{stderr}");
    assert_eq!(db.created_objects().await, (0, 0), "nothing created without a connection");
}

#[tokio::test]
async fn prefer_falls_back_to_plain_text() {
    let db = TestDb::new("tls_prefer").await;
    db.exec(USERS_TABLE).await;
    let emulator = emulator::start().await;
    let url = url_with(&db, "127.0.0.1", "sslmode=prefer");
    let daemon = InProcess::start(&config_text(&url, &db.name, &emulator.url(), ""));
    db.wait_for_streaming().await;
    db.exec("INSERT INTO users (id, email) VALUES (1, 'a@x.io')").await;
    assert!(wait_for_customers(&emulator, |c| c.contains_key("1")).await, "no customer 1");
    let sessions = daemon_sessions(&db).await;
    assert!(!sessions.is_empty() && sessions.iter().all(|(_, ssl)| !ssl), "{sessions:?}");
    daemon.stop().await.unwrap();
}
