//! The rest of "When the table changes" (README): a dropped mapped column,
//! a renamed id column, a renamed event column, a dropped synced table and
//! a renamed filter column, each with writes before and after the DDL and
//! the repair the README gives; and kill -9 while paused, then the repair.

use serde_json::json;

use crate::support::daemon::{config_file, run_binary, signal, spawn_binary, InProcess};
use crate::support::emulator::{self, wait_for, wait_for_attribute, wait_for_customers};
use crate::support::endpoint::{value, wait_for_metrics};
use crate::support::postgres::{TestDb, USERS_TABLE};
use crate::support::{customers_match_rows, Scenario};
use crate::sync_filter_syncs_only_matching_rows::{config_with_filter, FILTERED_USERS};

/// Waits until the daemon reports `reason` for public.users.
async fn wait_for_break(daemon: &InProcess, reason: &str) {
    let series = format!(r#"ciosync_schema_mismatch{{table="public.users",reason="{reason}"}}"#);
    let (seen, metrics) =
        wait_for_metrics(&daemon.url("/metrics"), |m| value(m, &series) == Some(1.0)).await;
    assert!(seen, "no {reason} break reported: {metrics}");
}

#[tokio::test]
async fn a_dropped_mapped_column_pauses_until_the_attribute_is_unmapped() {
    let Scenario { db, emulator, daemon } = Scenario::start("schema_drop").await;
    db.exec("INSERT INTO users (id, email, plan, bio) VALUES (1, 'a@x.io', 'free', 'hi')").await;
    assert!(wait_for_attribute(&emulator, "1", "about", json!("hi")).await);
    db.exec("ALTER TABLE users DROP COLUMN bio").await;
    db.exec("UPDATE users SET plan = 'pro' WHERE id = 1").await;
    wait_for_break(&daemon, "dropped").await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(emulator.customer("1").unwrap()["plan"], json!("free"), "sent while paused");
    daemon.stop().await.unwrap();

    let unmapped = db.config(&emulator.url(), "").replace("about = \"bio\"\n", "");
    let daemon = InProcess::start(&unmapped);
    assert!(wait_for_attribute(&emulator, "1", "plan", json!("pro")).await);
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn a_renamed_id_column_pauses_until_id_column_follows() {
    let Scenario { db, emulator, daemon } = Scenario::start("schema_id").await;
    db.exec("INSERT INTO users (id, email, plan) VALUES (1, 'a@x.io', 'free')").await;
    assert!(wait_for_customers(&emulator, |c| c.contains_key("1")).await);
    db.exec("ALTER TABLE users RENAME COLUMN id TO user_id").await;
    db.exec("UPDATE users SET plan = 'pro' WHERE user_id = 1").await;
    db.exec("INSERT INTO users (user_id, email, plan) VALUES (2, 'b@x.io', 'team')").await;
    wait_for_break(&daemon, "renamed").await;
    daemon.stop().await.unwrap();
    assert!(emulator.customer("2").is_none(), "sent while paused");

    let fixed =
        db.config(&emulator.url(), "").replace("id_column = \"id\"\n", "id_column = \"user_id\"\n");
    let daemon = InProcess::start(&fixed);
    assert!(wait_for_attribute(&emulator, "1", "plan", json!("pro")).await);
    assert!(wait_for_attribute(&emulator, "2", "plan", json!("team")).await);
    daemon.stop().await.unwrap();
}

const PASSWORD_EVENT: &str = r#"
[[sync.events]]
name = "password_updated"
when = "password_updated_at"
"#;

#[tokio::test]
async fn a_renamed_event_column_pauses_and_the_event_fires_once_the_config_follows() {
    let schema =
        format!("{USERS_TABLE} ALTER TABLE users ADD COLUMN password_updated_at timestamptz;");
    let Scenario { db, emulator, daemon } =
        Scenario::start_with("schema_event", &schema, |c| c + PASSWORD_EVENT).await;
    db.exec("INSERT INTO users (id, email, plan) VALUES (1, 'a@x.io', 'free')").await;
    db.exec("UPDATE users SET password_updated_at = now() WHERE id = 1").await;
    assert!(wait_for(&emulator, |e| e.events("1").len() == 1).await);

    db.exec("ALTER TABLE users RENAME COLUMN password_updated_at TO password_changed_at").await;
    db.exec("UPDATE users SET password_changed_at = now() + interval '1 s' WHERE id = 1").await;
    wait_for_break(&daemon, "renamed").await;
    daemon.stop().await.unwrap();
    assert_eq!(emulator.events("1").len(), 1, "an event was sent while paused");

    let fixed = (db.config(&emulator.url(), "") + PASSWORD_EVENT)
        .replace("when = \"password_updated_at\"", "when = \"password_changed_at\"");
    let daemon = InProcess::start(&fixed);
    assert!(
        wait_for(&emulator, |e| e.events("1").len() == 2).await,
        "the held change's event never came: {:?}",
        emulator.events("1")
    );
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn dropping_the_synced_table_deletes_no_one_and_the_daemon_goes_on() {
    let Scenario { db, emulator, daemon } = Scenario::start("schema_drop_table").await;
    let (_, metrics) = crate::support::endpoint::get(&daemon.url("/metrics")).await;
    let published = r#"ciosync_table_published{table="public.users"}"#;
    assert_eq!(value(&metrics, published), Some(1.0), "{metrics}");
    db.exec("INSERT INTO users (id, email) VALUES (1, 'a@x.io'), (2, 'b@x.io')").await;
    assert!(wait_for_customers(&emulator, |c| c.len() == 2).await);
    let dropped_at = db.exec_then_lsn("DROP TABLE users").await;
    // The slot moves past the DROP (nothing of it is held back) ...
    assert!(db.wait_for_confirmed(&db.name, dropped_at).await, "the slot stopped at the DROP");
    // ... and no one was deleted or suppressed.
    assert_eq!(emulator.customers().len(), 2);
    let removals = crate::support::emulator::batch_items(&emulator)
        .iter()
        .filter(|i| i["action"] != "identify")
        .count();
    assert_eq!(removals, 0);
    assert!(daemon.is_running());
    // The scrape says the table left the publication, also once a table of
    // that name exists again (a publication holds tables, not names).
    let unpublished = r#"ciosync_table_published{table="public.users"}"#;
    db.exec(crate::support::postgres::USERS_TABLE).await;
    let (seen, metrics) =
        wait_for_metrics(&daemon.url("/metrics"), |m| value(m, unpublished) == Some(0.0)).await;
    assert!(seen, "{metrics}");
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn a_renamed_filter_column_keeps_filtering_and_stops_the_next_start_with_the_fix() {
    let db = TestDb::new("schema_filter").await;
    db.exec(FILTERED_USERS).await;
    let emulator = emulator::start().await;
    let config = config_with_filter(&db, &emulator.url(), "email_verified");
    let daemon = InProcess::start(&config);
    db.wait_for_streaming().await;
    db.exec("ALTER TABLE users RENAME COLUMN email_verified TO verified").await;
    db.exec(
        "INSERT INTO users (id, email, verified) VALUES (1, 'a@x.io', true), (2, 'b@x.io', false)",
    )
    .await;
    // Postgres keeps the publication's filter on the renamed column.
    assert!(wait_for_customers(&emulator, |c| c.contains_key("1")).await);
    daemon.stop().await.unwrap();
    assert!(emulator.customer("2").is_none(), "a row outside the filter was sent");

    // The config's filter names a column that is gone: the next start
    // stops, exit 1, with the statement and the config edit.
    let file = config_file(&config);
    let output = run_binary(&["run", "--log-format", "text"], file.path()).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("sync[0].filter"), "{stderr}");
    let fixed = config_with_filter(&db, &emulator.url(), "verified");
    let daemon = InProcess::start(&fixed);
    db.exec("UPDATE users SET email = 'a2@x.io' WHERE id = 1").await;
    assert!(wait_for_attribute(&emulator, "1", "email", json!("a2@x.io")).await);
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn kill_9_while_paused_then_the_repair_loses_nothing() {
    let db = TestDb::new("schema_kill9").await;
    db.exec(USERS_TABLE).await;
    let emulator = emulator::start().await;
    let logs = tempfile::tempdir().unwrap();
    let config = config_file(&db.config(&emulator.url(), ""));
    let mut daemon = spawn_binary(config.path(), &logs.path().join("1.log"));
    db.wait_for_streaming().await;
    db.exec(
        "INSERT INTO users (id, email, first_name, plan) \
         SELECT g, 'u' || g || '@x.io', 'U' || g, 'free' FROM generate_series(1, 20) g",
    )
    .await;
    assert!(wait_for_customers(&emulator, |c| c.len() == 20).await);
    db.exec("ALTER TABLE users RENAME COLUMN first_name TO given_name").await;
    db.exec("UPDATE users SET given_name = 'G' || id, plan = 'pro' WHERE id % 2 = 0").await;
    db.exec("DELETE FROM users WHERE id = 7").await;
    let log = logs.path().join("1.log");
    let paused = crate::support::eventually(|| {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("schema change breaks the sync"))
    })
    .await;
    assert!(paused, "never paused: {}", std::fs::read_to_string(&log).unwrap_or_default());
    signal(&daemon, "KILL");
    daemon.wait().unwrap();
    db.exec("UPDATE users SET plan = 'team' WHERE id = 3").await;

    let fixed = db
        .config(&emulator.url(), "")
        .replace(r#"first_name = "first_name""#, r#"first_name = "given_name""#);
    let fixed = config_file(&fixed);
    let mut daemon = spawn_binary(fixed.path(), &logs.path().join("2.log"));
    let converged = customers_match_rows(&db, &emulator).await;
    let names = db.client.query("SELECT id::text, given_name FROM users", &[]).await.unwrap();
    let stale: Vec<String> = names
        .iter()
        .filter(|r| {
            let id: String = r.get(0);
            emulator.customer(&id).and_then(|c| c.get("first_name").cloned())
                != Some(json!(r.get::<_, String>(1)))
        })
        .map(|r| r.get(0))
        .collect();
    signal(&daemon, "TERM");
    assert!(daemon.wait().unwrap().success());
    assert!(converged, "customers differ from rows after kill -9 and the repair");
    assert!(stale.is_empty(), "first_name stale for {stale:?}");
}
