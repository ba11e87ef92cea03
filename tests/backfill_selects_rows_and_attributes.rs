//! `backfill --where` and `--attributes` send exactly what they select;
//! bad ones exit 2 naming the flag; `--status` and `--cancel` work.

use ciosync_emulator::Faults;
use serde_json::json;

use crate::backfill_yields_to_newer_changes::{backfill_state, wait_for_backfill};
use crate::support::daemon::{config_file, run_binary};
use crate::support::emulator::{batch_items, wait_for_attribute};
use crate::support::postgres::USERS_TABLE;
use crate::support::{customers_match_rows, Scenario};

fn users(n: i64) -> String {
    format!(
        "{USERS_TABLE} INSERT INTO users (id, email, plan)
         SELECT g, 'u' || g || '@x.io', 'free' FROM generate_series(1, {n}) g;"
    )
}

#[tokio::test]
async fn where_and_attributes_send_exactly_what_they_select() {
    let Scenario { db, emulator, daemon } =
        Scenario::start_with("backfill_select", &users(100), |c| c).await;
    assert!(customers_match_rows(&db, &emulator).await);
    let config = config_file(&db.config(&emulator.url(), ""));

    for (args, flag) in [
        (vec!["backfill", "--where", "no_such_column = 1"], "--where"),
        (vec!["backfill", "--attributes", "plan,nickname"], "--attributes"),
        (vec!["backfill", "--table", "public.nope"], "--table"),
    ] {
        let out = run_binary(&args, config.path()).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(flag), "{stderr}");
    }

    // Customer.io holds every value already, by the record: nothing goes.
    emulator.clear_requests();
    let selected = ["backfill", "--where", "id <= 10", "--attributes", "plan"];
    let out = run_binary(&selected, config.path()).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("10 rows") && stdout.contains("done"), "{stdout}");
    assert!(batch_items(&emulator).is_empty(), "an unchanged backfill sent something");

    // Ignoring the record: exactly the selected rows and attribute.
    let out = run_binary(&[&selected[..], &["--ignore-record"]].concat(), config.path()).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("10 rows") && stdout.contains("done"), "{stdout}");

    let items = batch_items(&emulator);
    let mut ids: Vec<String> =
        items.iter().map(|i| i["identifiers"]["id"].as_str().unwrap().to_owned()).collect();
    ids.sort_by_key(|id| id.parse::<i64>().unwrap());
    assert_eq!(ids, (1..=10).map(|i| i.to_string()).collect::<Vec<_>>());
    assert!(items.iter().all(|i| i["attributes"] == json!({"plan": "free"})), "{items:?}");

    // One row is said in the singular.
    let out = run_binary(&["backfill", "--where", "id = 1"], config.path()).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("queued: public.users, 1 row\n"), "{stdout}");
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn status_shows_progress_and_cancel_stops_a_backfill() {
    let Scenario { db, emulator, daemon } =
        Scenario::start_with("backfill_cancel", &users(10_000), |c| c).await;
    assert!(customers_match_rows(&db, &emulator).await);
    let config = config_file(&db.config(&emulator.url(), ""));
    // Customer.io failing every request holds the backfill (its rows sent
    // whole: the record would leave them unsent) until the CLI calls below
    // have landed, whatever the chunk size and the machine's speed.
    emulator.set_faults(Faults { error_rate: 1.0, ..Faults::default() });
    let out = run_binary(&["backfill", "--ignore-record", "--detach"], config.path()).await;
    assert!(out.status.success());
    let id: i64 =
        db.client.query_one("SELECT max(id) FROM ciosync.backfills", &[]).await.unwrap().get(0);
    assert!(wait_for_backfill(&db, id, "running").await);

    let status = run_binary(&["backfill", "--status"], config.path()).await;
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains(&format!("#{id} public.users running")) && text.contains("/10000 rows"),
        "{text}"
    );

    let cancel = run_binary(&["backfill", "--cancel", &id.to_string()], config.path()).await;
    assert!(cancel.status.success(), "{}", String::from_utf8_lossy(&cancel.stderr));
    let (state, done_at_cancel) = backfill_state(&db, id).await;
    assert_eq!(state, "cancelled");
    emulator.set_faults(Faults::default());
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(backfill_state(&db, id).await, ("cancelled".to_owned(), done_at_cancel));
    assert!(done_at_cancel < 10_000, "cancelled after it finished");
    let again = run_binary(&["backfill", "--cancel", &id.to_string()], config.path()).await;
    assert_eq!(again.status.code(), Some(1), "a second cancel finds nothing to cancel");
    daemon.stop().await.unwrap();
}

/// Closes the daemon's `(SELECT * FROM t WHERE (…)) AS rows` and adds a
/// statement, leaving the rest of the page query valid.
const SECOND_STATEMENT: &str =
    "true)) AS rows; INSERT INTO loot VALUES ('taken'); SELECT * FROM (SELECT 1 AS id WHERE (true";
/// One statement that writes through a function.
const WRITES: &str = "(SELECT steal())";

/// `--where` is whatever was written into `ciosync.backfills`, so the
/// daemon, not only the CLI, holds it to one read-only condition: a second
/// statement and a write through a function are refused (the backfill
/// fails, naming `--where`), nothing is written, and the stream goes on.
#[tokio::test]
async fn a_condition_that_writes_or_adds_a_statement_is_refused_by_the_daemon() {
    let Scenario { db, emulator, daemon } =
        Scenario::start_with("backfill_where_guard", &users(5), |c| c).await;
    assert!(customers_match_rows(&db, &emulator).await);
    db.exec(
        "CREATE TABLE loot (v text);
         CREATE FUNCTION steal() RETURNS boolean LANGUAGE sql
             AS $$ INSERT INTO loot VALUES ('taken') RETURNING true $$;",
    )
    .await;
    let config = config_file(&db.config(&emulator.url(), ""));
    for clause in [SECOND_STATEMENT, WRITES] {
        let out = run_binary(&["backfill", "--where", clause], config.path()).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{clause}: {stderr}");
        assert!(stderr.contains("--where"), "{stderr}");
    }
    let slot: String = db
        .client
        .query_one(
            "SELECT slot_name::text FROM pg_replication_slots WHERE database = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    for clause in [SECOND_STATEMENT, WRITES] {
        let id: i64 = db
            .client
            .query_one(
                "INSERT INTO ciosync.backfills (slot, table_name, where_clause) \
                 VALUES ($1, 'public.users', $2) RETURNING id",
                &[&slot, &clause],
            )
            .await
            .unwrap()
            .get(0);
        assert!(
            wait_for_backfill(&db, id, "failed").await,
            "{clause}: {:?}",
            backfill_state(&db, id).await
        );
        let error: String = db
            .client
            .query_one("SELECT error FROM ciosync.backfills WHERE id = $1", &[&id])
            .await
            .unwrap()
            .get(0);
        assert!(error.contains("--where"), "{error}");
    }
    let taken: i64 = db.client.query_one("SELECT count(*) FROM loot", &[]).await.unwrap().get(0);
    assert_eq!(taken, 0, "the condition wrote as the daemon's role");
    db.exec("UPDATE users SET plan = 'after' WHERE id = 1").await;
    assert!(wait_for_attribute(&emulator, "1", "plan", json!("after")).await);
    daemon.stop().await.unwrap();
}
