//! `sslmode=verify-full` streams over TLS on both connections to the server
//! whose certificate the given CA signed for the URL's host, and nowhere
//! else: a certificate from another CA, or one that does not list the host,
//! stops `run` at once with exit 1 and the fix (sslrootcert, the host), not
//! an endless retry. `verify-ca` checks the CA only, so it accepts the second.

use std::time::Duration;

use crate::support::daemon::{config_file, config_text, run_binary, InProcess};
use crate::support::emulator::{self, wait_for_customers};
use crate::support::postgres::{TestDb, USERS_TABLE};
use crate::support::tls::{
    daemon_sessions, tls_cluster, url_with, verify_query, walsender_uses_tls, TestCa,
};

/// Runs `ciosync <args>` with `url`, expecting it to give up by itself.
async fn run_to_exit(args: &[&str], db: &TestDb, url: &str) -> (Option<i32>, String) {
    let file = config_file(&config_text(url, &db.name, "http://127.0.0.1:9", ""));
    let output = tokio::time::timeout(Duration::from_secs(60), run_binary(args, file.path()))
        .await
        .unwrap_or_else(|_| panic!("`ciosync {args:?}` still retries after 60 s"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), text)
}

/// Starts the daemon on `url`, inserts a row and waits for its customer.
async fn streams_a_change(db: &TestDb, url: &str) -> InProcess {
    let emulator = emulator::start().await;
    let daemon = InProcess::start(&config_text(url, &db.name, &emulator.url(), ""));
    db.wait_for_streaming().await;
    db.exec("INSERT INTO users (id, email) VALUES (1, 'a@x.io')").await;
    assert!(wait_for_customers(&emulator, |c| c.contains_key("1")).await, "no customer 1");
    daemon
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_streams_over_tls_with_the_right_ca() {
    let ca = TestCa::new("ciosync test CA");
    let pg = tls_cluster(ca.server_tls(&["localhost", "127.0.0.1"])).await;
    let db = TestDb::on(&pg, "tls_verify_full").await;
    db.exec(USERS_TABLE).await;

    let url = url_with(&db, "localhost", &verify_query("verify-full", &ca.pem_file));
    let daemon = streams_a_change(&db, &url).await;

    let sessions = daemon_sessions(&db).await;
    assert!(sessions.iter().any(|(kind, _)| kind == "walsender"), "{sessions:?}");
    assert!(sessions.iter().any(|(kind, _)| kind == "client backend"), "{sessions:?}");
    assert!(sessions.iter().all(|(_, ssl)| *ssl), "a session without TLS: {sessions:?}");
    assert_eq!(walsender_uses_tls(&db).await, Some(true));
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_stops_run_and_check() {
    let ca = TestCa::new("ciosync test CA");
    let other = TestCa::new("some other CA");
    let pg = tls_cluster(ca.server_tls(&["localhost", "127.0.0.1"])).await;
    let db = TestDb::on(&pg, "tls_other_ca").await;
    db.exec(USERS_TABLE).await;
    let url = url_with(&db, "localhost", &verify_query("verify-full", &other.pem_file));

    let (code, output) = run_to_exit(&["run", "--log-format", "text"], &db, &url).await;
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("TLS certificate failed verification"), "{output}");
    assert!(output.contains("check sslrootcert in postgres.url"), "{output}");
    assert!(output.contains("UnknownIssuer"), "rustls's reason is kept: {output}");

    let (code, output) = run_to_exit(&["check"], &db, &url).await;
    assert_ne!(code, Some(0), "{output}");
    assert!(output.contains("check sslrootcert in postgres.url"), "{output}");
    assert_eq!(db.created_objects().await, (0, 0), "nothing created without a connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_without_the_address_fails_verify_full_but_passes_verify_ca() {
    let ca = TestCa::new("ciosync test CA");
    let pg = tls_cluster(ca.server_tls(&["localhost"])).await;
    let db = TestDb::on(&pg, "tls_no_ip_san").await;
    db.exec(USERS_TABLE).await;

    let full = url_with(&db, "127.0.0.1", &verify_query("verify-full", &ca.pem_file));
    let (code, output) = run_to_exit(&["run", "--log-format", "text"], &db, &full).await;
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("TLS certificate failed verification"), "{output}");
    let reason = "certificate not valid for name \"127.0.0.1\"";
    assert!(output.contains(reason), "rustls's reason is kept: {output}");

    let ca_only = url_with(&db, "127.0.0.1", &verify_query("verify-ca", &ca.pem_file));
    let daemon = streams_a_change(&db, &ca_only).await;
    let sessions = daemon_sessions(&db).await;
    assert!(!sessions.is_empty() && sessions.iter().all(|(_, ssl)| *ssl), "{sessions:?}");
    daemon.stop().await.unwrap();
}
