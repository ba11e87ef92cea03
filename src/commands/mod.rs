//! The operator's commands beside the daemon, each a short-lived process
//! against the same Postgres (and Customer.io) the daemon uses:
//!
//! - [`backfill`]: `ciosync backfill`, queue rows for the running daemon to re-send;
//!   [`event_replay`]: `ciosync backfill --events`, an event table's rows as events again.
//! - [`dlq`]: `ciosync dlq list | retry | discard`, the dead letters.
//! - [`deletes`]: `ciosync deletes list | approve | discard`, removals the
//!   mass-delete breaker held.
//! - [`plan`]: `ciosync plan`, what a backfill would send now, sending nothing.
//!
//! They sit above the pipeline's parts (the sink's client, the stores) and
//! share the selection (`--id` / `--all`), the stop reasons of a replay, and
//! [`current`]: what a customer's rows say now, which both `dlq retry` and
//! `deletes approve` send instead of what went out before.

use std::process::ExitCode;

use crate::error::{error_chain, EXIT_FAILURE, EXIT_USAGE};

pub mod backfill;
pub mod current;
pub mod deletes;
pub mod dlq;
pub mod event_replay;
mod gone;
pub mod plan;
pub mod select;

/// Ends a command: prints its failure with the causes and returns exit 2
/// when the config is at fault (`is_config`), else 1.
fn exit_status<E: std::error::Error + 'static>(
    outcome: Result<(), E>,
    is_config: fn(&E) -> bool,
) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ciosync: {}", error_chain(&error));
            ExitCode::from(if is_config(&error) { EXIT_USAGE } else { EXIT_FAILURE })
        }
    }
}

/// Ids as `1, 2, 3`, for messages.
fn join_ids(ids: &[i64]) -> String {
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
}
