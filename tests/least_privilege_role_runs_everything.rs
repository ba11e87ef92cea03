//! The whole daemon — initial copy, stream, heartbeats, a dead letter,
//! webhooks with write-back — runs as a role that is not superuser, with
//! exactly the grants the README documents; and `check` names the exact
//! grant when one is taken away.

use std::sync::atomic::Ordering;

use ciosync_emulator::Faults;
use serde_json::json;

use crate::support::daemon::{binary, config_file, InProcess};
use crate::support::emulator::{self, identifies_of, wait_for_attribute, wait_for_customers};
use crate::support::endpoint::wait_for_status;
use crate::support::eventually;
use crate::support::postgres::{TestDb, USERS_TABLE};
use crate::support::webhooks::{event, section, Delivery, PATH};

const WRITE_BACK: &str = r#"
[[webhooks.write_back]]
metric = "unsubscribed"
column = "email_opt_out"
value = "true"
"#;

fn check(text: &str) -> (Option<i32>, String) {
    let file = config_file(text);
    let output = std::process::Command::new(binary())
        .args(["check", "--config"])
        .arg(file.path())
        .output()
        .unwrap();
    (output.status.code(), String::from_utf8_lossy(&output.stdout).into_owned())
}

async fn check_async(text: &str) -> (Option<i32>, String) {
    let text = text.to_owned();
    tokio::task::spawn_blocking(move || check(&text)).await.unwrap()
}

#[tokio::test]
async fn a_least_privilege_role_runs_everything_and_check_names_each_missing_grant() {
    let db = TestDb::new("least_privilege").await;
    db.exec(USERS_TABLE).await;
    db.exec("ALTER TABLE users ADD COLUMN email_opt_out boolean").await;
    db.exec("INSERT INTO users (id, email) VALUES (1, 'a@x.io'), (2, 'b@x.io')").await;
    let role = format!("{}_lp", db.name);
    // Exactly the README's grants ("The role, with least privilege" and
    // "Write-back"); the publication is made by the tables' owner.
    db.exec(&format!(
        "CREATE ROLE {role} LOGIN REPLICATION;
         GRANT SELECT ON users TO {role};
         GRANT UPDATE (email_opt_out) ON users TO {role};
         CREATE SCHEMA ciosync AUTHORIZATION {role};
         GRANT EXECUTE ON FUNCTION pg_catalog.pg_replication_origin_create(text),
                                   pg_catalog.pg_replication_origin_oid(text),
                                   pg_catalog.pg_replication_origin_session_setup(text) TO {role};
         CREATE PUBLICATION {} FOR TABLE users WITH (publish_via_partition_root = true);",
        db.name
    ))
    .await;
    let emulator = emulator::start().await;
    emulator.set_faults(Faults { reject_ids: vec!["99".into()], ..Faults::default() });
    let text = db
        .config(&emulator.url(), &section(WRITE_BACK))
        .replace("postgres://postgres@", &format!("postgres://{role}@"))
        .replacen(
            "status_interval_ms = 200\n",
            "status_interval_ms = 200\nheartbeat_interval_secs = 1\n",
            1,
        )
        .replacen("about = \"bio\"\n", "about = \"bio\"\nemail_opt_out = \"email_opt_out\"\n", 1);

    let (code, out) = check_async(&text).await;
    assert_eq!(code, Some(0), "check with every grant:\n{out}");

    let daemon = InProcess::start_with_webhooks(&text);
    db.wait_for_streaming().await;
    assert!(wait_for_customers(&emulator, |c| c.contains_key("1") && c.contains_key("2")).await);
    db.exec("INSERT INTO users (id, email) VALUES (3, 'c@x.io'), (99, 'refused@x.io')").await;
    assert!(wait_for_customers(&emulator, |c| c.contains_key("3")).await, "the stream");
    assert!(
        eventually(|| daemon.counters.ops_dead_lettered.load(Ordering::Relaxed) == 1).await,
        "the refused change became a dead letter"
    );
    assert!(
        eventually(|| daemon.counters.heartbeats_received.load(Ordering::Relaxed) >= 1).await,
        "a heartbeat went round"
    );
    assert!(wait_for_status(&daemon.webhook_url("/readyz"), 200).await);
    let unsubscribed = event(
        "01HXLP00000000000000000001",
        "customer",
        "unsubscribed",
        json!({"identifiers": {"id": "1"}}),
    );
    assert_eq!(Delivery::of(&unsubscribed).send(&daemon.webhook_url(PATH)).await.0, 200);
    let opted_out: Option<bool> = db
        .client
        .query_one("SELECT email_opt_out FROM users WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(opted_out, Some(true), "written back");
    db.exec("UPDATE users SET plan = 'marker' WHERE id = 2").await;
    assert!(wait_for_attribute(&emulator, "2", "plan", json!("marker")).await);
    assert!(
        // The insert sent it as null (a new person has no value); never true.
        identifies_of(&emulator, "1")
            .iter()
            .all(|a| a.get("email_opt_out").is_none_or(|v| v.is_null())),
        "the write-back echoed"
    );
    daemon.stop().await.unwrap();
    db.wait_for_slot_released().await;

    // Each grant taken away (and given back): check names it, with the fix.
    let cases = [
        (
            format!("REVOKE SELECT ON users FROM {role}"),
            format!("GRANT SELECT ON users TO {role}"),
            "GRANT SELECT ON \"public\".\"users\" TO",
        ),
        (
            format!(
                "REVOKE EXECUTE ON FUNCTION \
                 pg_catalog.pg_replication_origin_session_setup(text) FROM {role}"
            ),
            format!(
                "GRANT EXECUTE ON FUNCTION \
                 pg_catalog.pg_replication_origin_session_setup(text) TO {role}"
            ),
            "GRANT EXECUTE ON FUNCTION pg_catalog.pg_replication_origin_session_setup(text) TO",
        ),
        (
            format!("REVOKE UPDATE (email_opt_out) ON users FROM {role}"),
            format!("GRANT UPDATE (email_opt_out) ON users TO {role}"),
            "GRANT UPDATE (\"email_opt_out\") ON \"public\".\"users\" TO",
        ),
        (
            format!("ALTER ROLE {role} NOREPLICATION"),
            format!("ALTER ROLE {role} REPLICATION"),
            "REPLICATION;",
        ),
    ];
    for (revoke, grant, expected) in cases {
        db.exec(&revoke).await;
        let (code, out) = check_async(&text).await;
        assert_eq!(code, Some(1), "{revoke}:\n{out}");
        assert!(out.contains(expected), "{revoke}: missing {expected:?} in\n{out}");
        db.exec(&grant).await;
    }
}
