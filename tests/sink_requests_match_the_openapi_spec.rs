//! Every request body the sink sends validates against Customer.io's
//! `/api/v2/batch` schema (the project's own in `tests/fixtures/`, and the
//! published one where available: `support::spec`): identifies with every
//! kind of value (floats, JSON, arrays, null), deletes and merges.

use crate::support::daemon::InProcess;
use crate::support::emulator::{self, wait_for_customers};
use crate::support::postgres::TestDb;
use crate::support::spec::{check, Shape};

#[tokio::test]
async fn every_batch_the_sink_sends_matches_the_published_schema() {
    let db = TestDb::new("sink_spec").await;
    db.exec(
        "CREATE TABLE users (id bigint PRIMARY KEY, email text, first_name text, plan text,
                             created_at timestamptz, bio text, score float8, prefs jsonb, tags text[]);
         ALTER TABLE users REPLICA IDENTITY FULL;",
    )
    .await;
    let emulator = emulator::start().await;
    let extra = "score = \"score\"\nprefs = \"prefs\"\ntags = \"tags\"\n";
    let daemon = InProcess::start(&db.config(&emulator.url(), extra));
    db.wait_for_streaming().await;

    db.exec(
        "INSERT INTO users VALUES (1, 'a@x.io', 'Ann', 'free', now(), 'hi', 0.5, '{\"n\": {\"x\": 1}}', '{a,NULL}'),
                                  (2, 'b@x.io', NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
    )
    .await;
    db.exec("UPDATE users SET bio = NULL, score = 'NaN' WHERE id = 1").await;
    db.exec("UPDATE users SET id = 3 WHERE id = 2").await;
    db.exec("DELETE FROM users WHERE id = 1").await;
    assert!(wait_for_customers(&emulator, |c| c.len() == 1 && c.contains_key("3")).await);
    daemon.stop().await.unwrap();

    let batch = check(Shape::BatchRequest);
    // The check can fail: an item without identifiers, or with two, is refused.
    for bad in [
        serde_json::json!({"batch": [{"type": "person", "action": "identify", "attributes": {}}]}),
        serde_json::json!({"batch": [{"type": "person", "action": "delete", "identifiers": {"id": "1", "email": "a@x.io"}}]}),
    ] {
        batch.assert_invalid(&bad, "a batch item without exactly one identifier");
    }
    let requests: Vec<_> =
        emulator.requests().into_iter().filter(|r| r.path == "/api/v2/batch").collect();
    let actions: Vec<String> = requests
        .iter()
        .flat_map(|r| r.body.as_ref().unwrap()["batch"].as_array().unwrap().clone())
        .map(|item| item["action"].as_str().unwrap().to_owned())
        .collect();
    for action in ["identify", "merge", "delete"] {
        assert!(actions.iter().any(|a| a == action), "no {action} was sent: {actions:?}");
    }
    for request in &requests {
        assert_eq!(request.status, 200);
        batch.assert_valid(request.body.as_ref().unwrap(), "a batch the sink sent");
    }
}

#[tokio::test]
async fn suppress_and_event_items_match_the_published_schema() {
    let db = TestDb::new("sink_spec_events").await;
    db.exec(
        "CREATE TABLE users (id bigint PRIMARY KEY, email text, first_name text, plan text,
                             created_at timestamptz, bio text);
         ALTER TABLE users REPLICA IDENTITY FULL;
         CREATE TABLE outbox (id serial PRIMARY KEY, user_id bigint, name text, payload jsonb,
                              occurred_at timestamptz);",
    )
    .await;
    let emulator = emulator::start().await;
    let extra = r#"
[[sync.events]]
name = "plan_changed"
when_changed = "plan"

[[events]]
table = "outbox"
customer_id_column = "user_id"
name_column = "name"
data_column = "payload"
timestamp_column = "occurred_at"
"#;
    let config = db.config(&emulator.url(), extra).replacen(
        "id_column = \"id\"\n",
        "id_column = \"id\"\ndelete_action = \"suppress\"\n",
        1,
    );
    let daemon = InProcess::start(&config);
    db.wait_for_streaming().await;
    db.exec(
        "INSERT INTO users (id, email, plan) VALUES (1, 'a@x.io', 'free'), (2, 'b@x.io', 'free')",
    )
    .await;
    db.exec("UPDATE users SET plan = 'pro' WHERE id = 1").await;
    db.exec(
        "INSERT INTO outbox (user_id, name, payload, occurred_at) \
         VALUES (1, 'cta', '{\"type\": \"t\", \"n\": [1, 2.5, null]}', now())",
    )
    .await;
    db.exec("DELETE FROM users WHERE id = 2").await;
    assert!(
        emulator::wait_for(&emulator, |e| e.events("1").len() == 2 && e.customer("2").is_none())
            .await
    );
    daemon.stop().await.unwrap();

    let batch = check(Shape::BatchRequest);
    let requests: Vec<_> =
        emulator.requests().into_iter().filter(|r| r.path == "/api/v2/batch").collect();
    let actions: Vec<String> = requests
        .iter()
        .flat_map(|r| r.body.as_ref().unwrap()["batch"].as_array().unwrap().clone())
        .map(|item| item["action"].as_str().unwrap().to_owned())
        .collect();
    for action in ["event", "suppress"] {
        assert!(actions.iter().any(|a| a == action), "no {action} was sent: {actions:?}");
    }
    for request in &requests {
        assert_eq!(request.status, 200);
        batch.assert_valid(request.body.as_ref().unwrap(), "a batch the sink sent");
    }
}
