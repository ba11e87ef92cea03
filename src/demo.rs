//! `ciosync demo`: the whole path on one machine, no workspace needed.
//!
//! Starts a throwaway Postgres and the Customer.io emulator, creates a sample
//! users table, runs the daemon, makes a few changes, prints each Customer.io
//! call as it happens and the resulting customers, then cleans up (or, with
//! `--keep`, stays up for psql until Ctrl-C).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use ciosync_emulator::{Emulator, EmulatorConfig};
use ciosync_testkit::throwaway::ThrowawayPostgres;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::pipeline;
use crate::telemetry::Counters;

const SITE_ID: &str = "demo-site";
const API_KEY: &str = "demo-key";
const SLOT: &str = "ciosync";

/// The scripted changes: what the user is told, then the SQL.
const STEPS: [(&str, &str); 6] = [
    (
        "Three people sign up",
        "INSERT INTO users (id, email, first_name, plan, created_at) VALUES \
         (1, 'ada@example.org', 'Ada', 'free', now()), \
         (2, 'grace@example.org', 'Grace', 'free', now()), \
         (3, 'alan@example.org', 'Alan', 'team', now())",
    ),
    ("Ada upgrades: only `plan` is sent", "UPDATE users SET plan = 'pro' WHERE id = 1"),
    (
        "Grace changes her password: no mapped attribute changed, no call",
        "UPDATE users SET password_hash = 'new-hash' WHERE id = 2",
    ),
    (
        "Alan clears his first name: sent as null, which unsets it",
        "UPDATE users SET first_name = NULL WHERE id = 3",
    ),
    ("Grace deletes her account", "DELETE FROM users WHERE id = 2"),
    (
        "Alan's id changes (say, an account merge): identify the new id, merge the old one into it",
        "UPDATE users SET id = 30 WHERE id = 3",
    ),
];

/// Runs the demo; exit 0 when every step was delivered.
pub async fn run(keep: bool) -> ExitCode {
    match demo(keep).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("demo failed: {message}");
            ExitCode::from(crate::error::EXIT_FAILURE)
        }
    }
}

async fn demo(keep: bool) -> Result<(), String> {
    println!("Starting a throwaway PostgreSQL (wal_level = logical)...");
    let pg = tokio::task::spawn_blocking(ThrowawayPostgres::start)
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| crate::error::error_chain(&e))?;
    let admin = connect(&pg.url("postgres")).await?;
    admin.batch_execute("CREATE DATABASE app").await.map_err(|e| e.to_string())?;
    let db = connect(&pg.url("app")).await?;
    db.batch_execute(
        "CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL, first_name text, \
         plan text, created_at timestamptz, password_hash text); \
         ALTER TABLE users REPLICA IDENTITY FULL;",
    )
    .await
    .map_err(|e| e.to_string())?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let emulator = Emulator::start(listener, EmulatorConfig::new(SITE_ID, API_KEY))
        .await
        .map_err(|e| e.to_string())?;
    println!("Customer.io emulator listening on {}", emulator.url());

    let config = Config::from_toml(&config_text(&pg.url("app"), &emulator.url()), Vec::new())
        .map_err(|e| e.to_string())?;
    let shutdown = CancellationToken::new();
    let daemon =
        tokio::spawn(pipeline::run(config, shutdown.clone(), Arc::new(Counters::default())));
    wait_for_streaming(&db).await?;
    println!("ciosync is streaming from slot `{SLOT}`.\n");

    let mut printed = 0;
    for (what, sql) in STEPS {
        println!("-- {what}\n   {sql}");
        db.batch_execute(sql).await.map_err(|e| e.to_string())?;
        wait_until_acked(&db).await?;
        printed = print_calls(&emulator, printed, true);
        println!();
    }
    println!("Customers in the emulator now:");
    for (id, attributes) in emulator.customers() {
        println!("   {id}: {}", Value::Object(attributes));
    }

    if keep {
        println!(
            "\nStill running. Try it yourself:\n   psql '{}'\n   curl {}/_emulator/customers\n\
             Press Ctrl-C to stop and clean up.",
            pg.url("app"),
            emulator.url()
        );
        let stop = CancellationToken::new();
        tokio::spawn(crate::daemon::cancel_on_signal(stop.clone()));
        while !stop.is_cancelled() {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    printed = print_calls(&emulator, printed, false);
                }
            }
        }
    }

    shutdown.cancel();
    let outcome = daemon.await.map_err(|e| e.to_string())?;
    outcome.map_err(|e| crate::error::error_chain(&e))?;
    emulator.shutdown().await;
    drop(pg);
    println!("\nStopped; the throwaway database is gone.");
    Ok(())
}

fn config_text(url: &str, track_url: &str) -> String {
    format!(
        r#"
[postgres]
url = "{url}"
slot = "{SLOT}"
publication = "{SLOT}"
status_interval_ms = 100

[customerio]
site_id = "{SITE_ID}"
api_key = "{API_KEY}"
track_url = "{track_url}"

[[sync]]
table = "public.users"
id_column = "id"

[sync.attributes]
email = "email"
first_name = "first_name"
plan = "plan"
created_at = "created_at"
"#
    )
}

/// Prints the calls the emulator received after the first `already`, and
/// says so when there were none if `say_none`; returns the new count.
fn print_calls(emulator: &Emulator, already: usize, say_none: bool) -> usize {
    let requests = emulator.requests();
    for request in requests.iter().skip(already) {
        let items = request
            .body
            .as_ref()
            .and_then(|b| b.get("batch"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        println!("   → {} {} → {}", request.method, request.path, request.status);
        for item in items {
            let action = item["action"].as_str().unwrap_or("?");
            match action {
                "merge" => println!(
                    "       merge    id={} into id={}",
                    text(&item["secondary"]["id"]),
                    text(&item["primary"]["id"])
                ),
                _ => println!(
                    "       {action:<8} id={} {}",
                    text(&item["identifiers"]["id"]),
                    item.get("attributes").map(Value::to_string).unwrap_or_default()
                ),
            }
        }
    }
    if say_none && requests.len() == already {
        println!("   (no call)");
    }
    requests.len()
}

fn text(value: &Value) -> String {
    value.as_str().map(str::to_owned).unwrap_or_else(|| value.to_string())
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let (client, connection) =
        tokio_postgres::connect(url, tokio_postgres::NoTls).await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

async fn wait_for_streaming(db: &tokio_postgres::Client) -> Result<(), String> {
    for _ in 0..300 {
        let row = db
            .query_opt("SELECT active FROM pg_replication_slots WHERE slot_name = $1", &[&SLOT])
            .await
            .map_err(|e| e.to_string())?;
        if row.is_some_and(|r| r.get::<_, bool>(0)) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("the daemon did not start streaming within 30 s".into())
}

/// Waits until the slot is acknowledged past everything written so far,
/// which happens only once Customer.io (the emulator) accepted it.
async fn wait_until_acked(db: &tokio_postgres::Client) -> Result<(), String> {
    let target: i64 = db
        .query_one("SELECT (pg_current_wal_insert_lsn() - '0/0')::bigint", &[])
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    for _ in 0..300 {
        let confirmed: Option<i64> = db
            .query_one(
                "SELECT (confirmed_flush_lsn - '0/0')::bigint FROM pg_replication_slots \
                 WHERE slot_name = $1",
                &[&SLOT],
            )
            .await
            .map_err(|e| e.to_string())?
            .get(0);
        if confirmed.unwrap_or(0) >= target {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("a change was not delivered within 15 s".into())
}
