//! The one task that sends campaign webhook actions, the I/O edge of
//! `campaign` and `campaign_log`. Each campaign's deliveries go one at a
//! time, oldest first (a failing one is retried with backoff and holds back
//! the later ones of its campaign); different campaigns send side by side.
//!
//! ```text
//!   add_customers / remove_customers ─▶ real membership change ─┐
//!   POST /_emulator/campaigns/{name}/trigger ───────────────────┴▶ Campaigns (queue + record)
//!   POST …/deliveries/{id}/resend ─▶ reopens a finished one ───────▶     │ heads, one per campaign
//!                                    attempt, status ◀── sender ◀───────┘
//!                                                          └─ METHOD url (Basic auth, headers,
//!                                                             X-CIO-Delivery-ID, X-CIO-Idempotency-Key)
//! ```
//!
//! Facts followed: a 4 s timeout, and a non-2xx answer, a timeout or a
//! connection error retried with backoff (as for reporting webhooks;
//! UNCONFIRMED for actions); `X-CIO-Delivery-ID` and
//! `X-CIO-Idempotency-Key` the same on every attempt (community answer,
//! UNCONFIRMED). The body goes with every method but GET (UNCONFIRMED what
//! Customer.io does with a GET's body).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use tokio::task::JoinSet;

use crate::campaign::{ActionRequest, DELIVERY_ID_HEADER, IDEMPOTENCY_KEY_HEADER};
use crate::campaign_log::{ActionAttempt, Delivery};
use crate::state::Shared;
use crate::webhook::WebhookRetry;
use crate::webhook_log::Next;
use crate::webhook_sender::{describe, next_after, now_ms};

/// Customer.io's timeout for webhooks (facts §4); UNCONFIRMED for actions.
pub const ACTION_TIMEOUT: Duration = Duration::from_secs(4);

/// A head delivery, copied out of the state so no lock is held while sending.
struct Head {
    delivery_id: String,
    idempotency_key: String,
    request: Arc<ActionRequest>,
    body: String,
    attempts: u32,
    round_attempts: u32,
    round_first_sent_at_ms: Option<i64>,
    next_attempt_at_ms: Option<i64>,
}

/// Sends queued deliveries until the task is aborted (the emulator aborts
/// it when its server stops).
pub async fn run(shared: Shared, retry: WebhookRetry) {
    let client = match reqwest::Client::builder().timeout(ACTION_TIMEOUT).build() {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "cannot build the campaign HTTP client; no actions are sent");
            return;
        }
    };
    let mut changes = shared.subscribe();
    let mut sending: JoinSet<(Head, ActionAttempt)> = JoinSet::new();
    let mut in_flight: HashSet<String> = HashSet::new();
    loop {
        // Mark the version seen before looking, so a delivery queued
        // between the look and the wait still wakes us.
        changes.borrow_and_update();
        let heads: Vec<Head> =
            shared.read(|inner| inner.campaigns.heads().into_iter().map(head_of).collect());
        let now = now_ms();
        let mut next_due: Option<i64> = None;
        for head in heads {
            if in_flight.contains(&head.delivery_id) {
                continue;
            }
            match head.next_attempt_at_ms {
                Some(due) if due > now => next_due = Some(next_due.map_or(due, |at| at.min(due))),
                _ => {
                    in_flight.insert(head.delivery_id.clone());
                    let client = client.clone();
                    sending.spawn(async move {
                        let attempt = attempt(&client, &head).await;
                        (head, attempt)
                    });
                }
            }
        }
        let wait = next_due.map(|due| Duration::from_millis((due - now).max(1) as u64));
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            Some(Ok((head, attempt))) = sending.join_next(), if !sending.is_empty() => {
                in_flight.remove(&head.delivery_id);
                let next = next(&retry, &head, &attempt);
                log_attempt(&head.delivery_id, &attempt, next);
                shared.update(|inner| inner.campaigns.record_attempt(&head.delivery_id, attempt, next));
            }
            () = sleep_or_forever(wait) => {}
        }
    }
}

async fn sleep_or_forever(wait: Option<Duration>) {
    match wait {
        Some(wait) => tokio::time::sleep(wait).await,
        None => std::future::pending().await,
    }
}

fn head_of(delivery: &Delivery) -> Head {
    let round = delivery.round_attempts();
    Head {
        delivery_id: delivery.delivery_id.clone(),
        idempotency_key: delivery.idempotency_key.clone(),
        request: Arc::clone(delivery.request()),
        body: delivery.body.clone(),
        attempts: u32::try_from(delivery.attempts.len()).unwrap_or(u32::MAX),
        round_attempts: u32::try_from(round.len()).unwrap_or(u32::MAX),
        round_first_sent_at_ms: round.first().map(|attempt| attempt.sent_at_ms),
        next_attempt_at_ms: delivery.next_attempt_at_ms,
    }
}

