//! A filter reading a column the replica identity does not carry would make
//! Postgres refuse the application's UPDATEs and DELETEs once published.
//! With the record of what Customer.io accepted on, ciosync evaluates such
//! a filter itself (`sync_filter_syncs_only_matching_rows`), and `check`
//! says so, or says why it cannot (outside the subset it evaluates). With
//! the record off, `check` reports it as an error with the fix, and `run`
//! refuses to create such a publication. A filter that does not work on
//! the table, or that Postgres does not allow in a publication, names
//! `sync[i].filter`.

use crate::support::daemon::{binary, config_file, run_binary};
use crate::support::emulator;
use crate::support::postgres::TestDb;
use crate::sync_filter_syncs_only_matching_rows::config_with_filter;

/// [`config_with_filter`] with the record of what Customer.io accepted off.
fn without_record(db: &TestDb, track_url: &str, filter: &str) -> String {
    config_with_filter(db, track_url, filter) + "\n[pipeline]\nrecord_accepted = false\n"
}

/// The filtered users table with the DEFAULT replica identity (the key).
const KEY_IDENTITY_USERS: &str = "
    CREATE TABLE public.users (
        id bigint PRIMARY KEY, email text, first_name text, plan text,
        created_at timestamptz, bio text,
        email_verified boolean NOT NULL DEFAULT false, is_staff boolean NOT NULL DEFAULT false
    );";

async fn check(text: String) -> (Option<i32>, String) {
    tokio::task::spawn_blocking(move || {
        let file = config_file(&text);
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
async fn check_reports_filter_columns_outside_the_replica_identity() {
    let db = TestDb::new("sync_filter_identity").await;
    db.exec(KEY_IDENTITY_USERS).await;
    let emulator = emulator::start().await;

    let (code, out) = check(without_record(&db, &emulator.url(), "id > 0 AND NOT is_staff")).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("error   table public.users: sync[0].filter reads is_staff of public.users"),
        "{out}"
    );
    assert!(out.contains("fix: ALTER TABLE \"public\".\"users\" REPLICA IDENTITY FULL"), "{out}");

    // With the record on, ciosync evaluates it; not a filter outside its subset.
    let (code, out) =
        check(config_with_filter(&db, &emulator.url(), "id > 0 AND NOT is_staff")).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("sync[0].filter reads is_staff outside the replica identity, so the publication does not carry it: ciosync evaluates it on each change"), "{out}");
    let (code, out) =
        check(config_with_filter(&db, &emulator.url(), "NOT is_staff AND lower(email) = 'a@x.io'"))
            .await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("so ciosync evaluates it on each change itself, and it cannot"), "{out}");
    assert!(out.contains("it cannot: functions"), "{out}");

    let (code, out) = check(config_with_filter(&db, &emulator.url(), "id > 0")).await;
    assert_eq!(code, Some(0), "a key column is in the identity:\n{out}");
    assert!(out.contains("sync[0].filter works on the table; the columns it reads (id)"), "{out}");

    let (code, out) = check(config_with_filter(&db, &emulator.url(), "is_stuff")).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("sync[0].filter (is_stuff) does not work on the table"), "{out}");
    assert!(out.contains("column \"is_stuff\" does not exist"), "{out}");
    assert_eq!(db.created_objects().await, (0, 0), "check changed something");
}

#[tokio::test]
async fn run_refuses_to_publish_filter_columns_outside_the_replica_identity() {
    let db = TestDb::new("sync_filter_identity_run").await;
    db.exec(KEY_IDENTITY_USERS).await;
    let file = config_file(&without_record(&db, "http://127.0.0.1:9", "NOT is_staff"));
    let output = run_binary(&["run", "--log-format", "text"], file.path()).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("sync[0].filter reads is_staff"), "{stderr}");
    assert!(stderr.contains("REPLICA IDENTITY FULL"), "{stderr}");
    assert_eq!(db.created_objects().await, (0, 0), "run created something");
    // The application's own updates still work.
    db.exec("INSERT INTO users (id) VALUES (1); UPDATE users SET is_staff = true").await;

    // A filter Postgres does not allow in a publication (a mutable function)
    // stops run too, instead of being retried.
    let file = config_file(&without_record(&db, "http://127.0.0.1:9", "id < random() * 10"));
    let output = run_binary(&["run", "--log-format", "text"], file.path()).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("Postgres refuses sync[0].filter as a publication row filter"),
        "{stderr}"
    );
    assert!(stderr.contains("mutable functions are not allowed"), "{stderr}");
}

/// An `[[objects]]` entry's filter is named as the file names it
/// (`objects[0].filter`), not by its place among the synced tables (after
/// the `[[sync]]` one, `sync[1]`), by `check` and by `run`, whether
/// ciosync would evaluate it (`id`, outside the identity) or the
/// publication would carry it.
#[tokio::test]
async fn an_objects_filter_is_named_by_its_entry() {
    use crate::objects_are_created_diffed_and_deleted::{ACCOUNTS, OBJECTS};
    let db = TestDb::new("objects_filter_named").await;
    db.exec(ACCOUNTS).await;
    db.exec("ALTER TABLE accounts REPLICA IDENTITY DEFAULT").await;
    let with = |filter: &str| {
        let line = format!("filter = \"{filter}\"\nsoft_delete_column");
        db.config("http://127.0.0.1:9", &OBJECTS.replace("soft_delete_column", &line))
    };
    let (code, out) = check(with("is_stuff")).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("objects[0].filter (is_stuff) does not work on the table"), "{out}");
    let (code, out) = check(with("seats > 1")).await;
    assert!(out.contains("objects[0].filter reads seats"), "{code:?} {out}");

    let file = config_file(&with("is_stuff"));
    let output = run_binary(&["run", "--log-format", "text"], file.path()).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("objects[0].filter is not a valid row filter for public.accounts"),
        "{stderr}"
    );

    db.exec("ALTER TABLE accounts REPLICA IDENTITY FULL").await;
    let file = config_file(&with("length(id) < random() * 10"));
    let output = run_binary(&["run", "--log-format", "text"], file.path()).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("Postgres refuses objects[0].filter as a publication row filter"),
        "{stderr}"
    );
}
