//! `ciosync backfill --table <devices table>`: after Customer.io lost its
//! devices (an emulator reset), the backfill adds every live row's device
//! again with the row's platform, last use and attributes, and none of a
//! soft-deleted or unsendable row; `--where` narrows it; `--ignore-record`
//! makes no difference (said on stderr) and leaves the people's record
//! alone; `--attributes` is refused. A kill -9 of the daemon during a
//! devices backfill of thousands of rows, then a restart: it resumes after
//! its last delivered chunk, and every device matches its row.

use std::collections::{BTreeMap, BTreeSet};

use ciosync_emulator::Emulator;
use serde_json::Value;

use crate::backfill_yields_to_newer_changes::{backfill_state, wait_for_backfill};
use crate::devices_follow_their_table::{assert_requests_valid, DEVICES_CONFIG, DEVICES_TABLE};
use crate::support::daemon::{config_file, run_binary, signal, spawn_binary};
use crate::support::emulator::{batch_items, wait_for};
use crate::support::postgres::{TestDb, USERS_TABLE};
use crate::support::{Scenario, CONVERGE};

/// A device as the row says Customer.io should hold it: (token, platform,
/// last used, attributes).
type Held = (String, String, i64, BTreeMap<String, String>);

/// `rows` devices of 50 customers (0 to 49; those of 0, 10, … all revoked), iOS and
/// android in mixed case, a tenth revoked, every 97th row on a platform
/// Customer.io does not take.
fn devices_sql(rows: u32) -> String {
    format!(
        "INSERT INTO users (id, email) SELECT g, 'u' || g || '@x.io' FROM generate_series(0, 49) g;
         INSERT INTO push_tokens (user_id, token, platform, last_seen, app_version, push)
         SELECT g % 50, 'tok' || g,
                CASE WHEN g % 97 = 0 THEN 'web' WHEN g % 2 = 0 THEN 'iOS' ELSE 'ANDROID' END,
                to_timestamp(1700000000 + g), '1.' || g, g % 3 = 0
         FROM generate_series(1, {rows}) g;
         UPDATE push_tokens SET revoked_at = now() WHERE id % 10 = 0;"
    )
}

/// Each customer's devices as the rows say (`condition` holding), live
/// rows on a platform Customer.io takes only.
async fn expected(db: &TestDb, condition: &str) -> BTreeMap<String, BTreeSet<Held>> {
    let sql = format!(
        "SELECT user_id::text, token, lower(platform), extract(epoch FROM last_seen)::bigint,
                app_version, push::text
         FROM push_tokens
         WHERE revoked_at IS NULL AND lower(platform) IN ('ios', 'android') AND ({condition})"
    );
    let mut out: BTreeMap<String, BTreeSet<Held>> = BTreeMap::new();
    for row in db.client.query(&sql, &[]).await.unwrap() {
        let attributes = BTreeMap::from([
            ("app_version".to_owned(), row.get(4)),
            ("push_enabled".to_owned(), row.get(5)),
        ]);
        out.entry(row.get(0)).or_default().insert((row.get(1), row.get(2), row.get(3), attributes));
    }
    out
}

/// What the emulator holds of customers 0 to 49, in the same form.
fn held(emulator: &Emulator) -> BTreeMap<String, BTreeSet<Held>> {
    (0..50)
        .map(|c| c.to_string())
        .filter_map(|c| {
            let devices = emulator.devices(&c).unwrap_or_default();
            let held: BTreeSet<Held> = devices
                .into_iter()
                .map(|d| (d.token, d.platform, d.last_used, strings(&d.attributes)))
                .collect();
            (!held.is_empty()).then_some((c, held))
        })
        .collect()
}

/// Device attributes, each a string as Customer.io takes them (anything
/// else shows as its JSON).
fn strings(attributes: &serde_json::Map<String, Value>) -> BTreeMap<String, String> {
    let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
    attributes.iter().map(|(k, v)| (k.clone(), text(v))).collect()
}

/// Counts of `(customers, devices)`, for messages.
fn size(devices: &BTreeMap<String, BTreeSet<Held>>) -> (usize, usize) {
    (devices.len(), devices.values().map(BTreeSet::len).sum())
}

