//! ciosync keeps Customer.io in step with a Postgres users table.
//!
//! It tails Postgres logical replication (pgoutput) for the synced tables,
//! turns each committed row change into the smallest correct Customer.io call,
//! and acknowledges the replication slot only after Customer.io accepted it.
//!
//! ```text
//! Postgres WAL ──pgoutput──▶ source ──RowChange──▶ mapping (map + diff) ──CustomerOp──▶ sink (coalesce, batch, send concurrently, retry)
//!      ▲                       │                                                          │
//!      └──── ack(commit LSN) ◀─┴──────────── pipeline: delivered up to LSN ◀──────────────┘
//! ```
//!
//! Modules import each other in layers, with no circle (the test
//! `modules_import_in_layers` prints them and fails on a circle). From the bottom:
//!
//! - [`error`], [`wording`] (counts: `1 row`, `2 rows`), [`change`], [`customer`] (with [`object_op`]): shared vocabulary; [`track_api`] and
//!   [`secret`] come from the `ciosync-track-api` crate (crates/track-api),
//!   which the emulator shares.
//! - [`listener`]: the hardened HTTP/1 server of both listeners: timeouts, a connection cap that sheds idle clients, a body budget.
//! - [`pg`]: connections (URL, hosts, TLS), SQL quoting, [`pg::PgError`] with its transient/definite class.
//! - [`config`]: the file, its overrides and validation; [`state`]: the `ciosync` schema.
//! - [`source`]: the replication stream, the pgoutput decoder, the relation cache, setup.
//! - [`mapping`]: pure: row change → Customer.io operations, value conversion, the diff.
//! - [`sink`]: the delivery engine: coalescing, batches in flight with per-customer order, rate limit, retries, dead letters.
//! - [`dead_letter`]: operations Customer.io refused for good, kept for `ciosync dlq`.
//! - [`record`]: what Customer.io accepted, per customer and attribute (`ciosync.accepted`), which the sink diffs identifies against.
//! - [`commands`]: `ciosync backfill`, `dlq` and `deletes`, beside the daemon.
//! - [`delete_guard`]: the mass-delete circuit breaker: removals past a limit are held for `ciosync deletes`.
//! - [`pipeline`]: the loop that connects them and the acknowledgement rule.
//! - [`lease`]: which of several ciosync instances works a slot (high availability: one streams, the others stand by).
//! - [`initial_copy`]: the first start's consistent copy of existing rows; [`state`] records its progress.
//! - [`backfill`]: re-sending rows while streaming, yielding to the stream between watermarks.
//! - [`daemon`]: `ciosync run`: the pipeline with the metrics and health endpoint beside it.
//! - [`telemetry`]: counters, `/metrics` (Prometheus), `/healthz`, `/readyz`, logging.
//! - [`check`]: the preflight checks behind `ciosync check`.
//! - [`cli`]: the command line, on top of everything.
//! - [`webhooks`]: Customer.io's reporting webhooks (opened, clicked, bounced, …) stored in a Postgres table, each once.
//! - [`demo`]: `ciosync demo`, with the emulator (`ciosync-emulator`, crates/emulator)
//!   and a throwaway cluster (`ciosync-testkit`, crates/testkit) in one process.
//!
//! Guarantee: every committed change of a synced table reaches Customer.io at
//! least once, in commit order per customer; nothing is acknowledged before
//! Customer.io accepted it.

pub mod backfill;
pub mod change;
pub mod check;
pub mod cli;
pub mod commands;
pub mod config;
pub mod customer;
pub mod daemon;
pub mod dead_letter;
pub mod delete_guard;
pub mod demo;
pub mod error;
pub mod initial_copy;
pub mod lease;
pub mod listener;
pub mod mapping;
pub mod object_op;
pub mod pg;
pub mod pipeline;
pub mod record;
pub mod schema;
pub mod sink;
pub mod source;
pub mod state;
pub mod telemetry;
pub mod webhooks;
pub mod wording;

/// The Track API wire types and limits (crates/track-api), shared with the emulator.
pub use ciosync_track_api as track_api;
/// [`secret::Secret`], a value never printed (crates/track-api).
pub use ciosync_track_api::secret;