/// The headers of every attempt: `Content-Type: application/json` unless
/// the author set another, Basic auth from the URL unless the author set an
/// `Authorization` (the author's header wins; UNCONFIRMED which Customer.io
/// keeps), the author's headers, then the delivery's two ids.
pub fn headers(request: &ActionRequest, delivery_id: &str, idempotency_key: &str) -> HeaderMap {
    use base64::Engine as _;
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some((user, password)) = &request.basic_auth {
        let encoded = base64::engine::general_purpose::STANDARD
            .encode(format!("{user}:{}", password.expose()));
        if let Ok(mut value) = HeaderValue::from_str(&format!("Basic {encoded}")) {
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
    }
    for (name, value) in &request.headers {
        // Both were checked when the campaign was registered.
        if let (Ok(name), Ok(mut value)) =
            (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value.expose()))
        {
            value.set_sensitive(true);
            headers.insert(name, value);
        }
    }
    for (name, value) in
        [(DELIVERY_ID_HEADER, delivery_id), (IDEMPOTENCY_KEY_HEADER, idempotency_key)]
    {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    headers
}

async fn attempt(client: &reqwest::Client, head: &Head) -> ActionAttempt {
    let sent_at_ms = now_ms();
    let started = Instant::now();
    let method = reqwest::Method::from_bytes(head.request.method.as_bytes())
        .unwrap_or(reqwest::Method::POST);
    let is_get = method == reqwest::Method::GET;
    let mut request = client.request(method, &head.request.url).headers(headers(
        &head.request,
        &head.delivery_id,
        &head.idempotency_key,
    ));
    if !is_get {
        request = request.body(head.body.clone());
    }
    let (status, error) = match request.send().await {
        Ok(response) => (Some(response.status().as_u16()), None),
        Err(error) => (None, Some(describe(error, ACTION_TIMEOUT))),
    };
    ActionAttempt {
        number: head.attempts + 1,
        sent_at_ms,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        status,
        error,
    }
}

/// Retry timing per round: a resend starts counting afresh.
fn next(retry: &WebhookRetry, head: &Head, attempt: &ActionAttempt) -> Next {
    let first = head.round_first_sent_at_ms.unwrap_or(attempt.sent_at_ms);
    next_after(retry, attempt.succeeded(), head.round_attempts + 1, first)
}

/// Status and timing only: never the body, the URL or a header.
fn log_attempt(delivery_id: &str, attempt: &ActionAttempt, next: Next) {
    let status = attempt.status.map(|status| status.to_string()).unwrap_or_default();
    let error = attempt.error.as_deref().unwrap_or("");
    match next {
        Next::Delivered => {
            tracing::debug!(delivery_id, attempt = attempt.number, %status, "campaign action delivered")
        }
        Next::RetryAt(_) => tracing::info!(
            delivery_id,
            attempt = attempt.number,
            %status,
            error,
            "campaign action failed; retrying, later ones of its campaign wait"
        ),
        Next::GiveUp => tracing::warn!(
            delivery_id,
            attempt = attempt.number,
            %status,
            error,
            "campaign action failed; giving up"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ciosync_track_api::Secret;

    #[test]
    fn author_headers_override_the_defaults_but_not_the_delivery_ids() {
        let request = ActionRequest {
            method: "POST".into(),
            url: "http://h/".into(),
            basic_auth: Some(("u".into(), Secret::new("p"))),
            headers: vec![("x-team".into(), Secret::new("core"))],
        };
        let headers = headers(&request, "D1", "K1");
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        assert_eq!(get("authorization").as_deref(), Some("Basic dTpw"));
        assert_eq!(get("content-type").as_deref(), Some("application/json"));
        assert_eq!(get("x-team").as_deref(), Some("core"));
        assert_eq!(get("x-cio-delivery-id").as_deref(), Some("D1"));
        assert_eq!(get("x-cio-idempotency-key").as_deref(), Some("K1"));
        let own = ActionRequest {
            headers: vec![
                ("authorization".into(), Secret::new("Bearer t")),
                ("content-type".into(), Secret::new("text/plain")),
            ],
            ..request
        };
        let headers = super::headers(&own, "D1", "K1");
        assert_eq!(headers.get("authorization").map(|v| v.as_bytes()), Some(&b"Bearer t"[..]));
        assert_eq!(headers.get("content-type").map(|v| v.as_bytes()), Some(&b"text/plain"[..]));
    }
}
