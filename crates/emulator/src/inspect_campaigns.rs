//! The `/_emulator/campaigns` routes: register campaigns with one webhook
//! action, trigger them, and see and resend their deliveries (see
//! `inspect` for the table of every route, `campaign` for the facts).
//! Errors are `{"error": "…"}`: 400 for a bad request, 404 for an unknown
//! campaign, person or delivery, 409 for a duplicate name or a delivery
//! still under way. No answer holds a credential.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::campaign::{Campaign, CampaignSpec};
use crate::campaign_log::{Delivery, ResendError, TriggerError};
use crate::identity::parse_path_identifier;
use crate::state::Shared;

/// The routes, to be merged into the `/_emulator` router.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/campaigns", get(list).post(add))
        .route("/campaigns/deliveries", get(deliveries))
        .route("/campaigns/deliveries/{delivery_id}/resend", post(resend))
        .route("/campaigns/{name}", delete(remove))
        .route("/campaigns/{name}/trigger", post(trigger))
}

/// `POST /_emulator/campaigns/{name}/trigger`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerRequest {
    /// An id, an email or `cio_<cio_id>`, as in a v1 path.
    customer_id: String,
    /// The event's properties, for `{{ event.X }}`.
    #[serde(default)]
    event: Map<String, Value>,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

async fn list(State(shared): State<Shared>) -> Response {
    Json(shared.read(|inner| inner.campaigns.listings())).into_response()
}

async fn add(State(shared): State<Shared>, body: Bytes) -> Response {
    let spec = match serde_json::from_slice::<CampaignSpec>(&body) {
        Ok(spec) => spec,
        // serde's message names the field; it may quote a bad value back to
        // its sender, and nothing under /_emulator is logged.
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid campaign: {e}")),
    };
    let campaign = match Campaign::from_spec(spec) {
        Ok(campaign) => campaign,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    match shared.update(|inner| inner.campaigns.add(campaign)) {
        Ok(listing) => (StatusCode::CREATED, Json(listing)).into_response(),
        Err(message) => error(StatusCode::CONFLICT, message),
    }
}

async fn remove(State(shared): State<Shared>, Path(name): Path<String>) -> Response {
    if shared.update(|inner| inner.campaigns.remove(&name)) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        error(StatusCode::NOT_FOUND, "no such campaign")
    }
}

async fn trigger(State(shared): State<Shared>, Path(name): Path<String>, body: Bytes) -> Response {
    let request = match serde_json::from_slice::<TriggerRequest>(&body) {
        Ok(request) => request,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid trigger: {e}")),
    };
    let identifier = parse_path_identifier(&request.customer_id);
    let now_ms = chrono::Utc::now().timestamp_millis();
    let queued = shared.update(|inner| {
        inner.campaigns.trigger(&inner.world, &name, &identifier, &request.event, now_ms)
    });
    match queued {
        Ok(delivery) => (StatusCode::ACCEPTED, Json(delivery)).into_response(),
        Err(TriggerError::UnknownCampaign) => error(StatusCode::NOT_FOUND, "no such campaign"),
        Err(TriggerError::UnknownPerson) => error(StatusCode::NOT_FOUND, "no such customer"),
    }
}

async fn deliveries(State(shared): State<Shared>) -> Response {
    let all: Vec<Delivery> = shared.read(|inner| inner.campaigns.deliveries().cloned().collect());
    Json(all).into_response()
}

async fn resend(State(shared): State<Shared>, Path(delivery_id): Path<String>) -> Response {
    match shared.update(|inner| inner.campaigns.resend(&delivery_id)) {
        Ok(delivery) => (StatusCode::ACCEPTED, Json(delivery)).into_response(),
        Err(ResendError::Unknown) => error(StatusCode::NOT_FOUND, "no such delivery"),
        Err(ResendError::NotFinished) => error(
            StatusCode::CONFLICT,
            "the delivery is still queued or retrying; resend it once delivered or failed",
        ),
    }
}
