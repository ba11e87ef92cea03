//! Every metric the daemon exports, declared once: its name, kind, help
//! text and label names. The exporter (and `slot.rs`) render families from
//! these declarations and only add the values; METRICS.md's test reads
//! [`METRICS`] to check that each is documented with its kind and labels.
//!
//! Prometheus conventions: the `ciosync_` prefix, the unit as the last word
//! (`_bytes`, `_seconds`), `_total` on counters. Labels take only the few
//! values listed here, never a customer id, an attribute or a value.
//!
//! The process metrics (`process_cpu_seconds_total`, …) keep the standard
//! names of the `prometheus` crate's process collector, which dashboards
//! and alerts written for any exporter already expect; they are not
//! declared here.

use prometheus::proto::MetricType;

/// What a metric is, as Prometheus' `# TYPE` line says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (until the process restarts).
    Counter,
    /// Goes up and down; read at each scrape.
    Gauge,
    /// Observations in buckets, with `_bucket`, `_sum` and `_count` series.
    Histogram,
}

impl Kind {
    /// The word of the `# TYPE` line (and METRICS.md's type column).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }

    /// The `prometheus` crate's type.
    pub fn proto(self) -> MetricType {
        match self {
            Self::Counter => MetricType::COUNTER,
            Self::Gauge => MetricType::GAUGE,
            Self::Histogram => MetricType::HISTOGRAM,
        }
    }
}

/// One metric's declaration: everything about it but its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    /// The family name.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// The `# HELP` text.
    pub help: &'static str,
    /// The label names, in the order the series carry them (empty: one
    /// unlabelled series).
    pub labels: &'static [&'static str],
}

// Pipeline state.

pub const BUILD_INFO: Metric = Metric {
    name: "ciosync_build_info",
    kind: Kind::Gauge,
    help: "Always 1; the version is in the label.",
    labels: &[LABEL_VERSION],
};
pub const PIPELINE_PHASE: Metric = Metric {
    name: "ciosync_pipeline_phase",
    kind: Kind::Gauge,
    help: "1 for the pipeline's current phase, 0 for the others.",
    labels: &[LABEL_PHASE],
};
pub const READY: Metric = Metric {
    name: "ciosync_ready",
    kind: Kind::Gauge,
    help: "1 while /readyz answers 200, else 0.",
    labels: &[],
};
pub const LAST_DELIVERY_TIMESTAMP: Metric = Metric {
    name: "ciosync_last_delivery_timestamp_seconds",
    kind: Kind::Gauge,
    help: "Unix time of the last batch Customer.io accepted or that was dead-lettered (0 before the first).",
    labels: &[],
};

// Slot safety, watched by the daemon.

pub const CUSTOMERIO_UNAUTHORIZED: Metric = Metric {
    name: "ciosync_customerio_unauthorized",
    kind: Kind::Gauge,
    help: "1 while Customer.io refuses the credentials (HTTP 401): nothing is delivered or acknowledged.",
    labels: &[],
};
pub const HEARTBEATS_WRITTEN: Metric = Metric {
    name: "ciosync_heartbeats_written_total",
    kind: Kind::Counter,
    help: "Heartbeats written to the WAL while the synced tables were quiet (postgres.heartbeat_interval_secs).",
    labels: &[],
};
pub const HEARTBEATS_RECEIVED: Metric = Metric {
    name: "ciosync_heartbeats_received_total",
    kind: Kind::Counter,
    help: "This slot's heartbeats that came back through the replication stream.",
    labels: &[],
};
pub const SLOT_RETAINED_WAL_WARN_BYTES: Metric = Metric {
    name: "ciosync_slot_retained_wal_warn_bytes",
    kind: Kind::Gauge,
    help: "Retained WAL at which ciosync warns: postgres.retained_wal_warn_bytes, capped at 80% of max_slot_wal_keep_size (0 until read).",
    labels: &[],
};
pub const SLOT_RETAINED_WAL_WARNING: Metric = Metric {
    name: "ciosync_slot_retained_wal_warning",
    kind: Kind::Gauge,
    help: "1 while the slot retains at least ciosync_slot_retained_wal_warn_bytes of WAL, else 0.",
    labels: &[],
};
pub const SLOTS_RECREATED: Metric = Metric {
    name: "ciosync_slot_recreated_total",
    kind: Kind::Counter,
    help: "Times the lost replication slot was created again (postgres.on_slot_lost = recreate_and_backfill).",
    labels: &[],
};

