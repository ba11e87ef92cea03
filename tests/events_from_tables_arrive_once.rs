//! Inserts into event tables become Customer.io events: a fixed-name event
//! table and an outbox with a name column and a jsonb payload, each with the
//! row's own timestamp; the identify of the same transaction arrives first;
//! a replay after kill -9 (delivered, not acknowledged) sends the same ids,
//! which Customer.io (the emulator) deduplicates.

use serde_json::{json, Value};

use crate::support::daemon::{config_file, signal, spawn_binary, InProcess};
use crate::support::emulator::{self, batch_items, wait_for};
use crate::support::postgres::{TestDb, USERS_TABLE};
use crate::support::spec::{check, Shape};

const EVENT_TABLES: &str = "
    CREATE TABLE campaign_signups (
        id serial PRIMARY KEY, user_id bigint, campaign_id int, created_at timestamptz
    );
    CREATE TABLE outbox (
        id serial PRIMARY KEY, user_id bigint, name text, payload jsonb, occurred_at timestamptz
    );
";

const EVENTS_CONFIG: &str = r#"
[[events]]
table = "public.campaign_signups"
customer_id_column = "user_id"
name = "campaign_signup"
timestamp_column = "created_at"
[events.data]
campaign = "campaign_id"

[[events]]
table = "outbox"
customer_id_column = "user_id"
name_column = "name"
data_column = "payload"
timestamp_column = "occurred_at"
"#;

#[tokio::test]
async fn event_rows_become_events_in_order_and_a_replay_is_deduplicated() {
    let db = TestDb::new("event_tables").await;
    db.exec(USERS_TABLE).await;
    db.exec(EVENT_TABLES).await;
    let emulator = emulator::start().await;
    // Acknowledgements only every minute: a kill -9 leaves everything delivered unacknowledged.
    let text = db
        .config(&emulator.url(), EVENTS_CONFIG)
        .replace("status_interval_ms = 200", "status_interval_ms = 60000");
    let config = config_file(&text);
    let logs = tempfile::tempdir().unwrap();
    let mut daemon = spawn_binary(config.path(), &logs.path().join("1.log"));
    db.wait_for_streaming().await;

    db.exec(
        "BEGIN; \
         INSERT INTO users (id, email, plan) VALUES (7, 'u7@x.io', 'free'); \
         INSERT INTO campaign_signups (user_id, campaign_id, created_at) \
             VALUES (7, 12, '2024-03-01 12:00:00+00'); \
         COMMIT;",
    )
    .await;
    db.exec(
        "INSERT INTO outbox (user_id, name, payload, occurred_at) VALUES \
         (7, 'cta_email', '{\"type\": \"verify\", \"actionUrl\": \"https://app.example/v?t=1\"}', \
          '2024-03-02 08:30:00+00')",
    )
    .await;
    assert!(wait_for(&emulator, |e| e.events("7").len() == 2).await, "{:?}", emulator.events("7"));

    let events = emulator.events("7");
    assert_eq!(events[0].name, "campaign_signup");
    assert_eq!(Value::Object(events[0].data.clone()), json!({"campaign": 12}));
    assert_eq!(events[0].timestamp, 1_709_294_400, "the row's created_at");
    assert_eq!(events[1].name, "cta_email");
    assert_eq!(
        Value::Object(events[1].data.clone()),
        json!({"type": "verify", "actionUrl": "https://app.example/v?t=1"})
    );
    assert_eq!(events[1].timestamp, 1_709_368_200);
    let ids: Vec<String> = events.iter().map(|e| e.id.clone().expect("an id")).collect();
    assert!(ids.iter().all(|id| id.len() == 26), "{ids:?}");

    // The identify of the transaction went out before its event.
    let actions: Vec<(String, String)> = batch_items(&emulator)
        .iter()
        .map(|i| {
            (i["action"].as_str().unwrap().to_owned(), i["name"].as_str().unwrap_or("").to_owned())
        })
        .collect();
    let identify = actions.iter().position(|(a, _)| a == "identify").expect("an identify");
    let signup = actions.iter().position(|(_, n)| n == "campaign_signup").expect("the event");
    assert!(identify < signup, "{actions:?}");

    // kill -9 before any acknowledgement: the restart replays both events.
    signal(&daemon, "KILL");
    daemon.wait().unwrap();
    let sent_before = event_items(&emulator);
    let mut daemon = spawn_binary(config.path(), &logs.path().join("2.log"));
    assert!(
        wait_for(&emulator, |e| event_items(e) >= sent_before + 2).await,
        "the replay did not send the events again"
    );
    signal(&daemon, "TERM");
    assert!(daemon.wait().unwrap().success());
    let again: Vec<String> = emulator.events("7").iter().filter_map(|e| e.id.clone()).collect();
    assert_eq!(again, ids, "same ids, stored once");
    assert!(emulator.view(|v| v.world().duplicate_events()) >= 2);
}

