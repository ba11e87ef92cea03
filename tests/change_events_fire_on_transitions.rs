//! `[[sync.events]]`: a column's transition becomes an event, exactly on the
//! transition, after the identify of the same change.

use std::sync::atomic::Ordering::Relaxed;

use ciosync_emulator::Emulator;
use serde_json::{json, Value};

use crate::support::emulator::{batch_items, wait_for};
use crate::support::postgres::{TestDb, USERS_TABLE};
use crate::support::{eventually, Scenario};

const EVENTS: &str = r#"
[[sync.events]]
name = "plan_changed"
when_changed = "plan"
data = ["email"]

[[sync.events]]
name = "password_updated"
when = "password_updated_at"
"#;

#[tokio::test]
async fn change_events_fire_exactly_on_the_transition() {
    let schema =
        format!("{USERS_TABLE} ALTER TABLE users ADD COLUMN password_updated_at timestamptz;");
    let Scenario { db, emulator, daemon } =
        Scenario::start_with("change_events", &schema, |c| c + EVENTS).await;

    transitions_of_customer_one(&db, &emulator).await;
    daemon.stop().await.unwrap();
}

/// Under DEFAULT identity (what ORMs leave) the WAL has no old row: the
/// events are decided against the values the record of what Customer.io
/// accepted keeps of their columns, seeded by the initial copy and by
/// inserts. The same workload fires the same events as under FULL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_events_fire_under_default_identity_from_the_record() {
    let schema = format!(
        "{USERS_TABLE} ALTER TABLE users ADD COLUMN password_updated_at timestamptz; \
         ALTER TABLE users REPLICA IDENTITY DEFAULT; \
         INSERT INTO users (id, email, plan) VALUES (2, 'b@x.io', 'free');"
    );
    let Scenario { db, emulator, daemon } =
        Scenario::start_with("change_events_default", &schema, |c| c + EVENTS).await;

    // Copied before streaming: the copy recorded its values.
    db.exec("UPDATE users SET plan = 'pro' WHERE id = 2").await;
    transitions_of_customer_one(&db, &emulator).await;
    let copied = emulator.events("2");
    assert_eq!(copied.len(), 1, "{copied:?}");
    assert_eq!(
        Value::Object(copied[0].data.clone()),
        json!({"from": "free", "to": "pro", "email": "b@x.io"})
    );
    assert_eq!(daemon.counters.record_events_unknown.load(Relaxed), 0);

    // A record without the values (an upgrade, a wiped record): the first
    // change is not derived, counted, and recorded; the next one fires.
    db.exec("UPDATE ciosync.accepted SET watched = '{}' WHERE customer_id = '2'").await;
    db.exec("UPDATE users SET plan = 'team' WHERE id = 2").await;
    assert!(eventually(|| daemon.counters.record_events_unknown.load(Relaxed) >= 1).await);
    db.exec("UPDATE users SET plan = 'free' WHERE id = 2").await;
    assert!(wait_for(&emulator, |e| e.events("2").len() >= 2).await, "{:?}", emulator.events("2"));
    let last = db.exec_then_lsn("UPDATE users SET bio = 'marker' WHERE id = 2").await;
    assert!(db.wait_for_confirmed(&db.name, last).await);
    let copied = emulator.events("2");
    assert_eq!(copied.len(), 2, "{copied:?}");
    assert_eq!(
        Value::Object(copied[1].data.clone()),
        json!({"from": "team", "to": "free", "email": "b@x.io"})
    );

    // An UPDATE changing the id and the plan: the merged person takes the
    // old id's recorded values, so the transition still fires, for the new id.
    // (The emulator, as Customer.io, moves the old person's events to the
    // new one with the merge: 3 of them.)
    db.exec("UPDATE users SET id = 11, plan = 'free' WHERE id = 1").await;
    assert!(
        wait_for(&emulator, |e| e.events("11").len() >= 4).await,
        "{:?}",
        emulator.events("11")
    );
    let moved = emulator.events("11");
    let last = moved.iter().max_by_key(|e| e.timestamp).unwrap();
    assert_eq!(last.name, "plan_changed");
    assert_eq!(
        Value::Object(last.data.clone()),
        json!({"from": "team", "to": "free", "email": "a@x.io"})
    );
    daemon.stop().await.unwrap();
}

/// Customer 1's plan and password changes: the events fire exactly on the
/// transitions, each after the identify of the same change.
async fn transitions_of_customer_one(db: &TestDb, emulator: &Emulator) {
    db.exec("INSERT INTO users (id, email, plan) VALUES (1, 'a@x.io', 'free')").await;
    db.exec("UPDATE users SET plan = 'pro' WHERE id = 1").await;
    db.exec("UPDATE users SET first_name = 'Ada' WHERE id = 1").await; // no event
    db.exec("UPDATE users SET password_hash = 'h2', password_updated_at = now() WHERE id = 1")
        .await;
    db.exec("UPDATE users SET password_updated_at = NULL WHERE id = 1").await; // cleared: no event
    db.exec("UPDATE users SET plan = 'team' WHERE id = 1").await;
    assert!(wait_for(emulator, |e| e.events("1").len() >= 3).await, "{:?}", emulator.events("1"));
    // Give a wrongly fired event time to show up.
    db.exec("UPDATE users SET bio = 'marker' WHERE id = 1").await;
    assert!(
        crate::support::emulator::wait_for_attribute(emulator, "1", "about", json!("marker")).await
    );

    let events = emulator.events("1");
    let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["plan_changed", "password_updated", "plan_changed"]);
    assert_eq!(
        Value::Object(events[0].data.clone()),
        json!({"from": "free", "to": "pro", "email": "a@x.io"})
    );
    assert_eq!(
        Value::Object(events[2].data.clone()),
        json!({"from": "pro", "to": "team", "email": "a@x.io"})
    );

    // Each plan_changed follows the identify carrying the new plan.
    let items = batch_items(emulator);
    let of_one = |i: &&Value| i["identifiers"]["id"] == "1";
    let pro_identify = items
        .iter()
        .filter(of_one)
        .position(|i| i["action"] == "identify" && i["attributes"]["plan"] == "pro")
        .expect("the identify of plan = pro");
    let pro_event = items
        .iter()
        .filter(of_one)
        .position(|i| i["action"] == "event" && i["attributes"]["to"] == "pro")
        .expect("the plan_changed event");
    assert!(pro_identify < pro_event, "{items:?}");
}
