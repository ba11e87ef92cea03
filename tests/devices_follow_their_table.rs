//! `[[devices]]`: a table of push tokens becomes Customer.io devices. An
//! insert adds the device, an update updates it (last_used, attributes),
//! moves it when the customer changes, a delete or a soft delete removes
//! it. Under DEFAULT identity a delete needs the customer and the token in
//! the key: with a surrogate key it is skipped and counted, and `check`
//! names the fix. A bad platform skips the row. kill -9 mid-stream loses
//! nothing. Every request validates against the published schema.

use std::collections::{BTreeMap, BTreeSet};

use ciosync::telemetry::Counters;
use ciosync_emulator::{Emulator, Faults};
use serde_json::{json, Value};

use crate::support::daemon::{binary, config_file, signal, spawn_binary, InProcess};
use crate::support::emulator::{self, wait_for};
use crate::support::postgres::{TestDb, USERS_TABLE};
use crate::support::spec::{check, Shape};

pub const DEVICES_TABLE: &str = "
    CREATE TABLE push_tokens (
        id serial PRIMARY KEY, user_id bigint, token text, platform text,
        last_seen timestamptz, app_version text, push boolean, revoked_at timestamptz
    );
    ALTER TABLE push_tokens REPLICA IDENTITY FULL;
";

pub const DEVICES_CONFIG: &str = r#"
[[devices]]
table = "push_tokens"
customer_id_column = "user_id"
token_column = "token"
platform_column = "platform"
last_used_column = "last_seen"
soft_delete_column = "revoked_at"
[devices.attributes]
app_version = "app_version"
push_enabled = "push"
"#;

/// The tokens each customer holds in the emulator, with their platform.
fn tokens(emulator: &Emulator, customer: &str) -> BTreeSet<String> {
    emulator.devices(customer).unwrap_or_default().into_iter().map(|d| d.token).collect()
}

fn set(tokens: &[&str]) -> BTreeSet<String> {
    tokens.iter().map(|t| t.to_string()).collect()
}

/// Every batch the sink sent validates against the Track API schemas.
pub fn assert_requests_valid(emulator: &Emulator) {
    let batch = check(Shape::BatchRequest);
    let bodies: Vec<Value> = emulator
        .requests()
        .into_iter()
        .filter(|r| r.path == "/api/v2/batch")
        .filter_map(|r| r.body)
        .collect();
    assert!(!bodies.is_empty());
    for body in &bodies {
        batch.assert_valid(body, "a batch the sink sent");
    }
}

