//! What `/metrics` reads from Postgres at each scrape: the server's WAL
//! position, the slot's lag, retained WAL and `wal_status` from
//! `pg_replication_slots`, the progress of running backfills, and whether
//! each configured table is still in the publication (a `DROP TABLE`, or a
//! table dropped and created again, leaves it, and then its changes are
//! never streamed: no Relation message says so).
//!
//! Read when scraped rather than on a timer, as postgres_exporter does: the
//! values are as fresh as the scrape, and nothing runs when nobody looks.
//! One SQL connection, opened on the first scrape and again after a failure;
//! a read that fails or takes over [`READ_TIMEOUT`] leaves these metrics out
//! of that scrape and sets [`SLOT_READ_OK`] to 0 (the pipeline logs what is
//! wrong with Postgres; this only says the numbers are missing).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use tokio_postgres::Client;

use super::exporter::{describe, Families};
use super::names::*;
use crate::pg::connection::ConnectionSettings;

/// Longest a scrape waits for Postgres.
pub const READ_TIMEOUT: Duration = Duration::from_secs(3);

/// The `wal_status` label's values: Postgres's four, and `missing` when the
/// slot does not exist (dropped, or not created yet).
pub const WAL_STATUSES: [&str; 5] = ["reserved", "extended", "unreserved", "lost", "missing"];

/// One reading; byte positions are LSNs as byte offsets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// `pg_current_wal_lsn()`.
    pub server_lsn: u64,
    /// The slot's row; `None` when there is no such slot.
    pub slot: Option<SlotRow>,
    /// Rows done and expected, summed over this slot's running backfills.
    pub backfill_rows: (u64, u64),
    /// This slot's rows in `ciosync.dead_letters`; `None` if unreadable.
    pub dead_letters: Option<u64>,
    /// Each configured table (`schema.table`) and whether the publication
    /// has it.
    pub published: Vec<(String, bool)>,
}

/// The columns of `pg_replication_slots` that matter here.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlotRow {
    pub confirmed_flush_lsn: Option<u64>,
    pub restart_lsn: Option<u64>,
    /// `reserved`, `extended`, `unreserved` or `lost`; NULL (PostgreSQL 13
    /// to 15, once invalidated) reads as `lost`.
    pub wal_status: Option<String>,
    /// Bytes of WAL that can still be written before the slot is lost;
    /// NULL when `max_slot_wal_keep_size` is -1 (no limit).
    pub safe_wal_size: Option<i64>,
}

/// Reads the slot for `/metrics` and keeps the last reading for the collector.
pub struct SlotWatch {
    settings: ConnectionSettings,
    slot: String,
    publication: String,
    /// The configured tables, `schema.table`.
    tables: Vec<String>,
    client: tokio::sync::Mutex<Option<Client>>,
    last: Mutex<Option<Reading>>,
}

impl SlotWatch {
    /// A watch of `slot`, and of `tables` in `publication`, over
    /// connections made with `settings`.
    pub fn new(
        settings: ConnectionSettings,
        slot: String,
        publication: String,
        tables: Vec<String>,
    ) -> Arc<Self> {
        Arc::new(Self {
            settings,
            slot,
            publication,
            tables,
            client: tokio::sync::Mutex::new(None),
            last: Mutex::new(None),
        })
    }

    /// Reads Postgres again (at most [`READ_TIMEOUT`]); the collector then
    /// reports what it read, or that the read failed.
    pub async fn refresh(&self) {
        let mut client = self.client.lock().await;
        let reading = tokio::time::timeout(READ_TIMEOUT, self.read(&mut client)).await;
        let reading = match reading {
            Ok(Ok(reading)) => Some(reading),
            Ok(Err(error)) => {
                tracing::debug!(%error, "cannot read the slot's status for /metrics");
                *client = None;
                None
            }
            Err(_) => {
                tracing::debug!("reading the slot's status for /metrics timed out");
                *client = None;
                None
            }
        };
        *self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = reading;
    }

