//! `dlq retry` never sets a customer back to older values (issue 26): a
//! refused identify whose row changed since, and whose change was
//! delivered, is replayed with the row's current values, never the refused
//! ones; a refused delete of a customer whose row was inserted again is
//! stale and skipped; an identify whose row was deleted since sends
//! nothing; an event is replayed exactly as it was refused. The daemon runs
//! throughout, as it would in production.

use ciosync_emulator::Faults;
use serde_json::{json, Value};

use crate::support::daemon::{config_file, run_binary};
use crate::support::dead_letters::{assert_no_secrets, texts};
use crate::support::emulator::{batch_items, wait_for, wait_for_attribute, wait_for_customers};
use crate::support::postgres::{TestDb, USERS_TABLE};
use crate::support::Scenario;

const EVENTS: &str = "
    CREATE TABLE activity (id serial PRIMARY KEY, user_id bigint, name text);
";

const CONFIG: &str = r#"
[[events]]
table = "public.activity"
customer_id_column = "user_id"
name_column = "name"
"#;

fn reject_ids(id: &str) -> Faults {
    Faults { reject_ids: vec![id.into()], ..Faults::default() }
}

/// Runs `sql` while Customer.io refuses what it sends, and waits until its
/// dead letter of `operation` for `customer` is stored.
async fn refused(db: &TestDb, emulator: &ciosync_emulator::Emulator, faults: Faults, sql: &str) {
    emulator.set_faults(faults);
    let before = letters(db).await;
    db.exec(sql).await;
    let deadline = tokio::time::Instant::now() + crate::support::CONVERGE;
    while letters(db).await == before {
        assert!(tokio::time::Instant::now() < deadline, "no dead letter for: {sql}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    emulator.set_faults(Faults::default());
}

async fn letters(db: &TestDb) -> i64 {
    db.client.query_one("SELECT count(*) FROM ciosync.dead_letters", &[]).await.unwrap().get(0)
}

/// The plan each accepted identify of customer `id` set, in the order
/// Customer.io accepted them.
fn plans_sent(emulator: &ciosync_emulator::Emulator, id: &str) -> Vec<Value> {
    batch_items(emulator)
        .into_iter()
        .filter(|i| i["action"] == "identify" && i["identifiers"]["id"] == id)
        .filter_map(|i| i["attributes"].get("plan").cloned())
        .collect()
}

#[tokio::test]
async fn a_replay_sends_the_current_row_and_skips_stale_removals() {
    let schema = format!("{USERS_TABLE}{EVENTS}");
    let Scenario { db, emulator, daemon } =
        Scenario::start_with("dlq_never_back", &schema, |c| c + CONFIG).await;

    // (a) An identify refused with plan one; plan two delivered after it.
    refused(&db, &emulator, reject_ids("7"), "INSERT INTO users (id, plan) VALUES (7, 'one')")
        .await;
    db.exec("UPDATE users SET plan = 'two' WHERE id = 7").await;
    assert!(wait_for_attribute(&emulator, "7", "plan", "two".into()).await);

    // (b) A delete refused; the row inserted again with the same id and delivered.
    db.exec("INSERT INTO users (id, plan) VALUES (8, 'first')").await;
    assert!(wait_for_customers(&emulator, |c| c.contains_key("8")).await);
    refused(&db, &emulator, reject_ids("8"), "DELETE FROM users WHERE id = 8").await;
    db.exec("INSERT INTO users (id, plan) VALUES (8, 'back')").await;
    assert!(wait_for_attribute(&emulator, "8", "plan", "back".into()).await);

    // (c) An identify refused, then its row deleted (the delete delivered).
    refused(&db, &emulator, reject_ids("9"), "INSERT INTO users (id, plan) VALUES (9, 'gone')")
        .await;
    db.exec("DELETE FROM users WHERE id = 9").await;

    // (d) A person event refused.
    db.exec("INSERT INTO users (id, plan) VALUES (10, 'ten')").await;
    assert!(wait_for_customers(&emulator, |c| c.contains_key("10")).await);
    let event_names = Faults { reject_event_names: vec!["signed_up".into()], ..Faults::default() };
    refused(
        &db,
        &emulator,
        event_names,
        "INSERT INTO activity (user_id, name) VALUES (10, 'signed_up')",
    )
    .await;
    let end = db.current_lsn().await;
    assert!(
        db.wait_for_confirmed(&db.name, end).await,
        "everything before the retry is acknowledged"
    );

    let stored: Vec<(i64, String, Value)> = db
        .client
        .query("SELECT id, operation, payload FROM ciosync.dead_letters ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let operations: Vec<&str> = stored.iter().map(|(_, op, _)| op.as_str()).collect();
    assert_eq!(operations, ["identify", "delete", "identify", "event"]);
    assert_eq!(plans_sent(&emulator, "7"), [json!("two")], "only plan two reached Customer.io");

    let config = config_file(&db.config(&emulator.url(), CONFIG));
    let retried = run_binary(&["dlq", "retry", "--all"], config.path()).await;
    let (stdout, stderr) = texts(&retried);
    assert!(retried.status.success(), "{stdout}{stderr}");
    assert_no_secrets(&retried, &[]);
    assert_eq!(letters(&db).await, 0, "every letter is settled");

    // (a) Customer.io holds the current row, and plan one never came after two.
    assert_eq!(emulator.customer("7").unwrap()["plan"], "two");
    let plans = plans_sent(&emulator, "7");
    assert!(!plans.contains(&json!("one")), "the refused values were sent: {plans:?}");
    assert_eq!(plans, [json!("two"), json!("two")], "the replay sent the current row again");
    // (b) The customer whose row came back is still there.
    assert_eq!(emulator.customer("8").unwrap()["plan"], "back");
    let deletes_of_8 = batch_items(&emulator)
        .iter()
        .filter(|i| i["action"] == "delete" && i["identifiers"]["id"] == "8")
        .count();
    assert_eq!(deletes_of_8, 0, "the stale delete was never sent");
    // (c) Nothing was sent for the customer whose row is gone.
    assert!(emulator.customer("9").is_none());
    let identifies_of_9 = batch_items(&emulator)
        .iter()
        .filter(|i| i["action"] == "identify" && i["identifiers"]["id"] == "9")
        .count();
    assert_eq!(identifies_of_9, 0, "customer 9 was identified");
    // (d) The event went as it was refused, byte for byte the stored item.
    let event = &stored[3].2;
    let sent: Vec<Value> =
        batch_items(&emulator).into_iter().filter(|i| i["action"] == "event").collect();
    assert_eq!(sent, std::slice::from_ref(event));
    assert!(wait_for(&emulator, |e| e.events("10").iter().any(|ev| ev.name == "signed_up")).await);
    let (delete_letter, gone_letter) = (stored[1].0, stored[2].0);
    assert_eq!(
        stdout,
        format!(
            "retried 4: delivered 1, refreshed from the row 1, skipped 2, refused again 0\n  \
             #{delete_letter} skipped: its row exists again and syncs; the removal \
             is stale\n  \
             #{gone_letter} skipped: the row is gone or no longer syncs; its removal goes \
             through the stream\n"
        )
    );
    daemon.stop().await.unwrap();
}
