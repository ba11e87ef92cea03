//! A least-privilege role needs SELECT on every table the initial copy and
//! backfills read: `[[objects]]`, `[[relationships]]` and `[[devices]]`
//! tables as much as `[[sync]]` ones. `check` names each one the role
//! cannot read, with the GRANT to run; an `[[events]]` table it cannot read
//! is a warning (the stream does not read it, `backfill --events` does).

use crate::objects_are_created_diffed_and_deleted::{ACCOUNTS, OBJECTS};
use crate::relationships_follow_memberships::{MEMBERSHIPS, RELATIONSHIPS};
use crate::support::daemon::{binary, config_file};
use crate::support::emulator;
use crate::support::postgres::TestDb;

const DEVICES: &str = "
    CREATE TABLE public.push_tokens (user_id bigint, token text, platform text,
                                     PRIMARY KEY (user_id, token));
    CREATE TABLE public.outbox (id bigint PRIMARY KEY, user_id bigint, name text);
";

const DEVICES_AND_EVENTS: &str = r#"
[[devices]]
table = "public.push_tokens"
customer_id_column = "user_id"
token_column = "token"
platform_column = "platform"

[[events]]
table = "public.outbox"
customer_id_column = "user_id"
name_column = "name"
"#;

async fn check(text: &str) -> (Option<i32>, String) {
    let file = config_file(text);
    tokio::task::spawn_blocking(move || {
        let output = std::process::Command::new(binary())
            .args(["check", "--config"])
            .arg(file.path())
            .output()
            .unwrap();
        (output.status.code(), String::from_utf8_lossy(&output.stdout).into_owned())
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn check_names_the_select_grant_each_copied_table_lacks() {
    let db = TestDb::new("check_grants").await;
    db.exec(&format!("{ACCOUNTS}{MEMBERSHIPS}{DEVICES}")).await;
    let role = format!("{}_ro", db.name);
    let tables = "users, accounts, memberships, push_tokens, outbox";
    db.exec(&format!(
        "CREATE ROLE {role} LOGIN REPLICATION;
         GRANT SELECT ON {tables} TO {role};
         CREATE SCHEMA ciosync AUTHORIZATION {role};
         CREATE PUBLICATION {} FOR TABLE {tables} WITH (publish_via_partition_root = true);",
        db.name
    ))
    .await;
    let emulator = emulator::start().await;
    let text = db
        .config(&emulator.url(), &format!("{OBJECTS}{RELATIONSHIPS}{DEVICES_AND_EVENTS}"))
        .replace("postgres://postgres@", &format!("postgres://{role}@"));
    let (code, out) = check(&text).await;
    assert_eq!(code, Some(0), "check with every grant:\n{out}");
    assert!(!out.contains("cannot read"), "{out}");

    for (table, label, level, code) in [
        ("accounts", "table public.accounts", "error  ", 1),
        ("memberships", "table public.memberships", "error  ", 1),
        ("push_tokens", "devices table public.push_tokens", "error  ", 1),
        ("outbox", "event table public.outbox", "warning", 0),
    ] {
        db.exec(&format!("REVOKE SELECT ON {table} FROM {role}")).await;
        let (exit, out) = check(&text).await;
        assert_eq!(exit, Some(code), "without SELECT on {table}:\n{out}");
        let line = format!("{level} {label}: role {role} cannot read it");
        assert!(out.contains(&line), "without SELECT on {table}: missing {line:?} in\n{out}");
        let grant = format!("fix: GRANT SELECT ON \"public\".\"{table}\" TO \"{role}\";");
        assert!(out.contains(&grant), "without SELECT on {table}: missing {grant:?} in\n{out}");
        assert_eq!(out.matches("cannot read").count(), 1, "{out}");
        db.exec(&format!("GRANT SELECT ON {table} TO {role}")).await;
    }

    // SELECT without USAGE on the schema reads nothing: both grants named.
    db.exec("REVOKE USAGE ON SCHEMA public FROM PUBLIC").await;
    let (exit, out) = check(&text).await;
    assert_eq!(exit, Some(1), "without USAGE on public:\n{out}");
    let grant = format!(
        "fix: GRANT USAGE ON SCHEMA \"public\" TO \"{role}\"; \
         GRANT SELECT ON \"public\".\"push_tokens\" TO \"{role}\";"
    );
    assert!(out.contains(&grant), "without USAGE on public: missing {grant:?} in\n{out}");
}