// What the stream brings.

pub const INITIAL_COPY_ROWS: Metric = Metric {
    name: "ciosync_initial_copy_rows_total",
    kind: Kind::Counter,
    help: "Rows read by the initial copy.",
    labels: &[],
};
pub const CHANGES_RECEIVED: Metric = Metric {
    name: "ciosync_changes_received_total",
    kind: Kind::Counter,
    help: "Row changes received from the synced tables, by table and operation (no series before the first change).",
    labels: &[LABEL_TABLE, LABEL_OPERATION],
};
pub const CHANGES_SKIPPED: Metric = Metric {
    name: "ciosync_changes_skipped_total",
    kind: Kind::Counter,
    help: "Changes that produced no Customer.io call, by reason (truncate counts TRUNCATE statements).",
    labels: &[LABEL_REASON],
};
pub const SCHEMA_MISMATCH: Metric = Metric {
    name: "ciosync_schema_mismatch",
    kind: Kind::Gauge,
    help: "Configured columns a table's last schema no longer serves, by table and reason (renamed, dropped, missing, retyped); 0 when whole again.",
    labels: &[LABEL_TABLE, LABEL_REASON],
};
pub const SCHEMA_LEFT_OUT: Metric = Metric {
    name: "ciosync_schema_left_out_total",
    kind: Kind::Counter,
    help: "Attributes and events left out of calls because their table's schema broke (on_schema_change = skip).",
    labels: &[],
};
pub const IDENTIFIES_UNCHANGED: Metric = Metric {
    name: "ciosync_identifies_unchanged_total",
    kind: Kind::Counter,
    help: "Identifies not sent: Customer.io holds every attribute's value already, by the record of what it accepted.",
    labels: &[],
};
pub const ATTRIBUTES_UNCHANGED: Metric = Metric {
    name: "ciosync_attributes_unchanged_total",
    kind: Kind::Counter,
    help: "Attributes left out of identifies sent: Customer.io holds their value already.",
    labels: &[],
};
pub const RECORD_UNKNOWN: Metric = Metric {
    name: "ciosync_record_unknown_total",
    kind: Kind::Counter,
    help: "Identifies of customers the record of what Customer.io accepted knows nothing of, sent whole.",
    labels: &[],
};
pub const RECORD_EVENTS_UNKNOWN: Metric = Metric {
    name: "ciosync_record_events_unknown_total",
    kind: Kind::Counter,
    help: "Change-derived events not sent because the record held no earlier value of their column (the value is recorded for the next change).",
    labels: &[],
};
pub const RECORD_FAILURES: Metric = Metric {
    name: "ciosync_record_failures_total",
    kind: Kind::Counter,
    help: "Failed reads (the batch went whole) and writes (retried, nothing acknowledged meanwhile) of ciosync.accepted.",
    labels: &[],
};
pub const SCHEMA_PAUSES: Metric = Metric {
    name: "ciosync_schema_pauses_total",
    kind: Kind::Counter,
    help: "Times the stream stopped at a change of a table broken under on_schema_change = pause.",
    labels: &[],
};
pub const UNDECODABLE_MESSAGES: Metric = Metric {
    name: "ciosync_replication_undecodable_messages_total",
    kind: Kind::Counter,
    help: "Replication messages that could not be decoded and were skipped.",
    labels: &[],
};
pub const ATTRIBUTES_DROPPED: Metric = Metric {
    name: "ciosync_attributes_dropped_total",
    kind: Kind::Counter,
    help: "Attributes left out of a call (over a limit, unparseable or missing).",
    labels: &[],
};

// Operations and the memory they hold.

