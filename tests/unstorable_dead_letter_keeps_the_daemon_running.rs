//! A refused operation that cannot be stored as a dead letter (here the
//! daemon's role lost INSERT on the table) no longer stops the daemon, which
//! only replayed the same refusal after a restart: it keeps running and
//! retrying, acknowledges nothing of it, and says so — not ready, with the
//! table named, a metric to alert on, and `check` naming the grant. Once the privilege is back the
//! letter is stored, the slot moves on and readiness returns.

use ciosync_emulator::Faults;

use crate::support::daemon::{config_file, run_binary, InProcess};
use crate::support::dead_letters::texts;
use crate::support::emulator::{self, wait_for_customers};
use crate::support::endpoint::{get, value, wait_for_metrics, wait_for_status};
use crate::support::postgres::{TestDb, USERS_TABLE};

const FAILING: &str = "ciosync_dead_letter_store_failing";
const FAILURES: &str = "ciosync_dead_letter_store_failures_total";

#[tokio::test]
async fn a_dead_letter_that_cannot_be_stored_is_retried_loudly_until_it_can() {
    let db = TestDb::new("dlq_unstorable").await;
    db.exec(USERS_TABLE).await;
    // A role that is not superuser (a superuser skips privilege checks),
    // with the README's grants.
    let role = format!("{}_role", db.name);
    db.exec(&format!(
        "CREATE ROLE {role} LOGIN REPLICATION;
         GRANT SELECT ON users TO {role};
         CREATE SCHEMA ciosync AUTHORIZATION {role};
         GRANT EXECUTE ON FUNCTION pg_catalog.pg_replication_origin_create(text),
                                   pg_catalog.pg_replication_origin_oid(text),
                                   pg_catalog.pg_replication_origin_session_setup(text) TO {role};
         CREATE PUBLICATION {} FOR TABLE users WITH (publish_via_partition_root = true);",
        db.name
    ))
    .await;
    let emulator = emulator::start().await;
    let text = db
        .config(&emulator.url(), "")
        .replace("postgres://postgres@", &format!("postgres://{role}@"));
    let daemon = InProcess::start(&text);
    db.wait_for_streaming().await;
    // The daemon created the table; its owner loses INSERT on it, which
    // `check` names with the fix.
    db.exec(&format!("REVOKE INSERT ON ciosync.dead_letters FROM {role}")).await;
    let checked = run_binary(&["check"], config_file(&text).path()).await;
    let (stdout, _) = texts(&checked);
    assert_ne!(checked.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("GRANT INSERT ON ciosync.dead_letters TO"), "{stdout}");

    emulator.set_faults(Faults { reject_ids: vec!["1".into()], ..Faults::default() });
    let refused = db.exec_then_lsn("INSERT INTO users (id, email) VALUES (1, 'a@x.io')").await;
    let (seen, metrics) = wait_for_metrics(&daemon.url("/metrics"), |t| {
        value(t, FAILING) == Some(1.0) && value(t, FAILURES).is_some_and(|n| n >= 2.0)
    })
    .await;
    assert!(seen, "the failing store shows as a metric, retried:\n{metrics}");
    let (status, reason) = get(&daemon.url("/readyz")).await;
    assert_eq!(status, 503, "{reason}");
    assert!(reason.contains("ciosync.dead_letters"), "{reason}");
    assert_eq!(reason.trim_end().lines().count(), 1, "{reason}");
    assert!(!reason.contains("a@x.io"), "{reason}");

    // Other customers' changes still reach Customer.io, unacknowledged
    // behind the refused one; and the daemon is still there.
    db.exec("INSERT INTO users (id, email) VALUES (2, 'b@x.io')").await;
    assert!(wait_for_customers(&emulator, |c| c.contains_key("2")).await);
    assert!(db.confirmed_flush(&db.name).await < refused, "the refused insert was acknowledged");
    assert!(daemon.is_running(), "the daemon stopped");

    // The privilege is back: the letter is stored, everything acknowledged.
    db.exec(&format!("GRANT INSERT ON ciosync.dead_letters TO {role}")).await;
    let end = db.current_lsn().await;
    assert!(db.wait_for_confirmed(&db.name, end).await, "the slot did not move on");
    let letter = db
        .client
        .query_one("SELECT customer_id, operation FROM ciosync.dead_letters", &[])
        .await
        .expect("one dead letter");
    assert_eq!((letter.get::<_, &str>(0), letter.get::<_, &str>(1)), ("1", "identify"));
    let (seen, metrics) =
        wait_for_metrics(&daemon.url("/metrics"), |t| value(t, FAILING) == Some(0.0)).await;
    assert!(seen, "{metrics}");
    assert!(wait_for_status(&daemon.url("/readyz"), 200).await);
    daemon.stop().await.expect("a clean stop");
}
