//! `ciosync check` verifies what `run` needs, changes nothing, prints one
//! line per check with the fix, and exits non-zero when `run` would fail.

use crate::support::daemon::{binary, config_file, API_KEY};
use crate::support::emulator;
use crate::support::postgres::{TestDb, USERS_TABLE};

fn check(text: &str) -> (Option<i32>, String) {
    check_file(config_file(text).path())
}

/// `ciosync check --config FILE`: its exit status and stdout.
fn check_file(path: &std::path::Path) -> (Option<i32>, String) {
    let output = std::process::Command::new(binary())
        .args(["check", "--config"])
        .arg(path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.code(), stdout)
}

/// The summary, the last line: its counts, each noun agreeing with its
/// count ("1 error", "2 warnings", never "error(s)").
fn summary(out: &str) -> (u64, u64) {
    let last = out.lines().last().unwrap_or_default();
    let count = |part: &str, noun: &str| -> u64 {
        let (n, word) = part.split_once(' ').unwrap_or_else(|| panic!("summary {last:?}"));
        let n: u64 = n.parse().unwrap_or_else(|_| panic!("summary {last:?}"));
        let agrees = if n == 1 { word == noun } else { word == format!("{noun}s") };
        assert!(agrees, "summary {last:?}");
        n
    };
    let (errors, warnings) = last.split_once(", ").unwrap_or_else(|| panic!("summary {last:?}"));
    (count(errors, "error"), count(warnings, "warning"))
}

