//! `ciosync check` says what the server's version gives for failover and,
//! on PostgreSQL 17+, what a standby needs to carry the slot, as far as the
//! primary shows it (the physical slot, hot_standby_feedback through it,
//! `synchronized_standby_slots`); it refuses a standby as the server to run
//! on; and it accepts a managed service's replication role (RDS's
//! `rds_replication`) in place of the REPLICATION attribute.

use crate::support::daemon::{config_file, config_text, run_binary};
use crate::support::emulator;
use crate::support::postgres::{TestDb, USERS_TABLE};
use crate::support::standby::{Pair, STANDBY_SLOT};

async fn check(text: &str) -> (Option<i32>, String) {
    let file = config_file(text);
    let output = run_binary(&["check"], file.path()).await;
    (output.status.code(), String::from_utf8_lossy(&output.stdout).into_owned())
}

fn assert_lines(out: &str, expected: &[&str]) {
    for line in expected {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
}

// Multi-threaded: starting clusters blocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_what_failover_needs() {
    let newest = ciosync_testkit::throwaway::installations().last().map_or(0, |i| i.major);
    let Some(pair) = Pair::start(newest.max(17), false).await else { return };
    let db = TestDb::on(&pair.primary, "check_failover").await;
    db.exec(USERS_TABLE).await;
    let emulator = emulator::start().await;
    let text = config_text(&pair.url(&db.name), &db.name, &emulator.url(), "");

    let (code, out) = check(&text).await;
    assert_eq!(code, Some(0), "{out}");
    assert_lines(
        &out,
        &[
            "failover slots available; postgres.failover_slot = auto makes the slot one",
            "run creates it as a failover slot",
            &format!("physical slot {STANDBY_SLOT}: a standby streams through it with hot_standby_feedback"),
            "sync_replication_slots = on",
            "warning synchronized_standby_slots: is unset",
            &format!("ALTER SYSTEM SET synchronized_standby_slots = '{STANDBY_SLOT}'"),
        ],
    );

    db.exec(&format!("ALTER SYSTEM SET synchronized_standby_slots = '{STANDBY_SLOT}'")).await;
    db.exec("SELECT pg_reload_conf()").await;
    let (code, out) = check(&text).await;
    assert_eq!(code, Some(0), "{out}");
    assert_lines(&out, &[&format!("ok      synchronized_standby_slots: {STANDBY_SLOT}")]);

    // `failover_slot = off` says what it costs and checks no standby.
    let off = text.replacen(
        "status_interval_ms = 200\n",
        "status_interval_ms = 200\nfailover_slot = \"off\"\n",
        1,
    );
    let (_, out) = check(&off).await;
    assert_lines(&out, &["keeps an ordinary slot, lost when a standby is promoted"]);
    assert!(!out.contains("synchronized_standby_slots"), "{out}");

    // Pointed at the standby alone: an error that says how to find the primary.
    // The standby replays the database's creation in its own time (seconds
    // under load): wait until it has it.
    let standby_url = pair.standby.url(&db.name);
    let deadline = tokio::time::Instant::now() + crate::support::CONVERGE;
    while tokio_postgres::connect(&standby_url, tokio_postgres::NoTls).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "the standby never had the database");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let standby_only = text.replace(&pair.url(&db.name), &standby_url);
    let (code, out) = check(&standby_only).await;
    assert_eq!(code, Some(1), "{out}");
    assert_lines(&out, &["connected to a standby", "target_session_attrs=read-write"]);
}

#[tokio::test]
async fn check_accepts_the_rds_replication_role() {
    let db = TestDb::new("check_rds_role").await;
    db.exec(USERS_TABLE).await;
    let role = format!("{}_rds", db.name);
    db.exec(&format!(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'rds_replication') \
         THEN CREATE ROLE rds_replication NOLOGIN; END IF; END $$; \
         CREATE ROLE {role} LOGIN; GRANT SELECT ON users TO {role}; \
         CREATE SCHEMA ciosync AUTHORIZATION {role}; \
         CREATE PUBLICATION {} FOR TABLE users WITH (publish_via_partition_root = true);",
        db.name
    ))
    .await;
    let emulator = emulator::start().await;
    let text = db
        .config(&emulator.url(), "")
        .replace("postgres://postgres@", &format!("postgres://{role}@"));
    let (_, out) = check(&text).await;
    assert_lines(&out, &["error   replication privilege", "GRANT rds_replication TO"]);

    db.exec(&format!("GRANT rds_replication TO {role}")).await;
    let (_, out) = check(&text).await;
    assert_lines(
        &out,
        &[&format!(
            "ok      replication privilege: role {role} may replicate (member of rds_replication)"
        )],
    );
}
