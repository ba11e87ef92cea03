//! A primary and its streaming physical standby, for failover scenarios: two
//! throwaway clusters of one major, the standby made from a cold copy of the
//! primary's data directory and streaming through the physical slot
//! [`STANDBY_SLOT`]. On PostgreSQL 17+ the standby syncs failover slots
//! (`sync_replication_slots`) and the primary holds logical changes back
//! until the standby has them (`synchronized_standby_slots`).

use std::time::Duration;

use ciosync_testkit::throwaway::{installations, ClusterOptions, ThrowawayPostgres};

use super::postgres::{connect, TestDb};
use super::tools;
use super::CONVERGE;

/// The physical slot the standby streams through.
pub const STANDBY_SLOT: &str = "standby_1";

/// A primary and its standby.
pub struct Pair {
    pub primary: ThrowawayPostgres,
    pub standby: ThrowawayPostgres,
}

impl Pair {
    /// Starts both on PostgreSQL `major`; `None` (after a printed line, or
    /// a failure in CI) when that major is not installed. `synchronized`
    /// sets `synchronized_standby_slots` on the primary (17+).
    pub async fn start(major: u32, synchronized: bool) -> Option<Self> {
        let installation = installations().into_iter().find(|i| i.major == major);
        let install =
            if major == 15 { "apt-get install postgresql" } else { "scripts/fetch-postgres.sh" };
        let what = format!("failover on PostgreSQL {major}");
        if !tools::available(installation.is_some(), &format!("PostgreSQL {major}"), install, &what)
        {
            return None;
        }
        let options = ClusterOptions { installation, ..ClusterOptions::default() };
        let primary = tokio::task::spawn_blocking(move || ThrowawayPostgres::start_with(&options))
            .await
            .expect("the start thread does not panic")
            .expect("the primary starts");
        let admin = connect(&primary.url("postgres")).await;
        admin
            .execute("SELECT pg_create_physical_replication_slot($1, true)", &[&STANDBY_SLOT])
            .await
            .expect("create the standby's physical slot");
        drop(admin);
        let (primary, standby) = tokio::task::spawn_blocking(move || {
            let standby = primary.start_standby(STANDBY_SLOT).expect("the standby starts");
            (primary, standby)
        })
        .await
        .expect("the standby thread does not panic");
        let pair = Self { primary, standby };
        pair.wait_for_streaming().await;
        if major >= 17 && synchronized {
            let admin = connect(&pair.primary.url("postgres")).await;
            let set = format!("ALTER SYSTEM SET synchronized_standby_slots = '{STANDBY_SLOT}'");
            admin.batch_execute(&set).await.expect("set synchronized_standby_slots");
            admin.batch_execute("SELECT pg_reload_conf()").await.expect("reload");
        }
        Some(pair)
    }

    /// Waits until the standby streams through its slot and its
    /// hot_standby_feedback has reached the primary (the slot has an xmin).
    async fn wait_for_streaming(&self) {
        let admin = connect(&self.primary.url("postgres")).await;
        let deadline = tokio::time::Instant::now() + CONVERGE;
        loop {
            let row = admin
                .query_one(
                    "SELECT coalesce(bool_and(active AND xmin IS NOT NULL), false) \
                     FROM pg_replication_slots WHERE slot_name = $1",
                    &[&STANDBY_SLOT],
                )
                .await
                .expect("read the standby's slot");
            if row.get::<_, bool>(0) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "the standby never streamed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A URL for `database` naming the primary, then the standby, that
    /// settles on whichever accepts writes.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/{database}?sslmode=disable&\
             target_session_attrs=read-write",
            self.primary.port(),
            self.standby.port()
        )
    }

    /// `db` (made on the primary) as the standby serves it.
    /// The standby replays the database's creation in its own time (seconds
    /// under load), so this waits until it has it.
    pub async fn on_standby(&self, db: &TestDb) -> TestDb {
        let url = self.standby.url(&db.name);
        let deadline = tokio::time::Instant::now() + CONVERGE;
        while tokio_postgres::connect(&url, tokio_postgres::NoTls).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "the standby never had {}", db.name);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        TestDb { name: db.name.clone(), client: connect(&url).await, url }
    }

    /// Waits until the standby has replayed everything the primary wrote so far.
    pub async fn wait_for_replay(&self, primary: &TestDb, standby: &TestDb) {
        let target = primary.current_lsn().await as i64;
        let replayed = "SELECT (pg_last_wal_replay_lsn() - '0/0')::bigint";
        let deadline = tokio::time::Instant::now() + CONVERGE;
        loop {
            let row = standby.client.query_one(replayed, &[]).await.expect("read replay lsn");
            if row.get::<_, Option<i64>>(0).is_some_and(|lsn| lsn >= target) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "the standby never caught up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the primary (`fast`: the standby receives all its WAL first)
    /// and promotes the standby.
    pub async fn fail_over(self) -> ThrowawayPostgres {
        tokio::task::spawn_blocking(move || {
            self.primary.stop("fast").expect("the primary stops");
            self.standby.promote().expect("the standby is promoted");
            self.standby
        })
        .await
        .expect("the failover thread does not panic")
    }
}