pub const OPERATIONS_COMPLETED: Metric = Metric {
    name: "ciosync_operations_completed_total",
    kind: Kind::Counter,
    help: "Operations completed: accepted by Customer.io, or refused for good and stored in ciosync.dead_letters.",
    labels: &[LABEL_OUTCOME],
};
pub const DEAD_LETTER_STORE_FAILING: Metric = Metric {
    name: "ciosync_dead_letter_store_failing",
    kind: Kind::Gauge,
    help: "1 while operations Customer.io refused cannot be stored in ciosync.dead_letters: they are retried, nothing is acknowledged meanwhile.",
    labels: &[],
};
pub const DEAD_LETTER_STORE_FAILURES: Metric = Metric {
    name: "ciosync_dead_letter_store_failures_total",
    kind: Kind::Counter,
    help: "Failed attempts to store refused operations in ciosync.dead_letters (each is retried).",
    labels: &[],
};
pub const OPERATIONS_COALESCED: Metric = Metric {
    name: "ciosync_operations_coalesced_total",
    kind: Kind::Counter,
    help: "Operations merged into a waiting one of the same customer: calls saved.",
    labels: &[],
};
pub const PENDING_OPERATIONS: Metric = Metric {
    name: "ciosync_pending_operations",
    kind: Kind::Gauge,
    help: "Operations read and not yet completed.",
    labels: &[],
};
pub const PENDING_BYTES: Metric = Metric {
    name: "ciosync_pending_bytes",
    kind: Kind::Gauge,
    help: "Estimated memory held by operations not yet completed and by unacknowledged commits (limit: pipeline.max_pending_bytes).",
    labels: &[],
};
pub const PENDING_PEAK_BYTES: Metric = Metric {
    name: "ciosync_pending_peak_bytes",
    kind: Kind::Gauge,
    help: "The highest ciosync_pending_bytes since start.",
    labels: &[],
};

// The mass-delete circuit breaker.

pub const DELETE_GUARD_TRIPPED: Metric = Metric {
    name: "ciosync_delete_guard_tripped",
    kind: Kind::Gauge,
    help: "1 while the mass-delete circuit breaker holds deletes and suppressions for an operator (ciosync deletes list), else 0.",
    labels: &[],
};
pub const DELETE_GUARD_LIMIT: Metric = Metric {
    name: "ciosync_delete_guard_limit",
    kind: Kind::Gauge,
    help: "Removals the mass-delete circuit breaker lets through per window now: the stricter of max_deletes and max_share of the estimated rows; 0 while no limit is in force.",
    labels: &[],
};
pub const DELETES_HELD: Metric = Metric {
    name: "ciosync_deletes_held",
    kind: Kind::Gauge,
    help: "Removals waiting in ciosync.held_deletes for ciosync deletes approve or discard.",
    labels: &[],
};
pub const DELETES_HELD_TOTAL: Metric = Metric {
    name: "ciosync_deletes_held_total",
    kind: Kind::Counter,
    help: "Removals the mass-delete circuit breaker held instead of sending.",
    labels: &[],
};

// Customer.io requests.

pub const CUSTOMERIO_REQUESTS: Metric = Metric {
    name: "ciosync_customerio_requests_total",
    kind: Kind::Counter,
    help: "HTTP requests to the Customer.io Track API, by endpoint and status class (no_answer: connect error or timeout).",
    labels: &[LABEL_ENDPOINT, LABEL_STATUS_CLASS],
};
pub const CUSTOMERIO_REQUEST_DURATION: Metric = Metric {
    name: "ciosync_customerio_request_duration_seconds",
    kind: Kind::Histogram,
    help: "Duration of Customer.io requests, from sending to the answer read (rate-limit waits excluded).",
    labels: &[],
};
pub const CUSTOMERIO_REQUEST_ITEMS: Metric = Metric {
    name: "ciosync_customerio_request_items",
    kind: Kind::Histogram,
    help: "Operations in each Customer.io request (batch size).",
    labels: &[],
};
pub const CUSTOMERIO_CONCURRENCY: Metric = Metric {
    name: "ciosync_customerio_concurrency_limit",
    kind: Kind::Gauge,
    help: "Requests that may be in flight to Customer.io now, adapted to the round trips and answers (at most customerio.max_in_flight).",
    labels: &[],
};
pub const CUSTOMERIO_RATE_LIMITED: Metric = Metric {
    name: "ciosync_customerio_rate_limited_total",
    kind: Kind::Counter,
    help: "HTTP 429 answers from Customer.io.",
    labels: &[],
};
pub const CUSTOMERIO_RETRIES: Metric = Metric {
    name: "ciosync_customerio_retries_total",
    kind: Kind::Counter,
    help: "Requests retried after a transient failure.",
    labels: &[],
};

// Acknowledgements to Postgres.

