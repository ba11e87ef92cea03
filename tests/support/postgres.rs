//! One throwaway cluster shared by every test of the binary, reaped when the
//! test process exits; each test gets its own database.

use std::io::Write;
use std::sync::OnceLock;

use ciosync_testkit::throwaway::ThrowawayPostgres;
use tokio_postgres::{Client, NoTls};

static CLUSTER: OnceLock<ThrowawayPostgres> = OnceLock::new();

/// The shared cluster, started on first use.
pub fn cluster() -> &'static ThrowawayPostgres {
    CLUSTER.get_or_init(|| {
        let pg = ThrowawayPostgres::start().expect("throwaway postgres starts");
        pg.reap_when_process_exits(std::process::id());
        // Straight to stderr, past the test harness's capture, once per binary.
        let installation = pg.installation();
        let _ = writeln!(
            std::io::stderr(),
            "tests run on PostgreSQL {} ({})",
            installation.version,
            installation.bin.display()
        );
        pg
    })
}

/// A fresh database on `pg`, with a client connected to it.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub client: Client,
}

impl TestDb {
    /// Creates a database named after the test on the shared cluster.
    pub async fn new(test: &str) -> Self {
        Self::on(cluster(), test).await
    }

    /// Creates `role`, a login with REPLICATION and `password`, that owns
    /// the `users` table (so it can publish it) and may create in the
    /// database: the least a password-authenticated daemon needs here.
    pub async fn add_replication_owner(&self, role: &str, password: &str) {
        self.exec(&format!(
            "CREATE ROLE {role} LOGIN REPLICATION PASSWORD '{password}';
             GRANT CREATE ON DATABASE {} TO {role};
             ALTER TABLE users OWNER TO {role};",
            self.name
        ))
        .await;
    }

    /// Creates a database named after the test on `pg`.
    pub async fn on(pg: &ThrowawayPostgres, test: &str) -> Self {
        let mut name = format!("t{}_{}", rand::random::<u32>(), test);
        name.truncate(63);
        let admin = connect(&pg.url("postgres")).await;
        admin.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create database");
        let url = pg.url(&name);
        let client = connect(&url).await;
        Self { name, url, client }
    }

    /// A new connection to the same database: the old one ends with a
    /// server restart.
    pub async fn reconnected(&self) -> Self {
        Self { name: self.name.clone(), url: self.url.clone(), client: connect(&self.url).await }
    }

