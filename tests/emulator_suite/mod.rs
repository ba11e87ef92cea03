//! The emulator (crates/emulator) against Customer.io's schemas and a
//! webhook receiver, over real HTTP, with no Postgres and no daemon: here
//! because the schema checks (`support::spec`) and the receiver live in this
//! suite's support. The emulator's rules (what a call does to a person,
//! validation messages, auth, which request or item a fault hits, webhook
//! signatures and backoff) are unit tests in `crates/emulator/src/`, and its
//! routes, faults and binary over HTTP are `crates/emulator/tests/`; these
//! files do not repeat them.
//!
//! - `answers_match_the_openapi_spec`, `webhooks_match_the_openapi_spec`:
//!   every answer and webhook against Customer.io's published schemas;
//! - `sends_signed_webhooks`: signed delivery to a receiver, retries, give-up.

mod answers_match_the_openapi_spec;
mod sends_signed_webhooks;
mod webhooks_match_the_openapi_spec;
