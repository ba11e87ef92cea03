//! Shared fixtures: a throwaway Postgres per test binary (one database per
//! test), the emulator in-process, the daemon in-process or as the built
//! binary, and a reporting-webhook receiver.

#![allow(dead_code)]

pub mod daemon;
pub mod dead_letters;
pub mod deploy;
pub mod emulator;
pub mod endpoint;
pub mod leaks;
pub mod measured;
pub mod memory;
pub mod postgres;
pub mod proxy;
pub mod spec;
pub mod standby;
pub mod tls;
pub mod tools;
pub mod webhook_receiver;
pub mod webhooks;

use std::time::Duration;

/// How long a test waits for the daemon to converge before failing.
pub const CONVERGE: Duration = Duration::from_secs(30);

use ciosync_emulator::Emulator;

use daemon::InProcess;
use postgres::{TestDb, USERS_TABLE};

/// The usual scenario: a database with the users table, an emulator, and
/// the daemon streaming from the database's own slot.
pub struct Scenario {
    pub db: TestDb,
    pub emulator: Emulator,
    pub daemon: InProcess,
}

impl Scenario {
    /// Starts the scenario with the standard table and config.
    pub async fn start(test: &str) -> Self {
        Self::start_with(test, USERS_TABLE, |config| config).await
    }

    /// Starts it with `schema` as the database's SQL and the config text
    /// passed through `edit`.
    pub async fn start_with(test: &str, schema: &str, edit: impl FnOnce(String) -> String) -> Self {
        let db = TestDb::new(test).await;
        db.exec(schema).await;
        let emulator = emulator::start().await;
        let daemon = InProcess::start(&edit(db.config(&emulator.url(), "")));
        db.wait_for_streaming().await;
        Self { db, emulator, daemon }
    }
}

/// Waits until the emulator holds exactly one customer per row of
/// `public.users`, each with the row's email and plan; false on timeout.
pub async fn customers_match_rows(db: &TestDb, emulator: &Emulator) -> bool {
    customers_match_rows_where(db, emulator, "true").await
}

/// [`customers_match_rows`] for the rows `condition` (SQL) holds for: no
/// customer of another row may be in the emulator.
pub async fn customers_match_rows_where(db: &TestDb, emulator: &Emulator, condition: &str) -> bool {
    let sql = format!("SELECT id::text, email, plan FROM users WHERE {condition}");
    let rows = db.client.query(&sql, &[]).await.unwrap();
    let expected: std::collections::BTreeMap<String, (Option<String>, Option<String>)> =
        rows.iter().map(|r| (r.get(0), (r.get(1), r.get(2)))).collect();
    let text = |v: &Option<String>| v.clone().map(serde_json::Value::String);
    // A big copy on a loaded machine may take longer than CONVERGE: give up
    // only after CONVERGE without one more customer matching.
    let mut best = 0;
    let mut deadline = tokio::time::Instant::now() + CONVERGE;
    loop {
        let customers = emulator.customers();
        let matching = expected
            .iter()
            .filter(|(id, (email, plan))| {
                customers.get(*id).is_some_and(|c| {
                    c.get("email").cloned() == text(email) && c.get("plan").cloned() == text(plan)
                })
            })
            .count();
        if matching == expected.len() && customers.len() == expected.len() {
            return true;
        }
        if matching > best {
            best = matching;
            deadline = tokio::time::Instant::now() + CONVERGE;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `cond` until it holds (true) or [`CONVERGE`] passes (false): for
/// what the daemon does after the emulator already shows the outcome, such
/// as storing a dead letter or bumping a counter.
pub async fn eventually(cond: impl Fn() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + CONVERGE;
    while !cond() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}
