//! Retry classification (what an answer means) apart from retry mechanics
//! (how long to wait). Both pure.

use std::time::Duration;

use rand::Rng;

use crate::track_api::{ErrorsResponse, ItemError};

/// Longest `Retry-After` honoured, as Customer.io's Node client caps it.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// First backoff step.
pub const BASE_BACKOFF: Duration = Duration::from_millis(200);

/// What one HTTP answer to a batch means for its operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every item accepted.
    Accepted,
    /// Some items refused for good (207, or 200 with `errors`), the rest accepted.
    PartlyRejected(Vec<ItemError>),
    /// Nothing applied; try the same request again, after `after` if given.
    Retry { after: Option<Duration>, reason: String },
    /// The request's content refused for good (400, 413, 422): one of its
    /// operations is bad; sent alone, a bad operation is dead-lettered.
    Rejected { status: u16, message: String },
    /// Refused for a reason no operation caused (403, 404, 405, …: a wrong
    /// `track_url`, a proxy, a suspended account): nothing is dead-lettered.
    Refused { status: u16, message: String },
    /// The credentials were refused: nothing will work until they are fixed.
    Unauthorized,
    /// A redirect (Customer.io sends one for a workspace in the other
    /// region): never followed, since it would replay the body and the
    /// credentials elsewhere; the operator fixes `region` or `track_url`.
    Redirected { status: u16 },
}

/// Classifies an HTTP answer by status, `Retry-After` header and body.
/// Unknown means transient: an answer we do not understand is retried.
pub fn classify(status: u16, retry_after: Option<&str>, body: &[u8]) -> Verdict {
    match status {
        200..=299 => match serde_json::from_slice::<ErrorsResponse>(body) {
            Ok(parsed) if !parsed.errors.is_empty() => {
                if parsed.errors.iter().all(|e| e.batch_index.is_some()) {
                    Verdict::PartlyRejected(parsed.errors)
                } else {
                    Verdict::Rejected { status, message: error_text(body) }
                }
            }
            // A 207 says some items failed; without a list naming them we
            // cannot tell which, so the whole request goes again (harmless).
            _ if status == 207 => Verdict::Retry {
                after: None,
                reason: "HTTP 207 without a readable list of errors".to_owned(),
            },
            _ => Verdict::Accepted,
        },
        401 => Verdict::Unauthorized,
        300..=399 => Verdict::Redirected { status },
        408 | 429 | 500..=599 => Verdict::Retry {
            after: retry_after.and_then(parse_retry_after),
            reason: format!("HTTP {status}"),
        },
        400 | 413 | 422 => Verdict::Rejected { status, message: error_text(body) },
        400..=499 => Verdict::Refused { status, message: error_text(body) },
        _ => Verdict::Retry { after: None, reason: format!("unexpected HTTP {status}") },
    }
}

/// Customer.io's error text from a v1 or v2 error body, cut to 300 bytes.
/// The body holds Customer.io's messages (which name attributes, not values);
/// anything unparseable is summarised by its size, never echoed.
pub fn error_text(body: &[u8]) -> String {
    let value: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => return format!("unparseable body of {} bytes", body.len()),
    };
    let mut messages = Vec::new();
    if let Some(errors) = value.get("errors").and_then(|e| e.as_array()) {
        for e in errors {
            let text = e.get("message").or_else(|| e.get("reason")).and_then(|m| m.as_str());
            messages.extend(text.map(str::to_owned));
        }
    }
    if let Some(meta) = value.get("meta") {
        if let Some(error) = meta.get("error").and_then(|m| m.as_str()) {
            messages.push(error.to_owned());
        }
        if let Some(errors) = meta.get("errors").and_then(|m| m.as_array()) {
            messages.extend(errors.iter().filter_map(|m| m.as_str()).map(str::to_owned));
        }
    }
    let text = if messages.is_empty() { "no error text".to_owned() } else { messages.join("; ") };
    cut_error_text(text)
}

/// Longest error text kept (logs, dead letters), in bytes.
pub const MAX_ERROR_TEXT_BYTES: usize = 300;

