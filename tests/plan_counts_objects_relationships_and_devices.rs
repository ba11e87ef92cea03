//! `ciosync plan` counts what a backfill of objects, relationships and
//! devices tables sends: their rows, and their operations by kind (none is
//! diffed: they are not in the record, so every row goes), with the rows
//! that send nothing and why. The counts are checked against the tables
//! and against the items the backfills then send.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::backfill_yields_to_newer_changes::wait_for_backfill;
use crate::devices_follow_their_table::{DEVICES_CONFIG, DEVICES_TABLE};
use crate::objects_are_created_diffed_and_deleted::{ACCOUNTS, OBJECTS};
use crate::relationships_follow_memberships::{MEMBERSHIPS, RELATIONSHIPS};
use crate::support::daemon::{config_file, run_binary};
use crate::support::emulator::{batch_items, wait_for};
use crate::support::postgres::TestDb;
use crate::support::Scenario;

const ROWS: &str = "
    INSERT INTO users (id, email) SELECT g, 'u' || g || '@x.io' FROM generate_series(1, 40) g;
    INSERT INTO accounts (id, name, plan)
        SELECT 'a' || g, 'Account ' || g, 'free' FROM generate_series(1, 20) g;
    UPDATE accounts SET deleted_at = now() WHERE id IN ('a3', 'a7');
    INSERT INTO memberships (user_id, account_id, role)
        SELECT g, 'a' || (g % 20 + 1), 'member' FROM generate_series(1, 40) g
        UNION ALL SELECT g, 'a' || ((g + 5) % 20 + 1), 'admin' FROM generate_series(1, 40, 4) g
        UNION ALL SELECT NULL, 'a1', 'invited' FROM generate_series(1, 3);
    INSERT INTO push_tokens (user_id, token, platform)
        SELECT g % 40 + 1, 'tok' || g, CASE WHEN g % 25 = 0 THEN 'web' ELSE 'ios' END
        FROM generate_series(1, 300) g;
    UPDATE push_tokens SET revoked_at = now() WHERE id % 10 = 0;
";

async fn plan(config: &std::path::Path, args: &[&str]) -> (Option<i32>, Value, String) {
    let out = run_binary(&[&["plan", "--json"], args].concat(), config).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(&stdout)
        .unwrap_or_else(|_| panic!("{stdout}{}", String::from_utf8_lossy(&out.stderr)));
    let text = run_binary(&[&["plan"], args].concat(), config).await;
    (out.status.code(), json, String::from_utf8_lossy(&text.stdout).into_owned())
}

async fn count(db: &TestDb, sql: &str) -> u64 {
    db.client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) as u64
}

/// The items sent since the log was cleared, by `kind` as the plan names
/// them.
fn sent(emulator: &ciosync_emulator::Emulator) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for item in batch_items(emulator) {
        let kind = match (item["type"].as_str(), item["action"].as_str()) {
            (Some("object"), Some(action)) => format!("object_{action}"),
            (_, Some("add_relationships")) => "add_relationship".to_owned(),
            (_, Some("delete_relationships")) => "delete_relationship".to_owned(),
            (_, Some(action)) => action.to_owned(),
            _ => "?".to_owned(),
        };
        *out.entry(kind).or_default() += 1;
    }
    out
}

fn operations(table: &Value) -> BTreeMap<String, u64> {
    serde_json::from_value(table["operations"].clone()).unwrap_or_default()
}

#[tokio::test]
async fn plan_counts_what_a_backfill_of_objects_relationships_and_devices_sends() {
    let schema = format!("{ACCOUNTS}{MEMBERSHIPS}{DEVICES_TABLE}{ROWS}");
    let extra = format!("{OBJECTS}{RELATIONSHIPS}{DEVICES_CONFIG}");
    let Scenario { db, emulator, daemon } =
        Scenario::start_with("plan_objects", &schema, |c| c + &extra).await;
    let config = config_file(&(db.config(&emulator.url(), "") + &extra));
    assert!(wait_for(&emulator, |e| e.devices("2").is_some_and(|d| !d.is_empty())).await);
    // Wait for the copy to be delivered whole: the people are in the record.
    let people = "SELECT count(*) FROM ciosync.accepted";
    let deadline = tokio::time::Instant::now() + crate::support::CONVERGE;
    while count(&db, people).await < 40 {
        assert!(tokio::time::Instant::now() < deadline, "the copy's people were not recorded");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // Every table a backfill covers: people diffed, the rest counted.
    let (code, every, text) = plan(config.path(), &[]).await;
    assert_eq!(code, Some(4), "{every}");
    let tables = every["tables"].as_array().unwrap();
    let kinds: Vec<&str> = tables.iter().map(|t| t["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["people", "objects", "relationships"], "{every}");
    assert_eq!(tables[0]["unchanged"], 40);
    assert_eq!(tables[1]["rows"], count(&db, "SELECT count(*) FROM accounts").await);
    let memberships = "SELECT count(*) FROM memberships WHERE user_id IS NOT NULL";
    assert_eq!(tables[2]["rows"], count(&db, memberships).await, "NULL keys are not read");
    assert_eq!(every["identifies"], 0);
    assert_eq!(every["operations"], 20 + 50);
    for expected in [
        "table public.accounts (objects): 20 rows, not in the record, every row sent\n",
        "table public.memberships (relationships): 50 rows, not in the record, every row sent\n",
        "  50 add_relationship\n",
        "devices table public.push_tokens: not in a backfill of every table",
        "a backfill would send 0 identifies and 70 object, relationship and device operations \
         in 1 request",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }

    // A devices table by name: adds, deletes, and the rows sent nothing.
    let (code, devices, text) = plan(config.path(), &["--table", "push_tokens"]).await;
    assert_eq!(code, Some(4), "{devices}");
    let table = &devices["tables"][0];
    assert_eq!(table["kind"], "devices");
    assert_eq!(table["rows"], 300);
    let web = count(
        &db,
        "SELECT count(*) FROM push_tokens WHERE platform = 'web' AND revoked_at IS NULL",
    )
    .await;
    let revoked = count(&db, "SELECT count(*) FROM push_tokens WHERE revoked_at IS NOT NULL").await;
    let adds = 300 - revoked - web;
    let expected =
        BTreeMap::from([("add_device".to_owned(), adds), ("delete_device".to_owned(), revoked)]);
    assert_eq!(operations(table), expected, "{devices}");
    assert_eq!(table["skipped"], serde_json::json!({"invalid_platform": web}));
    assert!(text.contains(&format!("  {web} rows send nothing (invalid_platform)\n")), "{text}");

    // What the backfills then send is what the plan counted.
    emulator.clear_requests();
    for args in [&["--detach"][..], &["--table", "push_tokens", "--detach"]] {
        let out = run_binary(&[&["backfill"], args].concat(), config.path()).await;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let ids = "SELECT id FROM ciosync.backfills";
        for row in db.client.query(ids, &[]).await.unwrap() {
            assert!(wait_for_backfill(&db, row.get(0), "done").await);
        }
    }
    let mut predicted = operations(&every["tables"][1]);
    predicted.extend(operations(&every["tables"][2]));
    predicted.extend(operations(table));
    assert_eq!(sent(&emulator), predicted);
    daemon.stop().await.unwrap();
}
