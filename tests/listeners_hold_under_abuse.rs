//! Both listeners (the metrics endpoint and the webhook receiver) hold under
//! clients that do not play fair (SECURITY.md, "Listeners"): connections
//! idle or slow to send their headers are closed within their timeouts,
//! headers over 16 KiB are refused, slow unsigned bodies together never
//! hold more than the body budget, and signed webhooks are still served
//! while hundreds of sockets sit on unfinished headers.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::support::daemon::InProcess;
use crate::support::emulator;
use crate::support::endpoint::{get, value, wait_for_metrics, wait_for_status};
use crate::support::postgres::{TestDb, USERS_TABLE};
use crate::support::webhooks::{event, now, section, Delivery, PATH};

/// A daemon with `metrics` added to its `[metrics]` section and `webhooks`
/// to its `[webhooks]` one.
async fn daemon(name: &str, metrics: &str, webhooks: &str) -> (TestDb, InProcess) {
    let db = TestDb::new(name).await;
    db.exec(USERS_TABLE).await;
    let emulator = emulator::start().await;
    let config = db
        .config(&emulator.url(), &section(webhooks))
        .replace("stall_timeout_secs = 120\n", &format!("stall_timeout_secs = 120\n{metrics}\n"));
    let daemon = InProcess::start_with_webhooks(&config);
    assert!(wait_for_status(&daemon.webhook_url("/healthz"), 200).await);
    assert!(wait_for_status(&daemon.url("/healthz"), 200).await);
    // The emulator must outlive the test's requests; leaking it is harmless.
    std::mem::forget(emulator);
    (db, daemon)
}

/// Waits until the server closes `stream` (EOF or reset), reading and
/// dropping whatever it sends; how long that took, or `None` past `limit`.
async fn closed_within(stream: &mut (impl AsyncRead + Unpin), limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut sink = [0u8; 4096];
    let read = async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, read).await.ok().map(|()| started.elapsed())
}

