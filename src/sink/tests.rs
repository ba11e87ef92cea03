//! When the sink sends, over a real round trip to the emulator (in-process;
//! every operation here is accepted, so the dead-letter store is never
//! opened and no Postgres is needed).

use std::sync::Arc;
use std::time::Duration;

use ciosync_emulator::{Emulator, EmulatorConfig};
use serde_json::json;

use super::retry::Verdict;
use super::*;
use crate::pg::connection::ConnectionSettings;
use crate::secret::Secret;

const SITE_ID: &str = "sink-tests";
const API_KEY: &str = "sink-tests-key";

async fn emulator() -> Emulator {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    Emulator::start(listener, EmulatorConfig::new(SITE_ID, API_KEY)).await.expect("the emulator")
}

/// A sink sending to `emulator`, holding operations up to `linger_ms`.
fn sink(emulator: &Emulator, linger_ms: u64) -> Sink {
    let customerio: CustomerioConfig = toml::from_str(&format!(
        "site_id = '{SITE_ID}'\napi_key = '{API_KEY}'\ntrack_url = '{}'\nlinger_ms = {linger_ms}",
        emulator.url()
    ))
    .expect("a [customerio] section");
    let unused = Secret::new("postgres://nobody@127.0.0.1:1/none");
    let settings = ConnectionSettings::parse(&unused, Duration::ZERO).expect("a URL");
    let dead_letters = Arc::new(DeadLetterStore::new(settings, "unused".into()));
    let counters = Arc::new(Counters::default());
    Sink::new(&customerio, &PipelineConfig::default(), dead_letters, counters).expect("a sink")
}

fn identify(id: &str) -> CustomerOp {
    let attributes = json!({"plan": "pro"}).as_object().expect("an object").clone();
    CustomerOp::Identify { id: id.into(), attributes, timestamp: 1 }
}

async fn complete_next(sink: &mut Sink) {
    let finished = sink.completion().await;
    sink.complete(finished).expect("accepted");
}

/// Once what was ahead of a barrier completes, the barrier passes and what
/// follows it goes at once: a barrier first in line does not make the
/// operations behind it wait for the linger time (`Queue::has_barrier`).
#[tokio::test]
async fn what_follows_a_passed_barrier_goes_without_waiting_for_the_linger_time() {
    let emulator = emulator().await;
    // A linger time the test never reaches.
    let mut sink = sink(&emulator, 600_000);
    sink.push(identify("old"));
    assert!(!sink.has_in_flight(), "a lone operation waits for its linger time");
    sink.push(CustomerOp::Barrier);
    assert!(sink.has_in_flight(), "a barrier sends what is ahead of it at once");
    sink.push(identify("new"));
    assert!(emulator.customer("new").is_none());
    complete_next(&mut sink).await;
    assert!(sink.has_in_flight(), "the barrier passed, and what follows it went at once");
    complete_next(&mut sink).await;
    assert!(sink.is_idle());
    assert!(emulator.customer("old").is_some() && emulator.customer("new").is_some());
}

/// A barrier waiting first in line for a batch in flight makes the sink
/// due, but nothing may go until that batch completes: the sink says it
/// is stalled and sets no timer, so the session loop does not wake up
/// again and again for nothing (with a linger time of 0, every timer would
/// be in the past).
#[tokio::test]
async fn a_barrier_held_up_by_a_batch_in_flight_sets_no_timer() {
    let emulator = emulator().await;
    let mut sink = sink(&emulator, 0);
    sink.push(identify("old"));
    assert!(sink.has_in_flight(), "no linger time: it goes at once");
    sink.push(CustomerOp::Barrier);
    assert_eq!(sink.deadline(), None, "the barrier waits for the batch in flight");
    sink.push(identify("new"));
    assert_eq!(sink.deadline(), None, "and what follows it waits for the barrier");
    sink.on_deadline();
    assert_eq!(sink.deadline(), None, "asking again changes nothing");
    complete_next(&mut sink).await;
    assert!(sink.has_in_flight(), "the barrier passed: the identify went");
    complete_next(&mut sink).await;
    assert!(sink.is_idle());
    assert!(emulator.customer("new").is_some());
}

/// A full memory budget sends a part-filled batch at once only when no
/// batch is in flight; with one in flight, its completion makes room and
/// the waiting batch goes then (a request of few operations spends the
/// request budget on little).
#[tokio::test]
async fn a_full_budget_sends_no_part_filled_batch_while_one_is_in_flight() {
    let emulator = emulator().await;
    // A linger time the test never reaches, and a budget always full.
    let mut sink = sink(&emulator, 600_000);
    sink.max_pending_bytes = 1;
    sink.push(identify("first"));
    assert_eq!(sink.tasks.len(), 1, "full, nothing in flight: it goes at once");
    sink.push(identify("second"));
    assert!(sink.is_full());
    assert_eq!(sink.tasks.len(), 1, "full with a batch in flight: the second waits");
    assert_eq!(sink.queue.waiting(), 1);
    complete_next(&mut sink).await;
    assert_eq!(sink.tasks.len(), 1, "the first completed: the second went");
    assert_eq!(sink.queue.waiting(), 0);
    complete_next(&mut sink).await;
    assert!(sink.is_idle());
    assert!(emulator.customer("first").is_some() && emulator.customer("second").is_some());
}

/// After a 429's pause one request goes alone: while Customer.io still
/// answers 429, the requests waiting meanwhile cost one 429 per pause, not
/// one each (they all went at the end of the pause before, each at its
/// reserved slot, however many 429s came back first).
#[tokio::test]
async fn after_a_429_one_request_probes_while_the_others_wait() {
    let emulator = emulator().await;
    let customerio: CustomerioConfig = toml::from_str(&format!(
        "site_id = '{SITE_ID}'\napi_key = '{API_KEY}'\ntrack_url = '{}'",
        emulator.url()
    ))
    .expect("a [customerio] section");
    let client = Arc::new(TrackClient::new(&customerio, Arc::new(Counters::default())).unwrap());
    let body = || bytes::Bytes::from_static(br#"{"batch":[]}"#);
    let limited = ciosync_emulator::Faults {
        rate_limit_rate: 1.0,
        retry_after_secs: Some(1),
        ..Default::default()
    };
    emulator.set_faults(limited.clone());
    let first = client.post_batch(body()).await;
    assert!(matches!(first, Verdict::Retry { .. }), "{first:?}");
    let waiting: Vec<_> = (0..4)
        .map(|_| {
            let client = Arc::clone(&client);
            tokio::spawn(async move { client.post_batch(body()).await })
        })
        .collect();
    // The pause ends, the probe goes and is answered 429 again; well
    // within the next pause, Customer.io takes requests again.
    let statuses = || emulator.requests().iter().map(|r| r.status).collect::<Vec<_>>();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while statuses().len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no probe after the pause");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(statuses(), [429, 429], "nobody went with the probe or after its 429");
    emulator.set_faults(ciosync_emulator::Faults::default());
    let mut accepted = 0;
    for task in waiting {
        // Bounded: a probe whose end wakes nobody would leave them waiting.
        let verdict = tokio::time::timeout(Duration::from_secs(10), task).await;
        accepted += usize::from(verdict.expect("answered").unwrap() == Verdict::Accepted);
    }
    // The first probe came back 429 (the sender retries it); the next
    // probe and the two behind it were accepted.
    assert_eq!(accepted, 3);
    assert_eq!(statuses(), [429, 429, 200, 200, 200]);
}
