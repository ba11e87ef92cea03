//! `kill -9` while the initial copy is part way through an `[[objects]]`
//! table, whose `[[relationships]]` table is still to copy, then a restart:
//! the copy resumes in the config's order, the rest of the objects before
//! any relationship, so every membership becomes a relationship. (Customer.io,
//! and the emulator by default, drops a relationship to an object that does
//! not exist yet.) The tables are named so their alphabetical order is the
//! wrong one: `memberships` sorts before `teams`.

use std::collections::BTreeSet;
use std::time::Duration;

use ciosync_emulator::{Emulator, Faults};

use crate::support::daemon::{config_file, signal, spawn_binary};
use crate::support::emulator::{self, wait_for};
use crate::support::postgres::{TestDb, USERS_TABLE};

const TEAMS: usize = 12_000;
const USERS: usize = 200;

const TABLES: &str = "
    CREATE TABLE public.teams (id text PRIMARY KEY, name text);
    ALTER TABLE public.teams REPLICA IDENTITY FULL;
    CREATE TABLE public.memberships (id serial PRIMARY KEY, user_id bigint, team_id text);
    ALTER TABLE public.memberships REPLICA IDENTITY FULL;
";

const CONFIG: &str = r#"
[[objects]]
table = "public.teams"
object_type_id = "1"
id_column = "id"
[objects.attributes]
name = "name"

[[relationships]]
table = "public.memberships"
customer_id_column = "user_id"
object_type_id = "1"
object_id_column = "team_id"
"#;

async fn copy_state(db: &TestDb, table: &str) -> Option<(String, i64)> {
    db.client
        .query_opt(
            "SELECT state, rows_copied FROM ciosync.initial_copy WHERE table_name = $1",
            &[&table],
        )
        .await
        .ok()
        .flatten()
        .map(|r| (r.get(0), r.get(1)))
}

/// Each membership as (user, team).
type Pairs = BTreeSet<(String, String)>;

async fn memberships(db: &TestDb) -> Pairs {
    let rows = db.client.query("SELECT user_id::text, team_id FROM memberships", &[]).await;
    rows.unwrap().iter().map(|r| (r.get(0), r.get(1))).collect()
}

fn relationships(e: &Emulator) -> Pairs {
    (1..=USERS)
        .flat_map(|user| {
            let user = user.to_string();
            let held = e.relationships(&user).unwrap_or_default();
            held.into_iter().map(move |r| (user.clone(), r.object_id))
        })
        .collect()
}

#[tokio::test]
async fn kill_9_during_an_object_copy_resumes_the_objects_before_their_relationships() {
    let db = TestDb::new("copy_order_kill9").await;
    db.exec(USERS_TABLE).await;
    db.exec(TABLES).await;
    db.exec(&format!(
        "INSERT INTO users (id, email) SELECT g, 'u' || g || '@x.io' FROM generate_series(1, {USERS}) g;
         INSERT INTO teams (id, name) SELECT 't' || lpad(g::text, 5, '0'), 'Team ' || g
             FROM generate_series(1, {TEAMS}) g;
         INSERT INTO memberships (user_id, team_id)
             SELECT g % {USERS} + 1, 't' || lpad(g::text, 5, '0') FROM generate_series(1, {TEAMS}, 7) g;"
    ))
    .await;
    let emulator = emulator::start().await;
    emulator.set_faults(Faults { latency_ms: 20, ..Faults::default() });
    let text = db.config(&emulator.url(), CONFIG).replacen(
        "linger_ms = 0\n",
        "linger_ms = 0\nmax_batch_ops = 100\n",
        1,
    );
    let config = config_file(&text);
    let logs = tempfile::tempdir().unwrap();
    let log = |n: &str| logs.path().join(n);
    let mut daemon = spawn_binary(config.path(), &log("1.log"));

    let deadline = tokio::time::Instant::now() + crate::support::CONVERGE;
    loop {
        if let Some((state, rows)) = copy_state(&db, "public.teams").await {
            if state == "copying" && rows >= 2000 {
                break;
            }
            assert_ne!(state, "done", "the objects' copy finished before it could be killed");
        }
        assert!(tokio::time::Instant::now() < deadline, "the objects' copy never got going");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    signal(&daemon, "KILL");
    daemon.wait().unwrap();
    let relationships_before = copy_state(&db, "public.memberships").await;
    assert_eq!(relationships_before, Some(("pending".to_owned(), 0)), "copied too early");
    emulator.set_faults(Faults::default());

    let mut daemon = spawn_binary(config.path(), &log("2.log"));
    let wanted = memberships(&db).await;
    assert_eq!(wanted.len(), TEAMS.div_ceil(7));
    let converged = wait_for(&emulator, |e| relationships(e) == wanted).await;
    signal(&daemon, "TERM");
    assert!(daemon.wait().unwrap().success());
    let held = relationships(&emulator);
    let missing: Vec<_> = wanted.difference(&held).collect();
    assert!(
        converged,
        "{} of {} memberships are no relationship after the resumed copy, e.g. {:?}",
        missing.len(),
        wanted.len(),
        missing.first()
    );
    assert_eq!(emulator.objects().len(), TEAMS);
    let resumed = std::fs::read_to_string(log("2.log")).unwrap();
    assert!(resumed.contains("resuming the initial copy"), "{resumed}");
}
