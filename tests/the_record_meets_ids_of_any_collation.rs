//! The record's customer ids compare as bytes (`COLLATE "C"`), and a
//! synced table's text id column may have a collation of its own (an ORM's
//! `db_collation`). Where the two meet, `deletes gone` and the reporting
//! webhooks' write-back, each comparison names its collation, so neither
//! fails with "could not determine which collation to use". So does the
//! condition that holds devices to the customers who sync.

use ciosync::state::State;
use serde_json::json;

use crate::devices_follow_their_table::DEVICES_CONFIG;
use crate::support::daemon::{config_file, run_binary, InProcess};
use crate::support::dead_letters::texts;
use crate::support::emulator::{self, wait_for_attribute};
use crate::support::endpoint::wait_for_status;
use crate::support::postgres::TestDb;
use crate::support::webhooks::{event, section, Delivery, PATH};
use crate::support::{eventually, Scenario};

/// `users` as the suite has it, its id text of a collation of its own.
const USERS_OF_THEIR_OWN_COLLATION: &str =
    "CREATE TABLE public.users (id text COLLATE \"POSIX\" PRIMARY KEY, email text, \
     first_name text, plan text, created_at timestamptz, password_hash text, bio text, \
     email_opt_out boolean)";

#[tokio::test]
async fn deletes_gone_counts_customers_of_an_id_column_with_its_own_collation() {
    let db = TestDb::new("gone_collation").await;
    db.exec(USERS_OF_THEIR_OWN_COLLATION).await;
    db.exec("INSERT INTO users (id, email) VALUES ('1', 'a@x.io'), ('3', 'c@x.io')").await;
    State::open(&db.client, &db.name).await.expect("open");
    // Held by the record: 1 has a row, 2 and 4 have none (3 is not held).
    let slot = &db.name;
    db.exec(&format!(
        "INSERT INTO ciosync.accepted (slot, customer_id, attributes) VALUES \
         ('{slot}', '1', '{{}}'), ('{slot}', '2', '{{}}'), ('{slot}', '4', '{{}}')"
    ))
    .await;
    let emulator = emulator::start().await;
    let config = config_file(&db.config(&emulator.url(), ""));
    let out = run_binary(&["deletes", "gone", "--show-ids"], config.path()).await;
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.starts_with("2 customers in the record"), "{stdout}");
    assert!(stdout.contains("e.g. 2, 4"), "{stdout}");
}

/// A write-back of a mapped column takes it out of the record of the
/// customers it wrote (so the application's next change of it is sent):
/// that statement joins the ids it wrote with the record's.
#[tokio::test]
async fn a_write_back_forgets_what_it_wrote_for_an_id_column_with_its_own_collation() {
    let db = TestDb::new("write_back_collation").await;
    db.exec(USERS_OF_THEIR_OWN_COLLATION).await;
    let emulator = emulator::start().await;
    let write_back = "[[webhooks.write_back]]\nmetric = \"unsubscribed\"\n\
                      column = \"email_opt_out\"\nvalue = \"true\"\n";
    let text = db.config(&emulator.url(), &section(write_back)).replacen(
        "about = \"bio\"\n",
        "about = \"bio\"\nemail_opt_out = \"email_opt_out\"\n",
        1,
    );
    let daemon = InProcess::start_with_webhooks(&text);
    db.wait_for_streaming().await;
    assert!(wait_for_status(&daemon.webhook_url("/readyz"), 200).await);
    db.exec("INSERT INTO users (id, email, email_opt_out) VALUES ('1', 'a@x.io', false)").await;
    assert!(wait_for_attribute(&emulator, "1", "email_opt_out", json!(false)).await);

    let unsubscribed = event(
        "01HXWB00000000000000000001",
        "customer",
        "unsubscribed",
        json!({"identifiers": {"id": "1", "email": "a@x.io", "cio_id": "c1"}}),
    );
    let (status, body) = Delivery::of(&unsubscribed).send(&daemon.webhook_url(PATH)).await;
    assert_eq!(status, 200, "{body}");
    let written = "SELECT email_opt_out FROM users WHERE id = '1'";
    let opted_out: Option<bool> = db.client.query_one(written, &[]).await.unwrap().get(0);
    assert_eq!(opted_out, Some(true), "the write-back did not land");
    let held = format!(
        "SELECT attributes ? 'email_opt_out' FROM ciosync.accepted \
         WHERE slot = '{}' AND customer_id = '1'",
        db.name
    );
    let still: bool = db.client.query_one(&held, &[]).await.unwrap().get(0);
    assert!(!still, "the record still holds the column written back");
    daemon.stop().await.unwrap();
}

/// Not the record's ids but the same question: a devices table's customer
/// column of one collation held to the people table's id of another (the
/// initial copy sends only the devices of customers who sync).
#[tokio::test]
async fn devices_of_a_customer_column_with_another_collation_are_copied() {
    let schema = format!(
        "{USERS_OF_THEIR_OWN_COLLATION};
         CREATE TABLE push_tokens (id serial PRIMARY KEY, user_id text COLLATE \"C\", token text,
             platform text, last_seen timestamptz, app_version text, push boolean,
             revoked_at timestamptz);
         INSERT INTO users (id, email) VALUES ('1', 'a@x.io');
         INSERT INTO push_tokens (user_id, token, platform) VALUES ('1', 't1', 'ios'), ('2', 't2', 'ios');"
    );
    let Scenario { db: _db, emulator, daemon } =
        Scenario::start_with("devices_collation", &schema, |c| c + DEVICES_CONFIG).await;
    let copied = || emulator.devices("1").unwrap_or_default().len() == 1;
    assert!(eventually(copied).await, "the device of the customer who syncs was not copied");
    assert!(emulator.devices("2").unwrap_or_default().is_empty(), "a device of no customer");
    daemon.stop().await.unwrap();
}
