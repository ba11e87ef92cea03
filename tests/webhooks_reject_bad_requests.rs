//! The webhook receiver refuses what is not a fresh, signed, well-formed
//! event from Customer.io, with the status that says why, stores nothing
//! for it, counts it by reason, and never logs the body, the signature or
//! the signing key.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::daemon::{config_file, signal, spawn_binary};
use crate::support::emulator;
use crate::support::endpoint::{get, value, wait_for_status};
use crate::support::postgres::{TestDb, USERS_TABLE};
use crate::support::webhooks::{count, event, now, section, Delivery, PATH, SIGNING_KEY};

/// Something only request bodies hold, to look for in the log.
const MARKER: &str = "private-marker-7731@example.com";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn body(event_id: &str) -> serde_json::Value {
    event(
        event_id,
        "email",
        "bounced",
        json!({"identifiers": {"id": "7", "email": MARKER},
        "failure_message": "550 no such user"}),
    )
}

/// Posts `body` with chunked transfer encoding (no Content-Length), signed,
/// over a raw connection; the answer's status.
async fn post_chunked(port: u16, body: &[u8]) -> u16 {
    let timestamp = now().to_string();
    let signature = ciosync::webhooks::verify::sign(SIGNING_KEY.as_bytes(), &timestamp, body);
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nHost: ciosync\r\nContent-Type: application/json\r\n\
         X-CIO-Timestamp: {timestamp}\r\nX-CIO-Signature: {signature}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let _ = stream.write_all(head.as_bytes()).await;
    for chunk in body.chunks(512) {
        let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat();
        if stream.write_all(&framed).await.is_err() {
            break; // answered and closed before the end: fine
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn webhooks_reject_bad_requests() {
    let db = TestDb::new("webhooks_reject").await;
    db.exec(USERS_TABLE).await;
    let emulator = emulator::start().await;
    let (metrics_port, webhooks_port) = (free_port(), free_port());
    let config = db
        .config(&emulator.url(), &section("max_body_bytes = 2048"))
        .replacen("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{metrics_port}\""), 1)
        .replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{webhooks_port}\""),
            1,
        );
    let file = config_file(&config);
    let log = tempfile::NamedTempFile::new().unwrap();
    let child = spawn_binary(file.path(), log.path());
    let base = format!("http://127.0.0.1:{webhooks_port}");
    assert!(wait_for_status(&format!("{base}/healthz"), 200).await, "the receiver listens");
    assert!(wait_for_status(&format!("{base}/readyz"), 200).await, "the receiver is ready");
    let url = format!("{base}{PATH}");

    let mut wrong_key = Delivery::of(&body("01HXBAD0000000000000000001"));
    let bad_signature =
        ciosync::webhooks::verify::sign(b"not-the-key", &wrong_key.timestamp, &wrong_key.body);
    wrong_key.signature = Some(bad_signature.clone());
    let mut unsigned = Delivery::of(&body("01HXBAD0000000000000000002"));
    unsigned.signature = Some(String::new());
    let mut stale = Delivery::of(&body("01HXBAD0000000000000000003"));
    stale.timestamp = (now() - 301).to_string();
    let mut early = Delivery::of(&body("01HXBAD0000000000000000004"));
    early.timestamp = (now() + 600).to_string();
    let mut big = body("01HXBAD0000000000000000005");
    big["data"]["padding"] = json!(MARKER.repeat(100));
    let oversized = Delivery::of(&big);
    let not_json = Delivery::raw(format!("{{\"event_id\": \"{MARKER}\"").into_bytes());
    let mut incomplete = body("01HXBAD0000000000000000006");
    incomplete.as_object_mut().unwrap().remove("event_id");
    let incomplete = Delivery::of(&incomplete);
    let mut get_request = Delivery::of(&body("01HXBAD0000000000000000007"));
    get_request.method = reqwest::Method::GET;
    let mut put_request = Delivery::of(&body("01HXBAD0000000000000000008"));
    put_request.method = reqwest::Method::PUT;
    let mut form = Delivery::of(&body("01HXBAD0000000000000000009"));
    form.content_type = Some("application/x-www-form-urlencoded");
    let mut no_type = Delivery::of(&body("01HXBAD0000000000000000010"));
    no_type.content_type = None;
    let elsewhere = Delivery::of(&body("01HXBAD0000000000000000011"));

    let cases = [
        ("a wrong signature", &wrong_key, url.clone(), 401),
        ("no signature", &unsigned, url.clone(), 401),
        ("a stale timestamp", &stale, url.clone(), 401),
        ("a timestamp from the future", &early, url.clone(), 401),
        ("a body over max_body_bytes", &oversized, url.clone(), 413),
        ("a body that is not JSON", &not_json, url.clone(), 400),
        ("a payload without event_id", &incomplete, url.clone(), 400),
        ("GET", &get_request, url.clone(), 405),
        ("PUT", &put_request, url.clone(), 405),
        ("a form", &form, url.clone(), 415),
        ("no content type", &no_type, url.clone(), 415),
        ("another path", &elsewhere, format!("{base}/webhooks/other"), 404),
    ];
    for (what, delivery, to, expected) in &cases {
        let (status, answer) = delivery.send(to).await;
        assert_eq!(status, *expected, "{what}: {answer}");
        assert!(!answer.contains(MARKER), "{what}: the answer echoes the body: {answer}");
    }
    // Oversized without a Content-Length: the read stops at the limit.
    assert_eq!(post_chunked(webhooks_port, big.to_string().as_bytes()).await, 413);
    assert_eq!(count(&db).await, 0, "nothing refused is stored");

    let (_, metrics) = get(&format!("http://127.0.0.1:{metrics_port}/metrics")).await;
    for (reason, expected) in [
        ("signature", 2.0),
        ("timestamp", 2.0),
        ("too_large", 2.0),
        ("malformed", 2.0),
        ("method", 2.0),
        ("content_type", 2.0),
        ("path", 1.0),
        ("database", 0.0),
    ] {
        let series = format!("ciosync_webhooks_rejected_total{{reason=\"{reason}\"}}");
        assert_eq!(value(&metrics, &series), Some(expected), "{series} in:\n{metrics}");
    }
    assert_eq!(value(&metrics, "ciosync_webhooks_stored_total"), Some(0.0));
    assert!(!metrics.contains("ciosync_webhooks_received_total{"), "nothing was received");

    // The same receiver takes a good one.
    let (status, answer) = Delivery::of(&body("01HXGOOD000000000000000001")).send(&url).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(count(&db).await, 1);

    signal(&child, "TERM");
    let mut child = child;
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
    let text = std::fs::read_to_string(log.path()).unwrap();
    let refusals = text.lines().filter(|l| l.contains("webhook request refused")).count();
    assert_eq!(refusals, cases.len() + 1, "each refusal is logged:\n{text}");
    for secret in [MARKER, SIGNING_KEY, &bad_signature, "550 no such user"] {
        assert!(!text.contains(secret), "{secret} logged:\n{text}");
    }
}
