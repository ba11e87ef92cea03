//! `dlq retry --all` over three letters, where Customer.io accepts the first
//! and then answers the second with something no retry of it can fix: a
//! redirect (the workspace is in the other region), a refusal of the
//! request as a whole (403, 404: a wrong `track_url`, a suspended account),
//! or a 429 that lasts past the tries. Each stops the command with exit 1
//! and the documented message; the first letter is gone (delivered), the
//! second and third are kept exactly as they were.
//!
//! A 401 (`dlq_retry_with_a_wrong_api_key_changes_nothing`) and a lasting
//! 503 on the first letter (`dlq_retry_stops_while_customerio_is_down`)
//! are tested on their own.

use ciosync::sink::send::MAX_TRIES;
use ciosync_emulator::{Emulator, Faults};
use serde_json::json;

use crate::support::daemon::{config_file, run_binary};
use crate::support::dead_letters::{
    assert_no_secrets, config_with_password, identify, rows, store, texts,
};
use crate::support::emulator;
use crate::support::postgres::{TestDb, USERS_TABLE};

/// One way Customer.io answers the second letter, and what `retry` says.
struct Case {
    name: &'static str,
    status: u16,
    /// Requests answered `status` (from the second on).
    failing: u32,
    /// Text the stop message must hold: what to fix.
    says: &'static [&'static str],
    /// Batch requests sent in all: one for the first letter, then the
    /// tries of the second.
    requests: usize,
}

const CASES: &[Case] = &[
    Case {
        name: "redirect",
        status: 301,
        // One only: had `retry` followed the `Location` (back to the
        // emulator), the second letter would have been delivered.
        failing: 1,
        says: &["HTTP 301 (a redirect)", "customerio.region"],
        requests: 2,
    },
    Case {
        // A 307 would replay the body, with the credentials, wherever it points.
        name: "temporary redirect",
        status: 307,
        failing: 1,
        says: &["HTTP 307 (a redirect)", "customerio.region"],
        requests: 2,
    },
    Case {
        name: "forbidden",
        status: 403,
        failing: 1000,
        says: &["refused the request (HTTP 403", "customerio.track_url"],
        requests: 2,
    },
    Case {
        name: "not found",
        status: 404,
        failing: 1000,
        says: &["refused the request (HTTP 404", "customerio.track_url"],
        requests: 2,
    },
    Case {
        name: "lasting 429",
        status: 429,
        failing: 1000,
        says: &["after 5 tries (last: HTTP 429)", "try again later"],
        requests: 1 + MAX_TRIES as usize,
    },
];

#[tokio::test]
async fn retry_stops_at_the_letter_it_cannot_send_and_keeps_it_and_the_rest() {
    let db = TestDb::new("dlq_stops").await;
    let emulator = emulator::start().await;
    let text = config_with_password(&db, &emulator.url());
    let config = config_file(&text);
    // A replayed identify sends the row as it is now (see
    // `dlq_retry_never_sets_a_customer_back`), so the rows exist.
    db.exec(USERS_TABLE).await;
    db.exec("INSERT INTO users (id, plan) VALUES (1, 'pro'), (2, 'pro'), (3, 'pro')").await;
    for case in CASES {
        check(case, &db, &emulator, &text, config.path()).await;
    }
}

async fn check(
    case: &Case,
    db: &TestDb,
    emulator: &Emulator,
    text: &str,
    config: &std::path::Path,
) {
    let name = case.name;
    emulator.reset();
    let letters: Vec<_> = ["1", "2", "3"].map(|id| identify(id, json!({"plan": "pro"}))).into();
    store(text).record(&letters).await.unwrap();
    let before = rows(db).await;
    assert_eq!(before.len(), 3, "{name}: the last case left letters behind");
    emulator.set_faults(Faults {
        pass_next: 1,
        fail_next: case.failing,
        fail_status: case.status,
        ..Faults::default()
    });

    let out = run_binary(&["dlq", "retry", "--all"], config).await;
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{name}: {stdout}{stderr}");
    let stopped =
        format!("stopped at dead letter {}; it and the 1 after it were kept", before[1].id);
    assert!(stderr.contains(&stopped), "{name}: {stderr}");
    for words in case.says {
        assert!(stderr.contains(words), "{name}: `{words}` missing from {stderr}");
    }
    assert_eq!(
        stdout, "retried 1: delivered 0, refreshed from the row 1, skipped 0, refused again 0\n",
        "{name}"
    );
    assert_no_secrets(&out, &[]);

    assert_eq!(rows(db).await, before[1..], "{name}: the first is gone, the rest unchanged");
    let sent: Vec<u16> = emulator
        .requests()
        .iter()
        .filter(|r| r.path == "/api/v2/batch")
        .map(|r| r.status)
        .collect();
    assert_eq!(sent.len(), case.requests, "{name}: {sent:?}");
    assert_eq!(sent[0], 200, "{name}");
    assert!(sent[1..].iter().all(|&s| s == case.status), "{name}: {sent:?}");
    let customers: Vec<String> = emulator.customers().into_keys().collect();
    assert_eq!(customers, ["1"], "{name}: only the first letter reached Customer.io");
    db.exec("DELETE FROM ciosync.dead_letters").await;
}
