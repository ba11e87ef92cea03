//! PostgreSQL 17+: the slot is a failover slot, the standby keeps a copy in
//! step, and when the primary goes and the standby is promoted, ciosync
//! (given both hosts and `target_session_attrs=read-write`) carries on from
//! the promoted server: writes before, around and after the promotion all
//! arrive, every customer equals its row and every event row gave one event.

use std::collections::BTreeMap;
use std::time::Duration;

use ciosync_emulator::Emulator;

use crate::support::daemon::{config_text, InProcess};
use crate::support::emulator;
use crate::support::postgres::{TestDb, USERS_TABLE};
use crate::support::standby::{Pair, STANDBY_SLOT};
use crate::support::{customers_match_rows, CONVERGE};

/// How long the standby may take to hold a persistent synced copy of the
/// slot: a few rounds of its slot-sync worker (up to 30 s apart).
const SLOT_SYNC_WAIT: Duration = Duration::from_secs(120);

pub const SIGNUPS_TABLE: &str = "
    CREATE TABLE signups (id serial PRIMARY KEY, user_id bigint, campaign_id int);
";

pub const SIGNUPS_CONFIG: &str = r#"
[[events]]
table = "public.signups"
customer_id_column = "user_id"
name = "signup"
[events.data]
campaign = "campaign_id"
"#;

/// One batch of writes: new users, an update, an event row each.
pub fn writes(from: i64, to: i64) -> String {
    format!(
        "BEGIN; \
         INSERT INTO users (id, email, plan) \
             SELECT g, 'u' || g || '@x.io', 'free' FROM generate_series({from}, {to}) g; \
         UPDATE users SET plan = 'pro' WHERE id = {from}; \
         INSERT INTO signups (user_id, campaign_id) SELECT g, g % 7 FROM generate_series({from}, {to}) g; \
         COMMIT;"
    )
}

/// Waits until each customer has exactly as many `signup` events as it has
/// signup rows (the emulator keeps one event per id, as Customer.io does).
pub async fn one_event_per_row(db: &TestDb, emulator: &Emulator) -> bool {
    let rows = db
        .client
        .query("SELECT user_id::text, count(*) FROM signups GROUP BY user_id", &[])
        .await
        .unwrap();
    let expected: BTreeMap<String, usize> =
        rows.iter().map(|r| (r.get(0), r.get::<_, i64>(1) as usize)).collect();
    let deadline = tokio::time::Instant::now() + CONVERGE;
    loop {
        let seen: BTreeMap<String, usize> = expected
            .keys()
            .map(|id| {
                (id.clone(), emulator.events(id).iter().filter(|e| e.name == "signup").count())
            })
            .collect();
        if seen == expected {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            let wrong: Vec<_> = seen.iter().filter(|(id, n)| expected[*id] != **n).collect();
            eprintln!("event counts differ for {} customers: {wrong:?}", wrong.len());
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the standby holds a synced, persistent copy of `slot`
/// (a first sync makes a temporary one, which a promotion would drop). The
/// copy persists once the primary's slot moves past where the copy started,
/// which needs a running-transactions record in the WAL (Postgres writes one
/// every 15 s, `pg_log_standby_snapshot()` at once) and an acknowledgement
/// after it (ciosync's heartbeats, every second in these tests). The
/// standby's slot-sync worker sleeps up to 30 s between rounds when nothing
/// changed, so one missed round already spends [`CONVERGE`]: it gets
/// [`SLOT_SYNC_WAIT`].
pub async fn wait_for_synced_copy(primary: &TestDb, standby: &TestDb, slot: &str) {
    let deadline = tokio::time::Instant::now() + SLOT_SYNC_WAIT;
    loop {
        let row = standby
            .client
            .query_opt(
                "SELECT synced AND NOT temporary AND failover FROM pg_replication_slots \
                 WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .expect("read the standby's slots");
        if row.is_some_and(|r| r.get::<_, bool>(0)) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the standby never held a synced copy of slot {slot}"
        );
        primary.exec("SELECT pg_log_standby_snapshot()").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn survives_promotion_on(major: u32) {
    let Some(pair) = Pair::start(major, true).await else { return };
    let db = TestDb::on(&pair.primary, "failover_slot").await;
    db.exec(USERS_TABLE).await;
    db.exec(SIGNUPS_TABLE).await;
    db.exec(&writes(1, 20)).await;
    // Event rows become events from the stream only, not by the initial copy.
    db.exec("TRUNCATE signups").await;
    let emulator = emulator::start().await;
    let config = config_text(&pair.url(&db.name), &db.name, &emulator.url(), SIGNUPS_CONFIG);
    // Heartbeats move the slot on while nothing is written, which is what
    // lets the standby's copy of it persist (see `wait_for_synced_copy`).
    let config = config.replacen(
        "status_interval_ms = 200\n",
        "status_interval_ms = 200\nheartbeat_interval_secs = 1\n",
        1,
    );
    let daemon = InProcess::start(&config);
    db.wait_for_streaming().await;
    assert!(customers_match_rows(&db, &emulator).await, "the initial copy");

    let failover: bool = db
        .client
        .query_one("SELECT failover FROM pg_replication_slots WHERE slot_name = $1", &[&db.name])
        .await
        .unwrap()
        .get(0);
    assert!(failover, "failover_slot = auto made an ordinary slot on PostgreSQL {major}");

    // Before: delivered, and the standby's copy of the slot synced.
    db.exec(&writes(21, 40)).await;
    assert!(customers_match_rows(&db, &emulator).await, "writes before the promotion");
    let standby = pair.on_standby(&db).await;
    wait_for_synced_copy(&db, &standby, &db.name).await;
    let physical: String =
        db.client.query_one("SHOW synchronized_standby_slots", &[]).await.unwrap().get(0);
    assert_eq!(physical, STANDBY_SLOT);

    // Around: written just before the primary stops, maybe not yet delivered.
    db.exec(&writes(41, 60)).await;
    db.exec("UPDATE users SET plan = 'team' WHERE id BETWEEN 1 AND 5").await;
    pair.wait_for_replay(&db, &standby).await;
    let promoted = pair.fail_over().await;
    let db = standby.reconnected().await;
    assert_eq!(promoted.installation().major, major);

    // After: written on the promoted server, at once and later.
    db.exec(&writes(61, 80)).await;
    assert!(customers_match_rows(&db, &emulator).await, "customers differ after the promotion");
    db.exec(&writes(81, 90)).await;
    assert!(customers_match_rows(&db, &emulator).await, "a change well after the promotion");
    assert!(one_event_per_row(&db, &emulator).await, "an event row lost or doubled");
    daemon.stop().await.expect("a clean stop after the failover");
}

// Multi-threaded: starting clusters blocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_17() {
    survives_promotion_on(17).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_18() {
    survives_promotion_on(18).await;
}
