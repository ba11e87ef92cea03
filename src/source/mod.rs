//! The replication source: Postgres WAL in, row changes out.

pub mod pgoutput;