/// A connection that has sent `bytes` and nothing more.
async fn holding(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

fn series(listener: &str, reason: &str) -> String {
    format!("ciosync_listener_connections_cut_total{{listener=\"{listener}\",reason=\"{reason}\"}}")
}

#[tokio::test]
async fn idle_and_slow_connections_are_closed_within_their_timeouts_on_both_listeners() {
    let limits = "header_timeout_secs = 1\nidle_timeout_secs = 2";
    let (_db, daemon) = daemon("listener_timeouts", limits, limits).await;
    let bound = Duration::from_secs(8);
    for (listener, addr) in [("metrics", daemon.endpoint), ("webhooks", daemon.webhooks.unwrap())] {
        // Connected, silent: its headers are overdue after 1 s.
        let mut silent = holding(addr, b"").await;
        // Headers trickling in, a byte at a time, never finished.
        let slow = holding(addr, b"GET /healthz HTTP/1.1\r\nHost: ciosync\r\nX-Slow: ").await;
        let (mut slow, mut trickle) = slow.into_split();
        let trickler = tokio::spawn(async move {
            while trickle.write_all(b"a").await.is_ok() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        // A request answered, then the connection kept alive and silent.
        let mut idle = holding(addr, b"GET /healthz HTTP/1.1\r\nHost: ciosync\r\n\r\n").await;
        let mut answer = [0u8; 256];
        let n = idle.read(&mut answer).await.unwrap();
        assert!(answer[..n].starts_with(b"HTTP/1.1 200"), "{listener}: {answer:?}");

        assert!(closed_within(&mut silent, bound).await.is_some(), "{listener}: silent, open");
        assert!(closed_within(&mut slow, bound).await.is_some(), "{listener}: slow headers, open");
        assert!(closed_within(&mut idle, bound).await.is_some(), "{listener}: idle, open");
        trickler.abort();

        // Headers over 16 KiB are refused, not buffered.
        let big = format!(
            "GET /healthz HTTP/1.1\r\nHost: ciosync\r\nX-Big: {}\r\n\r\n",
            "b".repeat(20_000)
        );
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let _ = stream.write_all(big.as_bytes()).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(bound, stream.read_to_end(&mut answer)).await;
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 431"), "{listener}: headers over 16 KiB: {text:?}");
    }
    let (_, metrics) = get(&daemon.url("/metrics")).await;
    for listener in ["metrics", "webhooks"] {
        let count = |reason| value(&metrics, &series(listener, reason)).unwrap_or_default();
        assert!(count("header_timeout") >= 2.0, "{listener}: {metrics}");
        assert!(count("idle_timeout") >= 1.0, "{listener}: {metrics}");
        assert!(count("header_too_large") >= 1.0, "{listener}: {metrics}");
    }
    daemon.stop().await.unwrap();
}

/// Headers of a webhook that passes every check made before the body is
/// read (the timestamp is public), with a signature that will not match.
fn unsigned_head(length: usize) -> String {
    format!(
        "POST {PATH} HTTP/1.1\r\nHost: ciosync\r\nContent-Type: application/json\r\n\
         Content-Length: {length}\r\nX-CIO-Timestamp: {}\r\nX-CIO-Signature: {}\r\n\r\n",
        now(),
        "00".repeat(32)
    )
}

#[tokio::test]
async fn slow_unsigned_bodies_together_stay_within_the_body_budget() {
    const BODY: usize = 64 * 1024;
    const BUDGET: usize = 256 * 1024;
    let hooks = format!("max_body_bytes = {BODY}\nmax_buffered_bytes = {BUDGET}");
    let (_db, daemon) = daemon("listener_budget", "", &hooks).await;
    let addr = daemon.webhooks.unwrap();

    // Twenty senders each send all but the last byte of a 64 KiB body and
    // wait: 1.25 MiB if each were buffered, five times the budget.
    let mut senders = Vec::new();
    for _ in 0..20 {
        let mut stream = holding(addr, unsigned_head(BODY).as_bytes()).await;
        stream.write_all(&vec![b' '; BODY - 1]).await.unwrap();
        senders.push(stream);
    }
    // Those that do not fit are answered 503 at once, not left to wait.
    let mut refused = 0;
    for stream in &mut senders {
        let mut answer = [0u8; 64];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_secs(3), stream.read(&mut answer)).await
        {
            if answer[..n].starts_with(b"HTTP/1.1 503") {
                refused += 1;
            }
        }
    }
    assert!(refused >= 10, "only {refused} of 20 slow bodies were refused over the budget");
    let (_, metrics) = get(&daemon.url("/metrics")).await;
    let gauge = |name: &str| value(&metrics, &format!("{name}{{listener=\"webhooks\"}}")).unwrap();
    assert_eq!(gauge("ciosync_listener_buffer_limit_bytes"), BUDGET as f64);
    let peak = gauge("ciosync_listener_buffered_peak_bytes");
    assert!(peak > 0.0 && peak <= BUDGET as f64, "peak {peak} over the budget {BUDGET}");
    assert!(gauge("ciosync_listener_buffered_bytes") <= BUDGET as f64);
    assert_eq!(gauge("ciosync_listener_budget_refusals_total"), f64::from(refused));
    let busy = "ciosync_webhooks_rejected_total{reason=\"busy\"}";
    assert_eq!(value(&metrics, busy), Some(f64::from(refused)), "{metrics}");

    // Once the senders are gone the budget is whole again, and a signed
    // webhook is stored.
    drop(senders);
    let buffered = "ciosync_listener_buffered_bytes{listener=\"webhooks\"} 0";
    let (emptied, metrics) =
        wait_for_metrics(&daemon.url("/metrics"), |m| m.contains(buffered)).await;
    assert!(emptied, "the budget was not given back: {metrics}");
    let signed = Delivery::of(&event("budget-1", "email", "opened", json!({})));
    assert_eq!(signed.send(&daemon.webhook_url(PATH)).await.0, 200);
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn signed_webhooks_are_served_while_unfinished_headers_hold_every_slot() {
    // Timeouts far longer than the test: only shedding can make room.
    let metrics = "header_timeout_secs = 120\nmax_connections = 8";
    let hooks = "header_timeout_secs = 120\nmax_connections = 16";
    let (_db, daemon) = daemon("listener_starved", metrics, hooks).await;
    let addr = daemon.webhooks.unwrap();

    // 200 sockets send half a request line and stop, on each listener.
    let partial = format!("POST {PATH} HTTP/1.1\r\nHost: ciosync\r\nContent-Ty");
    let mut attackers = Vec::new();
    for _ in 0..200 {
        attackers.push(holding(addr, partial.as_bytes()).await);
        attackers.push(holding(daemon.endpoint, b"GET /metr").await);
    }
    // Real clients are served all the same (Delivery::send gives up after
    // 10 s; the header timeout would free a slot only after 120 s).
    for i in 0..3 {
        let signed = Delivery::of(&event(&format!("starved-{i}"), "email", "opened", json!({})));
        assert_eq!(signed.send(&daemon.webhook_url(PATH)).await.0, 200, "webhook {i}");
    }
    let (status, metrics) = get(&daemon.url("/metrics")).await;
    assert_eq!(status, 200);
    for (listener, cap) in [("webhooks", 16.0), ("metrics", 8.0)] {
        let shed = value(&metrics, &series(listener, "shed")).unwrap_or_default();
        assert!(shed >= 190.0 - cap, "{listener}: only {shed} connections shed: {metrics}");
        let open = format!("ciosync_listener_connections{{listener=\"{listener}\"}}");
        assert!(value(&metrics, &open).unwrap() <= cap, "{listener}: over the cap: {metrics}");
    }
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn signed_webhooks_are_served_while_slow_unsigned_bodies_hold_every_slot() {
    let hooks = "header_timeout_secs = 120\nmax_connections = 16";
    let (_db, daemon) = daemon("listener_slow_bodies", "", hooks).await;
    let addr = daemon.webhooks.unwrap();

    // 60 senders pass every check made before the body (the timestamp is
    // public), send 10 of the 1,000 bytes they promise, and wait: each
    // request is in progress, its body unverified, for the 10 s body timeout.
    let mut attackers = Vec::new();
    for _ in 0..60 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        // Written at once; one refused at the cap may find the socket closed.
        let _ = stream.write_all(format!("{}{{\"event_i\"", unsigned_head(1000)).as_bytes()).await;
        attackers.push(stream);
    }
    for i in 0..3 {
        let signed = Delivery::of(&event(&format!("slow-body-{i}"), "email", "opened", json!({})));
        assert_eq!(signed.send(&daemon.webhook_url(PATH)).await.0, 200, "webhook {i}");
    }
    let (_, metrics) = get(&daemon.url("/metrics")).await;
    let shed = value(&metrics, &series("webhooks", "shed")).unwrap_or_default();
    assert!(shed >= 44.0, "only {shed} connections shed: {metrics}");
    daemon.stop().await.unwrap();
}
