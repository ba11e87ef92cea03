//! The HTTP side of `<webhooks.path>/actions/<name>`, on the webhook
//! listener (its connection limits, header timeout and body budget).
//!
//! Checks run cheapest first, and the body is read only from a caller
//! with the action's credentials: name (404), method (405: POST, PUT or
//! PATCH), credentials (401), content type (415), declared length (413),
//! the body up to `max_body_bytes` within the listener's budget (413, 503
//! when spent), JSON and the fields the action needs (400), then Postgres:
//! 200 once committed (or a duplicate), 422 when Postgres refuses the
//! values, 503 when it fails (Customer.io retries). Every answer is
//! counted per action and outcome and logged with the reason only: never
//! the body, a credential or a value.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::call::{self, IDEMPOTENCY_HEADER};
use super::store::Applied;
use crate::config::actions::Action;
use crate::listener::Connection;
use crate::telemetry::actions::ActionOutcome;
use crate::webhooks::server::Receiver;
use crate::webhooks::{verify, Rejection};

/// Answers one request to the action called `name`.
pub async fn receive(
    State(receiver): State<Arc<Receiver>>,
    Path(name): Path<String>,
    request: Request,
) -> Response {
    let Some(action) = receiver.actions().and_then(|a| a.find(&name)) else {
        return receiver.refuse(Rejection::Path, "no such webhook action");
    };
    let (parts, body) = request.into_parts();
    let connection = parts.extensions.get::<Connection>();
    let outcome = accept(&receiver, action, &parts.method, &parts.headers, body, connection).await;
    let (status, outcome, detail) = match outcome {
        Ok(Applied::Written) => (StatusCode::OK, ActionOutcome::Applied, String::new()),
        Ok(Applied::Unchanged) => (StatusCode::OK, ActionOutcome::Unchanged, String::new()),
        Ok(Applied::Duplicate) => (StatusCode::OK, ActionOutcome::Duplicate, String::new()),
        Err((outcome, detail)) => (status_of(outcome), outcome, detail),
    };
    receiver.counters().actions.count(&action.name, outcome);
    if status == StatusCode::OK {
        tracing::debug!(action = %action.name, kind = action.kind(), outcome = outcome.as_str(),
            "webhook action applied");
    } else {
        tracing::warn!(action = %action.name, kind = action.kind(), outcome = outcome.as_str(),
            status = status.as_u16(), %detail, "webhook action refused");
    }
    let mut response = (status, format!("{}\n", outcome.as_str())).into_response();
    match outcome {
        ActionOutcome::Method => {
            let allow = header::HeaderValue::from_static("POST, PUT, PATCH");
            response.headers_mut().insert(header::ALLOW, allow);
        }
        ActionOutcome::Unauthorized => {
            let challenge = header::HeaderValue::from_static("Basic realm=\"ciosync\"");
            response.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
        }
        _ => {}
    }
    response
}

/// The status answered for an outcome.
pub fn status_of(outcome: ActionOutcome) -> StatusCode {
    match outcome {
        ActionOutcome::Applied | ActionOutcome::Unchanged | ActionOutcome::Duplicate => {
            StatusCode::OK
        }
        ActionOutcome::Unauthorized => StatusCode::UNAUTHORIZED,
        ActionOutcome::Method => StatusCode::METHOD_NOT_ALLOWED,
        ActionOutcome::ContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ActionOutcome::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ActionOutcome::Malformed => StatusCode::BAD_REQUEST,
        ActionOutcome::Refused => StatusCode::UNPROCESSABLE_ENTITY,
        ActionOutcome::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

async fn accept(
    receiver: &Receiver,
    action: &Action,
    method: &Method,
    headers: &HeaderMap,
    body: Body,
    connection: Option<&Connection>,
) -> Result<Applied, (ActionOutcome, String)> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if ![Method::POST, Method::PUT, Method::PATCH].contains(method) {
        return Err((ActionOutcome::Method, format!("method {method} carries no body")));
    }
    // Until the credentials match, the connection may be shed at the cap.
    if let Some(connection) = connection {
        connection.untrusted();
    }
    if !super::auth::authorized(action, header(header::AUTHORIZATION.as_str())) {
        return Err((
            ActionOutcome::Unauthorized,
            "the Authorization header is missing or does not carry the action's secret".into(),
        ));
    }
    if let Some(connection) = connection {
        connection.trusted();
    }
    if !verify::is_json_content_type(header(header::CONTENT_TYPE.as_str())) {
        return Err((
            ActionOutcome::ContentType,
            "the content type is not application/json".into(),
        ));
    }
    let max = receiver.config().max_body_bytes;
    verify::check_content_length(header(header::CONTENT_LENGTH.as_str()), max)
        .map_err(|_| (ActionOutcome::TooLarge, format!("Content-Length is over {max} bytes")))?;
    let (raw, _reserved) = receiver.read_body(body).await.map_err(|(rejection, why)| {
        let outcome = match rejection {
            Rejection::TooLarge => ActionOutcome::TooLarge,
            Rejection::Busy => ActionOutcome::Unavailable,
            _ => ActionOutcome::Malformed,
        };
        (outcome, why)
    })?;
    let json: serde_json::Value = serde_json::from_slice(&raw).map_err(|e| {
        (ActionOutcome::Malformed, format!("the body is not JSON ({})", json_error_kind(&e)))
    })?;
    let call = call::read(action, &json, &raw, header(IDEMPOTENCY_HEADER))
        .map_err(|why| (ActionOutcome::Malformed, why))?;
    let actions = receiver.actions().expect("the action was found in them");
    actions.apply(action, &call, &json).await.map_err(|(retry, why)| {
        if retry {
            (ActionOutcome::Unavailable, format!("not applied, Customer.io will retry: {why}"))
        } else {
            (ActionOutcome::Refused, why)
        }
    })
}

/// serde_json's error category, without the position or the offending text.
fn json_error_kind(error: &serde_json::Error) -> &'static str {
    match error.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "wrong shape",
        serde_json::error::Category::Eof => "cut short",
    }
}
