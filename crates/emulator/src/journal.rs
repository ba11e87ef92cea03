//! The request log: every Track API request with the status it got, so
//! tests can assert on what a client actually sent (and how often).
//!
//! Bodies are kept because they are test data here; the emulator's own
//! tracing output never includes them. The middleware that records each
//! request is `middleware::record`.
//!
//! A request is in the log no later than its effects can be seen: a
//! request that changes the model is logged in the same lock as the
//! change (`log_with_effects`), its status provisionally 200 until the
//! answer is known; any other request is logged once answered. So a test
//! that saw a customer change and then counts requests counts the one
//! that changed it.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Largest body read at all; above it the answer is 413. Well over the
/// 500,000-byte batch limit, so oversize batches still get Customer.io's 400.
pub const MAX_READ_BODY_BYTES: usize = 16 * 1024 * 1024;

/// One Track API request and its answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// 1-based position in the log since start or reset.
    pub seq: u64,
    /// HTTP method, e.g. `PUT`.
    pub method: String,
    /// Path as sent, still percent-encoded.
    pub path: String,
    /// Query string, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Status the emulator answered; 200 for a request that changed the
    /// workspace and is still being answered (see the module doc).
    pub status: u16,
    /// The body parsed as JSON, if it was JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// The body as text when it was not JSON (lossy UTF-8), if non-empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_text: Option<String>,
    /// Body size in bytes.
    pub body_bytes: usize,
    /// Unix milliseconds when the request arrived.
    pub received_at_ms: i64,
    /// Whether fault injection decided the answer: an injected status, or
    /// injected per-item errors (`reject_ids`, `item_errors_next`).
    pub injected_fault: bool,
}

/// The route's template, for logs: paths carry ids and emails, which must
/// not reach them (`/api/v1/customers/{identifier}/events`); a path outside
/// the Track API is only called unknown, as it may carry anything.
pub fn route_of(path: &str) -> String {
    crate::catalog::template_of(path).unwrap_or("(unknown route)").to_owned()
}

/// Where the request being handled stands in the log.
pub enum Pending {
    /// Not logged yet: no effect applied so far.
    Waiting(RecordedRequest),
    /// Logged with its effects (named as the log's `record` returned: the
    /// resets before it and its number); the status is provisional.
    Logged((u64, u64)),
    /// Taken by [`handling`].
    Done,
}

tokio::task_local! {
    /// The log entry of the Track API request this task is handling.
    static PENDING: Arc<Mutex<Pending>>;
}

/// Runs `handle` (the request's handler) with `entry` waiting to be logged
/// as soon as the handler applies an effect ([`log_with_effects`]);
/// returns its output and where the entry stands.
pub async fn handling<T>(entry: RecordedRequest, handle: impl Future<Output = T>) -> (T, Pending) {
    let pending = Arc::new(Mutex::new(Pending::Waiting(entry)));
    let output = PENDING.scope(pending.clone(), handle).await;
    let state = std::mem::replace(&mut *lock(&pending), Pending::Done);
    (output, state)
}

/// Logs the request being handled, if any and not yet logged, with
/// `record` (the log's, called in the lock that applies the effects).
pub fn log_with_effects(record: impl FnOnce(RecordedRequest) -> (u64, u64)) {
    let _ = PENDING.try_with(|pending| {
        let mut pending = lock(pending);
        if let Pending::Waiting(_) = &*pending {
            let Pending::Waiting(mut entry) = std::mem::replace(&mut *pending, Pending::Done)
            else {
                unreachable!("matched just above")
            };
            entry.status = 200;
            *pending = Pending::Logged(record(entry));
        }
    });
}

