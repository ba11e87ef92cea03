//! The middleware around the Track API routes, outermost first: `record`
//! logs each request and its answer (the `journal`), `inject_faults` applies
//! the faults `faults` decides. Both only read and update the shared state;
//! the rules are in those modules. (`auth::require` comes next.)

use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::catalog::{operation_of, UNMODELLED_HEADER};
use crate::faults::{fault_response, InjectedMark};
use crate::journal::{self, route_of, Pending, RecordedRequest, MAX_READ_BODY_BYTES};
use crate::state::Shared;

/// Middleware around the Track API routes (outermost, so it sees faults and
/// auth failures too): buffers the body, runs the request, logs both.
pub async fn record(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    let received_at_ms = chrono::Utc::now().timestamp_millis();
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().map(str::to_owned);
    let route = route_of(&path);
    let (parts, body) = request.into_parts();
    let (method_of_log, path_of_log) = (method.clone(), path.clone());
    let Ok(bytes) = to_bytes(body, MAX_READ_BODY_BYTES).await else {
        let response =
            (StatusCode::PAYLOAD_TOO_LARGE, "request body too large or unreadable").into_response();
        tracing::debug!(method = %method, route = %route, status = 413, "track api request");
        let entry = entry(&shared, method, path, query, &[], received_at_ms);
        shared.update(|inner| inner.record(RecordedRequest { status: 413, ..entry }));
        return say_what_is_unmodelled(response, &method_of_log, &path_of_log);
    };
    let body_bytes = bytes.len();
    let entry = entry(&shared, method, path, query, &bytes, received_at_ms);
    let request = Request::from_parts(parts, Body::from(bytes));
    let response = while_handling(&shared, entry, next.run(request), |response| {
        (response.status().as_u16(), response.extensions().get::<InjectedMark>().is_some())
    })
    .await;
    tracing::debug!(
        method = %method_of_log,
        route = %route,
        status = response.status().as_u16(),
        bytes = body_bytes,
        "track api request"
    );
    say_what_is_unmodelled(response, &method_of_log, &path_of_log)
}

/// Runs `handle` (the request's handler) with `entry` logged as soon as
/// the handler applies an effect (see `journal`), else once answered; then
/// settles it with the status and fault mark `answered` reads off the
/// output.
pub async fn while_handling<T>(
    shared: &Shared,
    entry: RecordedRequest,
    handle: impl std::future::Future<Output = T>,
    answered: impl FnOnce(&T) -> (u16, bool),
) -> T {
    let (output, pending) = journal::handling(entry, handle).await;
    let (status, injected_fault) = answered(&output);
    shared.update(|inner| match pending {
        Pending::Waiting(mut entry) => {
            entry.status = status;
            entry.injected_fault = injected_fault;
            inner.record(entry);
        }
        Pending::Logged(entry) => inner.settle(entry, status, injected_fault),
        Pending::Done => {}
    });
    output
}

/// The log entry of a request, its answer not known yet.
fn entry(
    shared: &Shared,
    method: String,
    path: String,
    query: Option<String>,
    bytes: &[u8],
    received_at_ms: i64,
) -> RecordedRequest {
    // Accept-only mode logs no bodies: parsing and keeping them would be
    // most of its work.
    let keep_body = !shared.config().accept_only;
    let body = keep_body.then(|| serde_json::from_slice::<Value>(bytes).ok()).flatten();
    let body_text = (keep_body && body.is_none() && !bytes.is_empty())
        .then(|| String::from_utf8_lossy(bytes).into_owned());
    RecordedRequest {
        seq: 0,
        method,
        path,
        query,
        status: 0,
        body,
        body_text,
        body_bytes: bytes.len(),
        received_at_ms,
        injected_fault: false,
    }
}

/// Adds the catalog's note, if the route has one, to its answer.
fn say_what_is_unmodelled(mut response: Response, method: &str, path: &str) -> Response {
    if let Some(note) = operation_of(method, path).and_then(|route| route.unmodelled) {
        response.headers_mut().insert(UNMODELLED_HEADER, HeaderValue::from_static(note));
    }
    response
}

/// Middleware for the Track API routes: sleeps `latency_ms`, then answers
/// with an injected fault or passes the request on.
pub async fn inject_faults(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    let (latency, fault) = shared.with_faults(|faults| {
        let fault = faults.decide(rand::random::<f64>(), rand::random::<f64>());
        (faults.latency_ms, fault)
    });
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let Some(fault) = fault else {
        return next.run(request).await;
    };
    let location = request.uri().path_and_query().map(|p| p.as_str().to_owned());
    if fault.after_apply {
        // The answer is thrown away: the client only sees the fault.
        let _applied = next.run(request).await;
    }
    tracing::debug!(status = fault.status, after_apply = fault.after_apply, "injecting fault");
    fault_response(fault, location.as_deref())
}
