//! The record's write replaces a known customer's fingerprints whole (no
//! JSON merge for Postgres to do) only while the customer's row is the
//! version read before the send. A row a command blanked or forgot
//! meanwhile gets only what was sent merged in: the view read before is
//! never written back over a change made since.

use std::time::Duration;

use ciosync::pg::connection::ConnectionSettings;
use ciosync::record::store::RecordStore;
use ciosync::record::{Assigned, Effect, Whole, Write};
use ciosync::secret::Secret;
use ciosync::state::State;
use serde_json::{json, Value};

use crate::support::postgres::TestDb;

async fn attributes(db: &TestDb, customer: &str) -> Option<Value> {
    let query = "SELECT attributes FROM ciosync.accepted WHERE slot = 's' AND customer_id = $1";
    db.client.query_opt(query, &[&customer]).await.expect("read").map(|row| row.get(0))
}

/// An identify that set plan, accepted; its whole carries a claim
/// (`stale`) only the view read could have: written, it shows the whole was.
fn accepted(customer: &str, version: u32) -> Effect {
    Effect::Set {
        customer: customer.to_owned(),
        attributes: Assigned::of([("plan", 9)]),
        whole: Some(Box::new(Whole {
            attributes: Assigned::of([("plan", 9), ("stale", 5)]),
            version,
        })),
    }
}

#[tokio::test]
async fn a_row_changed_since_it_was_read_gets_only_what_was_sent() {
    let db = TestDb::new("record_version").await;
    State::open(&db.client, "s").await.expect("open");
    db.exec(
        "INSERT INTO ciosync.accepted (slot, customer_id, attributes) VALUES \
         ('s', '1', '{\"plan\": 1, \"email\": 2}'), ('s', '2', '{\"plan\": 1, \"email\": 2}'), \
         ('s', '3', '{\"plan\": 1}')",
    )
    .await;
    let settings = ConnectionSettings::parse(&Secret::new(db.url.clone()), Duration::from_secs(5))
        .expect("url");
    let store = RecordStore::new(settings, "s".to_owned());
    let known = store.load(&["1", "2", "3"]).await.expect("load");
    assert!(known.values().all(|k| k.version.is_some()), "{known:?}");

    // Meanwhile a command blanks customer 2 and forgets customer 3.
    db.exec(
        "UPDATE ciosync.accepted SET attributes = '{}' WHERE customer_id = '2'; \
         DELETE FROM ciosync.accepted WHERE customer_id = '3'",
    )
    .await;
    let version = |customer: &str| known[customer].version.expect("a version");
    let effects = ["1", "2", "3"].map(|c| accepted(c, version(c)));
    store.write(&Write::of(effects)).await.expect("write");
    assert_eq!(attributes(&db, "1").await, Some(json!({"plan": 9, "stale": 5})), "not replaced");
    assert_eq!(attributes(&db, "2").await, Some(json!({"plan": 9})), "the blank was overwritten");
    assert_eq!(attributes(&db, "3").await, Some(json!({"plan": 9})), "the forget was overwritten");

    // Unchanged since read, all of them are replaced (one statement).
    let known = store.load(&["1", "2", "3"]).await.expect("load");
    let version = |customer: &str| known[customer].version.expect("a version");
    store.write(&Write::of(["1", "2", "3"].map(|c| accepted(c, version(c))))).await.expect("write");
    for customer in ["1", "2", "3"] {
        let whole = Some(json!({"plan": 9, "stale": 5}));
        assert_eq!(attributes(&db, customer).await, whole, "{customer} not replaced");
    }
}