pub const TRANSACTIONS_ACKED: Metric = Metric {
    name: "ciosync_transactions_acked_total",
    kind: Kind::Counter,
    help: "Transactions acknowledged to Postgres.",
    labels: &[],
};
pub const POSTGRES_RECONNECTS: Metric = Metric {
    name: "ciosync_postgres_reconnects_total",
    kind: Kind::Counter,
    help: "Reconnections to Postgres after the replication stream broke.",
    labels: &[],
};
pub const LAST_RECEIVED_LSN: Metric = Metric {
    name: "ciosync_last_received_lsn_bytes",
    kind: Kind::Gauge,
    help: "The highest WAL position received from Postgres, as a byte offset.",
    labels: &[],
};
pub const REPLICATION_LAG_SECONDS: Metric = Metric {
    name: "ciosync_replication_lag_seconds",
    kind: Kind::Gauge,
    help: "Age of the oldest transaction received and not yet acknowledged (now - its commit time); 0 when all are.",
    labels: &[],
};
pub const LAST_ACKED_LSN: Metric = Metric {
    name: "ciosync_last_acked_lsn_bytes",
    kind: Kind::Gauge,
    help: "The last WAL position acknowledged to Postgres, as a byte offset.",
    labels: &[],
};

// The reporting-webhook receiver.

pub const WEBHOOKS_RECEIVED: Metric = Metric {
    name: "ciosync_webhooks_received_total",
    kind: Kind::Counter,
    help: "Verified reporting-webhook events, by object_type and metric (other: not in the spec; no series before the first).",
    labels: &[LABEL_OBJECT_TYPE, LABEL_METRIC],
};
pub const WEBHOOKS_STORED: Metric = Metric {
    name: "ciosync_webhooks_stored_total",
    kind: Kind::Counter,
    help: "Reporting-webhook events written to the events table.",
    labels: &[],
};
pub const WEBHOOKS_DUPLICATES: Metric = Metric {
    name: "ciosync_webhooks_duplicates_total",
    kind: Kind::Counter,
    help: "Reporting-webhook events already in the table (Customer.io retried or repeated them); answered 200, not stored again.",
    labels: &[],
};
pub const WEBHOOKS_WRITE_BACKS: Metric = Metric {
    name: "ciosync_webhooks_write_backs_total",
    kind: Kind::Counter,
    help: "Rows of synced tables changed by [[webhooks.write_back]] (never echoed to Customer.io).",
    labels: &[],
};
pub const WEBHOOKS_REJECTED: Metric = Metric {
    name: "ciosync_webhooks_rejected_total",
    kind: Kind::Counter,
    help: "Webhook requests refused, by reason (database: answered 503, Customer.io retries).",
    labels: &[LABEL_REASON],
};

pub const WEBHOOK_ACTIONS: Metric = Metric {
    name: "ciosync_webhook_actions_total",
    kind: Kind::Counter,
    help: "Requests to [[webhooks.actions]] endpoints, by action and outcome (applied, unchanged, duplicate: 200; unauthorized, method, content_type, too_large, malformed, refused: 4xx; unavailable: 503, Customer.io retries).",
    labels: &[LABEL_ACTION, LABEL_OUTCOME],
};

// The two listeners (`listener`), labelled `metrics` or `webhooks`.

pub const LISTENER_CONNECTIONS: Metric = Metric {
    name: "ciosync_listener_connections",
    kind: Kind::Gauge,
    help: "Connections open now on the listener.",
    labels: &[LABEL_LISTENER],
};
pub const LISTENER_CUT: Metric = Metric {
    name: "ciosync_listener_connections_cut_total",
    kind: Kind::Counter,
    help: "Connections the listener closed itself, by reason: header_timeout, idle_timeout, request_timeout, shed (at the cap, for a newer client), refused (at the cap, all serving), header_too_large.",
    labels: &[LABEL_LISTENER, LABEL_REASON],
};
pub const LISTENER_BUFFERED_BYTES: Metric = Metric {
    name: "ciosync_listener_buffered_bytes",
    kind: Kind::Gauge,
    help: "Request-body bytes held in memory now, over all connections of the listener.",
    labels: &[LABEL_LISTENER],
};
pub const LISTENER_BUFFERED_PEAK_BYTES: Metric = Metric {
    name: "ciosync_listener_buffered_peak_bytes",
    kind: Kind::Gauge,
    help: "The highest ciosync_listener_buffered_bytes since start.",
    labels: &[LABEL_LISTENER],
};
pub const LISTENER_BUFFER_LIMIT_BYTES: Metric = Metric {
    name: "ciosync_listener_buffer_limit_bytes",
    kind: Kind::Gauge,
    help:
        "The listener's body budget (webhooks.max_buffered_bytes; 0: the listener reads no bodies).",
    labels: &[LABEL_LISTENER],
};
pub const LISTENER_BUDGET_REFUSALS: Metric = Metric {
    name: "ciosync_listener_budget_refusals_total",
    kind: Kind::Counter,
    help: "Requests answered 503 because the listener's body budget was spent.",
    labels: &[LABEL_LISTENER],
};

