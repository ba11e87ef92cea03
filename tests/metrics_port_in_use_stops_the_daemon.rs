//! A daemon that cannot listen on `metrics.listen` exits 1 at once, naming
//! the setting and the address, before anything is created or sent.

use std::time::{Duration, Instant};

use crate::support::daemon::{binary, config_file};
use crate::support::postgres::{TestDb, USERS_TABLE};

#[tokio::test]
async fn metrics_port_in_use_stops_the_daemon() {
    let db = TestDb::new("metrics_port").await;
    db.exec(USERS_TABLE).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let text = db
        .config("http://127.0.0.1:9", "")
        .replace("listen = \"127.0.0.1:0\"", &format!("listen = \"{addr}\""));
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
                panic!("the daemon kept running with its metrics port taken");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let line = format!("ciosync: cannot listen on metrics.listen = {addr}");
    assert!(stderr.contains(&line), "expected {line:?} in: {stderr}");
    assert!(stderr.contains("in use"), "the cause is named: {stderr}");
    assert_eq!(db.created_objects().await, (0, 0), "something was created");
    drop(taken);
}
