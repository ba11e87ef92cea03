//! Inspection and control over HTTP, under `/_emulator/`, for tests in
//! other languages, the demo and people poking at a staging run. No auth,
//! no faults, not recorded (a path under it that is no route here is
//! recorded, as every unknown route is).
//!
//! | Route | Answer |
//! |---|---|
//! | `GET /_emulator/health` | 200 `{"status":"ok"}` while it serves: for healthchecks |
//! | `GET /_emulator/ca.pem` | the self-signed CA's certificate (`--tls-self-signed`), 404 otherwise |
//! | `GET /_emulator/customers` | `{key: attributes}` for everyone |
//! | `GET /_emulator/customers/{identifier}` | attributes, 404 if absent |
//! | `GET /_emulator/customers/{identifier}/events` | events, 404 if absent |
//! | `GET /_emulator/customers/{identifier}/devices` | `[{token, platform, last_used, attributes}]` by token, 404 if absent |
//! | `GET /_emulator/customers/{identifier}/relationships` | `[{object_type_id, object_id, cio_object_id, attributes}]` (relationship attributes), 404 if absent |
//! | `GET /_emulator/objects` | `[{object_type_id, object_id, cio_object_id, attributes, relationship_count}]` by type then id |
//! | `GET /_emulator/objects/{object_type_id}/{object_id}` | `{object_type_id, object_id, cio_object_id, attributes, relationships: [{customer, cio_id, attributes}]}`, 404 if absent |
//! | `GET /_emulator/anonymous_events` | events sent without a person |
//! | `GET /_emulator/failures` | calls answered 200 but not applied |
//! | `GET /_emulator/suppressed` | blocked identifiers |
//! | `GET /_emulator/accepted` | `{accept_only, requests, items}`: v2 requests and items accepted in accept-only mode |
//! | `GET /_emulator/unmodelled` | `{routes, items}`: Track API routes not fully modelled, with why, and the items kept unapplied (deliveries, `identify_anonymous` objects, metrics, unsubscribes, forms) |
//! | `GET /_emulator/segments` | `{segments: {id: [member keys]}, ignored: [identifiers naming nobody]}` |
//! | `GET /_emulator/requests`, `DELETE …` | the request log; clear it |
//! | `GET /_emulator/faults`, `PUT …` | current faults; replace them |
//! | `GET /_emulator/webhooks` | webhooks with per-attempt status (never the key) |
//! | `POST /_emulator/webhooks` | queue one webhook: 202 and it, 400 if invalid, 409 if no `webhook_url` |
//! | `GET /_emulator/campaigns` | campaigns with one webhook action, without credentials (see `inspect_campaigns`) |
//! | `POST /_emulator/campaigns` | register one: 201 and it as listed, 400 if invalid, 409 if the name is taken |
//! | `DELETE /_emulator/campaigns/{name}` | forget it (queued deliveries still go): 204, 404 if unknown |
//! | `POST /_emulator/campaigns/{name}/trigger` | `{"customer_id", "event"?}`: queue one delivery: 202 and it, 404 if the campaign or person is unknown |
//! | `GET /_emulator/campaigns/deliveries` | deliveries with rendered body and per-attempt status (never credentials) |
//! | `POST /_emulator/campaigns/deliveries/{delivery_id}/resend` | send a finished one again, same ids and body: 202, 404 if unknown, 409 if unfinished |
//! | `POST /_emulator/reset` | forget everything (objects, relationships and devices too), campaigns included |

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::catalog;
use crate::faults::Faults;
use crate::state::{EmulatorView, Shared};
use crate::webhook::WebhookRequest;

/// The `/_emulator` routes, to be nested under that prefix.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/health", get(health))
        .route("/ca.pem", get(ca_pem))
        .route("/customers", get(customers))
        .route("/customers/{identifier}", get(customer))
        .route("/customers/{identifier}/events", get(events))
        .route("/customers/{identifier}/devices", get(devices))
        .route("/customers/{identifier}/relationships", get(relationships))
        .route("/objects", get(objects))
        .route("/objects/{object_type_id}/{object_id}", get(object))
        .route("/anonymous_events", get(anonymous_events))
        .route("/failures", get(failures))
        .route("/suppressed", get(suppressed))
        .route("/unmodelled", get(unmodelled))
        .route("/segments", get(segments))
        .route("/accepted", get(accepted))
        .route("/requests", get(requests).delete(clear_requests))
        .route("/faults", get(faults).put(set_faults))
        .route("/webhooks", get(webhooks).post(send_webhook))
        .route("/reset", post(reset))
}

fn view<R>(shared: &Shared, f: impl FnOnce(&EmulatorView<'_>) -> R) -> R {
    shared.read(|inner| f(&EmulatorView::new(inner)))
}

fn not_found(what: &str) -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"error": format!("no such {what}")}))).into_response()
}

/// For container healthchecks and CI waiting for the service: touches no
/// state, so it answers as long as the listener does.
async fn health() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// The certificate (never a key) of the CA the emulator made, for a client
/// that cannot read the file it wrote, e.g. a CI job beside its container.
async fn ca_pem(State(shared): State<Shared>) -> Response {
    match shared.ca_pem() {
        Some(pem) => ([(CONTENT_TYPE, "application/x-pem-file")], pem.to_owned()).into_response(),
        None => not_found("self-signed CA: start with --tls-self-signed"),
    }
}

