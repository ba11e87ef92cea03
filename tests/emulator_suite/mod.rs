//! The emulator's own suite: what only a real HTTP request can show, with
//! no Postgres and no daemon. The emulator's rules (what a call does to a
//! person, validation messages, auth, which request or item a fault hits,
//! webhook signatures and backoff) are unit tests in `src/emulator/`; these
//! files do not repeat them.
//!
//! - `behaves_like_customerio`: routes, the 401 bodies, size limits past
//!   the HTTP layer, request-level and per-item faults, inspection, the binary;
//! - `answers_match_the_openapi_spec`, `webhooks_match_the_openapi_spec`:
//!   every answer and webhook against Customer.io's published schemas;
//! - `sends_signed_webhooks`: signed delivery to a receiver, retries, give-up.

mod answers_match_the_openapi_spec;
mod behaves_like_customerio;
mod sends_signed_webhooks;
mod webhooks_match_the_openapi_spec;
