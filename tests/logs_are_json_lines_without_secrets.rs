//! `ciosync run` logs one JSON object per line when stderr is not a
//! terminal, at the level `[log] level` sets, with the notable events
//! (start, connected, stopped) and never the API key or a customer's value.

use std::process::{Command, Stdio};

use ciosync_emulator::Emulator;

use crate::support::daemon::{binary, config_file, signal, API_KEY};
use crate::support::emulator::{self, wait_for_customers};
use crate::support::postgres::{TestDb, USERS_TABLE};

/// Runs the binary with `config` and no `--log-format` or `RUST_LOG`,
/// inserts a customer, stops it with SIGTERM; its stderr.
async fn run_and_stop(db: &TestDb, emulator: &Emulator, config: &str, id: i64) -> String {
    let file = config_file(config);
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(binary())
        .args(["run", "--config"])
        .arg(file.path())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .expect("spawn ciosync");
    db.wait_for_streaming().await;
    db.exec(&format!(
        "INSERT INTO users (id, email, first_name) VALUES ({id}, 'very-private-{id}@x.io', 'Zelda{id}')"
    ))
    .await;
    let key = id.to_string();
    assert!(wait_for_customers(emulator, |c| c.contains_key(&key)).await);
    signal(&child, "TERM");
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
    std::fs::read_to_string(log.path()).unwrap()
}

#[tokio::test]
async fn logs_are_json_lines_at_the_configured_level_without_secrets() {
    let db = TestDb::new("json_logs").await;
    db.exec(USERS_TABLE).await;
    let emulator = emulator::start().await;
    let config = db.config(&emulator.url(), "");

    let text = run_and_stop(&db, &emulator, &config, 1).await;
    let mut messages = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(value["level"].is_string() && value["timestamp"].is_string(), "{line}");
        messages.push(value["fields"]["message"].as_str().unwrap_or_default().to_owned());
        for secret in [API_KEY, "very-private-1", "Zelda1"] {
            assert!(!line.contains(secret), "{secret} logged: {line}");
        }
    }
    for event in ["ciosync starting", "connected to postgres", "SIGTERM received", "stopped"] {
        assert!(messages.iter().any(|m| m.starts_with(event)), "no {event:?} in {messages:?}");
    }

    // [log] level = "warn": a clean run has nothing to say.
    let quiet = config.replacen("[metrics]\n", "[log]\nlevel = \"warn\"\n\n[metrics]\n", 1);
    let text = run_and_stop(&db, &emulator, &quiet, 2).await;
    assert!(!text.contains("\"INFO\""), "{text}");
}