    /// Runs SQL statements.
    pub async fn exec(&self, sql: &str) {
        self.client.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// The slot's confirmed_flush_lsn as a number (0 if none).
    pub async fn confirmed_flush(&self, slot: &str) -> u64 {
        let row = self
            .client
            .query_opt(
                "SELECT (confirmed_flush_lsn - '0/0')::bigint FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .expect("read slot");
        row.and_then(|r| r.get::<_, Option<i64>>(0)).unwrap_or(0) as u64
    }

    /// A config for this database's own slot and the emulator at `track_url`.
    pub fn config(&self, track_url: &str, extra: &str) -> String {
        super::daemon::config_text(&self.url, &self.name, track_url, extra)
    }

    /// Waits until a walsender streams from this database's slot. A slot that
    /// is still being created is "active" too (its creator holds it while it
    /// waits for a consistent point, and its walsender is in `startup`), so
    /// only a walsender that has started replication counts.
    pub async fn wait_for_streaming(&self) {
        let deadline = tokio::time::Instant::now() + super::CONVERGE;
        loop {
            let row = self
                .client
                .query_opt(
                    "SELECT EXISTS (SELECT 1 FROM pg_replication_slots s \
                     JOIN pg_stat_replication r ON r.pid = s.active_pid \
                     WHERE s.slot_name = $1 AND r.state IN ('catchup', 'streaming'))",
                    &[&self.name],
                )
                .await
                .expect("read slot");
            if row.is_some_and(|r| r.get::<_, bool>(0)) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "the daemon never started streaming");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Runs `sql` (autocommit) and returns the WAL insert position right
    /// after its commit: at or past the commit's end, so a slot confirmed
    /// below it has not acknowledged the transaction.
    pub async fn exec_then_lsn(&self, sql: &str) -> u64 {
        self.exec(sql).await;
        self.current_lsn().await
    }

    /// How many decoded messages the (inactive) slot still holds: what a
    /// restart would replay. Zero means everything was acknowledged.
    pub async fn pending_in_slot(&self) -> i64 {
        // An active slot cannot be peeked.
        self.wait_for_slot_released().await;
        self.client
            .query_one(
                "SELECT count(*) FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL, \
                 'proto_version', '1', 'publication_names', $2)",
                &[&self.name, &self.name],
            )
            .await
            .expect("peek the slot")
            .get(0)
    }

    /// Waits until no walsender holds this database's slot: the walsender
    /// may outlive the daemon's connection by a moment, and an active slot
    /// can be neither peeked nor dropped.
    pub async fn wait_for_slot_released(&self) {
        let deadline = tokio::time::Instant::now() + super::CONVERGE;
        loop {
            let active: bool = self
                .client
                .query_one(
                    "SELECT coalesce(bool_or(active), false) FROM pg_replication_slots \
                     WHERE slot_name = $1",
                    &[&self.name],
                )
                .await
                .expect("read slot")
                .get(0);
            if !active {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "the slot stayed active");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// (slots named after this database, publications in it): what a
    /// command that must change nothing leaves at (0, 0).
    pub async fn created_objects(&self) -> (i64, i64) {
        let slots = "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1";
        let slots = self.client.query_one(slots, &[&self.name]).await.expect("count slots");
        let publications = "SELECT count(*) FROM pg_publication";
        let publications = self.client.query_one(publications, &[]).await.expect("count");
        (slots.get(0), publications.get(0))
    }

    /// The row filter the publication carries for `table` (`None`: none).
    pub async fn publication_filters(&self, table: &str) -> Option<String> {
        self.client
            .query_opt(
                "SELECT rowfilter FROM pg_publication_tables WHERE tablename = $1",
                &[&table],
            )
            .await
            .expect("read pg_publication_tables")
            .and_then(|row| row.get(0))
    }

    /// The customers the record of what Customer.io accepted
    /// (`ciosync.accepted`) holds for this database's slot.
    pub async fn recorded_customers(&self) -> std::collections::BTreeSet<String> {
        let rows = self
            .client
            .query("SELECT customer_id FROM ciosync.accepted WHERE slot = $1", &[&self.name])
            .await
            .expect("read ciosync.accepted");
        rows.iter().map(|r| r.get(0)).collect()
    }

    /// The server's current WAL insert position as a number.
    pub async fn current_lsn(&self) -> u64 {
        let row = self
            .client
            .query_one("SELECT (pg_current_wal_insert_lsn() - '0/0')::bigint", &[])
            .await
            .expect("read lsn");
        row.get::<_, i64>(0) as u64
    }

    /// Waits until the slot is confirmed at or past `lsn`.
    pub async fn wait_for_confirmed(&self, slot: &str, lsn: u64) -> bool {
        let deadline = tokio::time::Instant::now() + super::CONVERGE;
        while tokio::time::Instant::now() < deadline {
            if self.confirmed_flush(slot).await >= lsn {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        false
    }
}

/// Connects without TLS and drives the connection in the background.
pub async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// The users table most tests sync, with REPLICA IDENTITY FULL.
pub const USERS_TABLE: &str = "
    CREATE TABLE public.users (
        id bigint PRIMARY KEY,
        email text,
        first_name text,
        plan text,
        created_at timestamptz,
        password_hash text,
        bio text
    );
    ALTER TABLE public.users REPLICA IDENTITY FULL;
";