fn lock(pending: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    pending.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EmulatorConfig;
    use crate::middleware::while_handling;
    use crate::model::Op;
    use crate::state::{EmulatorView, Shared};
    use ciosync_track_api::Identifier;

    #[test]
    fn routes_hide_identifiers() {
        assert_eq!(
            route_of("/api/v1/customers/a%40b.c/events"),
            "/api/v1/customers/{identifier}/events"
        );
        assert_eq!(
            route_of("/api/v1/customers/42/devices/d1"),
            "/api/v1/customers/{identifier}/devices/{device_id}"
        );
        assert_eq!(route_of("/api/v2/batch"), "/api/v2/batch");
        assert_eq!(route_of("/api/v1/customer/a@b.c"), "(unknown route)");
    }

    fn entry() -> RecordedRequest {
        RecordedRequest {
            seq: 0,
            method: "POST".into(),
            path: "/api/v2/batch".into(),
            query: None,
            status: 0,
            body: None,
            body_text: None,
            body_bytes: 0,
            received_at_ms: 0,
            injected_fault: false,
        }
    }

    fn identify(id: &str) -> Op {
        Op::Identify {
            target: Identifier::Id(id.into()),
            attributes: serde_json::Map::new(),
            timestamp: 1,
            update_only: false,
        }
    }

    /// A request (answered 429, an injected fault) whose handler has
    /// applied an identify of customer 7 and waits for the answer to be
    /// let go: its task, and the sender that lets it go.
    async fn applied_then_waiting(
        shared: &Shared,
    ) -> (tokio::task::JoinHandle<u16>, tokio::sync::oneshot::Sender<()>) {
        let (applied_tx, applied_rx) = tokio::sync::oneshot::channel();
        let (answer_tx, answer_rx) = tokio::sync::oneshot::channel::<()>();
        let handler = {
            let shared = shared.clone();
            async move {
                shared.apply([identify("7")]);
                applied_tx.send(()).unwrap();
                answer_rx.await.unwrap();
                429u16
            }
        };
        let handling = tokio::spawn({
            let shared = shared.clone();
            async move { while_handling(&shared, entry(), handler, |s| (*s, true)).await }
        });
        applied_rx.await.unwrap();
        (handling, answer_tx)
    }

    /// Between applying its effects and being answered, a request is in the
    /// log (status 200 for now); once answered, with the answer's status.
    #[tokio::test]
    async fn a_request_is_logged_no_later_than_its_effects_show() {
        let shared = Shared::new(EmulatorConfig::default());
        let (handling, answer_tx) = applied_then_waiting(&shared).await;
        let (seen, log) = shared.read(|inner| {
            let view = EmulatorView::new(inner);
            (view.customer("7").is_some(), view.requests())
        });
        assert!(seen);
        assert_eq!(log.iter().map(|r| (r.seq, r.status)).collect::<Vec<_>>(), [(1, 200)]);

        answer_tx.send(()).unwrap();
        assert_eq!(handling.await.unwrap(), 429);
        let log = shared.read(|inner| EmulatorView::new(inner).requests());
        assert_eq!(
            log.iter().map(|r| (r.seq, r.status, r.injected_fault)).collect::<Vec<_>>(),
            [(1, 429, true)]
        );
    }

    /// A request that changed nothing is logged once answered, after one
    /// that changed the model while it waited; each is logged once.
    #[tokio::test]
    async fn a_request_without_effects_is_logged_when_answered() {
        let shared = Shared::new(EmulatorConfig::default());
        let quiet = while_handling(
            &shared,
            entry(),
            async {
                tokio::task::yield_now().await;
                401u16
            },
            |s| (*s, false),
        );
        let changing = while_handling(
            &shared,
            RecordedRequest { path: "/api/v1/customers/8".into(), ..entry() },
            async {
                shared.apply([identify("8")]);
                shared.apply([identify("9")]);
                200u16
            },
            |s| (*s, false),
        );
        // `quiet` starts first and waits while `changing` runs.
        assert_eq!(tokio::join!(quiet, changing), (401, 200));
        let log = shared.read(|inner| EmulatorView::new(inner).requests());
        assert_eq!(
            log.iter().map(|r| (r.path.as_str(), r.status)).collect::<Vec<_>>(),
            [("/api/v1/customers/8", 200), ("/api/v2/batch", 401)]
        );
    }

    /// A reset while a request is answered: its answer settles nothing
    /// logged after the reset under the same number.
    #[tokio::test]
    async fn an_answer_after_a_reset_leaves_the_new_log_alone() {
        let shared = Shared::new(EmulatorConfig::default());
        let (handling, answer_tx) = applied_then_waiting(&shared).await;
        shared.reset();
        let after = while_handling(&shared, entry(), async { 401u16 }, |s| (*s, false));
        assert_eq!(after.await, 401);
        answer_tx.send(()).unwrap();
        assert_eq!(handling.await.unwrap(), 429);
        let log = shared.read(|inner| EmulatorView::new(inner).requests());
        assert_eq!(
            log.iter().map(|r| (r.seq, r.status, r.injected_fault)).collect::<Vec<_>>(),
            [(1, 401, false)]
        );
    }
}
