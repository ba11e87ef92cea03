//! kill -9 during a burst of campaign webhook actions: every call that got
//! a 2xx is in Postgres, and Customer.io's retries of the rest (and
//! repeats of some that succeeded) after the restart apply each exactly once.

use std::sync::Arc;

use serde_json::json;
use tokio::sync::Semaphore;

use crate::support::daemon::{config_file, signal, spawn_binary};
use crate::support::emulator;
use crate::support::endpoint::wait_for_status;
use crate::support::postgres::TestDb;
use crate::webhook_actions_write_into_postgres::{basic, ACTIONS};

const CALLS: usize = 300;

/// A port free a moment ago, for the built binary's webhook listener.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Sends the journey calls `keys` 8 at a time; the keys answered 2xx.
async fn burst(base: &str, keys: Vec<usize>) -> Vec<usize> {
    let gate = Arc::new(Semaphore::new(8));
    let auth = basic();
    let tasks: Vec<_> = keys
        .into_iter()
        .map(|n| {
            let (gate, base, auth) = (gate.clone(), base.to_owned(), auth.clone());
            tokio::spawn(async move {
                let _permit = gate.acquire_owned().await.unwrap();
                let body =
                    json!({"key": format!("k{n}"), "customer": {"id": n}, "step": format!("s{n}")});
                let sent = reqwest::Client::new()
                    .post(format!("{base}/webhooks/customerio/actions/journey"))
                    .header("content-type", "application/json")
                    .header("authorization", auth)
                    .timeout(std::time::Duration::from_secs(4))
                    .body(body.to_string())
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => Some(n),
                    Ok(r) => {
                        eprintln!(
                            "call {n}: {} {}",
                            r.status(),
                            r.text().await.unwrap_or_default().trim()
                        );
                        None
                    }
                    Err(e) => {
                        eprintln!("call {n}: {e}");
                        None
                    }
                }
            })
        })
        .collect();
    let mut ok = Vec::new();
    for task in tasks {
        if let Some(n) = task.await.unwrap() {
            ok.push(n);
        }
    }
    ok
}

/// Waits for the receiver's `/readyz`; fails with the daemon's log.
async fn ready_or_log(base: &str, log: &std::path::Path) {
    if !wait_for_status(&format!("{base}/readyz"), 200).await {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        panic!("the receiver never became ready; its log:\n{text}");
    }
}

