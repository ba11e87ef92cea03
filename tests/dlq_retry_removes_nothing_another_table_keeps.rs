//! `dlq retry` of an add (an identify, an `object_identify`, an
//! `add_relationship`) reads its operation from the tables mapping the
//! letter's attributes, but a row of its subject still live in another
//! table of the same kind keeps the subject alive: when the re-read after
//! Customer.io accepted the send finds the letter's own row deleted
//! meanwhile, nothing is removed while that other row syncs (the reviewer's
//! case: `accounts` maps the name, `account_flags` the flags, of one object
//! type). A relationship's attribute names are those of its
//! `relationship_attributes`, so with two `[[relationships]]` tables of one
//! type holding the same pair, its operation is read from the one mapping
//! them (not sent as it was refused, stale).
//!
//! Each replay's send is held by the emulator (made slow) while the row is
//! deleted: the replay has read the row by then (its connection is idle
//! after that read, or after the record's update right before the send).

use ciosync::dead_letter::DeadLetter;
use ciosync_emulator::{Emulator, Faults};
use serde_json::{json, Value};

use crate::support::daemon::{config_file, run_binary};
use crate::support::dead_letters::{rows, store, texts};
use crate::support::emulator::{self, batch_items};
use crate::support::postgres::{TestDb, USERS_TABLE};

const TABLES: &str = "
    CREATE TABLE public.accounts (id text PRIMARY KEY, name text);
    CREATE TABLE public.account_flags (id text PRIMARY KEY, flags text);
    CREATE TABLE public.user_flags (id bigint PRIMARY KEY, flags text);
    CREATE TABLE public.memberships (user_id bigint, account_id text, role text);
    CREATE TABLE public.billing_contacts (user_id bigint, account_id text, seat text);
    CREATE TABLE public.push_tokens (user_id bigint, token text, platform text,
                                     PRIMARY KEY (user_id, token));
    INSERT INTO accounts VALUES ('acme', 'Acme');
    INSERT INTO account_flags VALUES ('acme', 'beta');
    INSERT INTO users (id, plan) VALUES (7, 'pro');
    INSERT INTO user_flags VALUES (7, 'beta');
    INSERT INTO memberships VALUES (42, 'acme', 'owner');
    INSERT INTO billing_contacts VALUES (42, 'acme', 'main');
";

const CONFIG: &str = r#"
[[sync]]
table = "public.user_flags"
id_column = "id"

[sync.attributes]
flags = "flags"

[[objects]]
table = "public.accounts"
object_type_id = "1"
id_column = "id"

[objects.attributes]
name = "name"

[[objects]]
table = "public.account_flags"
object_type_id = "1"
id_column = "id"

[objects.attributes]
flags = "flags"

[[relationships]]
table = "public.memberships"
customer_id_column = "user_id"
object_type_id = "1"
object_id_column = "account_id"

[relationships.attributes]
role = "role"

[[relationships]]
table = "public.billing_contacts"
customer_id_column = "user_id"
object_type_id = "1"
object_id_column = "account_id"

[relationships.attributes]
seat = "seat"

[[devices]]
table = "public.push_tokens"
customer_id_column = "user_id"
token_column = "token"
platform_column = "platform"
"#;

pub fn letter(operation: &'static str, shown: &str, names: &[&str], item: Value) -> DeadLetter {
    DeadLetter {
        customer_id: shown.to_owned(),
        operation,
        attributes: names.iter().map(|n| (*n).to_owned()).collect(),
        status: 400,
        error: "refused in the test".to_owned(),
        payload: serde_json::to_vec(&item).unwrap(),
        attempts: 1,
    }
}

pub async fn setup(test: &str) -> (TestDb, Emulator, String) {
    let db = TestDb::new(test).await;
    db.exec(USERS_TABLE).await;
    db.exec(TABLES).await;
    let emulator = emulator::start().await;
    let text = db.config(&emulator.url(), CONFIG);
    (db, emulator, text)
}

/// Runs `dlq retry --all` with each send held 2 s, runs `sql` once the
/// replay's connection is idle after a statement like `after` (the send is
/// then in flight), and returns its stdout.
async fn retry_deleting_meanwhile(
    db: &TestDb,
    emulator: &Emulator,
    text: &str,
    after: &str,
    sql: &str,
) -> String {
    emulator.set_faults(Faults { latency_ms: 2000, ..Faults::default() });
    let config = config_file(text);
    let path = config.path().to_owned();
    let retry = tokio::spawn(async move { run_binary(&["dlq", "retry", "--all"], &path).await });
    let idle = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                AND pid <> pg_backend_pid() AND state = 'idle' AND query LIKE $1";
    let deadline = tokio::time::Instant::now() + crate::support::CONVERGE;
    while db.client.query_one(idle, &[&after]).await.unwrap().get::<_, i64>(0) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the replay never sent");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    db.exec(sql).await;
    let out = retry.await.unwrap();
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(rows(db).await.is_empty(), "settled");
    stdout
}

