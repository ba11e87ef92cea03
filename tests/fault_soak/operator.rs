//! The faults that need an operator afterwards: operations of every kind
//! Customer.io refuses for good (dead letters, replayed with `ciosync dlq
//! retry` at the end), a mass DELETE that trips the breaker (some held
//! removals discarded, the rest approved with `ciosync deletes`), and a
//! backfill whose chunks are cut between their watermarks. Each runs
//! alone (no other fault meanwhile) on rows of its own id range, which the
//! workload never touches.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::time::Instant;

use super::faults::Targets;
use super::verify::Customers;
use crate::support::daemon::run_binary;
use crate::support::postgres::TestDb;

/// First user id of [`refuse_items`] (100 a time).
const REFUSED_IDS: i64 = 2_000_000_000;
/// First `soak_events` id of [`refuse_items`], far past the workload's.
const REFUSED_EVENT_ROWS: i64 = 1_000_000_000;
/// The event name Customer.io refuses while the refusals last.
pub const REFUSED_EVENT: &str = "soak_refused";
/// First user id of [`mass_delete`] (10,000 a time).
const MASS_IDS: i64 = 3_000_000_000;
/// Rows one mass DELETE removes: more than the breaker allows.
pub const MASS_ROWS: i64 = 3_000;
/// Held removals of the mass DELETE the operator discards (those people
/// stay in Customer.io); the rest are approved.
const MASS_DISCARDED: usize = 10;
/// Times [`cut_backfill`] ends the backfill's session inside a chunk.
const BACKFILL_CUTS: u32 = 2;
/// How long one step of these faults may take on a busy machine.
const STEP: Duration = Duration::from_secs(90);

/// What the operator faults left for the end of the run.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The dead letters [`refuse_items`] waited for, `operation customer`.
    pub letters: BTreeSet<String>,
    /// Customers whose held removal was discarded: they stay in
    /// Customer.io with these attributes although their rows are gone.
    pub kept: Customers,
    /// Held removals approved by [`mass_delete`] (`deletes approve` output).
    pub approved: Vec<String>,
    /// Sessions of the backfill ended between a chunk's watermarks.
    pub backfill_cuts: u32,
    /// The customer whose refused identify is stale, and the plan it was
    /// refused with: `dlq retry` must never send it (Customer.io, like the
    /// emulator, may ignore it for its older timestamp, so the customers'
    /// equality alone would not tell).
    pub stale_identify: Option<(String, String)>,
}

/// Refuses one operation of each kind for good and checks that they are
/// dead-lettered while the stream goes on: an identify, a delete, a merge
/// (an id change), a person event, and a suppression (`soak_members`).
/// Then the identified and the deleted customer are accepted again and
/// their rows change, so replaying their letters as they were would set
/// them back: `dlq retry` at the end must send the current row instead,
/// and skip the stale delete. The other refusals last until the run ends.
pub async fn refuse_items(targets: &Targets<'_>, n: u32, out: &mut Outcome) -> Result<(), String> {
    let db = targets.db.reconnected().await;
    let base = REFUSED_IDS + i64::from(n) * 100;
    let [identified, deleted, renamed, renamed_to, eventful, member, flowing] =
        [1, 2, 3, 4, 5, 6, 7].map(|k| base + k);
    // Delivered first: the people the refused operations are about.
    exec(
        &db,
        &format!(
            "INSERT INTO users (id, email, plan) VALUES ({deleted}, 'r{deleted}@soak.test', 'free'), \
             ({renamed}, 'r{renamed}@soak.test', 'pro'), ({eventful}, 'r{eventful}@soak.test', 'team'); \
             INSERT INTO soak_members (id, email) VALUES ({member}, 'm{member}@soak.test')"
        ),
    )
    .await?;
    let exist = [deleted, renamed, eventful, member].map(|id| id.to_string());
    wait("the refusals' people to be delivered", || async {
        let customers = targets.emulator.customers();
        exist.iter().all(|id| customers.contains_key(id))
    })
    .await?;

    targets.refuse(&[identified, deleted, renamed, member], REFUSED_EVENT);
    let event_row = REFUSED_EVENT_ROWS + i64::from(n);
    for sql in [
        format!(
            "INSERT INTO users (id, email, first_name, plan) \
             VALUES ({identified}, 'r{identified}@soak.test', 'early', 'free')"
        ),
        format!("DELETE FROM users WHERE id = {deleted}"),
        format!("UPDATE users SET id = {renamed_to} WHERE id = {renamed}"),
        format!(
            "INSERT INTO soak_events (id, user_id, kind, payload, created_at) \
             VALUES ({event_row}, {eventful}, '{REFUSED_EVENT}', '{{\"row\": {event_row}}}', now())"
        ),
        format!("DELETE FROM soak_members WHERE id = {member}"),
    ] {
        exec(&db, &sql).await?;
    }
    let wanted: BTreeSet<String> = [
        ("identify", identified),
        ("delete", deleted),
        ("merge", renamed_to),
        ("event", eventful),
        ("suppress", member),
    ]
    .iter()
    .map(|(operation, id)| format!("{operation} {id}"))
    .collect();
    wait("a dead letter of each kind", || async { letters(&db).await.is_superset(&wanted) })
        .await?;
    out.letters.extend(wanted);

    // The refused operations hold up no one: a later commit is acknowledged.
    exec(&db, &format!("INSERT INTO users (id, plan) VALUES ({flowing}, 'free')")).await?;
    let later = db.current_lsn().await;
    wait("the slot to move past the refused operations", || async {
        db.confirmed_flush(&db.name).await >= later
    })
    .await?;
    if targets.emulator.customer(&flowing.to_string()).is_none() {
        return Err("a commit after the refused ones was acknowledged but not delivered".into());
    }

    // Newer values delivered after the refused identify and delete.
    targets.unrefuse(&[identified, deleted]);
    exec(
        &db,
        &format!(
            "UPDATE users SET plan = 'pro', first_name = 'later' WHERE id = {identified}; \
             INSERT INTO users (id, email, plan) VALUES ({deleted}, 'again{deleted}@soak.test', 'team')"
        ),
    )
    .await?;
    let (identified, deleted) = (identified.to_string(), deleted.to_string());
    out.stale_identify = Some((identified.clone(), "free".to_owned()));
    wait("the newer values to be delivered", || async {
        let plan = |id: &str| targets.emulator.customer(id).and_then(|c| c.get("plan").cloned());
        plan(&identified) == Some(json!("pro")) && plan(&deleted) == Some(json!("team"))
    })
    .await
}

