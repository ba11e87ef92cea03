//! `ciosync plan` after a mapping change predicts exactly what the
//! following backfill sends (customers and attributes, compared with what
//! the emulator received), lists the customers the record holds whose row
//! is gone, shows ids only when asked, and tells "nothing to send" from
//! "would send" by its exit status.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::backfill_yields_to_newer_changes::wait_for_backfill;
use crate::support::daemon::{config_file, run_binary, InProcess};
use crate::support::emulator::batch_items;
use crate::support::postgres::USERS_TABLE;
use crate::support::{customers_match_rows, Scenario};

async fn plan(config: &std::path::Path, args: &[&str]) -> (Option<i32>, Value) {
    let out = run_binary(&[&["plan", "--json"], args].concat(), config).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(&stdout)
        .unwrap_or_else(|_| panic!("{stdout}{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code(), json)
}

#[tokio::test]
async fn plan_predicts_what_a_backfill_sends() {
    let schema = format!("{USERS_TABLE} ALTER TABLE users REPLICA IDENTITY DEFAULT;");
    let Scenario { db, emulator, daemon } = Scenario::start_with("plan", &schema, |c| c).await;
    db.exec(
        "INSERT INTO users (id, email, plan) \
         SELECT g, 'u' || g || '@x.io', 'free' FROM generate_series(1, 50) g",
    )
    .await;
    assert!(customers_match_rows(&db, &emulator).await);
    let before = config_file(&db.config(&emulator.url(), ""));
    let last = db.exec_then_lsn("UPDATE users SET password_hash = 'h' WHERE id <= 30").await;
    assert!(db.wait_for_confirmed(&db.name, last).await);

    // Everything is in Customer.io: nothing to send.
    let (code, nothing) = plan(before.path(), &[]).await;
    assert_eq!(code, Some(0), "{nothing}");
    assert_eq!(nothing["identifies"], 0);
    assert_eq!(nothing["tables"][0]["unchanged"], 50);
    daemon.stop().await.unwrap();

    // A newly mapped attribute; five customers the record lost; three it
    // holds whose rows are gone (deleted while no slot existed, say).
    let text = db.config(&emulator.url(), "hash = \"password_hash\"\n");
    let after = config_file(&text);
    db.exec(
        "DELETE FROM ciosync.accepted WHERE customer_id IN ('1', '2', '3', '4', '5');
         INSERT INTO ciosync.accepted (slot, customer_id, attributes)
         SELECT current_database(), g::text, '{}' FROM generate_series(9001, 9003) g",
    )
    .await;
    let daemon = InProcess::start(&text);
    db.wait_for_streaming().await;
    let (code, predicted) = plan(after.path(), &[]).await;
    assert_eq!(code, Some(4), "{predicted}");
    let table = &predicted["tables"][0];
    assert_eq!((table["rows"].clone(), table["unknown"].clone()), (50.into(), 5.into()));
    assert_eq!(table["changed"], 45, "{predicted}");
    assert_eq!(predicted["deletes"], 3);
    assert!(table.get("unknown_examples").is_none(), "ids shown without --show-ids");
    let (_, shown) = plan(after.path(), &["--show-ids"]).await;
    assert_eq!(shown["delete_examples"], serde_json::json!(["9001", "9002", "9003"]));

    emulator.clear_requests();
    let out = run_binary(&["backfill", "--detach"], after.path()).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id: i64 =
        db.client.query_one("SELECT max(id) FROM ciosync.backfills", &[]).await.unwrap().get(0);
    assert!(wait_for_backfill(&db, id, "done").await);
    let items = batch_items(&emulator);
    assert_eq!(items.len() as u64, predicted["identifies"].as_u64().unwrap(), "{items:?}");
    let mut sent: BTreeMap<String, u64> = BTreeMap::new();
    for item in &items {
        for name in item["attributes"].as_object().unwrap().keys() {
            *sent.entry(name.clone()).or_default() += 1;
        }
    }
    let counted: BTreeMap<String, u64> =
        serde_json::from_value(predicted["tables"][0]["attributes"].clone()).unwrap();
    assert_eq!(sent, counted);
    assert_eq!(counted["hash"], 50);

    // Sent: only the deletes are left, which no backfill sends.
    let (code, left) = plan(after.path(), &[]).await;
    assert_eq!((left["identifies"].clone(), left["deletes"].clone()), (0.into(), 3.into()));
    assert_eq!(code, Some(4));
    daemon.stop().await.unwrap();
}