    async fn read(&self, client: &mut Option<Client>) -> Result<Reading, tokio_postgres::Error> {
        if client.as_ref().is_none_or(Client::is_closed) {
            *client = Some(self.settings.connect_sql().await?);
        }
        let sql = client.as_ref().expect("connected above");
        let row = sql
            .query_one(
                "SELECT (pg_current_wal_lsn() - '0/0')::int8, s.slot_name IS NOT NULL, \
                 (s.confirmed_flush_lsn - '0/0')::int8, (s.restart_lsn - '0/0')::int8, \
                 s.wal_status, s.safe_wal_size \
                 FROM (SELECT 1) AS one \
                 LEFT JOIN pg_catalog.pg_replication_slots s ON s.slot_name = $1",
                &[&self.slot],
            )
            .await?;
        let slot = row.get::<_, bool>(1).then(|| SlotRow {
            confirmed_flush_lsn: row.get::<_, Option<i64>>(2).map(|v| v as u64),
            restart_lsn: row.get::<_, Option<i64>>(3).map(|v| v as u64),
            wal_status: row.get(4),
            safe_wal_size: row.get(5),
        });
        // The table exists once the daemon has started with its schema.
        let backfills = sql
            .query_one(
                "SELECT coalesce(sum(rows_done), 0)::int8, coalesce(sum(rows_total), 0)::int8 \
                 FROM ciosync.backfills WHERE slot = $1 AND state = 'running'",
                &[&self.slot],
            )
            .await
            .map(|r| (r.get::<_, i64>(0).max(0) as u64, r.get::<_, i64>(1).max(0) as u64))
            .unwrap_or_default();
        let dead_letters = sql
            .query_one("SELECT count(*) FROM ciosync.dead_letters WHERE slot = $1", &[&self.slot])
            .await
            .ok()
            .map(|r| r.get::<_, i64>(0).max(0) as u64);
        // A partitioned table is published under its root, as configured.
        // Unreadable, these series are left out; the slot's are not.
        let listed: Option<Vec<String>> = sql
            .query(
                "SELECT schemaname::text || '.' || tablename::text \
                 FROM pg_catalog.pg_publication_tables WHERE pubname = $1",
                &[&self.publication],
            )
            .await
            .ok()
            .map(|rows| rows.iter().map(|r| r.get(0)).collect());
        let published = match listed {
            Some(listed) => self.tables.iter().map(|t| (t.clone(), listed.contains(t))).collect(),
            None => Vec::new(),
        };
        Ok(Reading {
            server_lsn: row.get::<_, i64>(0) as u64,
            slot,
            backfill_rows: backfills,
            dead_letters,
            published,
        })
    }

    fn last(&self) -> Option<Reading> {
        self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// Registers a [`SlotWatch`] with the exporter's registry.
pub struct SlotCollector {
    watch: Arc<SlotWatch>,
    descs: Vec<Desc>,
}

impl SlotCollector {
    /// A collector of what `watch` read last.
    pub fn new(watch: Arc<SlotWatch>) -> Self {
        Self { watch, descs: describe(&families(Some(&every_series()))) }
    }
}

/// A reading with every value known, so [`families`] gives a sample for
/// every family this collector can export.
pub(super) fn every_series() -> Reading {
    Reading {
        server_lsn: 1,
        slot: Some(SlotRow {
            confirmed_flush_lsn: Some(1),
            restart_lsn: Some(1),
            wal_status: Some("reserved".to_owned()),
            safe_wal_size: Some(1),
        }),
        backfill_rows: (0, 0),
        dead_letters: Some(0),
        published: vec![("public.users".to_owned(), true)],
    }
}

impl Collector for SlotCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        families(self.watch.last().as_ref())
    }
}