/// One transaction deletes [`MASS_ROWS`] users: the breaker trips and holds
/// the removals past its limit. The daemon is killed with SIGKILL while
/// they are held and started again; then the operator discards a few
/// (those people stay in Customer.io) and approves the rest.
///
/// During the writes: while the breaker is tripped it holds every removal
/// of the mixed workload too, with `kill -9` replays and Postgres crashes
/// in between. That found three causes of customers left missing or stale
/// (`delete_guard_replay_never_cancels_a_later_hold`,
/// `ciosync_writes_survive_a_postgres_crash`,
/// `delete_guard_decisions_leave_customers_equal_to_rows`).
pub async fn mass_delete(
    db: &TestDb,
    config: &std::path::Path,
    daemon: &mut super::faults::Daemon,
    out: &mut Outcome,
) -> Result<(), String> {
    let db = db.reconnected().await;
    let first = MASS_IDS;
    let last = first + MASS_ROWS - 1;
    exec(
        &db,
        &format!(
            "INSERT INTO users (id, email, plan) \
             SELECT g, 'mass' || g || '@soak.test', 'free' FROM generate_series({first}, {last}) g"
        ),
    )
    .await?;
    exec(&db, &format!("DELETE FROM users WHERE id BETWEEN {first} AND {last}")).await?;
    let range = format!("customer_id::bigint BETWEEN {first} AND {last}");
    // The whole transaction's holds turn `held` at once, at its commit.
    wait("the breaker to hold the mass delete", || async {
        count(
            &db,
            &format!("SELECT count(*) FROM ciosync.held_deletes WHERE {range} AND state = 'held'"),
        )
        .await
            > 0
    })
    .await?;
    daemon.kill9_and_restart();
    let chosen = db
        .client
        .query(
            &format!(
                "SELECT id, customer_id FROM ciosync.held_deletes \
                 WHERE {range} AND state = 'held' ORDER BY id LIMIT {MASS_DISCARDED}"
            ),
            &[],
        )
        .await
        .map_err(|e| format!("read held_deletes: {e}"))?;
    let mut args = vec!["deletes".to_owned(), "discard".to_owned()];
    for row in &chosen {
        args.extend(["--id".to_owned(), row.get::<_, i64>(0).to_string()]);
        let customer: String = row.get(1);
        out.kept.insert(customer.clone(), mass_attributes(&customer));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let discarded = run_binary(&args, config).await;
    if !discarded.status.success() {
        return Err(format!(
            "deletes discard failed: {}",
            String::from_utf8_lossy(&discarded.stderr)
        ));
    }
    // Approve waits for the slot to pass the DELETE: again until none is held.
    let held =
        format!("SELECT count(*) FROM ciosync.held_deletes WHERE {range} AND state = 'held'");
    let deadline = Instant::now() + STEP;
    while count(&db, &held).await > 0 {
        if Instant::now() > deadline {
            return Err("the mass delete's held removals were never all approved".into());
        }
        let approved = run_binary(&["deletes", "approve", "--all"], config).await;
        let text = String::from_utf8_lossy(&approved.stdout).trim().to_owned();
        if !approved.status.success() {
            return Err(format!("deletes approve failed: {text}"));
        }
        out.approved.push(text);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

/// What a discarded customer of [`mass_delete`] keeps in Customer.io: the
/// values it was inserted with.
fn mass_attributes(id: &str) -> Map<String, Value> {
    let mut attributes = Map::new();
    attributes.insert("id".into(), json!(id));
    attributes.insert("email".into(), json!(format!("mass{id}@soak.test")));
    attributes.insert("plan".into(), json!("free"));
    attributes
}

/// Queues a backfill of `users` whose chunks read slowly (`soak_slow`), and
/// ends its session [`BACKFILL_CUTS`] times in the middle of a chunk's
/// SELECT: after the chunk's low watermark, before its high one. The
/// runner starts again after each; the backfill must finish by the end.
pub async fn cut_backfill(targets: &Targets<'_>, out: &mut Outcome) -> Result<(), String> {
    let db = targets.db.reconnected().await;
    let queued = run_binary(
        &["backfill", "--detach", "--table", "public.users", "--where", "soak_slow(id)"],
        targets.config,
    )
    .await;
    if !queued.status.success() {
        return Err(format!("backfill failed: {}", String::from_utf8_lossy(&queued.stderr)));
    }
    let deadline = Instant::now() + STEP;
    let mut cuts = 0;
    while cuts < BACKFILL_CUTS {
        if Instant::now() > deadline {
            return Err(format!("the backfill's chunk was cut {cuts} times, not {BACKFILL_CUTS}"));
        }
        // Its chunk's SELECT (the low watermark is committed before it).
        // (The function runs only for the rows the WHERE keeps.)
        let ended = count(
            &db,
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) AS ended \
             FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND state = 'active' \
             AND query LIKE '%soak_slow(id)%' AND query LIKE 'SELECT %') AS cut WHERE ended",
        )
        .await;
        if ended > 0 {
            cuts += 1;
            // The runner waits a few seconds before it starts again.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    out.backfill_cuts += cuts;
    Ok(())
}

/// The dead letters stored, as `operation customer`.
pub async fn letters(db: &TestDb) -> BTreeSet<String> {
    db.client
        .query("SELECT operation, customer_id FROM ciosync.dead_letters", &[])
        .await
        .map(|rows| {
            rows.iter()
                .map(|r| format!("{} {}", r.get::<_, String>(0), r.get::<_, String>(1)))
                .collect()
        })
        .unwrap_or_default()
}

/// The held removals by state.
pub async fn holds(db: &TestDb) -> BTreeMap<String, i64> {
    db.client
        .query("SELECT state, count(*) FROM ciosync.held_deletes GROUP BY state", &[])
        .await
        .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        .unwrap_or_default()
}

/// Customers noted to be identified again once nothing is held.
pub async fn refreshes(db: &TestDb) -> i64 {
    db.client
        .query_one("SELECT count(*) FROM ciosync.held_refreshes", &[])
        .await
        .map(|row| row.get(0))
        .unwrap_or_default()
}

/// The customers whose held removal was discarded.
pub async fn discarded(db: &TestDb) -> BTreeSet<String> {
    db.client
        .query("SELECT customer_id FROM ciosync.held_deletes WHERE state = 'discarded'", &[])
        .await
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        .unwrap_or_default()
}

async fn exec(db: &TestDb, sql: &str) -> Result<(), String> {
    // The error may quote values; only generated ones are written here.
    db.client.batch_execute(sql).await.map_err(|e| format!("{sql}: {e}"))
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    match db.client.query_one(sql, &[]).await {
        Ok(row) => row.get(0),
        Err(_) => 0,
    }
}

/// Waits until `done`; an error naming `what` after [`STEP`].
async fn wait<F, Fut>(what: &str, done: F) -> Result<(), String>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + STEP;
    loop {
        if done().await {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("waited {} s for {what}", STEP.as_secs()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
