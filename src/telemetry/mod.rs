//! Logging setup and the daemon's counters.
//!
//! Counters are plain atomics, bumped per batch or per skipped row, never per
//! attribute value; they never carry customer data. The Prometheus exporter
//! reads them (see the operability work); the pipeline logs them at shutdown.

use std::sync::atomic::{AtomicU64, Ordering};

/// Every counter the daemon keeps. Names match the metric names they become
/// (`ciosync_<name>_total`).
#[derive(Debug, Default)]
pub struct Counters {
    /// Rows read by the initial copy.
    pub rows_copied: AtomicU64,
    /// Row changes received from the synced tables.
    pub changes_received: AtomicU64,
    /// Changes that produced no call because no mapped attribute changed.
    pub changes_skipped_no_change: AtomicU64,
    /// Changes skipped because the customer id was NULL, empty or too long.
    pub changes_skipped_invalid_id: AtomicU64,
    /// Changes of tables that are not configured.
    pub changes_skipped_unknown_table: AtomicU64,
    /// Replication messages that could not be decoded, skipped.
    pub bad_messages: AtomicU64,
    /// TRUNCATEs of synced tables, deliberately not turned into deletes.
    pub truncates_ignored: AtomicU64,
    /// Attributes left out of a call (over a limit, unparseable, missing).
    pub attributes_dropped: AtomicU64,
    /// Operations Customer.io accepted.
    pub ops_accepted: AtomicU64,
    /// Operations Customer.io refused for good (4xx, 207 items), stored as dead letters.
    pub ops_rejected: AtomicU64,
    /// HTTP requests sent to Customer.io.
    pub requests_sent: AtomicU64,
    /// Answers of HTTP 429 (each slows the sender down).
    pub rate_limited: AtomicU64,
    /// Operations merged into an earlier one of the same customer while
    /// waiting to be sent: calls saved.
    pub ops_coalesced: AtomicU64,
    /// Operations Customer.io refused for good, stored in `ciosync.dead_letters`.
    pub ops_dead_lettered: AtomicU64,
    /// Gauge: estimated bytes of operations read and not yet completed.
    pub pending_bytes: AtomicU64,
    /// Gauge: the highest `pending_bytes` seen since start.
    pub pending_bytes_peak: AtomicU64,
    /// Requests retried after a transient failure.
    pub requests_retried: AtomicU64,
    /// Transactions acknowledged to Postgres.
    pub transactions_acked: AtomicU64,
    /// Reconnections to Postgres after the stream broke.
    pub source_reconnects: AtomicU64,
}

impl Counters {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets a gauge, and its peak companion if given.
    pub fn set(gauge: &AtomicU64, value: u64, peak: Option<&AtomicU64>) {
        gauge.store(value, Ordering::Relaxed);
        if let Some(peak) = peak {
            peak.fetch_max(value, Ordering::Relaxed);
        }
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Installs the tracing subscriber: `RUST_LOG` or `default`, to stderr, JSON
/// lines when `json` is set.
pub fn init_logging(json: bool, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}