async fn backfill(config: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = run_binary(&[&["backfill"], args].concat(), config).await;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[tokio::test]
async fn a_devices_backfill_restores_every_live_device_after_a_reset() {
    let schema = format!("{USERS_TABLE}{DEVICES_TABLE}{}", devices_sql(1500));
    let Scenario { db, emulator, daemon } =
        Scenario::start_with("devices_backfill", &schema, |c| c + DEVICES_CONFIG).await;
    let all = expected(&db, "true").await;
    assert_eq!(size(&all), (45, 1336), "1500 rows, 150 revoked, 14 live on the web");
    assert!(wait_for(&emulator, |e| held(e) == all).await, "the initial copy differs");
    let config = config_file(&(db.config(&emulator.url(), "") + DEVICES_CONFIG));

    // Customer.io lost everything: the devices come back, exactly the rows'.
    emulator.reset();
    let (code, stdout, stderr) = backfill(config.path(), &["--table", "push_tokens"]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("public.push_tokens, 1500 rows"), "{stdout}");
    let restored = held(&emulator);
    assert_eq!(size(&restored), size(&all));
    assert_eq!(restored, all, "the backfill's devices differ from the rows");
    assert!(emulator.customers().keys().all(|c| all.contains_key(c)), "a person from nothing");
    let items = batch_items(&emulator);
    let deletes = items.iter().filter(|i| i["action"] == "delete_device").count();
    assert_eq!(deletes, 150, "a revoked row is sent as a delete_device");
    assert_requests_valid(&emulator);

    // --where narrows it, nested as the reader nests it; --ignore-record is
    // said to change nothing, and the people's record stays.
    emulator.reset();
    let recorded = "SELECT count(*) FROM ciosync.accepted WHERE customer_id <> ''";
    let marked = "SELECT count(*) FROM ciosync.accepted WHERE attributes ? 'public.push_tokens'";
    let marks: i64 = db.client.query_one(marked, &[]).await.unwrap().get(0);
    assert_eq!(marks, 0, "a devices table marked complete in the record of people");
    let people: i64 = db.client.query_one(recorded, &[]).await.unwrap().get(0);
    assert_eq!(people, 50);
    let narrow = ["--table", "public.push_tokens", "--where", "user_id < 5", "--ignore-record"];
    let (code, stdout, stderr) = backfill(config.path(), &narrow).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("public.push_tokens, 150 rows"), "{stdout}");
    assert!(stdout.contains("devices done 150/150 rows"), "{stdout}");
    assert!(stderr.contains("--ignore-record makes no difference for public.push_tokens"));
    let some = expected(&db, "user_id < 5").await;
    assert_eq!(held(&emulator), some, "--where did not narrow the backfill");
    let left: i64 = db.client.query_one(recorded, &[]).await.unwrap().get(0);
    assert_eq!(left, 50, "a devices backfill forgot people's record");

    // Refused: attributes of devices; shown: its status.
    let (code, _, stderr) =
        backfill(config.path(), &["--table", "push_tokens", "--attributes", "email"]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("is a [[devices]] table, whose rows are sent whole"), "{stderr}");
    let (code, status, _) = backfill(config.path(), &["--status"]).await;
    assert_eq!(code, Some(0));
    assert_eq!(status.matches("public.push_tokens devices done").count(), 2, "{status}");
    // A backfill of every table leaves devices out, and says so.
    let (code, stdout, stderr) = backfill(config.path(), &["--detach"]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(!stdout.contains("push_tokens"), "{stdout}");
    assert!(stderr
        .contains("public.push_tokens is a [[devices]] table, not in a backfill of every table"));
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_devices_backfill_killed_mid_way_resumes_and_every_device_matches() {
    let db = TestDb::new("devices_backfill_kill9").await;
    db.exec(USERS_TABLE).await;
    db.exec(DEVICES_TABLE).await;
    db.exec(&devices_sql(4000)).await;
    let emulator = crate::support::emulator::start().await;
    // No initial copy: Customer.io has none of the devices, as after a
    // reset. 50 items a request, two requests a second: the 4,000 rows take
    // 40 s, and the kill comes in the middle. A small budget keeps chunks
    // small (a quarter of it), so progress is recorded every few seconds.
    let base = db.config(&emulator.url(), DEVICES_CONFIG) + "\n[pipeline]\ninitial_sync = false\n";
    let slow = base
        .replacen(
            "linger_ms = 0\n",
            "linger_ms = 0\nmax_batch_ops = 50\nmax_in_flight = 1\nmax_requests_per_second = 2\n",
            1,
        )
        .replacen(
            "initial_sync = false\n",
            "initial_sync = false\nmax_pending_bytes = 2097152\n",
            1,
        );
    let (slow, fast) = (config_file(&slow), config_file(&base));
    let logs = tempfile::tempdir().unwrap();
    let log = |n: &str| logs.path().join(n);
    let mut daemon = spawn_binary(slow.path(), &log("1.log"));
    db.wait_for_streaming().await;
    let (code, stdout, stderr) =
        backfill(fast.path(), &["--table", "push_tokens", "--detach"]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let id: i64 =
        db.client.query_one("SELECT max(id) FROM ciosync.backfills", &[]).await.unwrap().get(0);
    let deadline = tokio::time::Instant::now() + CONVERGE;
    while backfill_state(&db, id).await.1 < 600 {
        assert!(tokio::time::Instant::now() < deadline, "the backfill made no progress");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    signal(&daemon, "KILL");
    daemon.wait().unwrap();
    let (state, done_before) = backfill_state(&db, id).await;
    assert_eq!(state, "running");
    assert!(done_before < 4000, "it finished before the kill: nothing was at stake");
    // A row changed while the daemon is down comes from the slot.
    db.exec("UPDATE push_tokens SET app_version = 'late' WHERE id = 1").await;

    let mut daemon = spawn_binary(fast.path(), &log("2.log"));
    let finished = wait_for_backfill(&db, id, "done").await;
    let all = expected(&db, "true").await;
    let matched = wait_for(&emulator, |e| held(e) == all).await;
    signal(&daemon, "TERM");
    assert!(daemon.wait().unwrap().success());
    if !finished || !matched {
        for name in ["1.log", "2.log"] {
            eprintln!("--- {name}\n{}", std::fs::read_to_string(log(name)).unwrap_or_default());
        }
    }
    assert!(finished, "the backfill did not finish after the restart");
    assert_eq!(backfill_state(&db, id).await.1, 4000);
    assert!(
        matched,
        "devices differ from the rows: held {:?}, rows {:?}",
        size(&held(&emulator)),
        size(&all)
    );
    // Resumed after its last delivered chunk, not from the start: the first
    // row was sent by the first run (and again by the stream's update) only.
    let first = batch_items(&emulator)
        .into_iter()
        .filter(|i| i["action"] == "add_device" && i["device"]["token"] == "tok1")
        .count();
    assert_eq!(first, 2, "the first chunk was sent again after the restart");
    assert_requests_valid(&emulator);
}

/// Rows the stream changes while their chunk is read are left to the
/// stream and read again: the device calls each row's newest values,
/// whatever the backfill read before. The stream notes a change under the
/// key the backfill pages the table by (here its primary key). The moves
/// go to the rows just after the last delivered key, in the chunk being
/// read, and the daemon's log says how many rows yielded: some must have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_devices_backfill_racing_live_updates_ends_with_the_newest_values() {
    let db = TestDb::new("devices_backfill_race").await;
    db.exec(&format!(
        "{USERS_TABLE}{DEVICES_TABLE}{}
         CREATE FUNCTION slowly() RETURNS boolean LANGUAGE sql VOLATILE
             AS 'SELECT pg_sleep(0.0002); SELECT true';",
        devices_sql(3000)
    ))
    .await;
    let emulator = crate::support::emulator::start().await;
    let config = config_file(&(db.config(&emulator.url(), "") + DEVICES_CONFIG));
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("run.log");
    let mut daemon = spawn_binary(config.path(), &log);
    db.wait_for_streaming().await;
    let all = expected(&db, "true").await;
    assert!(wait_for(&emulator, |e| held(e) == all).await, "the initial copy differs");

    emulator.reset();
    let args = ["--table", "push_tokens", "--where", "slowly()", "--detach"];
    let (code, stdout, stderr) = backfill(config.path(), &args).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let id: i64 =
        db.client.query_one("SELECT max(id) FROM ciosync.backfills", &[]).await.unwrap().get(0);
    let next = "SELECT coalesce(last_key::int, 0) FROM ciosync.backfills WHERE id = $1";
    for round in 0..40 {
        let version = format!(
            "UPDATE push_tokens SET app_version = 'r{round}' WHERE id % 50 = {}",
            round % 50
        );
        db.exec(&version).await;
        // Just past the last delivered chunk: the chunk being read.
        let after: i32 = db.client.query_one(next, &[&id]).await.unwrap().get(0);
        let moved = format!(
            "UPDATE push_tokens SET user_id = (user_id + 1) % 50 WHERE id BETWEEN {} AND {}",
            after + 1 + round * 5,
            after + 5 + round * 5
        );
        db.exec(&moved).await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let racing = backfill_state(&db, id).await.0 == "running";
    assert!(wait_for_backfill(&db, id, "done").await, "the backfill did not finish");
    let all = expected(&db, "true").await;
    let matched = wait_for(&emulator, |e| held(e) == all).await;
    signal(&daemon, "TERM");
    assert!(daemon.wait().unwrap().success());
    if !matched {
        let now = held(&emulator);
        let stale: Vec<_> =
            all.iter().filter(|(c, d)| now.get(*c) != Some(d)).map(|(c, _)| c).collect();
        panic!("the devices of customers {stale:?} differ from their rows");
    }
    assert!(racing, "the updates did not race the backfill (it finished too early)");
    let text = std::fs::read_to_string(&log).unwrap();
    let done = text.lines().find(|l| l.contains("backfill done")).unwrap_or_default();
    // Without the terminal's colours (`\x1b[…m`).
    let mut plain = String::new();
    let mut chars = done.chars();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => _ = chars.by_ref().find(|&c| c == 'm'),
            c => plain.push(c),
        }
    }
    let yielded = plain
        .split_whitespace()
        .find_map(|field| field.strip_prefix("rows_yielded="))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(yielded.is_some_and(|n| n > 0), "no chunk yielded to the stream: {plain}");
}

/// A device whose customer no longer syncs is never sent: its
/// `add_device` would create the person in Customer.io. Customer 900 has
/// devices and no row (the initial copy leaves them out); customer 7's row
/// is deleted after the copy (the stream deletes the person, then the
/// backfill leaves their devices out). A revoked device of customer 900
/// still goes, as a `delete_device`, which creates nobody. The command
/// and `plan` say how many rows are left out.
#[tokio::test]
async fn a_devices_backfill_leaves_out_the_devices_of_customers_who_do_not_sync() {
    let orphans = "INSERT INTO push_tokens (user_id, token, platform, revoked_at) VALUES
                   (900, 'orphan1', 'ios', NULL), (900, 'orphan2', 'android', NULL),
                   (900, 'orphan3', 'ios', now());";
    let schema = format!("{USERS_TABLE}{DEVICES_TABLE}{}{orphans}", devices_sql(300));
    let Scenario { db, emulator, daemon } =
        Scenario::start_with("devices_backfill_orphans", &schema, |c| c + DEVICES_CONFIG).await;
    let living = "user_id IN (SELECT id FROM users)";
    let all = expected(&db, living).await;
    assert!(wait_for(&emulator, |e| held(e) == all).await, "the initial copy differs");
    assert!(!emulator.customers().contains_key("900"), "the initial copy created customer 900");
    let config = config_file(&(db.config(&emulator.url(), "") + DEVICES_CONFIG));

    db.exec("DELETE FROM users WHERE id = 7").await;
    assert!(wait_for(&emulator, |e| !e.customers().contains_key("7")).await, "7 not deleted");
    // 6 live rows of customer 7, 2 of customer 900 are left out.
    let before = batch_items(&emulator).len();
    let (code, stdout, stderr) = backfill(config.path(), &["--table", "push_tokens"]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("public.push_tokens, 295 rows"), "{stdout}");
    assert!(stdout.contains("8 more rows are left out"), "{stdout}");
    assert!(stdout.contains("devices done 295/295 rows"), "{stdout}");
    let customers = emulator.customers();
    assert!(!customers.contains_key("7"), "the backfill re-created a deleted person");
    assert!(!customers.contains_key("900"), "the backfill created a person from nothing");
    let items = batch_items(&emulator).split_off(before);
    let sent = |action: &str, customer: &str| {
        let of = |i: &&Value| i["action"] == action && i["identifiers"]["id"] == customer;
        items.iter().filter(of).count()
    };
    assert_eq!(sent("add_device", "7") + sent("add_device", "900"), 0, "an orphan device went");
    assert_eq!(sent("delete_device", "900"), 1, "the revoked device of 900 was not deleted");
    assert_eq!(held(&emulator), expected(&db, living).await);

    let plan = run_binary(&["plan", "--table", "push_tokens"], config.path()).await;
    let plan = String::from_utf8_lossy(&plan.stdout).into_owned();
    assert!(plan.contains("295 rows"), "{plan}");
    assert!(plan.contains("8 more rows left out"), "{plan}");
    daemon.stop().await.unwrap();
}

/// The stream notes a devices table's changes under the key it read when
/// the lease began; a primary key changed since would leave the backfill's
/// chunks blind to them, so the backfill fails, saying to restart ciosync.
#[tokio::test]
async fn a_devices_backfill_fails_when_the_key_changed_since_ciosync_started() {
    let schema = format!("{USERS_TABLE}{DEVICES_TABLE}{}", devices_sql(100));
    let Scenario { db, emulator, daemon } =
        Scenario::start_with("devices_backfill_rekeyed", &schema, |c| c + DEVICES_CONFIG).await;
    let all = expected(&db, "true").await;
    assert!(wait_for(&emulator, |e| held(e) == all).await, "the initial copy differs");
    let config = config_file(&(db.config(&emulator.url(), "") + DEVICES_CONFIG));
    db.exec(
        "ALTER TABLE push_tokens DROP CONSTRAINT push_tokens_pkey, \
         ADD PRIMARY KEY (user_id, token)",
    )
    .await;
    let (code, stdout, stderr) = backfill(config.path(), &["--table", "push_tokens"]).await;
    assert_ne!(code, Some(0), "{stdout}{stderr}");
    let error: Option<String> = db
        .client
        .query_one("SELECT error FROM ciosync.backfills ORDER BY id DESC LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    let error = error.unwrap_or_default();
    assert!(error.contains("paged by (user_id, token) now"), "{error}");
    assert!(error.contains("notes its changes under (id)"), "{error}");
    assert!(error.contains("restart ciosync"), "{error}");
    daemon.stop().await.unwrap();
}

/// `on_slot_lost = "recreate_and_backfill"` backfills the `[[devices]]`
/// tables too, after the people: a device added, and one revoked, while no
/// slot existed reach Customer.io.
#[tokio::test]
async fn a_lost_slot_is_recovered_with_a_backfill_of_the_devices_tables_too() {
    let schema = format!("{USERS_TABLE}{DEVICES_TABLE}{}", devices_sql(100));
    let Scenario { db, emulator, daemon } =
        Scenario::start_with("devices_slot_recreated", &schema, |c| c + DEVICES_CONFIG).await;
    let all = expected(&db, "true").await;
    assert!(wait_for(&emulator, |e| held(e) == all).await, "the initial copy differs");
    daemon.stop().await.unwrap();

    db.wait_for_slot_released().await;
    db.exec(&format!("SELECT pg_drop_replication_slot('{}')", db.name)).await;
    db.exec(
        "INSERT INTO push_tokens (user_id, token, platform, last_seen, app_version, push) \
         VALUES (3, 'gap', 'ios', to_timestamp(1700000000), '9.9', true); \
         UPDATE push_tokens SET revoked_at = now() WHERE id = 1",
    )
    .await;
    let recreate = (db.config(&emulator.url(), "") + DEVICES_CONFIG).replacen(
        "status_interval_ms = 200\n",
        "status_interval_ms = 200\non_slot_lost = \"recreate_and_backfill\"\n",
        1,
    );
    let daemon = crate::support::daemon::InProcess::start(&recreate);
    db.wait_for_streaming().await;
    let queued: Vec<String> = db
        .client
        .query("SELECT table_name FROM ciosync.backfills ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(queued, ["public.users", "public.push_tokens"], "people first, then devices");
    let id: i64 =
        db.client.query_one("SELECT max(id) FROM ciosync.backfills", &[]).await.unwrap().get(0);
    assert!(wait_for_backfill(&db, id, "done").await, "the devices backfill did not finish");
    let all = expected(&db, "true").await;
    assert!(all["3"].iter().any(|(token, ..)| token == "gap"));
    assert!(wait_for(&emulator, |e| held(e) == all).await, "the gap's devices are missing");
    daemon.stop().await.unwrap();
}

/// Under `REPLICA IDENTITY USING INDEX (user_id, token)` beside a
/// surrogate primary key `id` (what the backfill pages by), a DELETE's old
/// row holds no id: the chunk being read cannot tell which of its rows
/// went, so it yields whole and is read again, and never adds back a
/// device the stream deleted meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_devices_backfill_adds_back_no_device_deleted_under_an_index_identity() {
    let db = TestDb::new("devices_backfill_index_identity").await;
    db.exec(&format!(
        "{USERS_TABLE}
         CREATE TABLE push_tokens (
             id serial PRIMARY KEY, user_id bigint NOT NULL, token text NOT NULL,
             platform text, last_seen timestamptz, app_version text, push boolean,
             revoked_at timestamptz
         );
         CREATE UNIQUE INDEX push_tokens_pair ON push_tokens (user_id, token);
         ALTER TABLE push_tokens REPLICA IDENTITY USING INDEX push_tokens_pair;
         {}
         CREATE FUNCTION slowly() RETURNS boolean LANGUAGE sql VOLATILE
             AS 'SELECT pg_sleep(0.0002); SELECT true';",
        devices_sql(3000)
    ))
    .await;
    let emulator = crate::support::emulator::start().await;
    let config = config_file(&(db.config(&emulator.url(), "") + DEVICES_CONFIG));
    let logs = tempfile::tempdir().unwrap();
    let mut daemon = spawn_binary(config.path(), &logs.path().join("run.log"));
    db.wait_for_streaming().await;
    let all = expected(&db, "true").await;
    assert!(wait_for(&emulator, |e| held(e) == all).await, "the initial copy differs");

    emulator.reset();
    let args = ["--table", "push_tokens", "--where", "slowly()", "--detach"];
    let (code, stdout, stderr) = backfill(config.path(), &args).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let id: i64 =
        db.client.query_one("SELECT max(id) FROM ciosync.backfills", &[]).await.unwrap().get(0);
    let next = "SELECT coalesce(last_key::int, 0) FROM ciosync.backfills WHERE id = $1";
    let mut deleted = 0;
    for round in 0..40 {
        // Just past the last delivered chunk: the chunk being read.
        let after: i32 = db.client.query_one(next, &[&id]).await.unwrap().get(0);
        let delete = format!(
            "DELETE FROM push_tokens WHERE id BETWEEN {} AND {}",
            after + 1 + round * 5,
            after + 5 + round * 5
        );
        deleted += db.client.execute(&delete, &[]).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let racing = backfill_state(&db, id).await.0 == "running";
    assert!(wait_for_backfill(&db, id, "done").await, "the backfill did not finish");
    let all = expected(&db, "true").await;
    let matched = wait_for(&emulator, |e| held(e) == all).await;
    signal(&daemon, "TERM");
    assert!(daemon.wait().unwrap().success());
    if !matched {
        let now = held(&emulator);
        let back: usize = now
            .iter()
            .map(|(c, d)| d.difference(all.get(c).unwrap_or(&BTreeSet::new())).count())
            .sum();
        panic!("{back} devices deleted during the backfill are back in Customer.io");
    }
    assert!(deleted > 0 && racing, "the deletes did not race the backfill");
}