/// The families of one reading; `None` (the read failed) gives only
/// [`SLOT_READ_OK`] = 0.
pub fn families(reading: Option<&Reading>) -> Vec<MetricFamily> {
    let mut out = Families::default();
    out.gauge(&SLOT_READ_OK, f64::from(u8::from(reading.is_some())));
    let Some(reading) = reading else { return out.0 };
    let server = reading.server_lsn;
    out.gauge(&POSTGRES_WAL_LSN, server as f64);
    let slot = reading.slot.as_ref();
    let status = match slot {
        None => "missing",
        Some(row) => row.wal_status.as_deref().unwrap_or("lost"),
    };
    let statuses: Vec<(&str, f64)> =
        WAL_STATUSES.iter().map(|s| (*s, f64::from(u8::from(*s == status)))).collect();
    out.labelled(&SLOT_WAL_STATUS, &statuses);
    let behind = |lsn: Option<u64>| lsn.map(|lsn| server.saturating_sub(lsn) as f64);
    out.optional_gauge(&REPLICATION_LAG_BYTES, slot.and_then(|s| behind(s.confirmed_flush_lsn)));
    out.optional_gauge(&SLOT_RETAINED_WAL_BYTES, slot.and_then(|s| behind(s.restart_lsn)));
    out.optional_gauge(
        &SLOT_SAFE_WAL_SIZE_BYTES,
        slot.and_then(|s| s.safe_wal_size).map(|v| v as f64),
    );
    out.gauge(&BACKFILL_ROWS_DONE, reading.backfill_rows.0 as f64);
    out.gauge(&BACKFILL_ROWS_EXPECTED, reading.backfill_rows.1 as f64);
    out.optional_gauge(&DEAD_LETTERS_STORED, reading.dead_letters.map(|n| n as f64));
    let published: Vec<(&str, f64)> =
        reading.published.iter().map(|(t, p)| (t.as_str(), f64::from(u8::from(*p)))).collect();
    out.labelled(&TABLE_PUBLISHED, &published);
    out.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(reading: Option<&Reading>) -> String {
        let mut text = String::new();
        // As the registry does: a family without samples is left out.
        let present: Vec<_> =
            families(reading).into_iter().filter(|f| !f.get_metric().is_empty()).collect();
        prometheus::TextEncoder::new().encode_utf8(&present, &mut text).unwrap();
        text
    }

    #[test]
    fn lag_and_retained_wal_are_measured_from_the_server_position() {
        let reading = Reading {
            server_lsn: 10_000,
            slot: Some(SlotRow {
                confirmed_flush_lsn: Some(9_000),
                restart_lsn: Some(4_000),
                wal_status: Some("extended".to_owned()),
                safe_wal_size: None,
            }),
            backfill_rows: (10, 40),
            dead_letters: Some(3),
            published: vec![("public.users".to_owned(), true), ("crm.accounts".to_owned(), false)],
        };
        let text = text(Some(&reading));
        for line in [
            "ciosync_slot_read_ok 1",
            "ciosync_postgres_wal_lsn_bytes 10000",
            "ciosync_replication_lag_bytes 1000",
            "ciosync_slot_retained_wal_bytes 6000",
            "ciosync_slot_wal_status{wal_status=\"extended\"} 1",
            "ciosync_slot_wal_status{wal_status=\"reserved\"} 0",
            "ciosync_backfill_rows_done 10",
            "ciosync_backfill_rows_expected 40",
            "ciosync_dead_letters_stored 3",
            "ciosync_table_published{table=\"public.users\"} 1",
            "ciosync_table_published{table=\"crm.accounts\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
        assert!(!text.contains("ciosync_slot_safe_wal_size_bytes"), "no limit, no series");
    }

    #[test]
    fn a_missing_slot_and_a_failed_read_say_so() {
        let missing = text(Some(&Reading { server_lsn: 5, ..Reading::default() }));
        assert!(missing.contains("ciosync_slot_wal_status{wal_status=\"missing\"} 1"), "{missing}");
        assert!(!missing.contains("ciosync_replication_lag_bytes"), "{missing}");
        let failed = text(None);
        assert!(failed.contains("ciosync_slot_read_ok 0"), "{failed}");
        assert!(!failed.contains("ciosync_slot_wal_status"), "{failed}");
    }
}
