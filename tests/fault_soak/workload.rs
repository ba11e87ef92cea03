//! The application side of the soak: one writer committing small random
//! transactions against `users` and `soak_events`, reconnecting whenever
//! Postgres goes away, until told to stop.
//!
//! Every value is generated here (numbers and fixed-shape strings), so the
//! SQL is built as text. Ids are never reused: a row that leaves by DELETE
//! or an id change takes its id with it, and emails are fresh on every
//! write, so Customer.io never sees two people claim one identifier.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_postgres::{Client, NoTls};
use tokio_util::sync::CancellationToken;

/// What the soak's tables look like (the users table of the other tests,
/// plus a synced int, a soft-delete column and an event table).
pub const SCHEMA: &str = "
    ALTER TABLE public.users ADD COLUMN score int, ADD COLUMN deleted_at timestamptz;
    CREATE TABLE public.soak_events (
        id bigint PRIMARY KEY,
        user_id bigint NOT NULL,
        kind text NOT NULL,
        payload jsonb NOT NULL,
        created_at timestamptz NOT NULL
    );
    -- The ground truth of the plan_changed events ([[sync.events]]), kept
    -- by Postgres itself in the changing transaction: a change of plan of
    -- a synced row that stays synced (neither soft-deleted nor filtered out
    -- before or after; leaving or entering is a delete or a full identify).
    CREATE TABLE public.soak_plan_changes (
        n bigserial PRIMARY KEY, user_id bigint, old_plan text, new_plan text
    );
    CREATE FUNCTION soak_log_plan_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO soak_plan_changes (user_id, old_plan, new_plan)
            VALUES (NEW.id, OLD.plan, NEW.plan);
        RETURN NULL;
    END $$;
    -- A second person table, suppressed on delete (`delete_action`), for
    -- the refused suppression of [`super::faults::Fault::ItemRefusals`].
    CREATE TABLE public.soak_members (id bigint PRIMARY KEY, email text);
    ALTER TABLE public.soak_members REPLICA IDENTITY FULL;
    -- A backfill `--where` slow enough (a millisecond a row) that the soak
    -- can end its session in the middle of a chunk, between the chunk's
    -- watermarks ([`super::faults::Fault::BackfillCut`]).
    CREATE FUNCTION soak_slow(bigint) RETURNS boolean LANGUAGE sql VOLATILE
        AS $$ SELECT pg_sleep(0.001) IS NOT NULL $$;
    CREATE TRIGGER soak_plan_change AFTER UPDATE ON users FOR EACH ROW
        WHEN (OLD.plan IS DISTINCT FROM NEW.plan
              AND OLD.deleted_at IS NULL AND NEW.deleted_at IS NULL
              AND OLD.plan <> 'banned' AND NEW.plan <> 'banned')
        EXECUTE FUNCTION soak_log_plan_change();
";

/// Rows whose plan is this leave the sync (the soak's `filter`).
pub const FILTERED_PLAN: &str = "banned";
const PLANS: [&str; 4] = ["free", "pro", "team", FILTERED_PLAN];
/// Longest `bio` (synced as `about`) written: enough bytes that a stretch of
/// failures fills the daemon's smallest memory budget (backpressure).
const BIO_MAX: usize = 900;
const EVENT_KINDS: [&str; 3] = ["donated", "signup_confirmed", "page_viewed"];

/// The kinds of change the writer makes, with their weights.
const OPS: [(Op, u32); 9] = [
    (Op::Insert, 20),
    (Op::UpdateMapped, 24),
    (Op::UpdateUnmapped, 10),
    (Op::Delete, 6),
    (Op::SoftDelete, 7),
    (Op::Restore, 5),
    (Op::Event, 20),
    (Op::IdChange, 5),
    (Op::Noop, 3),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    Insert,
    /// email, first_name, plan (in or out of the filter), score or bio.
    UpdateMapped,
    /// password_hash, which is not synced: must send nothing.
    UpdateUnmapped,
    Delete,
    /// Sets deleted_at.
    SoftDelete,
    /// Clears deleted_at.
    Restore,
    /// A soak_events row for a customer who is synced at that moment.
    Event,
    /// UPDATE users SET id = <fresh id>.
    IdChange,
    /// An UPDATE that changes nothing.
    Noop,
}

/// What the writer did.
#[derive(Debug, Default)]
pub struct Written {
    /// Transactions whose COMMIT succeeded.
    pub committed: u64,
    /// Transactions that failed or whose COMMIT's outcome is unknown
    /// (Postgres went away mid-way).
    pub failed: u64,
    /// Statements of committed transactions, by kind.
    pub statements: BTreeMap<String, u64>,
    /// Times the writer had to reconnect.
    pub reconnects: u64,
}

/// The writer's view of which ids may exist. It may be wrong after a
/// transaction with an unknown outcome; statements naming a missing id
/// change nothing, so that is harmless.
struct Ids {
    next_user: i64,
    next_event: i64,
    next_write: u64,
    live: Vec<i64>,
    soft_deleted: Vec<i64>,
}

impl Ids {
    fn pick(&self, rng: &mut StdRng) -> Option<i64> {
        (!self.live.is_empty()).then(|| self.live[rng.random_range(0..self.live.len())])
    }
}

/// Inserts `count` users (some filtered out, some soft-deleted) for the
/// initial copy; returns the first free id.
pub async fn populate(client: &Client, count: i64) -> i64 {
    client
        .batch_execute(&format!(
            "INSERT INTO users (id, email, first_name, plan, score, bio, deleted_at) \
             SELECT g, 'i' || g || '@soak.test', 'first' || g, \
                    (ARRAY['free', 'pro', 'team', '{FILTERED_PLAN}'])[1 + g % 4], g % 100, \
                    repeat('p', 1 + g % {BIO_MAX}), CASE WHEN g % 9 = 0 THEN now() END \
             FROM generate_series(1, {count}) g"
        ))
        .await
        .expect("populate users");
    count + 1
}

