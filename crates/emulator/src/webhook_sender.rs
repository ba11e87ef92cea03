//! The one task that delivers webhooks, the I/O edge of `webhook` and
//! `webhook_log`. Like Customer.io it sends one at a time, oldest first:
//! a webhook that fails is retried with exponential backoff and every later
//! one waits until it is delivered or given up (head-of-line blocking).
//!
//! ```text
//!   track call ─▶ model activity ─┐
//!   POST /_emulator/webhooks ─────┴▶ WebhookLog (queue + record) ─▶ sender ─POST─▶ webhook_url
//!                                        ▲                            │ signed per attempt
//!                                        └──── attempt, status ◀──────┘
//! ```
//!
//! Each attempt is signed afresh: `X-CIO-Timestamp` is the attempt's send
//! time and `X-CIO-Signature` covers it, while the body (and so its
//! `event_id`) stays the same, so a receiver can dedupe on `event_id`.

use ciosync_track_api::Secret;
use std::time::{Duration, Instant};

use crate::state::Shared;
use crate::webhook::{after_failure, sign, AfterFailure, WebhookRetry};
use crate::webhook_log::{Next, WebhookAttempt};

/// Customer.io's timeout per webhook request (facts §4).
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(4);

/// Where and how to deliver.
pub struct Sender {
    /// The receiver's URL.
    pub url: String,
    /// The signing key.
    pub key: Secret,
    /// Retry timing.
    pub retry: WebhookRetry,
}

/// The head webhook, copied out of the state so no lock is held while
/// sending.
struct Head {
    event_id: String,
    body: Vec<u8>,
    attempts: u32,
    first_sent_at_ms: Option<i64>,
    next_attempt_at_ms: Option<i64>,
}

impl Sender {
    /// Delivers queued webhooks until the task is aborted (the emulator
    /// aborts it when its server stops).
    pub async fn run(self, shared: Shared) {
        let client = match reqwest::Client::builder().timeout(WEBHOOK_TIMEOUT).build() {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(%error, "cannot build the webhook HTTP client; no webhooks are sent");
                return;
            }
        };
        let mut changes = shared.subscribe();
        loop {
            // Mark the version seen before looking, so a webhook queued
            // between the look and the wait still wakes us.
            changes.borrow_and_update();
            let Some(head) = shared.read(|inner| inner.webhooks.head().map(head_of)) else {
                if changes.changed().await.is_err() {
                    return;
                }
                continue;
            };
            if let Some(due) = head.next_attempt_at_ms {
                let wait = due - now_ms();
                if wait > 0 {
                    // Re-read the head afterwards: a reset may have
                    // replaced the queue meanwhile.
                    tokio::time::sleep(Duration::from_millis(wait as u64)).await;
                    continue;
                }
            }
            let attempt = self.attempt(&client, &head).await;
            let next = self.next(&head, &attempt);
            log_attempt(&head.event_id, &attempt, next);
            shared.update(|inner| inner.webhooks.record_attempt(&head.event_id, attempt, next));
        }
    }

    async fn attempt(&self, client: &reqwest::Client, head: &Head) -> WebhookAttempt {
        let sent_at_ms = now_ms();
        let timestamp = sent_at_ms.div_euclid(1000);
        let signature = sign(self.key.expose().as_bytes(), timestamp, &head.body);
        let started = Instant::now();
        let result = client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-CIO-Timestamp", timestamp.to_string())
            .header("X-CIO-Signature", signature)
            .body(head.body.clone())
            .send()
            .await;
        let (status, error) = match result {
            Ok(response) => (Some(response.status().as_u16()), None),
            Err(error) => (None, Some(describe(error, WEBHOOK_TIMEOUT))),
        };
        WebhookAttempt {
            number: head.attempts + 1,
            timestamp,
            sent_at_ms,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            status,
            error,
        }
    }

    fn next(&self, head: &Head, attempt: &WebhookAttempt) -> Next {
        let first = head.first_sent_at_ms.unwrap_or(attempt.sent_at_ms);
        next_after(&self.retry, attempt.succeeded(), attempt.number, first)
    }
}

/// What follows attempt number `number` of a delivery first sent at
/// `first_sent_ms`: delivered, another attempt at a time, or giving up.
/// Reporting webhooks and campaign actions retry alike.
pub(crate) fn next_after(
    retry: &WebhookRetry,
    succeeded: bool,
    number: u32,
    first_sent_ms: i64,
) -> Next {
    if succeeded {
        return Next::Delivered;
    }
    let elapsed_ms = u64::try_from(now_ms() - first_sent_ms).unwrap_or(0);
    match after_failure(retry, number, elapsed_ms) {
        AfterFailure::RetryIn(wait) => {
            Next::RetryAt(now_ms() + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 2))
        }
        AfterFailure::GiveUp => Next::GiveUp,
    }
}

/// What went wrong, without the URL (it is the user's and may carry a
/// token): reqwest's summary plus the innermost cause, e.g. "error sending
/// request: Connection refused (os error 111)". `timeout`: the sender's.
pub(crate) fn describe(error: reqwest::Error, timeout: Duration) -> String {
    if error.is_timeout() {
        return format!("timed out after {} s", timeout.as_secs());
    }
    let cause = {
        let mut cause: &dyn std::error::Error = &error;
        while let Some(source) = cause.source() {
            cause = source;
        }
        cause.to_string()
    };
    let summary = error.without_url().to_string();
    if cause == summary {
        summary
    } else {
        format!("{summary}: {cause}")
    }
}

fn head_of(record: &crate::webhook_log::WebhookRecord) -> Head {
    Head {
        event_id: record.event_id.clone(),
        // Serializing the same value gives the same bytes on every attempt.
        body: serde_json::to_vec(&record.payload).unwrap_or_default(),
        attempts: u32::try_from(record.attempts.len()).unwrap_or(u32::MAX),
        first_sent_at_ms: record.attempts.first().map(|a| a.sent_at_ms),
        next_attempt_at_ms: record.next_attempt_at_ms,
    }
}

/// Status and timing only: never the body, the URL or the key.
fn log_attempt(event_id: &str, attempt: &WebhookAttempt, next: Next) {
    let status = attempt.status.map(|status| status.to_string()).unwrap_or_default();
    match next {
        Next::Delivered => {
            tracing::debug!(event_id, attempt = attempt.number, %status, "webhook delivered")
        }
        Next::RetryAt(_) => tracing::info!(
            event_id,
            attempt = attempt.number,
            %status,
            error = attempt.error.as_deref().unwrap_or(""),
            "webhook failed; retrying, later webhooks wait"
        ),
        Next::GiveUp => tracing::warn!(
            event_id,
            attempt = attempt.number,
            %status,
            error = attempt.error.as_deref().unwrap_or(""),
            "webhook failed; giving up"
        ),
    }
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
