//! The operator's commands beside the daemon, each a short-lived process
//! against the same Postgres (and Customer.io) the daemon uses:
//!
//! - [`backfill`]: `ciosync backfill`, queue rows for the running daemon to re-send.
//! - [`dlq`]: `ciosync dlq list | retry | discard`, the dead letters.
//! - [`deletes`]: `ciosync deletes list | approve | discard`, removals the
//!   mass-delete breaker held.
//!
//! They sit above the pipeline's parts (the sink's client, the stores) and
//! share the selection (`--id` / `--all`) and the stop reasons of a replay.

pub mod backfill;
pub mod deletes;
pub mod dlq;
pub mod select;
pub mod send;