/// Writes random transactions until `stop`, pausing up to `max_pause`
/// between them.
pub async fn run(
    url: String,
    seed: u64,
    first_id: i64,
    max_pause: Duration,
    stop: CancellationToken,
) -> Written {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut ids = Ids {
        next_user: first_id,
        next_event: 1,
        next_write: 0,
        // The populated rows: soft-deleted ones are in both lists, which
        // only makes some statements no-ops.
        live: (1..first_id).collect(),
        soft_deleted: (1..first_id).filter(|id| id % 9 == 0).collect(),
    };
    let mut written = Written::default();
    let mut client = None;
    while !stop.is_cancelled() {
        let Some(db) = client.as_ref() else {
            client = connect(&url).await;
            if client.is_none() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            continue;
        };
        let ops: Vec<Op> =
            (0..rng.random_range(1..=4)).map(|_| super::weighted(&mut rng, &OPS)).collect();
        let (ops, statements): (Vec<Op>, Vec<String>) =
            ops.into_iter().map(|op| statement(op, &mut ids, &mut rng)).unzip();
        let sql = format!("BEGIN; {}; COMMIT;", statements.join("; "));
        match db.batch_execute(&sql).await {
            Ok(()) => {
                written.committed += 1;
                for op in &ops {
                    *written.statements.entry(format!("{op:?}")).or_default() += 1;
                }
            }
            Err(_) => {
                // Postgres restarting, or the connection cut: start over on
                // a new one. (The error text is not printed: it can carry
                // the statement's values.)
                written.failed += 1;
                written.reconnects += 1;
                client = None;
            }
        }
        if !max_pause.is_zero() {
            tokio::time::sleep(rng.random_range(Duration::ZERO..max_pause)).await;
        }
    }
    written
}

async fn connect(url: &str) -> Option<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.ok()?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Some(client)
}

/// One statement of kind `op` (an insert when there is no row to change),
/// updating the writer's idea of the ids.
fn statement(op: Op, ids: &mut Ids, rng: &mut StdRng) -> (Op, String) {
    ids.next_write += 1;
    let write = ids.next_write;
    let Some(id) = ids.pick(rng).filter(|_| op != Op::Insert) else {
        let id = ids.next_user;
        ids.next_user += 1;
        ids.live.push(id);
        let plan = PLANS[rng.random_range(0..PLANS.len())];
        let sql = format!(
            "INSERT INTO users (id, email, first_name, plan, score, bio) \
             VALUES ({id}, 'w{write}.{id}@soak.test', 'first{write}', '{plan}', {}, repeat('b', {}))",
            rng.random_range(0..1000),
            rng.random_range(1..=BIO_MAX)
        );
        return (Op::Insert, sql);
    };
    let sql = match op {
        Op::Insert => unreachable!("handled above"),
        Op::UpdateMapped => {
            let set = match rng.random_range(0..6) {
                0 => format!("email = 'w{write}.{id}@soak.test'"),
                1 => format!("first_name = 'first{write}'"),
                2 => "first_name = NULL".to_owned(),
                3 => format!("plan = '{}'", PLANS[rng.random_range(0..PLANS.len())]),
                4 => format!("bio = repeat('c', {})", rng.random_range(1..=BIO_MAX)),
                _ => format!("score = {}", rng.random_range(0..1000)),
            };
            format!("UPDATE users SET {set} WHERE id = {id}")
        }
        Op::UpdateUnmapped => {
            format!("UPDATE users SET password_hash = 'h{write}' WHERE id = {id}")
        }
        Op::Delete => {
            ids.live.retain(|&live| live != id);
            format!("DELETE FROM users WHERE id = {id}")
        }
        Op::SoftDelete => {
            ids.soft_deleted.push(id);
            format!("UPDATE users SET deleted_at = now() WHERE id = {id} AND deleted_at IS NULL")
        }
        Op::Restore => {
            let id = if ids.soft_deleted.is_empty() {
                id
            } else {
                ids.soft_deleted.swap_remove(rng.random_range(0..ids.soft_deleted.len()))
            };
            format!("UPDATE users SET deleted_at = NULL WHERE id = {id}")
        }
        Op::Event => {
            let event = ids.next_event;
            ids.next_event += 1;
            let kind = EVENT_KINDS[rng.random_range(0..EVENT_KINDS.len())];
            // Only for a customer synced right now: an event for anyone
            // else would create them in Customer.io (as the real one does).
            format!(
                "INSERT INTO soak_events (id, user_id, kind, payload, created_at) \
                 SELECT {event}, id, '{kind}', '{{\"row\": {event}, \"amount\": {}}}', now() \
                 FROM users WHERE id = {id} AND deleted_at IS NULL AND plan <> '{FILTERED_PLAN}'",
                rng.random_range(1..500)
            )
        }
        Op::IdChange => {
            let new = ids.next_user;
            ids.next_user += 1;
            ids.live.retain(|&live| live != id);
            ids.live.push(new);
            if let Some(soft) = ids.soft_deleted.iter_mut().find(|soft| **soft == id) {
                *soft = new;
            }
            format!("UPDATE users SET id = {new} WHERE id = {id}")
        }
        Op::Noop => format!("UPDATE users SET plan = plan WHERE id = {id}"),
    };
    (op, sql)
}