#[tokio::test]
async fn check_passes_on_a_ready_database_and_creates_nothing() {
    let db = TestDb::new("check_ok").await;
    db.exec(USERS_TABLE).await;
    let emulator = emulator::start().await;
    let (code, out) = tokio::task::spawn_blocking({
        let text = db.config(&emulator.url(), "");
        move || check(&text)
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(summary(&out).0, 0, "{out}");
    for expected in [
        "ok      wal_level: logical",
        "replication privilege",
        "replica identity FULL",
        "run will create it",
        "customer.io credentials: accepted",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    assert_eq!(db.created_objects().await, (0, 0), "check changed something");
}

#[tokio::test]
async fn check_names_each_problem_with_its_fix() {
    let db = TestDb::new("check_bad").await;
    db.exec("CREATE TABLE users (id bigint, email text, first_name text, plan text, created_at timestamptz)").await;
    let emulator = emulator::start().await;
    let text = db.config(&emulator.url(), "").replace(API_KEY, "wrong-key");
    let (code, out) = tokio::task::spawn_blocking(move || check(&text)).await.unwrap();
    assert_eq!(code, Some(1), "{out}");
    assert!(summary(&out).0 >= 1, "{out}");
    for expected in [
        "id column id must be unique and not null",
        "CREATE UNIQUE INDEX",
        "mapped columns missing: bio",
        "replica identity DEFAULT without a primary key",
        "REPLICA IDENTITY FULL",
        "refused the site id and API key (HTTP 401)",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    assert!(!out.contains("wrong-key"), "the API key was printed");
}

#[tokio::test]
async fn check_points_at_waiting_dead_letters_without_failing() {
    let db = TestDb::new("check_dead_letters").await;
    db.exec(USERS_TABLE).await;
    let emulator = emulator::start().await;
    let text = crate::support::dead_letters::config_with_password(&db, &emulator.url());
    // Letters only exist for a slot ciosync streamed from.
    db.exec(&format!("SELECT pg_create_logical_replication_slot('{}', 'pgoutput')", db.name)).await;
    let store = crate::support::dead_letters::store(&text);
    let letter = crate::support::dead_letters::identify("1", serde_json::json!({"plan": "pro"}));
    store.record(&[letter.clone(), letter]).await.unwrap();
    let (code, out) = tokio::task::spawn_blocking(move || check(&text)).await.unwrap();
    assert_eq!(code, Some(0), "a warning does not fail check:\n{out}");
    assert!(
        out.contains("warning dead letters: 2 operations Customer.io refused wait")
            && out.contains("ciosync dlq list"),
        "{out}"
    );
}

#[tokio::test]
async fn check_names_problems_of_events_and_soft_deletes() {
    let db = TestDb::new("check_events").await;
    db.exec(
        "CREATE TABLE users (id bigint PRIMARY KEY, email text, first_name text, plan text,
                             created_at timestamptz, bio text, deleted_at timestamptz);
         CREATE TABLE outbox (id serial PRIMARY KEY, user_id bigint, name text, payload text);
         CREATE TABLE signups (user_id bigint, created_at timestamptz);",
    )
    .await;
    let emulator = emulator::start().await;
    let extra = r#"
[[events]]
table = "signups"
customer_id_column = "user_id"
name = "signed_up"

[[sync.events]]
name = "plan_changed"
when_changed = "plan"

[[events]]
table = "outbox"
customer_id_column = "user_id"
name_column = "kind"
data_column = "payload"

[[events]]
table = "no_such_table"
customer_id_column = "user_id"
name = "x"
"#;
    let text = db.config(&emulator.url(), extra).replacen(
        "id_column = \"id\"\n",
        "id_column = \"id\"\nsoft_delete_column = \"deleted_at\"\n",
        1,
    );
    let (code, out) = tokio::task::spawn_blocking(move || check(&text)).await.unwrap();
    assert_eq!(code, Some(1), "{out}");
    for expected in [
        // Under DEFAULT identity the record of what Customer.io accepted
        // (on by default) tells the transitions.
        "table public.users: 1 change event configured, decided against the record",
        "table public.users: soft deletes by deleted_at, told from updates of deleted rows",
        "event table public.outbox: no column kind (name_column); data_column payload is text, not json or jsonb",
        "event table public.no_such_table: does not exist",
        "event table public.signups: has no primary key",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
}

#[tokio::test]
async fn check_verifies_the_webhook_table_can_be_created_and_written() {
    let db = TestDb::new("check_webhooks").await;
    db.exec(USERS_TABLE).await;
    let emulator = emulator::start().await;
    let text = db.config(&emulator.url(), &crate::support::webhooks::section(""));
    let (code, out) = tokio::task::spawn_blocking({
        let text = text.clone();
        move || check(&text)
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("ok      webhooks.table ciosync.message_events: can be created"), "{out}");
    let tables: i64 = db
        .client
        .query_one("SELECT count(*) FROM pg_tables WHERE schemaname = 'ciosync'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 0, "check created the table");

    // A table of that name that cannot take the events.
    db.exec("CREATE SCHEMA ciosync; CREATE TABLE ciosync.message_events (id int)").await;
    let (code, out) = tokio::task::spawn_blocking(move || check(&text)).await.unwrap();
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("error   webhooks.table ciosync.message_events"), "{out}");
    assert!(out.contains("GRANT INSERT ON \"ciosync\".\"message_events\""), "{out}");
    assert!(!out.contains(crate::support::webhooks::SIGNING_KEY), "the key was printed");
}

/// A config file every local user can read, holding the API key, gets a
/// warning with the fix (check still passes: the mode may not be ours to
/// change); group-readable, the systemd unit's layout, does not.
#[tokio::test]
async fn check_warns_about_a_secret_every_local_user_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let db = TestDb::new("check_exposure").await;
    db.exec(USERS_TABLE).await;
    let emulator = emulator::start().await;
    let text = db.config(&emulator.url(), "");
    let file = config_file(&text);
    let run = move |mode: u32| {
        std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        check_file(file.path())
    };
    let ((open_code, open), (closed_code, closed)) =
        tokio::task::spawn_blocking(move || (run(0o644), run(0o640))).await.unwrap();
    assert_eq!(open_code, Some(0), "{open}");
    assert!(open.contains("warning config file: "), "{open}");
    assert!(open.contains("customerio.api_key") && open.contains("mode 644"), "{open}");
    assert!(open.contains("fix: chmod o-r "), "{open}");
    assert_eq!(closed_code, Some(0), "{closed}");
    assert!(!closed.contains("config file:"), "group-readable is the unit's layout:\n{closed}");
    assert!(!open.contains(API_KEY), "{open}");
}
