//! Track API routes Customer.io serves without auth.
use axum::Router;

use crate::state::Shared;

/// The routes that take no credentials (faults still apply).
pub fn routes() -> Router<Shared> {
    Router::new()
}
