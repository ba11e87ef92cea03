//! Postgres as a foundation: opening connections (URL, hosts, TLS), SQL
//! quoting, the error type with its transient/definite class, and the
//! catalogue facts (`catalog`) that setup and `ciosync check` decide over.
//! It knows nothing of the config file, the stream or Customer.io.

pub mod auth;
pub mod catalog;
pub mod connection;
pub mod error;
pub mod gated;
pub mod name;
pub mod quote;
pub mod relay;
pub mod tls;

pub use error::{is_definite_sqlstate, lost_message, Lost, PgError};
