//! `[[webhooks.write_back]]`: an `unsubscribed` event sets the user's
//! `email_opt_out`, and that write does not come back to Customer.io as an
//! identify (its transaction carries the write-back's replication origin,
//! which the source skips); the application setting the same column is
//! still synced. A `bounced` event matched by email stamps the event time.

use ciosync::webhooks::Rejection;
use serde_json::json;

use crate::support::daemon::InProcess;
use crate::support::emulator::{self, identifies_of, wait_for_attribute};
use crate::support::endpoint::wait_for_status;
use crate::support::postgres::{TestDb, USERS_TABLE};
use crate::support::webhooks::{event, section, Delivery, PATH};

const WRITE_BACK: &str = r#"
[[webhooks.write_back]]
metric = "unsubscribed"
column = "email_opt_out"
value = "true"

[[webhooks.write_back]]
metric = "bounced"
object_type = "email"
column = "bounced_at"
value = "event_time"
match_by = "email"
email_column = "email"
"#;

/// The events the receiver stored.
async fn stored_events(db: &TestDb) -> i64 {
    let count = "SELECT count(*) FROM ciosync.message_events";
    db.client.query_one(count, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn write_back_sets_the_column_and_does_not_echo() {
    let db = TestDb::new("write_back").await;
    db.exec(USERS_TABLE).await;
    db.exec(
        "ALTER TABLE users ADD COLUMN email_opt_out boolean, ADD COLUMN bounced_at timestamptz",
    )
    .await;
    let emulator = emulator::start().await;
    let text = db.config(&emulator.url(), &section(WRITE_BACK)).replacen(
        "about = \"bio\"\n",
        "about = \"bio\"\nemail_opt_out = \"email_opt_out\"\nbounced_at = \"bounced_at\"\n",
        1,
    );
    let daemon = InProcess::start_with_webhooks(&text);
    db.wait_for_streaming().await;
    assert!(wait_for_status(&daemon.webhook_url("/readyz"), 200).await);
    db.exec("INSERT INTO users (id, email) VALUES (1, 'a@x.io'), (2, 'B@x.io')").await;
    assert!(wait_for_attribute(&emulator, "2", "email", json!("B@x.io")).await);

    let url = daemon.webhook_url(PATH);
    let unsubscribed = event(
        "01HXWB00000000000000000001",
        "customer",
        "unsubscribed",
        json!({"identifiers": {"id": "1", "email": "a@x.io", "cio_id": "c1"}}),
    );
    assert_eq!(Delivery::of(&unsubscribed).send(&url).await.0, 200);
    let bounced = event(
        "01HXWB00000000000000000002",
        "email",
        "bounced",
        json!({"identifiers": {"email": "b@x.io"}, "delivery_id": "d1", "failure_message": "no"}),
    );
    assert_eq!(Delivery::of(&bounced).send(&url).await.0, 200);

    let row = db
        .client
        .query_one(
            "SELECT (SELECT email_opt_out FROM users WHERE id = 1), \
                    (SELECT extract(epoch FROM bounced_at)::int8 FROM users WHERE id = 2)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<bool>>(0), Some(true), "written back, committed with the event");
    assert_eq!(
        row.get::<_, Option<i64>>(1),
        Some(1_713_484_800),
        "the event's time, matched by email"
    );

    // The same outcome again (a new event id, so stored): the column holds
    // the value already, so the row is not written at all.
    let version = "SELECT xmin::text FROM users WHERE id = 1";
    let before: String = db.client.query_one(version, &[]).await.unwrap().get(0);
    let applied =
        || daemon.counters.webhooks.write_backs.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(applied(), 2, "one write-back per event so far");
    let again = event(
        "01HXWB00000000000000000003",
        "customer",
        "unsubscribed",
        json!({"identifiers": {"id": "1", "email": "a@x.io", "cio_id": "c1"}}),
    );
    assert_eq!(Delivery::of(&again).send(&url).await.0, 200);
    assert_eq!(stored_events(&db).await, 3, "the third event was stored");
    let after: String = db.client.query_one(version, &[]).await.unwrap().get(0);
    assert_eq!(before, after, "an unchanged value was written again");
    assert_eq!(applied(), 2, "an unchanged value counted as a write-back");

    // A later change of another row proves the stream passed the write-backs.
    db.exec("UPDATE users SET plan = 'marker' WHERE id = 2").await;
    assert!(wait_for_attribute(&emulator, "2", "plan", json!("marker")).await);
    // An insert sends its NULL columns as null; an echo would send the value.
    let echoed = |id: &str, attribute: &str| {
        identifies_of(&emulator, id).iter().any(|a| a.get(attribute).is_some_and(|v| !v.is_null()))
    };
    assert!(!echoed("1", "email_opt_out"), "the write-back echoed to Customer.io");
    assert!(!echoed("2", "bounced_at"), "the write-back echoed to Customer.io");
    assert!(
        daemon.counters.changes_skipped_write_back.load(std::sync::atomic::Ordering::Relaxed) >= 2
    );

    // The application writing the same column is synced as always.
    db.exec("UPDATE users SET email_opt_out = false WHERE id = 1").await;
    assert!(wait_for_attribute(&emulator, "1", "email_opt_out", json!(false)).await);

    // Back to the value the record of what Customer.io accepted held before
    // the write-back: Customer.io set the other value itself, so this is
    // sent (the write-back took the attribute out of the record).
    db.exec("INSERT INTO users (id, email, email_opt_out) VALUES (3, 'c@x.io', false)").await;
    assert!(wait_for_attribute(&emulator, "3", "email_opt_out", json!(false)).await);
    let recorded = || async {
        let held = "SELECT count(*) FROM ciosync.accepted \
                    WHERE customer_id = '3' AND attributes ? 'email_opt_out'";
        db.client.query_one(held, &[]).await.unwrap().get::<_, i64>(0)
    };
    let deadline = tokio::time::Instant::now() + crate::support::CONVERGE;
    while recorded().await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the insert was not recorded");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let unsubscribed = event(
        "01HXWB00000000000000000009",
        "customer",
        "unsubscribed",
        json!({"identifiers": {"id": "3", "email": "c@x.io", "cio_id": "c3"}}),
    );
    assert_eq!(Delivery::of(&unsubscribed).send(&url).await.0, 200);
    assert_eq!(recorded().await, 0, "the write-back left the attribute in the record");
    db.exec("UPDATE users SET email_opt_out = false WHERE id = 3").await;
    let sent_false = |e: &ciosync_emulator::Emulator| {
        identifies_of(e, "3")
            .iter()
            .filter(|a| a.get("email_opt_out") == Some(&json!(false)))
            .count()
    };
    assert!(crate::support::emulator::wait_for(&emulator, |e| sent_false(e) == 2).await);
    daemon.stop().await.unwrap();
}

/// Without the replication-origin functions a write-back would echo, so
/// `run` does not start: exit 1, the GRANTs in the message, nothing created.
#[tokio::test]
async fn write_back_without_origin_privileges_stops_run_at_start() {
    let db = TestDb::new("write_back_nopriv").await;
    db.exec(USERS_TABLE).await;
    db.exec("ALTER TABLE users ADD COLUMN email_opt_out boolean").await;
    let role = format!("{}_role", db.name);
    db.exec(&format!(
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN \
         CREATE ROLE {role} LOGIN REPLICATION; END IF; END $$; \
         GRANT SELECT, UPDATE ON users TO {role}; \
         CREATE SCHEMA ciosync AUTHORIZATION {role}; \
         CREATE PUBLICATION {} FOR TABLE users WITH (publish_via_partition_root = true);",
        db.name
    ))
    .await;
    let emulator = emulator::start().await;
    let text = db
        .config(&emulator.url(), &section(WRITE_BACK))
        .replace("postgres://postgres@", &format!("postgres://{role}@"));
    let file = crate::support::daemon::config_file(&text);
    let output = tokio::time::timeout(
        crate::support::CONVERGE,
        crate::support::daemon::run_binary(&["run", "--log-format", "text"], file.path()),
    )
    .await
    .expect("run stops by itself");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("need the replication-origin functions")
            && stderr.contains("pg_replication_origin_session_setup(text)"),
        "{stderr}"
    );
    assert_eq!(db.created_objects().await.0, 0, "no slot was created");
}

/// A write-back Postgres refuses (a CHECK constraint) stores nothing, so
/// Customer.io retries, and the log names the SQLSTATE, never the failing
/// row: Postgres's DETAIL quotes every column of it, the email and columns
/// never synced included. The suite's tripwire scans every in-process log
/// line for an email address and fails the test when the daemon stops.
#[tokio::test]
async fn a_refused_write_back_logs_no_row() {
    let db = TestDb::new("write_back_refused").await;
    db.exec(USERS_TABLE).await;
    db.exec(
        "ALTER TABLE users ADD COLUMN email_opt_out boolean \
         CONSTRAINT opt_out_is_decided_by_support CHECK (email_opt_out IS NOT TRUE), \
         ADD COLUMN bounced_at timestamptz",
    )
    .await;
    db.exec("INSERT INTO users (id, email) VALUES (1, 'refused-row@x.io')").await;
    let emulator = emulator::start().await;
    let daemon = InProcess::start_with_webhooks(&db.config(&emulator.url(), &section(WRITE_BACK)));
    let readyz = daemon.webhook_url("/readyz");
    assert!(wait_for_status(&readyz, 200).await);
    let unsubscribed = event(
        "01HXWB00000000000000000009",
        "customer",
        "unsubscribed",
        json!({"identifiers": {"id": "1", "email": "refused-row@x.io"}}),
    );
    let (status, answer) = Delivery::of(&unsubscribed).send(&daemon.webhook_url(PATH)).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer, "database\n", "the answer is the reason code alone");
    assert_eq!(daemon.counters.webhooks.rejected_count(Rejection::Database), 1);
    assert_eq!(stored_events(&db).await, 0, "the event was stored without its write-back");
    // The refusal's log line went through the tripwire; stopping checks it.
    daemon.stop().await.unwrap();
}