#[tokio::test]
async fn devices_are_added_updated_moved_and_removed() {
    let db = TestDb::new("devices").await;
    db.exec(USERS_TABLE).await;
    db.exec(DEVICES_TABLE).await;
    let emulator = emulator::start().await;
    let daemon = InProcess::start(&db.config(&emulator.url(), DEVICES_CONFIG));
    db.wait_for_streaming().await;

    db.exec(
        "INSERT INTO users (id, email) VALUES (1, 'a@x.io'), (2, 'b@x.io'); \
         INSERT INTO push_tokens (user_id, token, platform, last_seen, app_version, push) \
         VALUES (1, 'tokA', 'iOS', '2024-01-01 00:00:00+00', '1.0', true)",
    )
    .await;
    assert!(wait_for(&emulator, |e| tokens(e, "1") == set(&["tokA"])).await, "not added");
    let device = emulator.devices("1").unwrap().remove(0);
    assert_eq!(device.platform, "ios");
    assert_eq!(device.last_used, 1_704_067_200);
    assert_eq!(
        Value::Object(device.attributes),
        json!({"app_version": "1.0", "push_enabled": "true"})
    );

    db.exec(
        "UPDATE push_tokens SET last_seen = '2024-02-01 00:00:00+00', app_version = '1.1', \
         push = false WHERE token = 'tokA'",
    )
    .await;
    let updated = |e: &Emulator| {
        e.devices("1").unwrap_or_default().first().is_some_and(|d| {
            d.last_used == 1_706_745_600
                && d.attributes.get("app_version") == Some(&json!("1.1"))
                && d.attributes.get("push_enabled") == Some(&json!("false"))
        })
    };
    assert!(wait_for(&emulator, updated).await, "not updated: {:?}", emulator.devices("1"));

    // The device changes hands: gone from 1, held by 2.
    db.exec("UPDATE push_tokens SET user_id = 2 WHERE token = 'tokA'").await;
    let moved = |e: &Emulator| tokens(e, "1").is_empty() && tokens(e, "2") == set(&["tokA"]);
    assert!(wait_for(&emulator, moved).await, "not moved: {:?}", emulator.devices("1"));
    let items = crate::support::emulator::batch_items(&emulator);
    let removed_from_1 = items.iter().any(|i| {
        i["action"] == "delete_device"
            && i["identifiers"]["id"] == "1"
            && i["device"]["token"] == "tokA"
    });
    assert!(removed_from_1, "the old holder's device was not deleted explicitly");

    // A delete, and a soft delete.
    db.exec("INSERT INTO push_tokens (user_id, token, platform) VALUES (2, 'tokB', 'android')")
        .await;
    assert!(wait_for(&emulator, |e| tokens(e, "2") == set(&["tokA", "tokB"])).await);
    db.exec("DELETE FROM push_tokens WHERE token = 'tokB'").await;
    assert!(wait_for(&emulator, |e| tokens(e, "2") == set(&["tokA"])).await, "not deleted");
    db.exec("UPDATE push_tokens SET revoked_at = now() WHERE token = 'tokA'").await;
    assert!(wait_for(&emulator, |e| tokens(e, "2").is_empty()).await, "not soft-deleted");

    // A platform ciosync cannot send: skipped, counted, the rest goes on.
    db.exec(
        "INSERT INTO push_tokens (user_id, token, platform) VALUES (1, 'tokWeb', 'web'); \
         INSERT INTO push_tokens (user_id, token, platform) VALUES (1, 'tokC', 'ANDROID')",
    )
    .await;
    assert!(wait_for(&emulator, |e| tokens(e, "1") == set(&["tokC"])).await);
    assert_eq!(Counters::get(&daemon.counters.changes_skipped_invalid_platform), 1);
    daemon.stop().await.unwrap();
    assert_requests_valid(&emulator);
}