const REFRESHED: &str =
    "retried 1: delivered 0, refreshed from the row 1, skipped 0, refused again 0\n";

#[tokio::test]
async fn an_object_another_table_keeps_is_not_deleted() {
    let (db, emulator, text) = setup("dlq_kept_object").await;
    let item = json!({"type": "object", "identifiers": {"object_type_id": "1", "object_id": "acme"},
                      "action": "identify", "attributes": {"name": "Old"}});
    store(&text)
        .record(&[letter("object_identify", "object 1/acme", &["name"], item)])
        .await
        .unwrap();
    let read = r#"%FROM "public"."accounts"%"#;
    let sql = "DELETE FROM accounts WHERE id = 'acme'";
    assert_eq!(retry_deleting_meanwhile(&db, &emulator, &text, read, sql).await, REFRESHED);
    let sent = batch_items(&emulator);
    let actions: Vec<&Value> = sent.iter().map(|i| &i["action"]).collect();
    assert_eq!(actions, [&json!("identify")], "no object_delete: account_flags keeps it: {sent:?}");
    assert_eq!(
        sent[0]["attributes"],
        json!({"name": "Acme"}),
        "the row's name, not the refused one"
    );
    assert!(emulator.object("1", "acme").is_some());
}

#[tokio::test]
async fn a_person_another_table_keeps_is_not_deleted() {
    let (db, emulator, text) = setup("dlq_kept_person").await;
    let item = json!({"type": "person", "action": "identify", "identifiers": {"id": "7"},
                      "timestamp": 1_700_000_000, "attributes": {"plan": "old"}});
    store(&text).record(&[letter("identify", "7", &["plan"], item)]).await.unwrap();
    // The record's update right before the send.
    let claimed = "INSERT INTO ciosync.accepted%";
    let sql = "DELETE FROM users WHERE id = 7";
    assert_eq!(retry_deleting_meanwhile(&db, &emulator, &text, claimed, sql).await, REFRESHED);
    let sent = batch_items(&emulator);
    let actions: Vec<&Value> = sent.iter().map(|i| &i["action"]).collect();
    assert_eq!(actions, [&json!("identify")], "no delete: user_flags keeps 7: {sent:?}");
    assert_eq!(sent[0]["attributes"]["plan"], "pro");
    assert!(emulator.customer("7").is_some());
}

#[tokio::test]
async fn a_relationship_is_read_from_the_table_mapping_its_attributes() {
    let (db, emulator, text) = setup("dlq_kept_relationship").await;
    let item = json!({"type": "person", "identifiers": {"id": "42"}, "action": "add_relationships",
                      "cio_relationships": [{"identifiers": {"object_type_id": "1", "object_id": "acme"},
                                             "relationship_attributes": {"role": "admin"}}]});
    // As the sink stores it: no top-level `attributes`, no names.
    store(&text).record(&[letter("add_relationship", "42", &[], item)]).await.unwrap();
    let config = config_file(&text);
    let out = run_binary(&["dlq", "retry", "--all"], config.path()).await;
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout, REFRESHED, "not sent as it was refused");
    let sent = batch_items(&emulator);
    assert_eq!(sent.len(), 1, "{sent:?}");
    let related = &sent[0]["cio_relationships"][0]["relationship_attributes"];
    assert_eq!(related, &json!({"role": "owner"}), "the row's role, never the refused one");

    // Its row deleted while the add is sent: billing_contacts still
    // relates 42 to acme, so no delete_relationships goes.
    let item = json!({"type": "person", "identifiers": {"id": "42"}, "action": "add_relationships",
                      "cio_relationships": [{"identifiers": {"object_type_id": "1", "object_id": "acme"},
                                             "relationship_attributes": {"role": "admin"}}]});
    store(&text).record(&[letter("add_relationship", "42", &[], item)]).await.unwrap();
    emulator.clear_requests();
    // The record's update of 42 right before the send.
    let claimed = "INSERT INTO ciosync.accepted%";
    let sql = "DELETE FROM memberships";
    assert_eq!(retry_deleting_meanwhile(&db, &emulator, &text, claimed, sql).await, REFRESHED);
    let sent = batch_items(&emulator);
    let actions: Vec<&Value> = sent.iter().map(|i| &i["action"]).collect();
    assert_eq!(actions, [&json!("add_relationships")], "{sent:?}");
}
