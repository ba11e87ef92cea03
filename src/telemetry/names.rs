//! Every metric name the daemon exports, and every label, in one place.
//!
//! Prometheus conventions: the `ciosync_` prefix, the unit as the last word
//! (`_bytes`, `_seconds`), `_total` on counters. Labels take only the few
//! values listed here, never a customer id, an attribute or a value.
//! METRICS.md says what each one means and what to alert on; a test checks
//! that it lists every name exported.
//!
//! The process metrics (`process_cpu_seconds_total`, …) keep the standard
//! names of the `prometheus` crate's process collector, which dashboards
//! and alerts written for any exporter already expect.

/// Gauge, always 1, labelled with the version.
pub const BUILD_INFO: &str = "ciosync_build_info";

/// Gauge: 1 for the pipeline's current phase, 0 for the others.
pub const PIPELINE_PHASE: &str = "ciosync_pipeline_phase";
/// Gauge: 1 while `/readyz` answers 200, else 0.
pub const READY: &str = "ciosync_ready";
/// Gauge: Unix time of the last completed batch (0 before the first).
pub const LAST_DELIVERY_TIMESTAMP: &str = "ciosync_last_delivery_timestamp_seconds";

/// Counter: rows read by the initial copy.
pub const INITIAL_COPY_ROWS: &str = "ciosync_initial_copy_rows_total";
/// Counter: row changes received from the synced tables, by `table` and `operation`.
pub const CHANGES_RECEIVED: &str = "ciosync_changes_received_total";
/// Counter: changes (and TRUNCATEs) that produced no call, by `reason`.
pub const CHANGES_SKIPPED: &str = "ciosync_changes_skipped_total";
/// Counter: replication messages that could not be decoded, skipped.
pub const UNDECODABLE_MESSAGES: &str = "ciosync_replication_undecodable_messages_total";
/// Counter: attributes left out of a call.
pub const ATTRIBUTES_DROPPED: &str = "ciosync_attributes_dropped_total";

/// Counter: operations completed, by `outcome`.
pub const OPERATIONS_COMPLETED: &str = "ciosync_operations_completed_total";
/// Counter: operations merged into a waiting one of the same customer.
pub const OPERATIONS_COALESCED: &str = "ciosync_operations_coalesced_total";
/// Gauge: operations read and not yet completed.
pub const PENDING_OPERATIONS: &str = "ciosync_pending_operations";
/// Gauge: estimated memory held by operations not yet completed.
pub const PENDING_BYTES: &str = "ciosync_pending_bytes";
/// Gauge: the highest [`PENDING_BYTES`] since start.
pub const PENDING_PEAK_BYTES: &str = "ciosync_pending_peak_bytes";

/// Counter: HTTP requests sent to the Customer.io Track API, by `endpoint`
/// and `status_class`.
pub const CUSTOMERIO_REQUESTS: &str = "ciosync_customerio_requests_total";
/// Histogram: duration of each request.
pub const CUSTOMERIO_REQUEST_DURATION: &str = "ciosync_customerio_request_duration_seconds";
/// Histogram: operations in each request.
pub const CUSTOMERIO_REQUEST_ITEMS: &str = "ciosync_customerio_request_items";
/// Counter: HTTP 429 answers.
pub const CUSTOMERIO_RATE_LIMITED: &str = "ciosync_customerio_rate_limited_total";
/// Counter: requests retried after a transient failure.
pub const CUSTOMERIO_RETRIES: &str = "ciosync_customerio_retries_total";

/// Counter: transactions acknowledged to Postgres.
pub const TRANSACTIONS_ACKED: &str = "ciosync_transactions_acked_total";
/// Counter: reconnections to Postgres after the stream broke.
pub const POSTGRES_RECONNECTS: &str = "ciosync_postgres_reconnects_total";
/// Gauge: the highest WAL position received, as a byte offset.
pub const LAST_RECEIVED_LSN: &str = "ciosync_last_received_lsn_bytes";
/// Gauge: the last WAL position acknowledged, as a byte offset.
pub const LAST_ACKED_LSN: &str = "ciosync_last_acked_lsn_bytes";
/// Gauge: age of the oldest transaction received and not acknowledged.
pub const REPLICATION_LAG_SECONDS: &str = "ciosync_replication_lag_seconds";

/// Counter: heartbeats written while the synced tables were quiet.
pub const HEARTBEATS_WRITTEN: &str = "ciosync_heartbeats_written_total";
/// Counter: this slot's heartbeats that came back through the stream.
pub const HEARTBEATS_RECEIVED: &str = "ciosync_heartbeats_received_total";
/// Gauge: retained WAL at which the daemon warns (0 until the slot was read).
pub const SLOT_RETAINED_WAL_WARN_BYTES: &str = "ciosync_slot_retained_wal_warn_bytes";
/// Gauge: 1 while the slot retains at least that much WAL.
pub const SLOT_RETAINED_WAL_WARNING: &str = "ciosync_slot_retained_wal_warning";
/// Counter: times a lost slot was created again (`postgres.on_slot_lost`).
pub const SLOTS_RECREATED: &str = "ciosync_slot_recreated_total";
/// Gauge: 1 while Customer.io refuses the credentials (HTTP 401).
pub const CUSTOMERIO_UNAUTHORIZED: &str = "ciosync_customerio_unauthorized";

