//! `[[sync.events]]`: a column's transition becomes an event, exactly on the
//! transition, after the identify of the same change.

use serde_json::{json, Value};

use crate::support::emulator::{batch_items, wait_for};
use crate::support::postgres::USERS_TABLE;
use crate::support::Scenario;

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

    db.exec("INSERT INTO users (id, email, plan) VALUES (1, 'a@x.io', 'free')").await;
    db.exec("UPDATE users SET plan = 'pro' WHERE id = 1").await;
    db.exec("UPDATE users SET first_name = 'Ada' WHERE id = 1").await; // no event
    db.exec("UPDATE users SET password_hash = 'h2', password_updated_at = now() WHERE id = 1")
        .await;
    db.exec("UPDATE users SET password_updated_at = NULL WHERE id = 1").await; // cleared: no event
    db.exec("UPDATE users SET plan = 'team' WHERE id = 1").await;
    assert!(wait_for(&emulator, |e| e.events("1").len() >= 3).await, "{:?}", emulator.events("1"));
    // Give a wrongly fired event time to show up.
    db.exec("UPDATE users SET bio = 'marker' WHERE id = 1").await;
    assert!(
        crate::support::emulator::wait_for_attribute(&emulator, "1", "about", json!("marker"))
            .await
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
    let items = batch_items(&emulator);
    let pro_identify = items
        .iter()
        .position(|i| i["action"] == "identify" && i["attributes"]["plan"] == "pro")
        .expect("the identify of plan = pro");
    let pro_event = items
        .iter()
        .position(|i| i["action"] == "event" && i["attributes"]["to"] == "pro")
        .expect("the plan_changed event");
    assert!(pro_identify < pro_event, "{items:?}");
    daemon.stop().await.unwrap();
}
