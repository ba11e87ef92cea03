//! `dlq retry` of a device letter reads the device's row again after
//! Customer.io accepted what it sent, and sends it again if it changed
//! meanwhile: a replay that read the row just before an update must not
//! leave Customer.io with the values from before it. The daemon is stopped
//! here, so only the replay can bring the update over; the update is made
//! while the replay's send is held by the emulator (made slow), after the
//! replay read the row (it claims nothing for the customer in the record
//! right before it sends). A letter without a `[[devices]]` table in the
//! config is kept, saying what to do.

use ciosync_emulator::{Emulator, Faults};

use crate::support::daemon::{config_file, run_binary, InProcess};
use crate::support::dead_letters::{rows, texts};
use crate::support::emulator::{self, batch_items, wait_for};
use crate::support::postgres::{TestDb, USERS_TABLE};

const DEVICES: &str = r#"
[[devices]]
table = "push_tokens"
customer_id_column = "user_id"
token_column = "token"
platform_column = "platform"
"#;

fn platforms_sent(emulator: &Emulator) -> Vec<String> {
    let items = batch_items(emulator).into_iter().filter(|i| i["action"] == "add_device");
    items.map(|i| i["device"]["platform"].as_str().unwrap_or_default().to_owned()).collect()
}

#[tokio::test]
async fn a_device_changed_while_its_letter_was_sent_is_sent_again_as_it_is_now() {
    let db = TestDb::new("dlq_device_race").await;
    db.exec(USERS_TABLE).await;
    db.exec(
        "CREATE TABLE push_tokens (user_id bigint, token text, platform text, \
             PRIMARY KEY (user_id, token))",
    )
    .await;
    let emulator = emulator::start().await;
    let text = db.config(&emulator.url(), DEVICES);
    let daemon = InProcess::start(&text);
    db.wait_for_streaming().await;
    emulator.set_faults(Faults { reject_ids: vec!["1".into()], ..Faults::default() });
    db.exec("INSERT INTO push_tokens VALUES (1, 'tok', 'ios')").await;
    let deadline = tokio::time::Instant::now() + crate::support::CONVERGE;
    while rows(&db).await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the device was not dead-lettered");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let end = db.current_lsn().await;
    assert!(db.wait_for_confirmed(&db.name, end).await);
    daemon.stop().await.unwrap();
    emulator.set_faults(Faults::default());

    // No [[devices]] table: kept, nothing sent.
    let without = config_file(&db.config(&emulator.url(), ""));
    emulator.clear_requests();
    let out = run_binary(&["dlq", "retry", "--all"], without.path()).await;
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("kept 1") && stdout.contains("no [[devices]] table"), "{stdout}");
    assert!(batch_items(&emulator).is_empty());

    // The replay's sends take 3 s; the row changes during the first.
    let forgotten = "SELECT count(*) FROM ciosync.accepted WHERE customer_id = '1'";
    db.exec("DELETE FROM ciosync.accepted WHERE customer_id = '1'").await;
    emulator.set_faults(Faults { latency_ms: 3000, ..Faults::default() });
    let config = config_file(&text);
    let path = config.path().to_owned();
    let retry = tokio::spawn(async move { run_binary(&["dlq", "retry", "--all"], &path).await });
    let deadline = tokio::time::Instant::now() + crate::support::CONVERGE;
    while db.client.query_one(forgotten, &[]).await.unwrap().get::<_, i64>(0) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the replay never sent");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    db.exec("UPDATE push_tokens SET platform = 'android'").await;
    let out = retry.await.unwrap();
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(
        stdout,
        "retried 1: delivered 0, refreshed from the row 1, skipped 0, refused again 0\n"
    );
    assert!(rows(&db).await.is_empty());
    assert_eq!(platforms_sent(&emulator), ["ios", "android"], "read again, sent again");
    let platform =
        |e: &Emulator| e.devices("1").unwrap_or_default().first().map(|d| d.platform.clone());
    assert!(wait_for(&emulator, |e| platform(e).as_deref() == Some("android")).await);
}
