//! ciosync keeps Customer.io in step with a Postgres users table.
//!
//! It tails Postgres logical replication (pgoutput) for the synced tables,
//! turns each committed row change into the smallest correct Customer.io call,
//! and acknowledges the replication slot only after Customer.io accepted it.
//! See `pipeline` for the acknowledgement rule.

pub mod change;
pub mod customer;
pub mod emulator;
pub mod mapping;
pub mod source;
pub mod track_api;
