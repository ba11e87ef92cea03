//! Dead letters for the `dlq` tests: a config whose URL holds a password,
//! a store on the test database, letters shaped like the sink's items, the
//! table's rows, and the check that command output holds no secret.

use ciosync::config::Config;
use ciosync::dead_letter::{DeadLetter, DeadLetterStore};
use serde_json::{json, Value};

use super::daemon::API_KEY;
use super::postgres::TestDb;

/// The Postgres password in the test config (the cluster trusts every
/// login, so any password works; it is there to prove it never leaks).
pub const PG_PASSWORD: &str = "pg-secret-5b7e9";

/// The test database's config with [`PG_PASSWORD`] in its URL.
pub fn config_with_password(db: &TestDb, track_url: &str) -> String {
    let text = db.config(track_url, "");
    let with = text.replace("postgres://postgres@", &format!("postgres://postgres:{PG_PASSWORD}@"));
    assert_ne!(text, with, "the test URL has the expected form");
    with
}

/// A store for the slot of `config_text`.
pub fn store(config_text: &str) -> DeadLetterStore {
    let config = Config::from_toml(config_text, Vec::new()).expect("test config is valid");
    let settings = config.postgres.connection();
    DeadLetterStore::new(settings, config.postgres.slot)
}

/// A refused identify of `id` with `attributes`, as the sink encodes it.
pub fn identify(id: &str, attributes: Value) -> DeadLetter {
    let names = attributes.as_object().expect("an object").keys().cloned().collect();
    let item = json!({"type": "person", "action": "identify", "identifiers": {"id": id},
                      "timestamp": 1_700_000_000, "attributes": attributes});
    letter(id, "identify", names, item)
}

/// A refused delete of `id`.
pub fn delete(id: &str) -> DeadLetter {
    let item = json!({"type": "person", "action": "delete", "identifiers": {"id": id}});
    letter(id, "delete", Vec::new(), item)
}

fn letter(id: &str, operation: &'static str, attributes: Vec<String>, item: Value) -> DeadLetter {
    DeadLetter {
        customer_id: id.to_owned(),
        operation,
        attributes,
        status: 400,
        error: "refused in the test".to_owned(),
        payload: serde_json::to_vec(&item).expect("encodes"),
        attempts: 1,
    }
}

/// One row of `ciosync.dead_letters`, as the tests compare it.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub id: i64,
    pub customer_id: String,
    pub status: i32,
    pub error: String,
    pub attempts: i32,
}

/// Every dead letter in the database, in id order.
pub async fn rows(db: &TestDb) -> Vec<Row> {
    db.client
        .query(
            "SELECT id, customer_id, status, error, attempts FROM ciosync.dead_letters ORDER BY id",
            &[],
        )
        .await
        .expect("read dead letters")
        .iter()
        .map(|r| Row {
            id: r.get(0),
            customer_id: r.get(1),
            status: r.get(2),
            error: r.get(3),
            attempts: r.get(4),
        })
        .collect()
}

/// Fails if a command's stdout or stderr holds the API key, the Postgres
/// password, or any of `more`.
pub fn assert_no_secrets(output: &std::process::Output, more: &[&str]) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    for secret in [API_KEY, PG_PASSWORD].iter().chain(more) {
        assert!(!text.contains(secret), "`{secret}` leaked into: {text}");
    }
}

/// stdout and stderr as text, for assertions and failure messages.
pub fn texts(output: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