/// Gauge: 1 if the scrape read the slot's status from Postgres.
pub const SLOT_READ_OK: &str = "ciosync_slot_read_ok";
/// Gauge: the server's current WAL position, as a byte offset.
pub const POSTGRES_WAL_LSN: &str = "ciosync_postgres_wal_lsn_bytes";
/// Gauge: WAL the slot has not confirmed (server position - confirmed_flush_lsn).
pub const REPLICATION_LAG_BYTES: &str = "ciosync_replication_lag_bytes";
/// Gauge: WAL the server keeps for the slot (server position - restart_lsn).
pub const SLOT_RETAINED_WAL_BYTES: &str = "ciosync_slot_retained_wal_bytes";
/// Gauge: 1 for the slot's `wal_status`, 0 for the others.
pub const SLOT_WAL_STATUS: &str = "ciosync_slot_wal_status";
/// Gauge: WAL that can be written before the slot is lost.
pub const SLOT_SAFE_WAL_SIZE_BYTES: &str = "ciosync_slot_safe_wal_size_bytes";
/// Gauge: rows delivered by the running backfills.
pub const BACKFILL_ROWS_DONE: &str = "ciosync_backfill_rows_done";
/// Gauge: rows the running backfills expect to send.
pub const BACKFILL_ROWS_EXPECTED: &str = "ciosync_backfill_rows_expected";

/// Gauge: this slot's rows in `ciosync.dead_letters`.
pub const DEAD_LETTERS_STORED: &str = "ciosync_dead_letters_stored";
/// Gauge: 1 while refused operations cannot be stored in `ciosync.dead_letters`.
pub const DEAD_LETTER_STORE_FAILING: &str = "ciosync_dead_letter_store_failing";
/// Counter: failed attempts to store refused operations in `ciosync.dead_letters`.
pub const DEAD_LETTER_STORE_FAILURES: &str = "ciosync_dead_letter_store_failures_total";

/// Gauge: 1 while the mass-delete circuit breaker holds removals.
pub const DELETE_GUARD_TRIPPED: &str = "ciosync_delete_guard_tripped";
/// Gauge: removals the breaker lets through per window now (0: no limit).
pub const DELETE_GUARD_LIMIT: &str = "ciosync_delete_guard_limit";
/// Gauge: this slot's removals waiting in `ciosync.held_deletes`.
pub const DELETES_HELD: &str = "ciosync_deletes_held";
/// Counter: removals the circuit breaker held.
pub const DELETES_HELD_TOTAL: &str = "ciosync_deletes_held_total";

/// Counter: verified reporting-webhook events, by `object_type` and `metric`.
pub const WEBHOOKS_RECEIVED: &str = "ciosync_webhooks_received_total";
/// Counter: reporting-webhook events written to the events table.
pub const WEBHOOKS_STORED: &str = "ciosync_webhooks_stored_total";
/// Counter: reporting-webhook events already in the table (retries, repeats).
pub const WEBHOOKS_DUPLICATES: &str = "ciosync_webhooks_duplicates_total";
/// Counter: rows of synced tables changed by webhook write-backs.
pub const WEBHOOKS_WRITE_BACKS: &str = "ciosync_webhooks_write_backs_total";
/// Counter: webhook requests refused, by `reason`.
pub const WEBHOOKS_REJECTED: &str = "ciosync_webhooks_rejected_total";

/// Label of [`WEBHOOKS_RECEIVED`]: see `webhooks::OBJECT_TYPES`, or `other`.
pub const LABEL_OBJECT_TYPE: &str = "object_type";
/// Label of [`WEBHOOKS_RECEIVED`]: see `webhooks::METRICS`, or `other`.
pub const LABEL_METRIC: &str = "metric";
/// Label of [`CHANGES_SKIPPED`]: `no_change`, `invalid_id`, `unknown_table`,
/// `soft_deleted`, `invalid_event`, `write_back`, `truncate`; of [`WEBHOOKS_REJECTED`]:
/// see `webhooks::Rejection::as_str`.
pub const LABEL_REASON: &str = "reason";
/// Label of [`CHANGES_RECEIVED`]: `schema.table` of a synced table.
pub const LABEL_TABLE: &str = "table";
/// Label of [`CHANGES_RECEIVED`]: `insert`, `update`, `delete`.
pub const LABEL_OPERATION: &str = "operation";
/// Label of [`OPERATIONS_COMPLETED`]: `accepted`, `dead_lettered`.
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
/// Label of [`BUILD_INFO`].
pub const LABEL_VERSION: &str = "version";
