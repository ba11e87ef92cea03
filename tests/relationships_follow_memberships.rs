//! A `[[relationships]]` table: memberships relate people to account
//! objects as they are inserted, updated (a role, a move to another
//! account) and deleted. An account, a user and their membership inserted
//! in one transaction reach Customer.io object first: the emulator drops a
//! relationship to an object it does not hold yet.

use ciosync_emulator::Faults;
use serde_json::json;

use crate::objects_are_created_diffed_and_deleted::{
    assert_requests_match_the_schema, ACCOUNTS, OBJECTS,
};
use crate::support::emulator::wait_for;
use crate::support::Scenario;

pub const MEMBERSHIPS: &str = "
    CREATE TABLE public.memberships (id serial PRIMARY KEY, user_id bigint, account_id text,
                                     role text);
    ALTER TABLE public.memberships REPLICA IDENTITY FULL;
";

pub const RELATIONSHIPS: &str = r#"
[[relationships]]
table = "public.memberships"
customer_id_column = "user_id"
object_type_id = "1"
object_id_column = "account_id"

[relationships.attributes]
role = "role"
"#;

/// `customer`'s relationships as (object id, attributes).
pub fn related(e: &ciosync_emulator::Emulator, customer: &str) -> Vec<(String, serde_json::Value)> {
    let relationships = e.relationships(customer).unwrap_or_default();
    relationships
        .into_iter()
        .map(|r| (r.object_id, serde_json::Value::Object(r.attributes)))
        .collect()
}

#[tokio::test]
async fn relationships_follow_memberships() {
    let schema = format!("{ACCOUNTS}{MEMBERSHIPS}");
    let Scenario { db, emulator, daemon } =
        Scenario::start_with("relationships", &schema, |c| c + OBJECTS + RELATIONSHIPS).await;

    // Object and membership in one transaction, several members at once.
    // The first request (the accounts') fails once and is retried: the
    // memberships, another person's operations, must wait for it, not go
    // beside it.
    emulator.set_faults(Faults { fail_next: 1, ..Faults::default() });
    db.exec(
        "BEGIN;
         INSERT INTO accounts (id, name) VALUES ('acme', 'Acme'), ('globex', 'Globex');
         INSERT INTO users (id, email) VALUES (42, 'a@x.io'), (43, 'b@x.io');
         INSERT INTO memberships (user_id, account_id, role)
             VALUES (42, 'acme', 'admin'), (43, 'acme', 'member');
         COMMIT;",
    )
    .await;
    let both = |e: &ciosync_emulator::Emulator| {
        related(e, "42") == [("acme".to_owned(), json!({"role": "admin"}))]
            && related(e, "43") == [("acme".to_owned(), json!({"role": "member"}))]
    };
    assert!(
        wait_for(&emulator, both).await,
        "the memberships are not relationships: {:?} {:?}",
        related(&emulator, "42"),
        related(&emulator, "43")
    );

    db.exec("UPDATE memberships SET role = 'owner' WHERE user_id = 42").await;
    db.exec("UPDATE memberships SET account_id = 'globex' WHERE user_id = 43").await;
    let moved = |e: &ciosync_emulator::Emulator| {
        related(e, "42") == [("acme".to_owned(), json!({"role": "owner"}))]
            && related(e, "43") == [("globex".to_owned(), json!({"role": "member"}))]
    };
    assert!(
        wait_for(&emulator, moved).await,
        "{:?} {:?}",
        related(&emulator, "42"),
        related(&emulator, "43")
    );

    db.exec("DELETE FROM memberships WHERE user_id = 42").await;
    assert!(
        wait_for(&emulator, |e| related(e, "42").is_empty()).await,
        "{:?}",
        related(&emulator, "42")
    );
    let acme = emulator.object("1", "acme").expect("acme stays");
    assert!(acme.relationships.is_empty(), "{acme:?}");
    assert_eq!(related(&emulator, "43").len(), 1);
    daemon.stop().await.unwrap();
    assert_requests_match_the_schema(&emulator);
}

/// As ORMs leave their tables: DEFAULT identity, a primary key of both ids
/// (the README's setup). Deletes and moves name the relationship from the
/// key; a membership table keyed otherwise skips its deletes, counted.
#[tokio::test]
async fn relationships_under_default_identity_follow_a_key_of_both_ids() {
    let schema = format!(
        "{ACCOUNTS}
         CREATE TABLE public.memberships (user_id bigint, account_id text, role text,
                                          PRIMARY KEY (user_id, account_id));
         CREATE TABLE public.seats (id serial PRIMARY KEY, user_id bigint, account_id text);"
    );
    let seats = RELATIONSHIPS
        .replace("public.memberships", "public.seats")
        .replace("[relationships.attributes]\nrole = \"role\"\n", "");
    let Scenario { db, emulator, daemon } =
        Scenario::start_with("relationships_default", &schema, |c| {
            c + OBJECTS
                + RELATIONSHIPS
                + &seats.replace("object_type_id = \"1\"", "object_type_id = \"2\"")
        })
        .await;
    db.exec(
        "BEGIN;
         INSERT INTO accounts (id, name) VALUES ('acme', 'Acme'), ('globex', 'Globex');
         INSERT INTO memberships VALUES (42, 'acme', 'admin'), (43, 'acme', 'member');
         COMMIT;",
    )
    .await;
    db.exec("UPDATE memberships SET account_id = 'globex' WHERE user_id = 43").await;
    db.exec("UPDATE memberships SET role = 'owner' WHERE user_id = 42").await;
    let moved = |e: &ciosync_emulator::Emulator| {
        related(e, "42") == [("acme".to_owned(), json!({"role": "owner"}))]
            && related(e, "43") == [("globex".to_owned(), json!({"role": "member"}))]
    };
    assert!(
        wait_for(&emulator, moved).await,
        "{:?} {:?}",
        related(&emulator, "42"),
        related(&emulator, "43")
    );
    db.exec("DELETE FROM memberships WHERE user_id = 42").await;
    assert!(
        wait_for(&emulator, |e| related(e, "42").is_empty()).await,
        "{:?}",
        related(&emulator, "42")
    );

    // A surrogate key: the delete cannot name the relationship.
    let skipped = |d: &crate::support::daemon::InProcess| {
        d.counters.changes_skipped_relationship_unknown.load(std::sync::atomic::Ordering::Relaxed)
    };
    db.exec("INSERT INTO seats (user_id, account_id) VALUES (44, 'acme'); DELETE FROM seats;")
        .await;
    let deadline = tokio::time::Instant::now() + crate::support::CONVERGE;
    while skipped(&daemon) == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(skipped(&daemon), 1, "the seat's delete was not counted as relationship_unknown");
    daemon.stop().await.unwrap();
    assert_requests_match_the_schema(&emulator);
}
