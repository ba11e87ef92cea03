//! With `[webhooks]`, a daemon that cannot listen on `webhooks.listen` exits
//! 1 at once, naming the setting and the address, before anything is
//! created or sent.

use std::time::{Duration, Instant};

use crate::support::daemon::{binary, config_file};
use crate::support::postgres::{TestDb, USERS_TABLE};
use crate::support::webhooks::section;

#[tokio::test]
async fn webhooks_port_in_use_stops_the_daemon() {
    let db = TestDb::new("webhooks_port").await;
    db.exec(USERS_TABLE).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    // The metrics endpoint keeps its free port; the receiver's is taken.
    let text = db.config("http://127.0.0.1:9", "")
        + &section("").replace("127.0.0.1:0", &addr.to_string());
    let config = config_file(&text);

    let output = tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new(binary())
            .args(["run", "--log-format", "text", "--config"])
            .arg(config.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                child.kill().unwrap();
                panic!("the daemon kept running with its webhook port taken");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let line = format!("ciosync: cannot listen on webhooks.listen = {addr}");
    assert!(stderr.contains(&line), "expected {line:?} in: {stderr}");
    assert!(stderr.contains("in use"), "the cause is named: {stderr}");
    assert_eq!(db.created_objects().await, (0, 0), "something was created");
    let schemas: i64 = db
        .client
        .query_one("SELECT count(*) FROM pg_namespace WHERE nspname = 'ciosync'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(schemas, 0, "the events table's schema was created");
    drop(taken);
}
