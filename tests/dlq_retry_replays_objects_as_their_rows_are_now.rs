//! `dlq retry` replays an object's and a relationship's dead letter as its
//! row is now, never as it was refused, the daemon running throughout:
//! - an add (`object_identify`, `add_relationship`) refused, then its row
//!   changed (the change delivered): Customer.io gets the row's current
//!   values, whole; never the refused, older ones;
//! - an add whose row was deleted, soft-deleted or filtered out since:
//!   nothing sent;
//! - a removal (`object_delete`, `delete_relationship`) whose row is still
//!   gone: sent as it was; one whose row came back: stale, nothing sent;
//! - a letter whose table is no longer in the config: kept, saying so.

use ciosync_emulator::{Emulator, Faults};
use serde_json::{json, Value};

use crate::objects_are_created_diffed_and_deleted::{
    assert_requests_match_the_schema, object_items, ACCOUNTS, OBJECTS,
};
use crate::relationships_follow_memberships::{related, MEMBERSHIPS, RELATIONSHIPS};
use crate::support::daemon::{config_file, run_binary};
use crate::support::dead_letters::{rows, texts};
use crate::support::emulator::{batch_items, wait_for};
use crate::support::postgres::TestDb;
use crate::support::Scenario;

const GONE: &str = "the row is gone or no longer syncs; its removal goes through the stream";