#[tokio::test]
async fn default_identity_deletes_need_customer_and_token_in_the_key() {
    let db = TestDb::new("devices_identity").await;
    db.exec(USERS_TABLE).await;
    db.exec(
        "CREATE TABLE keyed_tokens (user_id bigint, token text, platform text, \
             PRIMARY KEY (user_id, token)); \
         CREATE TABLE surrogate_tokens (id serial PRIMARY KEY, user_id bigint, token text);",
    )
    .await;
    let emulator = emulator::start().await;
    let extra = r#"
[[devices]]
table = "keyed_tokens"
customer_id_column = "user_id"
token_column = "token"
platform_column = "platform"

[[devices]]
table = "surrogate_tokens"
customer_id_column = "user_id"
token_column = "token"
platform = "android"
"#;
    let text = db.config(&emulator.url(), extra);
    let daemon = InProcess::start(&text);
    db.wait_for_streaming().await;

    db.exec(
        "INSERT INTO keyed_tokens VALUES (1, 'k1', 'ios'), (1, 'k2', 'ios'); \
         INSERT INTO surrogate_tokens (user_id, token) VALUES (2, 's1')",
    )
    .await;
    let all = |e: &Emulator| tokens(e, "1") == set(&["k1", "k2"]) && tokens(e, "2") == set(&["s1"]);
    assert!(wait_for(&emulator, all).await, "not added");

    // The key holds both: a delete names its device; a key change moves it.
    db.exec("DELETE FROM keyed_tokens WHERE token = 'k1'").await;
    db.exec("UPDATE keyed_tokens SET user_id = 3 WHERE token = 'k2'").await;
    let done = |e: &Emulator| tokens(e, "1").is_empty() && tokens(e, "3") == set(&["k2"]);
    assert!(wait_for(&emulator, done).await, "{:?}", emulator.devices("1"));

    // A surrogate key: the delete cannot name the device; skipped, counted.
    db.exec("DELETE FROM surrogate_tokens WHERE token = 's1'").await;
    let counted = || Counters::get(&daemon.counters.changes_skipped_device_key_unknown) == 1;
    assert!(wait_for(&emulator, |_| counted()).await, "the delete was not counted");
    assert_eq!(tokens(&emulator, "2"), set(&["s1"]), "nothing could be sent");
    daemon.stop().await.unwrap();
    assert_requests_valid(&emulator);

    // check names the table and both fixes, and fails.
    let config = config_file(&text);
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(binary())
            .args(["check", "--config"])
            .arg(config.path())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{out}");
    for expected in [
        "devices table public.keyed_tokens: its key holds user_id and token",
        "devices table public.surrogate_tokens: a DELETE carries only the replica identity's key (id)",
        "ALTER TABLE \"public\".\"surrogate_tokens\" REPLICA IDENTITY FULL;",
        "(or make (user_id, token) the primary key)",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
}

/// Each customer's tokens in the table (rows not revoked).
async fn rows(db: &TestDb) -> BTreeMap<String, BTreeSet<String>> {
    let sql = "SELECT user_id::text, token FROM push_tokens WHERE revoked_at IS NULL";
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for row in db.client.query(sql, &[]).await.unwrap() {
        out.entry(row.get(0)).or_default().insert(row.get(1));
    }
    out
}

#[tokio::test]
async fn kill_9_mid_stream_loses_no_device_change() {
    let db = TestDb::new("devices_kill9").await;
    db.exec(USERS_TABLE).await;
    db.exec(DEVICES_TABLE).await;
    let emulator = emulator::start().await;
    // 50 items a request, one request a second at a time: the 300 rows of
    // one transaction take six requests.
    let text = db.config(&emulator.url(), DEVICES_CONFIG).replacen(
        "linger_ms = 0\n",
        "linger_ms = 0\nmax_batch_ops = 50\nmax_in_flight = 1\nmax_requests_per_second = 1\n",
        1,
    );
    let config = config_file(&text);
    let logs = tempfile::tempdir().unwrap();
    let mut daemon = spawn_binary(config.path(), &logs.path().join("1.log"));
    db.wait_for_streaming().await;

    let committed = db
        .exec_then_lsn(
            "INSERT INTO push_tokens (user_id, token, platform) \
             SELECT g % 30, 'tok' || g, CASE WHEN g % 2 = 0 THEN 'ios' ELSE 'android' END \
             FROM generate_series(1, 300) g",
        )
        .await;
    let count = |e: &Emulator| (0..30).map(|c| tokens(e, &c.to_string()).len()).sum::<usize>();
    assert!(wait_for(&emulator, |e| count(e) > 0).await, "nothing delivered");
    emulator.set_faults(Faults { fail_next: u32::MAX, ..Faults::default() });
    let failed = |e: &Emulator| {
        e.requests().iter().filter(|r| r.path == "/api/v2/batch" && r.status == 500).count()
    };
    assert!(wait_for(&emulator, |e| failed(e) >= 2).await, "no request failed");
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let delivered = count(&emulator);
    assert!(delivered < 300, "all 300 delivered before the kill: nothing was at stake");
    let confirmed = db.confirmed_flush(&db.name).await;
    assert!(confirmed < committed, "acknowledged past a part-delivered transaction");
    signal(&daemon, "KILL");
    daemon.wait().unwrap();
    emulator.set_faults(Faults::default());

    // Changes while it is down: moves, deletes, soft deletes, new devices.
    db.exec("UPDATE push_tokens SET user_id = user_id + 100 WHERE id % 7 = 0").await;
    db.exec("DELETE FROM push_tokens WHERE id % 5 = 0").await;
    db.exec("UPDATE push_tokens SET revoked_at = now() WHERE id % 11 = 0").await;
    db.exec("INSERT INTO push_tokens (user_id, token, platform) VALUES (1, 'late', 'ios')").await;

    let restarted = config_file(&db.config(&emulator.url(), DEVICES_CONFIG));
    let mut daemon = spawn_binary(restarted.path(), &logs.path().join("2.log"));
    let expected = rows(&db).await;
    let customers: BTreeSet<String> =
        (0..30).chain(100..130).map(|c| c.to_string()).chain(expected.keys().cloned()).collect();
    let matches = |e: &Emulator| {
        customers.iter().all(|c| tokens(e, c) == expected.get(c).cloned().unwrap_or_default())
    };
    let converged = wait_for(&emulator, matches).await;
    signal(&daemon, "TERM");
    let stopped = daemon.wait().unwrap().success();
    if !converged || !stopped {
        for c in &customers {
            let (held, want) = (tokens(&emulator, c), expected.get(c).cloned().unwrap_or_default());
            if held != want {
                eprintln!("customer {c}: emulator {held:?}, rows {want:?}");
            }
        }
        for log in ["1.log", "2.log"] {
            let text = std::fs::read_to_string(logs.path().join(log)).unwrap_or_default();
            eprintln!("--- daemon {log} ---\n{text}");
        }
    }
    assert!(converged, "devices differ from rows after kill -9 and restart");
    assert!(stopped);
    assert_requests_valid(&emulator);
}

#[tokio::test]
async fn a_renamed_token_column_pauses_the_devices_table() {
    let db = TestDb::new("devices_schema").await;
    db.exec(USERS_TABLE).await;
    db.exec(DEVICES_TABLE).await;
    let emulator = emulator::start().await;
    // `skip` too: without the token no device call can be mapped.
    let extra = DEVICES_CONFIG
        .replace("[devices.attributes]", "on_schema_change = \"skip\"\n[devices.attributes]");
    let daemon = InProcess::start(&db.config(&emulator.url(), &extra));
    db.wait_for_streaming().await;
    db.exec("INSERT INTO push_tokens (user_id, token, platform) VALUES (1, 'tokA', 'ios')").await;
    assert!(wait_for(&emulator, |e| tokens(e, "1") == set(&["tokA"])).await);

    db.exec(
        "ALTER TABLE push_tokens RENAME COLUMN token TO device_token; \
         INSERT INTO push_tokens (user_id, device_token, platform) VALUES (1, 'tokB', 'ios')",
    )
    .await;
    let paused = || Counters::get(&daemon.counters.schema_pauses) >= 1;
    assert!(wait_for(&emulator, |_| paused()).await, "the devices table did not pause");
    assert_eq!(tokens(&emulator, "1"), set(&["tokA"]));
    assert_eq!(Counters::get(&daemon.counters.changes_skipped_invalid_id), 0, "mapped blind");
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn the_initial_copy_adds_every_existing_device() {
    let db = TestDb::new("devices_copy").await;
    db.exec(USERS_TABLE).await;
    db.exec(DEVICES_TABLE).await;
    db.exec(
        // A device is copied only for a person who syncs.
        "INSERT INTO users (id) SELECT generate_series(0, 6); \
         INSERT INTO push_tokens (user_id, token, platform, app_version) \
         SELECT g % 7, 'tok' || g, 'ios', '1.' || g FROM generate_series(1, 1500) g; \
         UPDATE push_tokens SET revoked_at = now() WHERE id % 10 = 0",
    )
    .await;
    let emulator = emulator::start().await;
    let daemon = InProcess::start(&db.config(&emulator.url(), DEVICES_CONFIG));
    let expected = rows(&db).await;
    assert_eq!(expected.values().map(BTreeSet::len).sum::<usize>(), 1350);
    let matches = |e: &Emulator| expected.iter().all(|(c, want)| tokens(e, c) == *want);
    assert!(wait_for(&emulator, matches).await, "the copy did not add every device");
    // And the stream goes on after it.
    db.wait_for_streaming().await;
    db.exec("DELETE FROM push_tokens WHERE token = 'tok1'").await;
    assert!(wait_for(&emulator, |e| !tokens(e, "1").contains("tok1")).await);
    daemon.stop().await.unwrap();
    assert_requests_valid(&emulator);
}

#[tokio::test]
async fn a_refused_device_is_dead_lettered_and_dlq_retry_sends_the_row_as_it_is_now() {
    let db = TestDb::new("devices_dlq").await;
    db.exec(USERS_TABLE).await;
    db.exec(
        "CREATE TABLE push_tokens (user_id bigint, token text, platform text, push text, \
             PRIMARY KEY (user_id, token))",
    )
    .await;
    let emulator = emulator::start().await;
    let extra = r#"
[[devices]]
table = "push_tokens"
customer_id_column = "user_id"
token_column = "token"
platform_column = "platform"
[devices.attributes]
push_enabled = "push"
"#;
    let text = db.config(&emulator.url(), extra);
    let daemon = InProcess::start(&text);
    db.wait_for_streaming().await;
    // Customer.io takes only "true" or "false" for push_enabled: refused
    // for good, dead-lettered (names, not values); the stream goes on.
    db.exec(
        "INSERT INTO push_tokens VALUES (1, 'bad', 'ios', 'yes'), (1, 'gone', 'ios', 'maybe'); \
         INSERT INTO push_tokens VALUES (2, 'ok', 'android', 'true')",
    )
    .await;
    assert!(wait_for(&emulator, |e| tokens(e, "2") == set(&["ok"])).await);
    let letters = || async {
        let sql = "SELECT operation, customer_id FROM ciosync.dead_letters ORDER BY id";
        let rows = db.client.query(sql, &[]).await.unwrap();
        rows.iter().map(|r| (r.get(0), r.get(1))).collect::<Vec<(String, String)>>()
    };
    let deadline = tokio::time::Instant::now() + crate::support::CONVERGE;
    while letters().await.len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no dead letters: {:?}", letters().await);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let expected = vec![("add_device".to_owned(), "1".to_owned()); 2];
    assert_eq!(letters().await, expected);
    assert!(tokens(&emulator, "1").is_empty());

    // The row is fixed, the other deleted: retry sends the first as it is
    // now and skips the second.
    db.exec(
        "UPDATE push_tokens SET push = 'true', platform = 'android' WHERE token = 'bad'; \
         DELETE FROM push_tokens WHERE token = 'gone'",
    )
    .await;
    let config = config_file(&text);
    let out = crate::support::daemon::run_binary(&["dlq", "retry", "--all"], config.path()).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.starts_with(
            "retried 2: delivered 0, refreshed from the row 1, skipped 1, refused again 0\n"
        ),
        "{stdout}"
    );
    assert!(wait_for(&emulator, |e| tokens(e, "1") == set(&["bad"])).await);
    let device = emulator.devices("1").unwrap().remove(0);
    assert_eq!(
        (device.platform.as_str(), &device.attributes["push_enabled"]),
        ("android", &json!("true"))
    );
    assert!(letters().await.is_empty());
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn a_hot_device_row_costs_a_handful_of_calls() {
    let db = TestDb::new("devices_hot").await;
    db.exec(USERS_TABLE).await;
    db.exec(DEVICES_TABLE).await;
    let emulator = emulator::start().await;
    let text = db.config(&emulator.url(), DEVICES_CONFIG).replacen(
        "linger_ms = 0\n",
        "linger_ms = 100\n",
        1,
    );
    let daemon = InProcess::start(&text);
    db.wait_for_streaming().await;
    db.exec("INSERT INTO push_tokens (user_id, token, platform) VALUES (1, 'hot', 'ios')").await;
    // 300 app launches, each its own transaction, bumping last_seen, while
    // each request takes 1 s: what waits meanwhile merges, however slowly a
    // loaded machine commits.
    emulator.set_faults(Faults { latency_ms: 1000, ..Faults::default() });
    let updates = 300;
    db.exec(&format!(
        "DO $$ BEGIN FOR i IN 1..{updates} LOOP \
             UPDATE push_tokens SET last_seen = to_timestamp(1700000000 + i), app_version = i::text; \
             COMMIT; END LOOP; END $$"
    ))
    .await;
    emulator.set_faults(Faults::default());
    let last = |e: &Emulator| {
        e.devices("1").unwrap_or_default().first().is_some_and(|d| d.last_used == 1_700_000_300)
    };
    assert!(wait_for(&emulator, last).await, "{:?}", emulator.devices("1"));
    let device = emulator.devices("1").unwrap().remove(0);
    assert_eq!(device.attributes["app_version"], json!("300"));
    let adds = crate::support::emulator::batch_items(&emulator)
        .iter()
        .filter(|i| i["action"] == "add_device")
        .count();
    let coalesced = Counters::get(&daemon.counters.ops_coalesced);
    eprintln!("{updates} updates of one device: {adds} add_device items, {coalesced} coalesced");
    assert!(adds < updates / 4, "{adds} add_device items for {updates} updates");
    daemon.stop().await.unwrap();
}
