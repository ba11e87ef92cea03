//! A tiny reporting-webhook receiver on 127.0.0.1:0, standing in for a
//! customer's endpoint: it checks every request's signature with its own
//! HMAC code and its timestamp, records what came, and can be told to fail
//! the first N requests with a 500.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::net::TcpListener;

/// The path the receiver answers on, ciosync's default.
pub const PATH: &str = "/webhooks/customerio";
/// How far `X-CIO-Timestamp` may be from the receiver's clock.
const CLOCK_SKEW_SECS: i64 = 60;

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The parsed body.
    pub body: Value,
    /// `X-CIO-Timestamp`.
    pub timestamp: i64,
    /// `X-CIO-Signature`.
    pub signature: String,
    /// The status the receiver answered.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: String,
}

#[derive(Default)]
struct Inner {
    fail_first: usize,
    received: Vec<Received>,
    refused: Vec<String>,
}

#[derive(Clone)]
struct Ctx {
    key: Arc<Vec<u8>>,
    inner: Arc<Mutex<Inner>>,
}

/// A running receiver; stops when dropped.
pub struct Receiver {
    url: String,
    ctx: Ctx,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Starts one that accepts signatures made with `key`.
    pub async fn start(key: &str) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
        let url = format!("http://{}{PATH}", listener.local_addr().expect("receiver address"));
        let ctx = Ctx { key: Arc::new(key.as_bytes().to_vec()), inner: Arc::default() };
        let app = Router::new().route(PATH, post(receive)).with_state(ctx.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { url, ctx, task }
    }

    /// The URL to give the emulator as `webhook_url`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Answer the next `n` correctly signed requests with 500.
    pub fn fail_first(&self, n: usize) {
        self.lock().fail_first = n;
    }

    /// Every correctly signed request, in arrival order, failed ones too.
    pub fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    /// The bodies of the requests answered 200, in order.
    pub fn delivered(&self) -> Vec<Value> {
        self.received().into_iter().filter(|r| r.status == 200).map(|r| r.body).collect()
    }

    /// Why requests were refused (bad signature or timestamp); should stay empty.
    pub fn refused(&self) -> Vec<String> {
        self.lock().refused.clone()
    }

    /// Waits until `n` requests were answered 200; false after `timeout`.
    pub async fn wait_for_delivered(&self, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.delivered().len() < n {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.ctx.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The receiver's own check, written from the docs rather than shared with
/// the emulator: lowercase hex HMAC-SHA256 of `v0:{timestamp}:{body}`.
fn expected_signature(key: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac.finalize().into_bytes().iter().map(|byte| format!("{byte:02x}")).collect()
}

async fn receive(State(ctx): State<Ctx>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    let (timestamp, signature) = (header("x-cio-timestamp"), header("x-cio-signature"));
    let mut inner = ctx.inner.lock().unwrap_or_else(PoisonError::into_inner);
    if signature != expected_signature(&ctx.key, timestamp, &body) {
        inner.refused.push(format!("bad signature {signature:?} for timestamp {timestamp:?}"));
        return StatusCode::UNAUTHORIZED;
    }
    let now = chrono::Utc::now().timestamp();
    let Ok(timestamp) = timestamp.parse::<i64>() else {
        inner.refused.push(format!("timestamp {timestamp:?} is not Unix seconds"));
        return StatusCode::BAD_REQUEST;
    };
    if (now - timestamp).abs() > CLOCK_SKEW_SECS {
        inner.refused.push(format!("timestamp {timestamp} is {}s from now", now - timestamp));
        return StatusCode::BAD_REQUEST;
    }
    let status = if inner.fail_first > 0 {
        inner.fail_first -= 1;
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    inner.received.push(Received {
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        timestamp,
        signature: signature.to_owned(),
        status: status.as_u16(),
        content_type: header("content-type").to_owned(),
    });
    status
}
