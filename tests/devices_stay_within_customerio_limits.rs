//! A `[[devices]]` row Customer.io could not take is handled as people's
//! are: a token over 1000 bytes skips the row (counted as
//! `token_too_long`, an UPDATE to one deletes the old device), an attribute
//! value over 1000 bytes is left out, and a device whose item would exceed
//! the 32 KB item limit leaves out its largest attributes until it fits.
//! Nothing is dead-lettered, and no value reaches a log line: the long
//! token and the long value hold an email address, which the suite's leak
//! tripwire catches in any log of ciosync's (checked when the daemon stops).

use ciosync::telemetry::Counters;
use serde_json::Value;

use crate::support::daemon::InProcess;
use crate::support::emulator::{self, wait_for};
use crate::support::postgres::{TestDb, USERS_TABLE};
use crate::support::spec::{check, Shape};

/// Wide attribute columns `w0`…: 40 of about 900 bytes overflow an item.
const WIDE: usize = 40;

fn schema() -> String {
    let wide: String = (0..WIDE).map(|i| format!(", w{i} text")).collect();
    format!(
        "CREATE TABLE push_tokens (id serial PRIMARY KEY, user_id bigint, token text,
                                   platform text, app_version text{wide});
         ALTER TABLE push_tokens REPLICA IDENTITY FULL;"
    )
}

fn config() -> String {
    let wide: String = (0..WIDE).map(|i| format!("w{i} = \"w{i}\"\n")).collect();
    format!(
        r#"
[[devices]]
table = "push_tokens"
customer_id_column = "user_id"
token_column = "token"
platform_column = "platform"
[devices.attributes]
app_version = "app_version"
{wide}"#
    )
}

fn tokens(emulator: &ciosync_emulator::Emulator, customer: &str) -> Vec<String> {
    emulator.devices(customer).unwrap_or_default().into_iter().map(|d| d.token).collect()
}

#[tokio::test]
async fn devices_customerio_would_refuse_are_skipped_or_trimmed_and_counted() {
    let db = TestDb::new("devices_limits").await;
    db.exec(USERS_TABLE).await;
    db.exec(&schema()).await;
    let emulator = emulator::start().await;
    let daemon = InProcess::start(&db.config(&emulator.url(), &config()));
    db.wait_for_streaming().await;

    // An email address inside the long values: a log line carrying one
    // trips the suite's leak check.
    let long_token = "'leak@x.io' || repeat('t', 1000)";
    db.exec(&format!(
        "INSERT INTO users (id, email) VALUES (1, 'a@x.io'), (2, 'b@x.io');
         INSERT INTO push_tokens (user_id, token, platform) VALUES (1, {long_token}, 'ios');
         INSERT INTO push_tokens (user_id, token, platform, app_version)
             VALUES (1, 'tokA', 'ios', 'leak@x.io' || repeat('v', 1000));"
    ))
    .await;
    let wide: String = (0..WIDE).map(|i| format!(", repeat('w', {})", 900 + i)).collect();
    let columns: String = (0..WIDE).map(|i| format!(", w{i}")).collect();
    db.exec(&format!(
        "INSERT INTO push_tokens (user_id, token, platform, app_version{columns})
             VALUES (2, 'tokWide', 'android', '2.0'{wide})"
    ))
    .await;
    assert!(
        wait_for(&emulator, |e| tokens(e, "1") == ["tokA"] && tokens(e, "2") == ["tokWide"]).await,
        "devices held (token lengths): {:?} {:?}",
        tokens(&emulator, "1").iter().map(String::len).collect::<Vec<_>>(),
        tokens(&emulator, "2").iter().map(String::len).collect::<Vec<_>>()
    );
    let token_too_long = || Counters::get(&daemon.counters.changes_skipped_token_too_long);
    assert_eq!(token_too_long(), 1);
    let a = &emulator.devices("1").unwrap()[0];
    assert!(a.attributes.get("app_version").is_none(), "the 1001-byte value was sent");
    let wide_device = &emulator.devices("2").unwrap()[0];
    let kept: Vec<&String> = wide_device.attributes.keys().collect();
    assert!(kept.contains(&&"app_version".to_owned()) && kept.contains(&&"w0".to_owned()));
    let left_out = WIDE + 1 - wide_device.attributes.len();
    assert!(left_out > 0 && !kept.contains(&&format!("w{}", WIDE - 1)), "{kept:?}");
    assert_eq!(Counters::get(&daemon.counters.attributes_dropped), 1 + left_out as u64);

    // tokA replaced by a token too long to send: the old device goes.
    db.exec(&format!("UPDATE push_tokens SET token = {long_token} WHERE token = 'tokA'")).await;
    assert!(wait_for(&emulator, |e| tokens(e, "1").is_empty()).await, "tokA stayed");
    assert_eq!(token_too_long(), 2);
    // The long token in a DELETE: nothing to send.
    db.exec("DELETE FROM push_tokens WHERE user_id = 1").await;
    db.exec("INSERT INTO push_tokens (user_id, token, platform) VALUES (1, 'tokB', 'ios')").await;
    assert!(wait_for(&emulator, |e| tokens(e, "1") == ["tokB"]).await);
    assert_eq!(token_too_long(), 4, "the two rows' DELETEs are counted");

    assert_eq!(Counters::get(&daemon.counters.ops_dead_lettered), 0, "refused by Customer.io");
    daemon.stop().await.unwrap();
    let batch = check(Shape::BatchRequest);
    let bodies: Vec<Value> = emulator
        .requests()
        .into_iter()
        .filter(|r| r.path == "/api/v2/batch")
        .filter_map(|r| r.body)
        .collect();
    for body in &bodies {
        batch.assert_valid(body, "a batch the sink sent");
        assert!(!body.to_string().contains("leak@x.io"), "a long value or token was sent");
    }
}
