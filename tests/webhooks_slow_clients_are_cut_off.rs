//! The webhook listener faces the internet: a client slow to send its
//! headers is cut off after `header_timeout_secs`, and at most
//! `max_connections` are open at once (at the cap the oldest connection
//! without a request in progress is shed for a newcomer), so a few stalled
//! or idle connections cannot hold the receiver; a client that sends its
//! headers but not all of its body is answered 400 after 10 s.
//! `listeners_hold_under_abuse` has the same at scale, on both listeners.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::daemon::InProcess;
use crate::support::emulator;
use crate::support::endpoint::{get, wait_for_status};
use crate::support::postgres::{TestDb, USERS_TABLE};
use crate::support::webhooks::{section, PATH};

#[tokio::test]
async fn stalled_clients_are_cut_off_and_connections_are_capped() {
    let db = TestDb::new("webhook_limits").await;
    db.exec(USERS_TABLE).await;
    let emulator = emulator::start().await;
    let limits = section("header_timeout_secs = 1\nidle_timeout_secs = 1\nmax_connections = 2");
    let daemon = InProcess::start_with_webhooks(&db.config(&emulator.url(), &limits));
    let healthz = daemon.webhook_url("/healthz");
    assert!(wait_for_status(&healthz, 200).await);

    // Two clients send half a request and stall: they hold both connections.
    let addr = daemon.webhooks.unwrap();
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = format!("POST {PATH} HTTP/1.1\r\nHost: ciosync\r\nContent-Type: appl");
        stream.write_all(head.as_bytes()).await.unwrap();
        stalled.push(stream);
    }
    // A third is served all the same: the oldest stalled one is closed
    // (shed) to make room, rather than the third waiting for a timeout…
    assert_eq!(get(&healthz).await.0, 200);
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stalled[0].read_to_end(&mut rest));
    assert!(read.await.is_ok(), "the oldest stalled connection was not shed");

    // …and the other is closed once its headers are overdue.
    let read = tokio::time::timeout(Duration::from_secs(10), stalled[1].read_to_end(&mut rest));
    assert!(read.await.is_ok(), "a stalled connection stayed open past the header timeout");

    // A kept-alive connection idle for longer than the header timeout is
    // closed too (it would otherwise hold a slot for ever).
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: ciosync\r\n\r\n").await.unwrap();
    let mut answer = [0u8; 512];
    let n = idle.read(&mut answer).await.unwrap();
    assert!(
        answer[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&answer[..n])
    );
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), idle.read_to_end(&mut rest));
    assert!(read.await.is_ok(), "an idle kept-alive connection stayed open");
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_refused_after_the_body_timeout() {
    let db = TestDb::new("webhook_body_timeout").await;
    db.exec(USERS_TABLE).await;
    let emulator = emulator::start().await;
    let daemon = InProcess::start_with_webhooks(&db.config(&emulator.url(), &section("")));
    assert!(wait_for_status(&daemon.webhook_url("/healthz"), 200).await);

    // Headers that pass every check made before the body is read, then 10
    // of the 100 bytes promised.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nHost: ciosync\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\nX-CIO-Timestamp: {}\r\nX-CIO-Signature: {}\r\n\r\n{{\"event_i",
        now.as_secs(),
        "00".repeat(32)
    );
    let mut stream = TcpStream::connect(daemon.webhooks.unwrap()).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = tokio::time::Instant::now();
    let mut answer = [0u8; 512];
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut answer)).await;
    let n = read.expect("no answer to a stalled body").unwrap();
    let waited = started.elapsed();
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(
        waited >= ciosync::webhooks::server::BODY_READ_TIMEOUT - Duration::from_millis(500),
        "answered after {waited:?}, before the body timeout: something else refused it"
    );
    let (_, metrics) = get(&daemon.url("/metrics")).await;
    let malformed = "ciosync_webhooks_rejected_total{reason=\"malformed\"} 1";
    assert!(metrics.contains(malformed), "{metrics}");
    daemon.stop().await.unwrap();
}