/// Runs `sql` while Customer.io refuses with `faults` (once what came
/// before was delivered), and waits until its dead letter is stored; the
/// letter's operation.
async fn refused(db: &TestDb, emulator: &Emulator, faults: Faults, sql: &str) -> String {
    delivered(db).await;
    emulator.set_faults(faults);
    let before = rows(db).await.len();
    db.exec(sql).await;
    let deadline = tokio::time::Instant::now() + crate::support::CONVERGE;
    while rows(db).await.len() == before {
        assert!(tokio::time::Instant::now() < deadline, "no dead letter for: {sql}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    emulator.set_faults(Faults::default());
    let last = "SELECT operation FROM ciosync.dead_letters ORDER BY id DESC LIMIT 1";
    db.client.query_one(last, &[]).await.unwrap().get(0)
}

/// Waits until the daemon acknowledged everything committed so far: it was
/// delivered, so the next fault meets the next change's request.
async fn delivered(db: &TestDb) {
    let end = db.current_lsn().await;
    assert!(db.wait_for_confirmed(&db.name, end).await, "everything before is acknowledged");
}

/// The next request refused with a 400: a one-item batch's refusal is
/// that item's.
fn refuse_next() -> Faults {
    Faults { fail_next: 1, fail_status: 400, ..Faults::default() }
}

/// The accounts as objects, the banned ones filtered out.
fn objects() -> String {
    let filtered =
        "soft_delete_column = \"deleted_at\"\nfilter = \"plan IS DISTINCT FROM 'banned'\"\n";
    let config = OBJECTS.replacen("soft_delete_column = \"deleted_at\"\n", filtered, 1);
    assert_ne!(config, OBJECTS);
    config
}

fn attributes(e: &Emulator, id: &str) -> Option<Value> {
    e.object("1", id).map(|o| Value::Object(o.attributes))
}

#[tokio::test]
async fn object_letters_are_replayed_as_their_rows_are_now() {
    let Scenario { db, emulator, daemon } =
        Scenario::start_with("dlq_objects", ACCOUNTS, |c| c + &objects()).await;
    let exists = |id: &'static str| move |e: &Emulator| e.object("1", id).is_some();

    // (a) Created refused; the row changed since, that change delivered
    // alone (FULL identity: only the changed attribute).
    let sql = "INSERT INTO accounts VALUES ('acme', 'Acme', 'free', 5, NULL)";
    assert_eq!(refused(&db, &emulator, refuse_next(), sql).await, "object_identify");
    db.exec("UPDATE accounts SET plan = 'pro' WHERE id = 'acme'").await;
    assert!(wait_for(&emulator, |e| attributes(e, "acme") == Some(json!({"plan": "pro"}))).await);
    // (b) Created refused, then deleted; (c) the same, soft-deleted; (f)
    // the same, filtered out.
    let sql = "INSERT INTO accounts VALUES ('globex', 'Globex', 'free', 1, NULL)";
    assert_eq!(refused(&db, &emulator, refuse_next(), sql).await, "object_identify");
    db.exec("DELETE FROM accounts WHERE id = 'globex'").await;
    let sql = "INSERT INTO accounts VALUES ('hooli', 'Hooli', 'free', 1, NULL)";
    assert_eq!(refused(&db, &emulator, refuse_next(), sql).await, "object_identify");
    db.exec("UPDATE accounts SET deleted_at = now() WHERE id = 'hooli'").await;
    let sql = "INSERT INTO accounts VALUES ('wayne', 'Wayne', 'free', 1, NULL)";
    assert_eq!(refused(&db, &emulator, refuse_next(), sql).await, "object_identify");
    db.exec("UPDATE accounts SET plan = 'banned' WHERE id = 'wayne'").await;
    // (d) A delete refused; the row stays gone.
    db.exec("INSERT INTO accounts VALUES ('initech', 'Initech', 'free', 1, NULL)").await;
    assert!(wait_for(&emulator, exists("initech")).await);
    let sql = "DELETE FROM accounts WHERE id = 'initech'";
    assert_eq!(refused(&db, &emulator, refuse_next(), sql).await, "object_delete");
    // (e) A delete refused; the row inserted again since.
    db.exec("INSERT INTO accounts VALUES ('umbrella', 'Umbrella', 'free', 1, NULL)").await;
    assert!(wait_for(&emulator, exists("umbrella")).await);
    let sql = "DELETE FROM accounts WHERE id = 'umbrella'";
    assert_eq!(refused(&db, &emulator, refuse_next(), sql).await, "object_delete");
    db.exec("INSERT INTO accounts VALUES ('umbrella', 'Umbrella', 'back', 2, NULL)").await;
    assert!(
        wait_for(&emulator, |e| attributes(e, "umbrella").is_some_and(|a| a["plan"] == "back"))
            .await
    );
    delivered(&db).await;
    let letters = rows(&db).await;
    assert_eq!(letters.len(), 6, "{letters:?}");
    assert_eq!(letters[0].customer_id, "object 1/acme", "named readably");

    // Without its table in the config, a letter is kept, saying what to do.
    let without = config_file(&db.config(&emulator.url(), ""));
    emulator.clear_requests();
    let out =
        run_binary(&["dlq", "retry", "--id", &letters[0].id.to_string()], without.path()).await;
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("kept 1"), "{stdout}");
    assert!(stdout.contains("no [[objects]] table of this object type"), "{stdout}");
    assert!(rows(&db).await[0].error.contains("ciosync dlq discard"), "{:?}", rows(&db).await);
    assert!(batch_items(&emulator).is_empty(), "nothing was sent");

    let config = config_file(&(db.config(&emulator.url(), "") + &objects()));
    let out = run_binary(&["dlq", "retry", "--all"], config.path()).await;
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let id = |i: usize| letters[i].id;
    assert_eq!(
        stdout,
        format!(
            "retried 6: delivered 1, refreshed from the row 1, skipped 4, refused again 0\n  \
             #{} skipped: {GONE}\n  \
             #{} skipped: {GONE}\n  \
             #{} skipped: {GONE}\n  \
             #{} skipped: its row exists again and syncs; the removal is stale\n",
            id(1),
            id(2),
            id(3),
            id(5)
        )
    );
    assert!(rows(&db).await.is_empty(), "every letter is settled");
    // (a) The row as it is now, whole: the refused plan never went.
    let full = json!({"name": "Acme", "plan": "pro", "seats": 5});
    assert_eq!(attributes(&emulator, "acme"), Some(full.clone()));
    let sent = object_items(&emulator);
    let of = |id: &str| sent.iter().filter(|i| i["identifiers"]["object_id"] == id).count();
    assert_eq!(sent[0]["attributes"], full, "{sent:?}");
    // (b), (c), (f): nothing sent; (d) the delete went as it was; (e) nothing.
    let nothing = [of("globex"), of("hooli"), of("wayne"), of("umbrella")];
    assert_eq!(nothing, [0; 4], "{sent:?}");
    for id in ["globex", "hooli", "wayne"] {
        assert!(attributes(&emulator, id).is_none(), "{id}");
    }
    assert_eq!(of("initech"), 1);
    assert!(emulator.object("1", "initech").is_none(), "the delete went");
    assert_eq!(attributes(&emulator, "umbrella").unwrap()["plan"], "back", "still there");
    assert_eq!(sent.len(), 2, "{sent:?}");
    daemon.stop().await.unwrap();
    assert_requests_match_the_schema(&emulator);
}

#[tokio::test]
async fn relationship_letters_are_replayed_as_their_rows_are_now() {
    let schema = format!("{ACCOUNTS}{MEMBERSHIPS}");
    let Scenario { db, emulator, daemon } =
        Scenario::start_with("dlq_relationships", &schema, |c| c + OBJECTS + RELATIONSHIPS).await;
    db.exec(
        "INSERT INTO accounts (id, name) VALUES ('acme', 'Acme');
         INSERT INTO users (id, email) VALUES (42, 'a@x.io'), (43, 'b@x.io'), (44, 'c@x.io'),
                                              (45, 'd@x.io');",
    )
    .await;
    assert!(
        wait_for(&emulator, |e| e.customer("45").is_some() && e.object("1", "acme").is_some())
            .await
    );
    let reject = |id: &str| Faults { reject_ids: vec![id.into()], ..Faults::default() };
    let role = |e: &Emulator, customer: &str| related(e, customer).first().map(|r| r.1.clone());

    // (a) Added refused; the role changed since, delivered.
    let sql = "INSERT INTO memberships (user_id, account_id, role) VALUES (42, 'acme', 'member')";
    assert_eq!(refused(&db, &emulator, reject("42"), sql).await, "add_relationship");
    db.exec("UPDATE memberships SET role = 'owner' WHERE user_id = 42").await;
    assert!(wait_for(&emulator, |e| role(e, "42") == Some(json!({"role": "owner"}))).await);
    // (b) Added refused, then deleted.
    let sql = "INSERT INTO memberships (user_id, account_id, role) VALUES (43, 'acme', 'admin')";
    assert_eq!(refused(&db, &emulator, reject("43"), sql).await, "add_relationship");
    db.exec("DELETE FROM memberships WHERE user_id = 43").await;
    // (c) A removal refused; the row stays gone. (d) One whose row came back.
    db.exec(
        "INSERT INTO memberships (user_id, account_id, role) VALUES (44, 'acme', 'member'),
                                                                    (45, 'acme', 'member')",
    )
    .await;
    assert!(wait_for(&emulator, |e| role(e, "44").is_some() && role(e, "45").is_some()).await);
    let sql = "DELETE FROM memberships WHERE user_id = 44";
    assert_eq!(refused(&db, &emulator, reject("44"), sql).await, "delete_relationship");
    let sql = "DELETE FROM memberships WHERE user_id = 45";
    assert_eq!(refused(&db, &emulator, reject("45"), sql).await, "delete_relationship");
    db.exec("INSERT INTO memberships (user_id, account_id, role) VALUES (45, 'acme', 'back')")
        .await;
    assert!(wait_for(&emulator, |e| role(e, "45") == Some(json!({"role": "back"}))).await);
    delivered(&db).await;
    let letters = rows(&db).await;
    assert_eq!(letters.len(), 4, "{letters:?}");

    // Without a [[relationships]] table of the type: every letter kept.
    let without = config_file(&(db.config(&emulator.url(), "") + OBJECTS));
    emulator.clear_requests();
    let out = run_binary(&["dlq", "retry", "--all"], without.path()).await;
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.starts_with("retried 4: delivered 0, refreshed from the row 0, skipped 0, refused again 0, kept 4\n"), "{stdout}");
    assert!(stdout.contains("no [[relationships]] table of this object type"), "{stdout}");
    assert!(batch_items(&emulator).is_empty(), "nothing was sent");

    let config = config_file(&(db.config(&emulator.url(), "") + OBJECTS + RELATIONSHIPS));
    let out = run_binary(&["dlq", "retry", "--all"], config.path()).await;
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.starts_with(
            "retried 4: delivered 1, refreshed from the row 1, skipped 2, refused again 0\n"
        ),
        "{stdout}"
    );
    assert!(rows(&db).await.is_empty(), "every letter is settled");
    let sent = batch_items(&emulator);
    let of = |customer: &str| {
        let items = sent.iter().filter(|i| i["identifiers"]["id"] == customer);
        items.map(|i| i["action"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    // (a) The current role, never the refused one.
    assert_eq!(of("42"), ["add_relationships"], "{sent:?}");
    let added = &sent.iter().find(|i| i["identifiers"]["id"] == "42").unwrap();
    assert_eq!(added["cio_relationships"][0]["relationship_attributes"], json!({"role": "owner"}));
    assert_eq!(role(&emulator, "42"), Some(json!({"role": "owner"})));
    // (b) Nothing; (c) the removal as it was; (d) nothing.
    assert!(of("43").is_empty() && related(&emulator, "43").is_empty(), "{sent:?}");
    assert_eq!(of("44"), ["delete_relationships"]);
    assert!(related(&emulator, "44").is_empty(), "the removal went");
    assert!(of("45").is_empty(), "{sent:?}");
    assert_eq!(role(&emulator, "45"), Some(json!({"role": "back"})), "still related");
    daemon.stop().await.unwrap();
    assert_requests_match_the_schema(&emulator);
}