/// Accept-only mode's counts (`accept_only` false and zeros otherwise).
async fn accepted(State(shared): State<Shared>) -> Response {
    Json(shared.accepted().snapshot(shared.config().accept_only)).into_response()
}

async fn customers(State(shared): State<Shared>) -> Response {
    Json(view(&shared, |v| v.customers())).into_response()
}

async fn customer(State(shared): State<Shared>, Path(identifier): Path<String>) -> Response {
    match view(&shared, |v| v.customer(&identifier)) {
        Some(attributes) => Json(attributes).into_response(),
        None => not_found("customer"),
    }
}

async fn events(State(shared): State<Shared>, Path(identifier): Path<String>) -> Response {
    let found = view(&shared, |v| v.customer(&identifier).map(|_| v.events(&identifier)));
    match found {
        Some(events) => Json(events).into_response(),
        None => not_found("customer"),
    }
}

async fn devices(State(shared): State<Shared>, Path(identifier): Path<String>) -> Response {
    match view(&shared, |v| v.devices(&identifier)) {
        Some(devices) => Json(devices).into_response(),
        None => not_found("customer"),
    }
}

async fn relationships(State(shared): State<Shared>, Path(identifier): Path<String>) -> Response {
    match view(&shared, |v| v.relationships(&identifier)) {
        Some(relationships) => Json(relationships).into_response(),
        None => not_found("customer"),
    }
}

async fn objects(State(shared): State<Shared>) -> Response {
    Json(view(&shared, |v| v.objects())).into_response()
}

async fn object(
    State(shared): State<Shared>,
    Path((object_type_id, object_id)): Path<(String, String)>,
) -> Response {
    match view(&shared, |v| v.object(&object_type_id, &object_id)) {
        Some(object) => Json(object).into_response(),
        None => not_found("object"),
    }
}

async fn anonymous_events(State(shared): State<Shared>) -> Response {
    Json(view(&shared, |v| v.world().anonymous_events().to_vec())).into_response()
}

async fn failures(State(shared): State<Shared>) -> Response {
    Json(view(&shared, |v| v.failures().to_vec())).into_response()
}

async fn suppressed(State(shared): State<Shared>) -> Response {
    let suppressed: Vec<String> = view(&shared, |v| v.world().suppressed().cloned().collect());
    Json(suppressed).into_response()
}

async fn unmodelled(State(shared): State<Shared>) -> Response {
    let items = view(&shared, |v| v.world().unmodelled().to_vec());
    Json(json!({"routes": catalog::unmodelled(), "items": items})).into_response()
}

async fn segments(State(shared): State<Shared>) -> Response {
    let (members, ignored) = shared
        .read(|inner| (inner.segments.members(&inner.world), inner.segments.ignored().to_vec()));
    Json(json!({"segments": members, "ignored": ignored})).into_response()
}

async fn requests(State(shared): State<Shared>) -> Response {
    Json(view(&shared, |v| v.requests())).into_response()
}

async fn clear_requests(State(shared): State<Shared>) -> StatusCode {
    shared.update(|inner| inner.clear_requests());
    StatusCode::NO_CONTENT
}

async fn faults(State(shared): State<Shared>) -> Response {
    Json(shared.read(|inner| inner.faults.clone())).into_response()
}

/// Replaces the faults. Fields left out take their defaults (no fault), so
/// `{}` switches everything off.
async fn set_faults(State(shared): State<Shared>, body: Bytes) -> Response {
    let faults = match serde_json::from_slice::<Faults>(&body) {
        Ok(faults) => faults,
        Err(error) => return bad_request(format!("invalid faults: {error}")),
    };
    if let Err(message) = faults.validate() {
        return bad_request(message);
    }
    shared.with_faults(|current| *current = faults.clone());
    Json(faults).into_response()
}

async fn webhooks(State(shared): State<Shared>) -> Response {
    Json(view(&shared, |v| v.webhooks())).into_response()
}

/// Queues one webhook, e.g. `{"object_type":"email","metric":"bounced",
/// "customer_id":"42","data":{"failure_message":"mailbox full"}}`.
async fn send_webhook(State(shared): State<Shared>, body: Bytes) -> Response {
    let request = match serde_json::from_slice::<WebhookRequest>(&body) {
        Ok(request) => request,
        Err(error) => return bad_request(format!("invalid webhook request: {error}")),
    };
    if shared.config().webhook_url.is_none() {
        let message = "no webhook_url is configured; start the emulator with --webhook-url";
        return (StatusCode::CONFLICT, Json(json!({"error": message}))).into_response();
    }
    match shared.queue_webhook(&request) {
        Ok(record) => (StatusCode::ACCEPTED, Json(record)).into_response(),
        Err(message) => bad_request(message),
    }
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": message}))).into_response()
}

async fn reset(State(shared): State<Shared>) -> StatusCode {
    shared.reset();
    StatusCode::NO_CONTENT
}