fn event_items(emulator: &ciosync_emulator::Emulator) -> usize {
    batch_items(emulator).iter().filter(|i| i["action"] == "event").count()
}

#[tokio::test]
async fn a_row_without_a_customer_sends_an_anonymous_event() {
    let db = TestDb::new("anonymous_events").await;
    db.exec(USERS_TABLE).await;
    db.exec(
        "CREATE TABLE page_views (id serial PRIMARY KEY, user_id bigint, visitor text, \
                                  path text, seen_at timestamptz)",
    )
    .await;
    let emulator = emulator::start().await;
    let extra = r#"
[[events]]
table = "page_views"
customer_id_column = "user_id"
anonymous_id_column = "visitor"
name = "viewed_pricing"
timestamp_column = "seen_at"
[events.data]
path = "path"
"#;
    let daemon = crate::support::daemon::InProcess::start(&db.config(&emulator.url(), extra));
    db.wait_for_streaming().await;
    db.exec(
        "INSERT INTO page_views (user_id, visitor, path, seen_at) VALUES \
         (NULL, 'cookie-41', '/pricing', '2024-03-01 12:00:00+00'), \
         (NULL, NULL, '/nobody', now())",
    )
    .await;
    assert!(
        wait_for(&emulator, |e| !e.view(|v| v.world().anonymous_events().is_empty())).await,
        "no anonymous event arrived"
    );
    let events = emulator.view(|v| v.world().anonymous_events().to_vec());
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].name, "viewed_pricing");
    assert_eq!(events[0].anonymous_id.as_deref(), Some("cookie-41"));
    assert_eq!(Value::Object(events[0].data.clone()), json!({"path": "/pricing"}));
    assert_eq!(events[0].timestamp, 1_709_294_400);
    assert_eq!(events[0].id.as_deref().map(str::len), Some(26));
    let v1: Vec<_> =
        emulator.requests().into_iter().filter(|r| r.path == "/api/v1/events").collect();
    assert_eq!(v1.len(), 1, "sent alone to the v1 endpoint");
    assert_eq!(v1[0].status, 200);
    let schema = check(Shape::AnonymousEvent);
    schema.assert_invalid(&json!({"anonymous_id": "x"}), "an event without a name");
    schema.assert_valid(v1[0].body.as_ref().unwrap(), "the anonymous event the sink sent");
    // The row with neither id is skipped and counted, not sent.
    assert!(
        crate::support::eventually(|| {
            daemon.counters.changes_skipped_invalid_id.load(std::sync::atomic::Ordering::Relaxed)
                == 1
        })
        .await
    );
    daemon.stop().await.unwrap();
}

/// Only INSERTs into an event table are events: an UPDATE or DELETE of an
/// event row (even with the whole old row in the WAL) sends nothing.
#[tokio::test]
async fn updates_and_deletes_of_event_rows_send_nothing() {
    let db = TestDb::new("event_rows_changed").await;
    db.exec(USERS_TABLE).await;
    db.exec(EVENT_TABLES).await;
    db.exec("ALTER TABLE campaign_signups REPLICA IDENTITY FULL").await;
    let emulator = emulator::start().await;
    let daemon = InProcess::start(&db.config(&emulator.url(), EVENTS_CONFIG));
    db.wait_for_streaming().await;
    db.exec(
        "INSERT INTO users (id, email) VALUES (7, 'u7@x.io'); \
         INSERT INTO campaign_signups (user_id, campaign_id, created_at) VALUES (7, 12, now()); \
         INSERT INTO outbox (user_id, name, payload, occurred_at) \
             VALUES (7, 'cta', '{}', now());",
    )
    .await;
    assert!(wait_for(&emulator, |e| e.events("7").len() == 2).await);
    let before = emulator.requests().len();

    let end = db
        .exec_then_lsn(
            "UPDATE campaign_signups SET campaign_id = 13, created_at = now(); \
             UPDATE outbox SET name = 'cta_again', payload = '{\"n\": 2}'; \
             DELETE FROM campaign_signups; DELETE FROM outbox;",
        )
        .await;
    // Acknowledged means read and handled: nothing is waiting to be sent.
    assert!(db.wait_for_confirmed(&db.name, end).await, "the changes were not acknowledged");
    assert_eq!(emulator.requests().len(), before, "a call was made for an UPDATE or DELETE");
    assert_eq!(emulator.events("7").len(), 2);
    daemon.stop().await.unwrap();
}