// The slot, read from Postgres at each scrape (`slot.rs`).

pub const SLOT_READ_OK: Metric = Metric {
    name: "ciosync_slot_read_ok",
    kind: Kind::Gauge,
    help: "1 if this scrape read the slot's status from Postgres, 0 if that failed (the other ciosync_slot_ and lag metrics are then left out).",
    labels: &[],
};
pub const POSTGRES_WAL_LSN: Metric = Metric {
    name: "ciosync_postgres_wal_lsn_bytes",
    kind: Kind::Gauge,
    help: "The server's current WAL position (pg_current_wal_lsn()), as a byte offset.",
    labels: &[],
};
pub const SLOT_WAL_STATUS: Metric = Metric {
    name: "ciosync_slot_wal_status",
    kind: Kind::Gauge,
    help: "1 for the slot's wal_status in pg_replication_slots (missing: no such slot), 0 for the others.",
    labels: &[LABEL_WAL_STATUS],
};
pub const REPLICATION_LAG_BYTES: Metric = Metric {
    name: "ciosync_replication_lag_bytes",
    kind: Kind::Gauge,
    help: "WAL the slot has not confirmed: pg_current_wal_lsn() - confirmed_flush_lsn.",
    labels: &[],
};
pub const SLOT_RETAINED_WAL_BYTES: Metric = Metric {
    name: "ciosync_slot_retained_wal_bytes",
    kind: Kind::Gauge,
    help: "WAL the server keeps for the slot: pg_current_wal_lsn() - restart_lsn.",
    labels: &[],
};
pub const SLOT_SAFE_WAL_SIZE_BYTES: Metric = Metric {
    name: "ciosync_slot_safe_wal_size_bytes",
    kind: Kind::Gauge,
    help: "WAL that can still be written before the slot is lost (safe_wal_size; left out when max_slot_wal_keep_size is -1).",
    labels: &[],
};
pub const BACKFILL_ROWS_DONE: Metric = Metric {
    name: "ciosync_backfill_rows_done",
    kind: Kind::Gauge,
    help: "Rows delivered by the running backfills.",
    labels: &[],
};
pub const BACKFILL_ROWS_EXPECTED: Metric = Metric {
    name: "ciosync_backfill_rows_expected",
    kind: Kind::Gauge,
    help: "Rows the running backfills expect to send (estimated when each started).",
    labels: &[],
};
pub const TABLE_PUBLISHED: Metric = Metric {
    name: "ciosync_table_published",
    kind: Kind::Gauge,
    help: "1 while a configured table is in the publication; 0 once it left it (DROP TABLE, a table dropped and created again, ALTER PUBLICATION DROP TABLE): its changes are not streamed.",
    labels: &[LABEL_TABLE],
};
pub const DEAD_LETTERS_STORED: Metric = Metric {
    name: "ciosync_dead_letters_stored",
    kind: Kind::Gauge,
    help: "Operations refused for good waiting in ciosync.dead_letters for this slot (ciosync dlq list shows them).",
    labels: &[],
};

