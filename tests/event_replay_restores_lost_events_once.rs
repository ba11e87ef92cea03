//! `ciosync backfill --events`: an event table's rows sent again as events,
//! with their own timestamps and the ids the stream gave them (derived from
//! the table, the primary key and the name). After Customer.io lost them
//! (an emulator reset) every event comes back once; over events it still
//! has, nothing is added; events of customers deleted since are left out
//! (an event would re-create them); `--since` and `--where` select; what
//! cannot be replayed exits 2 naming the flag or the config key; kill -9
//! mid-replay loses nothing.

use std::collections::BTreeMap;

use ciosync_emulator::{Emulator, Faults};
use serde_json::Value;

use crate::backfill_yields_to_newer_changes::{backfill_state, wait_for_backfill};
use crate::support::daemon::{config_file, run_binary, signal, spawn_binary};
use crate::support::emulator::{self, batch_items, wait_for};
use crate::support::postgres::{TestDb, USERS_TABLE};
use crate::support::Scenario;

const TABLES: &str = "
    CREATE TABLE outbox (
        id bigserial PRIMARY KEY, user_id bigint, name text, payload jsonb,
        occurred_at timestamptz
    );
    CREATE TABLE visits (
        user_id text, seq int, path text, at timestamptz NOT NULL, PRIMARY KEY (user_id, seq)
    );
    CREATE TABLE clicks (user_id bigint, at timestamptz);
    CREATE TABLE untimed (id serial PRIMARY KEY, user_id bigint);
    CREATE TABLE accounts (id text PRIMARY KEY, name text);
";

const EVENTS: &str = r#"
[[events]]
table = "outbox"
customer_id_column = "user_id"
name_column = "name"
data_column = "payload"
timestamp_column = "occurred_at"

[[events]]
table = "public.visits"
customer_id_column = "user_id"
name = "visited"
timestamp_column = "at"
[events.data]
path = "path"

[[events]]
table = "clicks"
customer_id_column = "user_id"
name = "clicked"
timestamp_column = "at"

[[events]]
table = "untimed"
customer_id_column = "user_id"
name = "untimed"

[[objects]]
table = "accounts"
object_type_id = "1"
id_column = "id"
[objects.attributes]
name = "name"
"#;

/// 8 customers; 40 outbox rows for them (a bigint id, as the users'), half of them dated 2024 and half in the
/// last hour, and 250 visits (a two-column key, read in several pages, and
/// a text id, compared with the users' as text), and one outbox row without
/// a time (streamed at its commit time; a replay cannot repeat its id); an
/// account whose id is customer 8's (an object is no person).
const ROWS: &str = "
    INSERT INTO users (id, email) SELECT g, 'u' || g || '@x.io' FROM generate_series(1, 8) g;
    INSERT INTO outbox (user_id, name, payload, occurred_at)
    SELECT 1 + g % 8, 'step_' || (g % 3), jsonb_build_object('n', g),
           CASE WHEN g % 2 = 0 THEN timestamptz '2024-03-01 12:00:00+00' + g * interval '1 hour'
                ELSE now() - g * interval '1 minute' END
    FROM generate_series(1, 40) g;
    INSERT INTO visits (user_id, seq, path, at)
    SELECT (1 + g % 4)::text, g, '/p/' || g, timestamptz '2025-01-01 00:00:00+00' + g * interval '1 day'
    FROM generate_series(1, 250) g;
    INSERT INTO outbox (user_id, name, occurred_at) VALUES (1, 'no_time', NULL);
    INSERT INTO accounts VALUES ('8', 'an account whose id is a deleted customer''s');
";

/// Every customer's events as (id, name, timestamp, data), sorted by id.
fn all_events(emulator: &Emulator) -> BTreeMap<String, Vec<(String, String, i64, String)>> {
    events_of(emulator, 8)
}

