//! Nothing secret and no customer value leaks: the daemon runs as a binary
//! with a database password, an API key and a webhook signing key, through
//! an initial copy, changes, a dead letter, refused credentials, an outage,
//! bad and good webhooks with a write-back; every log line (`RUST_LOG=DEBUG`,
//! then `trace`: crates that log data stay at info whatever it says), every
//! `/metrics` and `/readyz` answer, and the output of
//! `check` and `dlq list` are searched for the secrets and for every
//! attribute value written.

use std::process::{Command, Stdio};
use std::time::Duration;

use ciosync_emulator::Faults;
use serde_json::json;

use crate::support::daemon::{binary, config_file, signal, API_KEY};
use crate::support::dead_letters::{config_with_password, PG_PASSWORD};
use crate::support::emulator::{self, wait_for_customers};
use crate::support::endpoint::{get, wait_for_status};
use crate::support::postgres::{TestDb, USERS_TABLE};
use crate::support::webhooks::{event, section, Delivery, PATH, SIGNING_KEY};

/// Values that must never leave the database except towards Customer.io.
const PRIVATE: [&str; 6] = [
    "zq-private-ada@x.io",
    "Zqadaprivate",
    "zq-private-bob@x.io",
    "zq-refused@x.io",
    "Zqbio secret text",
    "zq-new-mail@x.io",
];

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn output_of(args: &[&str], config: &std::path::Path) -> String {
    let output = crate::support::daemon::run_binary(args, config).await;
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `RUST_LOG` in upper case, the way a hurried operator types it.
#[tokio::test]
async fn nothing_leaks_at_debug() {
    no_secret_or_customer_value_appears_in_logs_metrics_or_commands("DEBUG").await;
}

#[tokio::test]
async fn nothing_leaks_at_trace() {
    no_secret_or_customer_value_appears_in_logs_metrics_or_commands("trace").await;
}

async fn no_secret_or_customer_value_appears_in_logs_metrics_or_commands(level: &str) {
    let db = TestDb::new(&format!("no_leaks_{}", level.to_lowercase())).await;
    db.exec(USERS_TABLE).await;
    db.exec("ALTER TABLE users ADD COLUMN email_opt_out boolean").await;
    db.exec(
        "INSERT INTO users (id, email, first_name, bio) VALUES \
         (1, 'zq-private-ada@x.io', 'Zqadaprivate', 'Zqbio secret text')",
    )
    .await;
    let emulator = emulator::start().await;
    emulator.set_faults(Faults { reject_ids: vec!["99".into()], ..Faults::default() });
    let (metrics_port, hooks_port) = (free_port(), free_port());
    let write_back = "[[webhooks.write_back]]\nmetric = \"unsubscribed\"\ncolumn = \"email_opt_out\"\nvalue = \"true\"\n";
    let text = config_with_password(&db, &emulator.url()).replacen(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{metrics_port}\""),
        1,
    ) + &section(write_back).replace("127.0.0.1:0", &format!("127.0.0.1:{hooks_port}"));
    let config = config_file(&text);
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut daemon = Command::new(binary())
        .args(["run", "--log-format", "json", "--config"])
        .arg(config.path())
        .env("RUST_LOG", level)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let metrics = format!("http://127.0.0.1:{metrics_port}");
    let hooks = format!("http://127.0.0.1:{hooks_port}");
    db.wait_for_streaming().await;
    let mut seen = String::new();
    let mut scrape = |text: (u16, String)| seen.push_str(&text.1);

    // Changes, and one Customer.io refuses for good (a dead letter).
    db.exec(
        "INSERT INTO users (id, email) VALUES (2, 'zq-private-bob@x.io'), (99, 'zq-refused@x.io')",
    )
    .await;
    db.exec("UPDATE users SET email = 'zq-new-mail@x.io' WHERE id = 1").await;
    assert!(
        wait_for_customers(&emulator, |c| c
            .get("1")
            .is_some_and(|a| a["email"] == "zq-new-mail@x.io"))
        .await
    );
    scrape(get(&format!("{metrics}/metrics")).await);

    // Refused credentials, then an outage, each with a change waiting.
    // The credentials stay refused until the daemon says so on /readyz.
    emulator.set_faults(Faults { fail_next: u32::MAX, fail_status: 401, ..Faults::default() });
    db.exec("UPDATE users SET first_name = 'Zqadaprivate' || '' WHERE id = 2").await;
    let refused = |e: &ciosync_emulator::Emulator| e.requests().iter().any(|r| r.status == 401);
    assert!(emulator::wait_for(&emulator, refused).await, "the credentials were never refused");
    assert!(
        wait_for_status(&format!("{metrics}/readyz"), 503).await,
        "/readyz stayed 200 while Customer.io refused the credentials"
    );
    scrape(get(&format!("{metrics}/readyz")).await);
    scrape(get(&format!("{metrics}/metrics")).await);
    emulator.set_faults(Faults { fail_next: 3, fail_status: 503, ..Faults::default() });
    db.exec("UPDATE users SET bio = 'Zqbio secret text' WHERE id = 2").await;
    assert!(
        wait_for_customers(&emulator, |c| c.get("2").is_some_and(|a| a.contains_key("about")))
            .await
    );
    scrape(get(&format!("{metrics}/metrics")).await);
    scrape(get(&format!("{metrics}/readyz")).await);

    // Webhooks: a forged one, then a real one with a write-back.
    assert!(wait_for_status(&format!("{hooks}/readyz"), 200).await);
    let body = event(
        "01HXLEAK000000000000000001",
        "customer",
        "unsubscribed",
        json!({"identifiers": {"id": "1", "email": "zq-new-mail@x.io"}}),
    );
    let mut forged = Delivery::of(&body);
    forged.signature = Some("00".repeat(32));
    scrape(forged.send(&format!("{hooks}{PATH}")).await);
    scrape(Delivery::of(&body).send(&format!("{hooks}{PATH}")).await);
    scrape(get(&format!("{hooks}/readyz")).await);
    let letters = || async {
        db.client
            .query_one("SELECT count(*) FROM ciosync.dead_letters", &[])
            .await
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(0)
    };
    let deadline = tokio::time::Instant::now() + crate::support::CONVERGE;
    while letters().await < 1 {
        assert!(tokio::time::Instant::now() < deadline, "no dead letter was stored");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    signal(&daemon, "TERM");
    let status = tokio::task::spawn_blocking(move || daemon.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
    seen.push_str(&output_of(&["check"], config.path()).await);
    seen.push_str(&output_of(&["dlq", "list"], config.path()).await);
    seen.push_str(&output_of(&["dlq", "list", "--json"], config.path()).await);
    seen.push_str(&output_of(&["deletes", "list"], config.path()).await);
    let logs = std::fs::read_to_string(log.path()).unwrap();
    assert!(logs.lines().count() > 10, "the daemon logged: {logs}");
    assert!(seen.contains("ciosync_operations_completed_total"), "metrics were read");
    for secret in [API_KEY, PG_PASSWORD, SIGNING_KEY] {
        assert!(!logs.contains(secret), "a secret in the log");
        assert!(!seen.contains(secret), "a secret in metrics or command output");
    }
    for value in PRIVATE {
        assert!(!logs.contains(value), "a customer value in the log: {value}");
        assert!(!seen.contains(value), "a customer value in metrics or command output: {value}");
    }
}