async fn steps(db: &TestDb) -> Vec<String> {
    let rows = db.client.query("SELECT step FROM journey_log ORDER BY step", &[]).await.unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_call_that_got_a_2xx_is_lost_and_retries_apply_once() {
    let db = crate::webhook_actions_write_into_postgres::prepared("webhook_actions_kill").await;
    let emulator = emulator::start().await;
    let port = free_port();
    let text = db.config(&emulator.url(), ACTIONS).replacen(
        "[webhooks]\nlisten = \"127.0.0.1:0\"",
        &format!("[webhooks]\nlisten = \"127.0.0.1:{port}\""),
        1,
    );
    let file = config_file(&text);
    let dir = tempfile::tempdir().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let mut daemon = spawn_binary(file.path(), &dir.path().join("first.log"));
    ready_or_log(&base, &dir.path().join("first.log")).await;

    // The burst, and kill -9 once a third of it was answered.
    let sender = tokio::spawn({
        let base = base.clone();
        async move { burst(&base, (0..CALLS).collect()).await }
    });
    let third = format!("SELECT count(*) >= {} FROM journey_log", CALLS / 3);
    let deadline = tokio::time::Instant::now() + crate::support::CONVERGE;
    while !db.client.query_one(&third, &[]).await.unwrap().get::<_, bool>(0) {
        assert!(tokio::time::Instant::now() < deadline, "the burst did not get going");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    signal(&daemon, "KILL");
    let _ = daemon.wait();
    let answered = sender.await.unwrap();
    assert!(answered.len() < CALLS, "the kill came after the whole burst: nothing tested");
    let stored = steps(&db).await;
    for n in &answered {
        assert!(stored.contains(&format!("s{n}")), "call {n} got a 2xx and is not in Postgres");
    }

    // Customer.io retries what got no 2xx, and a lost 2xx looks like no
    // answer to it, so it may repeat some that succeeded: send everything.
    let mut daemon = spawn_binary(file.path(), &dir.path().join("second.log"));
    ready_or_log(&base, &dir.path().join("second.log")).await;
    // Under load some answer 503 (the 3 s deadline): retried, as Customer.io does.
    let mut left: Vec<usize> = (0..CALLS).collect();
    for _ in 0..10 {
        let answered = burst(&base, left.clone()).await;
        left.retain(|n| !answered.contains(n));
        if left.is_empty() {
            break;
        }
    }
    if !left.is_empty() {
        let log = std::fs::read_to_string(dir.path().join("second.log")).unwrap_or_default();
        panic!("{} calls never got a 2xx; the daemon's log:\n{log}", left.len());
    }
    let mut expected: Vec<String> = (0..CALLS).map(|n| format!("s{n}")).collect();
    expected.sort();
    let stored = steps(&db).await;
    assert!(
        stored == expected,
        "each call applied exactly once: {} rows for {CALLS} calls",
        stored.len()
    );
    signal(&daemon, "TERM");
    let _ = daemon.wait();
    for log in ["first.log", "second.log"] {
        let text = std::fs::read_to_string(dir.path().join(log)).unwrap();
        assert!(!text.contains(crate::support::webhooks::ACTION_SECRET), "{log} holds the secret");
    }
}

/// A request whose deadline passes mid-transaction (its key's row is
/// locked by another session) answers 503 and leaves nothing behind: the
/// next request does not run in its abandoned transaction, and its retry
/// applies it (not a 200 "duplicate" for a write that never happened).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_deadline_leaves_no_half_for_the_next() {
    use crate::webhook_actions_write_into_postgres::call;
    let db = crate::webhook_actions_write_into_postgres::prepared("webhook_actions_deadline").await;
    let emulator = emulator::start().await;
    let daemon = crate::webhook_actions_write_into_postgres::started(&db, &emulator, false).await;
    let base = daemon.webhook_url("");
    let journey =
        |key: &str| json!({"key": key, "customer": {"id": 1}, "step": format!("s-{key}")});
    // Creates the keys table (and proves the action works).
    assert_eq!(call(&base, "journey", Some(&basic()), None, &journey("k0")).await.0, 200);
    let holder = db.reconnected().await;
    holder
        .exec(
            "BEGIN; INSERT INTO ciosync.webhook_action_keys (action, key) VALUES ('journey', 'k1')",
        )
        .await;

    let first = tokio::spawn({
        let (base, body) = (base.clone(), journey("k1"));
        async move { call(&base, "journey", Some(&basic()), None, &body).await.0 }
    });
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    let second = tokio::spawn({
        let (base, body) = (base.clone(), journey("k2"));
        async move { call(&base, "journey", Some(&basic()), None, &body).await.0 }
    });
    tokio::time::sleep(std::time::Duration::from_millis(2300)).await;
    // k1's statement ended on the server too (statement_timeout), rather
    // than leave a backend waiting on the lock after its request was given up.
    let waiting = "SELECT count(*) FROM pg_stat_activity \
                   WHERE datname = current_database() AND wait_event_type = 'Lock'";
    assert_eq!(db.client.query_one(waiting, &[]).await.unwrap().get::<_, i64>(0), 0);
    holder.exec("ROLLBACK").await;
    assert_eq!(first.await.unwrap(), 503, "k1 waited past its deadline");
    let second = second.await.unwrap();
    assert!(second == 200 || second == 503, "{second}");
    // Customer.io retries what got no 2xx.
    for key in ["k1", "k2"] {
        let (status, answer) = call(&base, "journey", Some(&basic()), None, &journey(key)).await;
        assert_eq!(status, 200, "{key}: {answer}");
    }
    let steps = "SELECT step FROM journey_log ORDER BY step";
    let rows: Vec<String> =
        db.client.query(steps, &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(rows, ["s-k0", "s-k1", "s-k2"], "k1's key committed without its row, or twice");
    daemon.stop().await.unwrap();
}