/// Every declared metric, in the order of the sections above.
pub const METRICS: &[Metric] = &[
    BUILD_INFO,
    PIPELINE_PHASE,
    READY,
    LAST_DELIVERY_TIMESTAMP,
    CUSTOMERIO_UNAUTHORIZED,
    HEARTBEATS_WRITTEN,
    HEARTBEATS_RECEIVED,
    SLOT_RETAINED_WAL_WARN_BYTES,
    SLOT_RETAINED_WAL_WARNING,
    SLOTS_RECREATED,
    INITIAL_COPY_ROWS,
    CHANGES_RECEIVED,
    CHANGES_SKIPPED,
    SCHEMA_MISMATCH,
    SCHEMA_LEFT_OUT,
    SCHEMA_PAUSES,
    IDENTIFIES_UNCHANGED,
    ATTRIBUTES_UNCHANGED,
    RECORD_UNKNOWN,
    RECORD_EVENTS_UNKNOWN,
    RECORD_FAILURES,
    UNDECODABLE_MESSAGES,
    ATTRIBUTES_DROPPED,
    OPERATIONS_COMPLETED,
    DEAD_LETTER_STORE_FAILING,
    DEAD_LETTER_STORE_FAILURES,
    OPERATIONS_COALESCED,
    PENDING_OPERATIONS,
    PENDING_BYTES,
    PENDING_PEAK_BYTES,
    DELETE_GUARD_TRIPPED,
    DELETE_GUARD_LIMIT,
    DELETES_HELD,
    DELETES_HELD_TOTAL,
    CUSTOMERIO_REQUESTS,
    CUSTOMERIO_REQUEST_DURATION,
    CUSTOMERIO_REQUEST_ITEMS,
    CUSTOMERIO_CONCURRENCY,
    CUSTOMERIO_RATE_LIMITED,
    CUSTOMERIO_RETRIES,
    TRANSACTIONS_ACKED,
    POSTGRES_RECONNECTS,
    LAST_RECEIVED_LSN,
    REPLICATION_LAG_SECONDS,
    LAST_ACKED_LSN,
    WEBHOOKS_RECEIVED,
    WEBHOOKS_STORED,
    WEBHOOKS_DUPLICATES,
    WEBHOOKS_WRITE_BACKS,
    WEBHOOKS_REJECTED,
    WEBHOOK_ACTIONS,
    LISTENER_CONNECTIONS,
    LISTENER_CUT,
    LISTENER_BUFFERED_BYTES,
    LISTENER_BUFFERED_PEAK_BYTES,
    LISTENER_BUFFER_LIMIT_BYTES,
    LISTENER_BUDGET_REFUSALS,
    SLOT_READ_OK,
    POSTGRES_WAL_LSN,
    SLOT_WAL_STATUS,
    REPLICATION_LAG_BYTES,
    SLOT_RETAINED_WAL_BYTES,
    SLOT_SAFE_WAL_SIZE_BYTES,
    BACKFILL_ROWS_DONE,
    BACKFILL_ROWS_EXPECTED,
    DEAD_LETTERS_STORED,
    TABLE_PUBLISHED,
];

/// Label of [`WEBHOOKS_RECEIVED`]: see `webhooks::OBJECT_TYPES`, or `other`.
pub const LABEL_OBJECT_TYPE: &str = "object_type";
/// Label of [`WEBHOOKS_RECEIVED`]: see `webhooks::METRICS`, or `other`.
pub const LABEL_METRIC: &str = "metric";
/// Label of [`CHANGES_SKIPPED`]: `no_change`, `invalid_id`, `unknown_table`,
/// `soft_deleted`, `filtered_out`, `invalid_event`, `relationship_unknown`,
/// `invalid_platform`, `device_key_unknown`, `token_too_long`, `write_back`, `truncate`; of
/// [`WEBHOOKS_REJECTED`]:
/// see `webhooks::Rejection::as_str`; of [`LISTENER_CUT`]: see `listener::Cut::as_str`.
pub const LABEL_REASON: &str = "reason";
/// Label of [`CHANGES_RECEIVED`]: `schema.table` of a synced table.
pub const LABEL_TABLE: &str = "table";
/// Label of [`CHANGES_RECEIVED`]: `insert`, `update`, `delete`.
pub const LABEL_OPERATION: &str = "operation";
/// Label of [`WEBHOOK_ACTIONS`]: the name of a `[[webhooks.actions]]` entry.
pub const LABEL_ACTION: &str = "action";
/// Label of [`OPERATIONS_COMPLETED`]: `accepted`, `dead_lettered`; of
/// [`WEBHOOK_ACTIONS`]: see `actions::ActionOutcome::as_str`.
pub const LABEL_OUTCOME: &str = "outcome";
/// Label of [`CUSTOMERIO_REQUESTS`]: the Track API route, `batch`
/// (`/api/v2/batch`) or `events` (`/api/v1/events`, anonymous events).
pub const LABEL_ENDPOINT: &str = "endpoint";
/// Label of [`CUSTOMERIO_REQUESTS`]: `2xx`, `3xx`, `4xx`, `5xx`, `no_answer`.
pub const LABEL_STATUS_CLASS: &str = "status_class";
/// Label of [`PIPELINE_PHASE`]: see `health::Phase::as_str`.
pub const LABEL_PHASE: &str = "phase";
/// Label of [`SLOT_WAL_STATUS`]: see `slot::WAL_STATUSES`.
pub const LABEL_WAL_STATUS: &str = "wal_status";
/// Label of the `ciosync_listener_*` metrics: `metrics` or `webhooks`.
pub const LABEL_LISTENER: &str = "listener";
/// Label of [`BUILD_INFO`].
pub const LABEL_VERSION: &str = "version";