/// Cuts `text` to [`MAX_ERROR_TEXT_BYTES`] on a character boundary.
pub fn cut_error_text(mut text: String) -> String {
    if text.len() > MAX_ERROR_TEXT_BYTES {
        let mut end = MAX_ERROR_TEXT_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// One per-item error in words: `reason (field): message` (uncut).
pub fn describe_item_error(error: &ItemError) -> String {
    let reason = error.reason.as_deref().unwrap_or("refused");
    match (error.field.as_deref(), error.message.as_deref()) {
        (Some(field), Some(message)) if !field.is_empty() => {
            format!("{reason} ({field}): {message}")
        }
        (_, Some(message)) => format!("{reason}: {message}"),
        _ => reason.to_owned(),
    }
}

/// `Retry-After` as seconds (an HTTP date is treated as absent), capped.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: u64 = value.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// Capped exponential backoff with jitter: attempt n waits a random time in
/// `[d/2, d]` where `d = min(max, base · 2^n)`, so many daemons do not retry
/// in step.
#[derive(Debug, Clone)]
pub struct Backoff {
    attempt: u32,
    max: Duration,
}

impl Backoff {
    /// A fresh backoff capped at `max`.
    pub fn new(max: Duration) -> Self {
        Self { attempt: 0, max }
    }

    /// The wait before the next retry; honours `after` (Retry-After) when given.
    pub fn next_delay(&mut self, after: Option<Duration>) -> Duration {
        let exp = BASE_BACKOFF.saturating_mul(1u32 << self.attempt.min(16));
        self.attempt = self.attempt.saturating_add(1);
        let cap = exp.min(self.max);
        let jittered = rand::rng().random_range(cap / 2..=cap);
        match after {
            Some(after) => after.max(jittered.min(after)),
            None => jittered,
        }
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_statuses() {
        assert_eq!(classify(200, None, b"{}"), Verdict::Accepted);
        assert_eq!(classify(200, None, b""), Verdict::Accepted);
        assert_eq!(classify(401, None, b"{}"), Verdict::Unauthorized);
        for status in [408, 429, 500, 502, 503, 504, 522, 524] {
            assert!(matches!(classify(status, None, b""), Verdict::Retry { .. }), "{status}");
        }
        assert_eq!(
            classify(429, Some("7"), b""),
            Verdict::Retry { after: Some(Duration::from_secs(7)), reason: "HTTP 429".into() }
        );
        assert_eq!(
            classify(429, Some("100000"), b""),
            Verdict::Retry { after: Some(MAX_RETRY_AFTER), reason: "HTTP 429".into() }
        );
        assert_eq!(
            classify(400, None, br#"{"meta":{"errors":["name cannot be blank"]}}"#),
            Verdict::Rejected { status: 400, message: "name cannot be blank".into() }
        );
        assert_eq!(classify(301, None, b""), Verdict::Redirected { status: 301 });
        assert_eq!(classify(307, None, b""), Verdict::Redirected { status: 307 });
        assert!(matches!(classify(600, None, b""), Verdict::Retry { .. }));
        for status in [403, 404, 405, 415] {
            assert!(matches!(classify(status, None, b""), Verdict::Refused { .. }), "{status}");
        }
        assert!(matches!(classify(413, None, b""), Verdict::Rejected { .. }));
    }

    #[test]
    fn a_207_that_names_no_item_is_retried() {
        for body in [&b""[..], b"{}", br#"{"errors":[]}"#, b"not json"] {
            assert!(matches!(classify(207, None, body), Verdict::Retry { .. }), "{body:?}");
        }
    }

    #[test]
    fn partial_errors_in_207_and_200_map_to_items() {
        let body =
            br#"{"errors":[{"batch_index":1,"reason":"invalid","field":"id","message":"bad"}]}"#;
        for status in [200, 207] {
            match classify(status, None, body) {
                Verdict::PartlyRejected(errors) => assert_eq!(errors[0].batch_index, Some(1)),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn error_text_never_echoes_an_unparseable_body() {
        assert_eq!(error_text(b"secret stuff"), "unparseable body of 12 bytes");
        assert_eq!(error_text(br#"{"meta":{"error":"x"}}"#), "x");
        assert_eq!(
            error_text(
                &serde_json::to_vec(&serde_json::json!({"errors":[{"message": "é".repeat(400)}]}))
                    .unwrap()
            )
            .len(),
            300
        );
    }

    #[test]
    fn backoff_grows_to_its_cap_with_jitter_and_honours_retry_after() {
        let mut b = Backoff::new(Duration::from_secs(2));
        let first = b.next_delay(None);
        assert!(first >= BASE_BACKOFF / 2 && first <= BASE_BACKOFF);
        for _ in 0..20 {
            assert!(b.next_delay(None) <= Duration::from_secs(2));
        }
        assert!(b.next_delay(None) >= Duration::from_secs(1));
        assert_eq!(b.next_delay(Some(Duration::from_secs(30))), Duration::from_secs(30));
        b.reset();
        assert!(b.next_delay(None) <= BASE_BACKOFF);
    }
}