/// [`all_events`] of customers 1 to `customers`.
fn events_of(
    emulator: &Emulator,
    customers: i64,
) -> BTreeMap<String, Vec<(String, String, i64, String)>> {
    (1..=customers)
        .map(|c| c.to_string())
        .map(|customer| {
            let mut events: Vec<_> = emulator
                .events(&customer)
                .into_iter()
                .map(|e| {
                    let data = Value::Object(e.data).to_string();
                    (e.id.unwrap_or_default(), e.name, e.timestamp, data)
                })
                .collect();
            events.sort();
            (customer, events)
        })
        .collect()
}

fn event_count(emulator: &Emulator) -> usize {
    all_events(emulator).values().map(Vec::len).sum()
}

async fn replay(args: &[&str], config: &std::path::Path) -> String {
    let out = run_binary(&[&["backfill"], args].concat(), config).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?}: {stdout}{stderr}");
    assert!(stdout.contains("done"), "{args:?}: {stdout}");
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_restores_lost_events_once_and_adds_nothing_to_events_kept() {
    let schema = format!("{USERS_TABLE} {TABLES}");
    let Scenario { db, emulator, daemon } =
        Scenario::start_with("event_replay", &schema, |c| c + EVENTS).await;
    let config = config_file(&db.config(&emulator.url(), EVENTS));
    db.exec(ROWS).await;
    assert!(wait_for(&emulator, |e| event_count(e) == 291).await, "{}", event_count(&emulator));
    // Customer 8 is deleted (and with it, in Customer.io, its 5 events).
    db.exec("DELETE FROM users WHERE id = 8").await;
    assert!(wait_for(&emulator, |e| e.customer("8").is_none()).await);
    let streamed = all_events(&emulator);
    assert_eq!(event_count(&emulator), 286);

    // What cannot be replayed is refused before anything is queued.
    for (args, says) in [
        (vec!["--events", "users"], "--events"),
        (vec!["--events", "untimed"], "events[3].timestamp_column"),
        (vec!["--events", "clicks"], "no primary key"),
        (vec!["--events", "outbox", "--since", "last tuesdayish"], "--since"),
        (vec!["--events", "outbox", "--since", "3 days ago"], "is after now"),
        (vec!["--events", "outbox", "--since", "72"], "--since"),
        (vec!["--events", "nope"], "--events"),
        (vec!["--events", "outbox", "--where", "no_such_column = 1"], "--where"),
        (vec!["--events", "outbox", "--attributes", "plan"], "--attributes"),
    ] {
        let out = run_binary(&[&["backfill"], &args[..]].concat(), config.path()).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    let queued: i64 =
        db.client.query_one("SELECT count(*) FROM ciosync.backfills", &[]).await.unwrap().get(0);
    assert_eq!(queued, 0, "a refused replay was queued");

    // Over events Customer.io still has: each is sent with its streamed id
    // and dropped there.
    emulator.clear_requests();
    let duplicates = emulator.view(|v| v.world().duplicate_events());
    let stdout = replay(&["--events", "outbox"], config.path()).await;
    assert!(stdout.contains("35 rows") && stdout.contains("6 more rows are left out"), "{stdout}");
    assert_eq!(all_events(&emulator), streamed, "a replay over kept events changed them");
    assert_eq!(emulator.view(|v| v.world().duplicate_events()), duplicates + 35);
    let sent: Vec<Value> = batch_items(&emulator);
    assert_eq!(sent.len(), 35, "{sent:?}");
    assert!(sent.iter().all(|i| i["action"] == "event"), "only events: {sent:?}");
    // One row (customer 2's), one left out (deleted customer 8's): singular.
    let stdout = replay(&["--events", "outbox", "--where", "id IN (1, 7)"], config.path()).await;
    assert!(
        stdout.contains(", 1 row\n") && stdout.contains("  1 more row is left out:"),
        "{stdout}"
    );

    // Customer.io lost everything: --since brings back the last day only,
    // then a whole replay the rest (the recent ones once more, dropped).
    emulator.reset();
    let stdout = replay(&["--events", "outbox", "--since", "1 day"], config.path()).await;
    assert!(stdout.contains("15 rows"), "{stdout}");
    assert_eq!(event_count(&emulator), 15);
    let recent = all_events(&emulator);
    for (customer, events) in &recent {
        for event in events {
            assert!(streamed[customer].contains(event), "not as streamed: {event:?}");
        }
    }
    replay(&["--events", "outbox", "--where", "user_id <> 3"], config.path()).await;
    assert_eq!(event_count(&emulator), 30, "all of the outbox but customer 3's 5 old events");
    replay(&["--events", "outbox"], config.path()).await;
    replay(&["--events", "public.visits"], config.path()).await;
    // Everything streamed is back, but the event without a time of its own.
    let mut expected = streamed.clone();
    expected.values_mut().for_each(|events| events.retain(|e| e.1 != "no_time"));
    assert_eq!(all_events(&emulator), expected, "the replays did not restore the events exactly");
    assert!(emulator.customer("8").is_none(), "a replay re-created a deleted customer");
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_replay_loses_no_event_and_duplicates_none() {
    let db = TestDb::new("event_replay_kill").await;
    db.exec(&format!("{USERS_TABLE} {TABLES}")).await;
    db.exec(
        "INSERT INTO users (id) SELECT g FROM generate_series(1, 300) g;
         INSERT INTO visits (user_id, seq, path, at)
         SELECT (1 + g % 300)::text, g, '/bulk', now() - g * interval '1 second'
         FROM generate_series(1, 3000) g",
    )
    .await;
    let emulator = emulator::start().await;
    // One request of 100 events (of 100 customers: a batch holds one
    // operation per customer) at a time, each answered in 400 ms: the
    // replay takes over 10 s, so the kill lands mid-way even on a busy machine.
    let text = db
        .config(&emulator.url(), EVENTS)
        .replace("linger_ms = 0", "linger_ms = 0\nmax_batch_ops = 100\nmax_in_flight = 1");
    let config = config_file(&text);
    let logs = tempfile::tempdir().unwrap();
    let mut daemon = spawn_binary(config.path(), &logs.path().join("1.log"));
    db.wait_for_streaming().await;
    // The rows predate the slot: only a replay sends them. Slow answers,
    // so the kill lands mid-replay.
    emulator.set_faults(Faults { latency_ms: 400, ..Faults::default() });
    // A two-column key: the resume reads on from a saved composite key.
    let out = run_binary(&["backfill", "--events", "visits", "--detach"], config.path()).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id: i64 =
        db.client.query_one("SELECT max(id) FROM ciosync.backfills", &[]).await.unwrap().get(0);
    // Killed once some progress (a saved key) is recorded.
    let deadline = tokio::time::Instant::now() + crate::support::CONVERGE;
    while backfill_state(&db, id).await.1 == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    signal(&daemon, "KILL");
    daemon.wait().unwrap();
    let (state, done) = backfill_state(&db, id).await;
    assert_eq!(state, "running", "killed before the end ({done} rows recorded)");
    let log = std::fs::read_to_string(logs.path().join("1.log")).unwrap_or_default();
    assert!(done > 0, "no progress recorded: the restart would not resume from a saved key: {log}");
    let count = |e: &Emulator| events_of(e, 300).values().map(Vec::len).sum::<usize>();
    assert!(count(&emulator) < 3000, "every event was sent before the kill");

    emulator.set_faults(Faults::default());
    let mut daemon = spawn_binary(config.path(), &logs.path().join("2.log"));
    let finished = wait_for_backfill(&db, id, "done").await;
    signal(&daemon, "TERM");
    daemon.wait().unwrap();
    let log = std::fs::read_to_string(logs.path().join("2.log")).unwrap_or_default();
    assert!(finished, "the replay did not finish after the restart: {log}");
    let events = events_of(&emulator, 300);
    let ids: std::collections::BTreeSet<&String> =
        events.values().flatten().map(|(id, ..)| id).collect();
    assert_eq!(ids.len(), 3000, "every event once");
    assert_eq!(count(&emulator), 3000);
}
