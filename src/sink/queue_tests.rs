use serde_json::{json, Value};

use super::*;
use crate::sink::size::{
    held, in_flight, ATTRIBUTE_OVERHEAD, IN_FLIGHT_OVERHEAD, MERGE_MARGIN_BYTES, OP_OVERHEAD,
};
use crate::track_api::MAX_BATCH_ITEM_BYTES;

fn identify(id: &str, attributes: Value, timestamp: i64) -> CustomerOp {
    CustomerOp::Identify {
        id: id.into(),
        attributes: attributes.as_object().expect("an object").clone(),
        timestamp,
    }
}

fn delete(id: &str) -> CustomerOp {
    CustomerOp::Delete { id: id.into() }
}

fn items_json(taken: &Taken) -> Vec<Value> {
    taken.items.iter().map(|i| serde_json::from_slice(&i.json).expect("json")).collect()
}

fn push_all(q: &mut Queue, ops: Vec<CustomerOp>) -> Vec<Pushed> {
    let now = Instant::now();
    ops.into_iter().map(|op| q.push(op, now)).collect()
}

#[test]
fn identifies_of_one_customer_merge_with_the_later_value_winning() {
    let mut q = Queue::default();
    let pushed = push_all(
        &mut q,
        vec![
            identify("1", json!({"a": 1, "b": 1}), 10),
            identify("2", json!({"x": 1}), 10),
            identify("1", json!({"b": 2, "c": null}), 11),
        ],
    );
    assert_eq!(pushed, [Pushed::Queued, Pushed::Queued, Pushed::Coalesced]);
    let taken = q.take_batch(100).expect("a batch");
    let items = items_json(&taken);
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["identifiers"], json!({"id": "1"}));
    assert_eq!(items[0]["attributes"], json!({"a": 1, "b": 2, "c": null}));
    assert_eq!(items[0]["timestamp"], json!(11));
}

#[test]
fn a_delete_replaces_waiting_identifies_and_an_identify_after_a_delete_stays_after_it() {
    let mut q = Queue::default();
    let pushed = push_all(
        &mut q,
        vec![
            identify("1", json!({"a": 1}), 1),
            identify("1", json!({"a": 2}), 2),
            delete("1"),
            delete("1"),
            identify("1", json!({"a": 3}), 3),
        ],
    );
    use Pushed::*;
    assert_eq!(pushed, [Queued, Coalesced, Coalesced, Coalesced, Queued]);
    // One operation per customer per batch: the delete goes first, alone.
    let first = q.take_batch(100).expect("a batch");
    assert_eq!(
        items_json(&first),
        [json!({"type": "person", "action": "delete", "identifiers": {"id": "1"}})]
    );
    assert!(q.take_batch(100).is_none(), "the identify waits for the delete to complete");
    q.finish(&first.ticket);
    let second = q.take_batch(100).expect("a batch");
    assert_eq!(items_json(&second)[0]["attributes"], json!({"a": 3}));
}

#[test]
fn nothing_merges_across_a_merge_or_a_barrier() {
    let mut q = Queue::default();
    let pushed = push_all(
        &mut q,
        vec![
            identify("new", json!({"name": "n"}), 1),
            CustomerOp::Merge { primary: "new".into(), secondary: "old".into() },
            identify("new", json!({"email": "e"}), 1),
            identify("x", json!({"a": 1}), 1),
            CustomerOp::Barrier,
            identify("x", json!({"a": 2}), 2),
        ],
    );
    use Pushed::*;
    assert_eq!(pushed, [Queued, Queued, Queued, Queued, Queued, Queued]);
}

#[test]
fn a_customer_never_has_two_operations_in_flight_and_order_is_kept() {
    let mut q = Queue::default();
    push_all(
        &mut q,
        vec![
            CustomerOp::Merge { primary: "a".into(), secondary: "b".into() },
            identify("c", json!({"v": 1}), 1),
            delete("a"),
        ],
    );
    let first = q.take_batch(100).expect("a batch");
    assert_eq!(first.items.len(), 2, "the merge and c; the delete of a waits behind the merge");
    // b is busy: an operation of b, and everything of a behind it, waits.
    push_all(&mut q, vec![identify("b", json!({"v": 2}), 2), identify("d", json!({"v": 1}), 2)]);
    let second = q.take_batch(100).expect("d may go");
    assert_eq!(second.items.len(), 1);
    assert_eq!(second.items[0].customers, ["d"]);
    assert!(q.take_batch(100).is_none());
    q.finish(&first.ticket);
    let third = q.take_batch(100).expect("a and b may go now");
    let customers: Vec<_> = third.items.iter().map(|i| i.customers[0].as_str()).collect();
    assert_eq!(customers, ["a", "b"]);
}

#[test]
fn a_merge_held_up_by_one_side_holds_up_the_other() {
    let mut q = Queue::default();
    push_all(&mut q, vec![identify("s", json!({"v": 1}), 1)]);
    let first = q.take_batch(100).expect("a batch");
    push_all(
        &mut q,
        vec![
            CustomerOp::Merge { primary: "p".into(), secondary: "s".into() },
            identify("p", json!({"v": 2}), 2),
        ],
    );
    assert!(q.take_batch(100).is_none(), "p's identify must not overtake p's merge");
    q.finish(&first.ticket);
    assert_eq!(q.take_batch(100).expect("the merge").items[0].kind, "merge");
}

#[test]
fn a_barrier_lets_nothing_pass_until_everything_before_it_completed() {
    let mut q = Queue::default();
    push_all(&mut q, vec![delete("old"), CustomerOp::Barrier, identify("new", json!({"e": 1}), 1)]);
    assert!(q.has_barrier());
    let first = q.take_batch(100).expect("the delete");
    assert_eq!(first.items.len(), 1);
    assert!(q.take_batch(100).is_none(), "the barrier holds while the delete is in flight");
    q.finish(&first.ticket);
    let second = q.take_batch(100).expect("the identify");
    assert_eq!(second.items[0].customers, ["new"]);
    assert!(!q.has_barrier());
    q.finish(&second.ticket);
    assert!(q.is_done());
    assert_eq!(q.pending_bytes(), 0, "the barrier's bytes are released too");
}

#[test]
fn a_commit_is_ackable_once_it_and_everything_before_it_completed() {
    let lsn = Lsn::from_u64;
    let mut q = Queue::default();
    push_all(&mut q, vec![identify("1", json!({"a": 1}), 1)]);
    q.commit(lsn(100));
    push_all(&mut q, vec![identify("2", json!({"a": 1}), 2)]);
    q.commit(lsn(200));
    // A later change of customer 1 merges into the first commit's operation.
    push_all(&mut q, vec![identify("1", json!({"a": 2}), 3)]);
    q.commit(lsn(300));
    // A commit without operations.
    q.commit(lsn(400));
    assert_eq!(q.ackable(), None);
    let first = q.take_batch(1).expect("customer 1");
    let second = q.take_batch(1).expect("customer 2");
    q.finish(&second.ticket);
    assert_eq!(q.ackable(), None, "customer 1's operation, pushed first, is still in flight");
    q.finish(&first.ticket);
    assert_eq!(q.ackable(), Some((lsn(400), 4)));
    assert!(q.is_done());
    assert_eq!(q.ackable(), None);
}

#[test]
fn batches_respect_the_count_and_size_limits() {
    let mut q = Queue::default();
    let big = "y".repeat(31_000);
    let ops = (0..20).map(|i| identify(&format!("c{i}"), json!({"x": big}), 1)).collect();
    push_all(&mut q, ops);
    let first = q.take_batch(1000).expect("a batch");
    assert_eq!(first.items.len(), 16, "17 items of 31 KB exceed 500 KB");
    assert!(batch::body(&first.items).len() <= MAX_BATCH_BYTES);
    let second = q.take_batch(3).expect("a batch");
    assert_eq!(second.items.len(), 3);
    assert_eq!(
        second.items[0].customers,
        ["c16"],
        "the item that did not fit leads the next batch"
    );
}

#[test]
fn memory_is_accounted_until_the_batch_completes() {
    let mut q = Queue::default();
    push_all(&mut q, vec![identify("1", json!({"a": "x".repeat(1000)}), 1)]);
    let held = q.pending_bytes();
    assert!(held > 1000);
    assert_eq!(q.waiting_bytes(), held);
    let wire = q.waiting_wire_bytes();
    assert!(wire > 1000 && wire < held, "{wire}: about the item's size, less than its memory");
    let taken = q.take_batch(10).expect("a batch");
    assert_eq!(q.waiting_bytes(), 0);
    assert_eq!(q.waiting_wire_bytes(), 0);
    // In flight a wide item would hold more than its waiting estimate (its
    // JSON twice): it stays counted at that estimate, so taking a batch
    // never raises the count past what the budget let in.
    let json = taken.items[0].wire_bytes();
    assert!(in_flight(json) > held, "{} <= {held}", in_flight(json));
    assert_eq!(q.pending_bytes(), held);
    q.finish(&taken.ticket);
    assert_eq!(q.pending_bytes(), 0);
}

#[test]
fn a_small_change_in_flight_is_counted_below_its_waiting_estimate() {
    let mut q = Queue::default();
    push_all(&mut q, vec![identify("1", json!({"plan": "pro", "n": 1}), 1)]);
    let waiting = q.pending_bytes();
    let taken = q.take_batch(10).expect("a batch");
    let counted = q.pending_bytes();
    assert!(counted < waiting, "{counted} in flight, {waiting} waiting");
    // Its JSON twice and what an item in flight holds beside it.
    let json = taken.items[0].wire_bytes();
    assert_eq!(counted, crate::sink::size::held(IN_FLIGHT_OVERHEAD + 2 * json));
    q.finish(&taken.ticket);
    assert_eq!(q.pending_bytes(), 0, "released as counted");
}

#[test]
fn clear_forgets_everything() {
    let mut q = Queue::default();
    push_all(&mut q, vec![identify("1", json!({}), 1), delete("2")]);
    q.commit(Lsn::from_u64(5));
    let _in_flight = q.take_batch(1);
    q.clear();
    assert!(q.is_done());
    assert_eq!(q.pending_bytes(), 0);
    assert_eq!(q.in_flight(), 0);
    assert_eq!(q.ackable(), None);
}

#[test]
fn commits_without_operations_share_one_entry_behind_a_stuck_operation() {
    let mut q = Queue::default();
    push_all(&mut q, vec![identify("1", json!({"a": 1}), 1)]);
    let stuck = q.take_batch(10).expect("a batch");
    for lsn in 1..=10_000 {
        q.commit(Lsn::from_u64(lsn));
    }
    assert_eq!(q.commit_entries(), 1);
    q.finish(&stuck.ticket);
    assert_eq!(q.ackable(), Some((Lsn::from_u64(10_000), 10_000)));
}

#[test]
fn identifies_do_not_merge_past_the_item_limits() {
    let mut q = Queue::default();
    let half = |prefix: &str| {
        let attrs: serde_json::Map<String, Value> =
            (0..20).map(|i| (format!("{prefix}{i:02}"), json!("x".repeat(900)))).collect();
        Value::Object(attrs)
    };
    // Each fits in 32,000 bytes alone; together they would not.
    let pushed = push_all(&mut q, vec![identify("1", half("a"), 1), identify("1", half("b"), 2)]);
    assert_eq!(pushed, [Pushed::Queued, Pushed::Queued]);
    let first = q.take_batch(10).expect("a batch");
    assert!(first.items[0].trimmed.is_empty(), "nothing lost to the merge");
    // Nor past 300 attributes.
    let mut q = Queue::default();
    let many = |from: usize| {
        Value::Object((from..from + 200).map(|i| (format!("k{i}"), json!(1))).collect())
    };
    let pushed = push_all(&mut q, vec![identify("1", many(0), 1), identify("1", many(200), 2)]);
    assert_eq!(pushed, [Pushed::Queued, Pushed::Queued]);
    // Overlapping names do not count twice.
    let pushed = push_all(&mut q, vec![identify("2", many(0), 1), identify("2", many(100), 2)]);
    assert_eq!(pushed, [Pushed::Queued, Pushed::Coalesced]);
}

fn event(id: &str, name: &str) -> CustomerOp {
    CustomerOp::Event(crate::customer::Event {
        customer: id.into(),
        name: name.into(),
        event_id: format!("01ID{name}"),
        timestamp: 5,
        data: serde_json::Map::new(),
        watch: None,
    })
}

#[test]
fn a_suppress_replaces_an_identify_or_a_delete_and_absorbs_a_later_delete() {
    let mut q = Queue::default();
    let suppress = CustomerOp::Suppress { id: "1".into() };
    let pushed = push_all(
        &mut q,
        vec![identify("1", json!({"a": 1}), 1), delete("1"), suppress.clone(), delete("1")],
    );
    use Pushed::*;
    assert_eq!(pushed, [Queued, Coalesced, Coalesced, Coalesced]);
    let items = items_json(&q.take_batch(100).expect("a batch"));
    assert_eq!(
        items,
        vec![json!({"type": "person", "action": "suppress", "identifiers": {"id": "1"}})]
    );
}

#[test]
fn events_never_merge_and_keep_their_place_between_identifies() {
    let mut q = Queue::default();
    let pushed = push_all(
        &mut q,
        vec![
            identify("1", json!({"plan": "pro"}), 1),
            event("1", "plan_changed"),
            event("1", "plan_changed_again"),
            identify("1", json!({"plan": "team"}), 2),
            delete("1"),
        ],
    );
    use Pushed::*;
    // The delete merges into the identify after the events, not before them.
    assert_eq!(pushed, [Queued, Queued, Queued, Queued, Coalesced]);
    // One operation of a customer per batch, in order.
    let mut actions = Vec::new();
    while let Some(taken) = q.take_batch(100) {
        let items = items_json(&taken);
        assert_eq!(items.len(), 1);
        actions.push((
            items[0]["action"].as_str().unwrap().to_owned(),
            items[0]["name"].as_str().unwrap_or_default().to_owned(),
        ));
        q.finish(&taken.ticket);
    }
    let expected = [
        ("identify", ""),
        ("event", "plan_changed"),
        ("event", "plan_changed_again"),
        ("delete", ""),
    ];
    assert_eq!(actions, expected.map(|(a, n)| (a.to_owned(), n.to_owned())));
}

#[test]
fn transactions_that_merged_into_waiting_operations_share_one_commit_entry() {
    let lsn = Lsn::from_u64;
    let mut q = Queue::default();
    let customers = 10;
    push_all(
        &mut q,
        (0..customers).map(|c| identify(&c.to_string(), json!({"n": 0}), 0)).collect(),
    );
    q.commit(lsn(1));
    // Customer.io is down: this batch stays in flight.
    let stuck = q.take_batch(100).expect("a batch");
    let transactions = 10_000;
    for t in 2..=transactions + 1 {
        let pushed =
            q.push(identify(&(t % customers).to_string(), json!({"n": t}), t), Instant::now());
        // The first change of each customer queues behind its busy one.
        let queued = t < 2 + customers;
        assert_eq!(pushed, if queued { Pushed::Queued } else { Pushed::Coalesced });
        q.commit(lsn(t as u64));
    }
    assert_eq!(q.commit_entries(), 1 + customers as usize, "one per queued operation");
    let held = q.pending_bytes();
    for t in transactions + 2..=2 * transactions + 1 {
        q.push(identify(&(t % customers).to_string(), json!({"n": t}), t), Instant::now());
        q.commit(lsn(t as u64));
    }
    assert_eq!(q.pending_bytes(), held, "memory does not grow with the transactions");
    q.finish(&stuck.ticket);
    assert_eq!(q.ackable(), Some((lsn(1), 1)), "the merged ones wait for their operations");
    let second = q.take_batch(100).expect("the merged operations");
    let last = 2 * transactions + 1;
    for item in items_json(&second) {
        let customer: i64 = item["identifiers"]["id"].as_str().unwrap().parse().unwrap();
        let newest = (0..customers).map(|back| last - back).find(|t| t % customers == customer);
        assert_eq!(item["attributes"]["n"], json!(newest.unwrap()), "the newest value");
    }
    assert_eq!(second.items.len(), customers as usize);
    q.finish(&second.ticket);
    assert_eq!(q.ackable(), Some((lsn(last as u64), 2 * transactions as usize)));
    assert_eq!(q.pending_bytes(), 0);
}

#[test]
fn a_commit_whose_change_merged_waits_for_the_operation_it_joined() {
    let lsn = Lsn::from_u64;
    let mut q = Queue::default();
    push_all(&mut q, vec![identify("1", json!({"a": 0}), 0)]);
    q.commit(lsn(50));
    let first = q.take_batch(10).expect("customer 1");
    // Customer 1 is busy: its next operation waits; customer 2's goes.
    push_all(&mut q, vec![identify("1", json!({"a": 1}), 1)]);
    q.commit(lsn(100));
    push_all(&mut q, vec![identify("2", json!({"a": 1}), 1)]);
    q.commit(lsn(200));
    let second = q.take_batch(10).expect("customer 2");
    assert_eq!(second.items[0].customers, ["2"]);
    q.finish(&second.ticket);
    // Merges into customer 1's waiting operation, queued before commit 200.
    assert_eq!(push_all(&mut q, vec![identify("1", json!({"a": 2}), 2)]), [Pushed::Coalesced]);
    q.commit(lsn(300));
    assert_eq!(q.commit_entries(), 3, "commit 300 shares commit 200's entry");
    assert_eq!(q.ackable(), None);
    q.finish(&first.ticket);
    assert_eq!(q.ackable(), Some((lsn(50), 1)), "not 300: its change is still waiting");
    let third = q.take_batch(10).expect("customer 1 again");
    assert_eq!(items_json(&third)[0]["attributes"], json!({"a": 2}));
    q.finish(&third.ticket);
    assert_eq!(q.ackable(), Some((lsn(300), 3)));
}

#[test]
fn commits_left_behind_a_stuck_operation_count_toward_the_budget() {
    let lsn = Lsn::from_u64;
    let mut q = Queue::default();
    push_all(&mut q, vec![identify("stuck", json!({"a": 0}), 0)]);
    q.commit(lsn(1));
    let stuck = q.take_batch(10).expect("a batch");
    let stuck_bytes = q.pending_bytes() - COMMIT_ENTRY_BYTES;
    // Every other customer's change is delivered at once, but none of
    // their commits may be acknowledged before the stuck one's.
    for t in 2..=1001 {
        push_all(&mut q, vec![identify(&format!("c{t}"), json!({"a": t}), t)]);
        q.commit(lsn(t as u64));
        let delivered = q.take_batch(10).expect("a batch");
        q.finish(&delivered.ticket);
        assert_eq!(q.ackable(), None);
    }
    assert_eq!(q.commit_entries(), 1001);
    assert_eq!(q.pending_bytes(), stuck_bytes + 1001 * COMMIT_ENTRY_BYTES);
    q.finish(&stuck.ticket);
    assert_eq!(q.ackable(), Some((lsn(1001), 1001)));
    assert_eq!(q.pending_bytes(), 0);
}

#[test]
fn the_wire_estimate_never_undercounts_an_item_by_more_than_the_merge_margin() {
    // `fits_merged` trusts the estimate up to MERGE_MARGIN_BYTES: an item it
    // under-counts by more could be merged past Customer.io's item limit.
    // Over-counting is safe but splits batches and refuses merges early, so
    // it stays within a small factor too (numbers, nulls and arrays are
    // counted generously).
    for op in estimate_samples() {
        let (kind, wire) = (op.kind(), wire_estimate(&op));
        let real = batch::encode(op).expect("not a barrier").json.len();
        assert!(wire + 16 >= real, "{kind}: estimated {wire} bytes, encoded {real}");
        assert!(wire * 2 <= real * 5 + 128, "{kind}: estimated {wire} bytes, encoded {real}");
    }
}

#[test]
fn the_memory_estimate_covers_the_item_and_grows_with_it() {
    let samples = estimate_samples();
    for op in &samples {
        let (memory, wire) = (estimate(op), wire_estimate(op));
        let real = batch::encode(op.clone()).expect("not a barrier").json.len();
        assert!(memory >= OP_OVERHEAD.max(real), "{}: {memory} bytes for {real}", op.kind());
        assert!(memory > wire, "{}: memory {memory}, wire {wire}", op.kind());
    }
    // Each kind with more data holds more: the samples come in sizes 0, 1,
    // 6, 60 and 250 entries, three kinds at a time.
    for kind in 0..3 {
        let sizes: Vec<usize> =
            samples.iter().skip(kind).step_by(3).take(5).map(estimate).collect();
        assert!(sizes.windows(2).all(|w| w[0] < w[1]), "{sizes:?}");
    }
    assert_eq!(estimate(&CustomerOp::Barrier), held(OP_OVERHEAD));
    assert_eq!(wire_estimate(&CustomerOp::Barrier), 0);
}

/// One operation of every kind, small and large, with values of every JSON type.
fn estimate_samples() -> Vec<CustomerOp> {
    use crate::customer::{AnonymousEvent, Event};
    let data = |n: usize| -> serde_json::Map<String, Value> {
        (0..n)
            .map(|i| {
                let value = match i % 6 {
                    0 => json!("v".repeat(40 + i)),
                    1 => json!(i),
                    2 => json!(null),
                    3 => json!(true),
                    4 => json!(["a", 1, {"k": "nested"}]),
                    _ => json!({"city": "Berlin", "zip": 10115}),
                };
                (format!("attribute_{i}"), value)
            })
            .collect()
    };
    let mut ops = Vec::new();
    for n in [0, 1, 6, 60, 250] {
        ops.push(CustomerOp::Identify {
            id: format!("customer-{n}"),
            attributes: data(n),
            timestamp: 1,
        });
        ops.push(CustomerOp::Event(Event {
            customer: format!("customer-{n}"),
            name: "plan_changed".into(),
            event_id: "01HZY0000000000000000000".into(),
            timestamp: 1,
            data: data(n),
            watch: None,
        }));
        ops.push(CustomerOp::AnonymousEvent(AnonymousEvent {
            anonymous_id: format!("cookie-{n}"),
            name: "viewed_pricing".into(),
            event_id: "01HZZ0000000000000000000".into(),
            timestamp: 1,
            data: data(n),
        }));
    }
    for id in ["1", &"x".repeat(200)] {
        ops.push(delete(id));
        ops.push(CustomerOp::Suppress { id: id.into() });
        ops.push(CustomerOp::Merge { primary: id.into(), secondary: format!("{id}-old") });
        let token = format!("{id}-token");
        let attributes = (0..6).map(|i| (format!("a{i}"), json!("v".repeat(10 * i)))).collect();
        ops.push(CustomerOp::AddDevice(Box::new(crate::customer::Device {
            customer: id.into(),
            token: token.clone(),
            platform: "ios",
            last_used: Some(1_700_000_000),
            attributes,
        })));
        ops.push(CustomerOp::DeleteDevice { customer: id.into(), token });
    }
    ops
}

/// What the sink reads off the queue to decide when to send, whether it is
/// idle and what to report, followed from push to completion.
#[test]
fn the_counts_follow_operations_from_push_to_completion() {
    let mut q = Queue::default();
    assert_eq!((q.waiting(), q.unfinished(), q.in_flight(), q.oldest()), (0, 0, 0, None));
    assert!(q.is_done());
    let t0 = Instant::now();
    let t1 = t0 + std::time::Duration::from_secs(1);
    q.push(identify("1", json!({"a": 1}), 1), t0);
    q.push(identify("2", json!({"a": 1}), 1), t1);
    q.push(identify("3", json!({"a": 1}), 1), t1);
    assert_eq!(q.push(identify("1", json!({"a": 2}), 2), t1), Pushed::Coalesced);
    assert_eq!((q.waiting(), q.unfinished(), q.in_flight(), q.oldest()), (3, 3, 0, Some(t0)));
    assert!(!q.is_done());
    let first = q.take_batch(1).expect("customer 1");
    assert_eq!((q.waiting(), q.unfinished(), q.in_flight(), q.oldest()), (2, 3, 1, Some(t1)));
    let second = q.take_batch(2).expect("customers 2 and 3");
    assert_eq!((q.waiting(), q.unfinished(), q.in_flight(), q.oldest()), (0, 3, 2, None));
    q.finish(&first.ticket);
    assert_eq!((q.unfinished(), q.in_flight()), (2, 1));
    assert!(!q.is_done());
    q.finish(&second.ticket);
    assert_eq!((q.unfinished(), q.in_flight()), (0, 0));
    assert!(q.is_done());
}

/// A merge replaces the waiting operation's share of the counts, so they
/// stay those of what actually waits, whether the merge grows it or not.
#[test]
fn a_merge_replaces_the_waiting_operations_share_of_the_counts() {
    let mut q = Queue::default();
    push_all(&mut q, vec![identify("1", json!({"a": "x".repeat(100)}), 1)]);
    let later = identify("1", json!({"b": "y".repeat(500)}), 2);
    assert_eq!(push_all(&mut q, vec![later]), [Pushed::Coalesced]);
    let merged = identify("1", json!({"a": "x".repeat(100), "b": "y".repeat(500)}), 2);
    assert_eq!(
        (q.waiting_bytes(), q.waiting_wire_bytes()),
        (estimate(&merged), wire_estimate(&merged))
    );
    assert_eq!(push_all(&mut q, vec![delete("1")]), [Pushed::Coalesced]);
    let gone = delete("1");
    assert_eq!(
        (q.waiting_bytes(), q.waiting_wire_bytes()),
        (estimate(&gone), wire_estimate(&gone))
    );
}

/// The item that did not fit waits encoded, and the counts hold it as that
/// (its JSON plus `ENCODED_OVERHEAD`, and the ordering keys it keeps), not
/// as the operation it was.
#[test]
fn an_item_left_out_of_a_full_batch_is_counted_as_it_waits() {
    let mut q = Queue::default();
    let op = |i: usize| {
        let attributes = json!({"x": "y".repeat(31_000), "email": format!("c{i}@x.io")});
        identify(&format!("c{i}"), attributes, 1)
    };
    push_all(&mut q, (0..20).map(op).collect());
    let first = q.take_batch(1000).expect("a batch");
    assert_eq!(first.items.len(), 16);
    let left = batch::encode(op(16)).expect("an item").json.len();
    let behind: Vec<CustomerOp> = (17..20).map(op).collect();
    let keys = |op: &CustomerOp| super::order::Order::of(op, &Released::Nothing).bytes();
    let counted = |op: &CustomerOp| estimate(op) + keys(op);
    let bytes = ENCODED_OVERHEAD + left + keys(&op(16)) + behind.iter().map(counted).sum::<usize>();
    let wire = left + behind.iter().map(wire_estimate).sum::<usize>();
    assert_eq!((q.waiting_bytes(), q.waiting_wire_bytes()), (bytes, wire));
}

/// A batch is filled up to the request limit and no further: a body of
/// exactly `MAX_BATCH_BYTES` goes whole (Customer.io documents at most
/// 500 KB; the emulator takes exactly 500,000 bytes and refuses one more),
/// one byte more is split. The size the queue counts is that of the body
/// `batch::body_of` writes, as the delivery sends it, however many items.
#[test]
fn a_batch_is_filled_to_the_request_limit_and_no_further() {
    let op = |i: usize, n: usize| identify(&format!("c{i:02}"), json!({"x": "y".repeat(n)}), 1);
    let base = batch::encode(op(0, 0)).expect("an item").json.len();
    for count in [16, 20] {
        // count - 1 items of `filler` bytes each, then one that makes up the body.
        let filler = MAX_BATCH_BYTES / count - base;
        let commas = count - 1;
        let last = |body: usize| body - ENVELOPE_BYTES - commas - commas * (base + filler) - base;
        for (body, whole) in
            [(MAX_BATCH_BYTES - 1, true), (MAX_BATCH_BYTES, true), (MAX_BATCH_BYTES + 1, false)]
        {
            let mut ops: Vec<CustomerOp> = (0..count - 1).map(|i| op(i, filler)).collect();
            ops.push(op(count - 1, last(body)));
            let encoded: Vec<EncodedItem> = ops.iter().cloned().filter_map(batch::encode).collect();
            assert!(encoded.iter().all(|i| i.trimmed.is_empty()), "every item within its limit");
            assert_eq!(batch::body(&encoded).len(), body);
            let mut q = Queue::default();
            push_all(&mut q, ops);
            let first = q.take_batch(100).expect("a batch");
            let sent = batch::body_of(&first.items).len();
            if whole {
                assert_eq!((first.items.len(), sent), (count, body), "{count} items, {body} bytes");
            } else {
                assert_eq!(first.items.len(), count - 1, "{count} items, {body} bytes");
                assert!(sent <= MAX_BATCH_BYTES, "{sent}");
                let rest = q.take_batch(100).expect("the last item");
                assert_eq!(rest.items[0].customers, [format!("c{:02}", count - 1)]);
            }
        }
    }
}

/// Taking a customer's operation leaves the later one of theirs that waits
/// behind it the target of the next merge.
#[test]
fn an_operation_waiting_behind_one_taken_still_takes_merges() {
    let mut q = Queue::default();
    push_all(&mut q, vec![delete("1"), identify("1", json!({"a": 1}), 1)]);
    let first = q.take_batch(10).expect("the delete");
    assert_eq!(push_all(&mut q, vec![identify("1", json!({"b": 2}), 2)]), [Pushed::Coalesced]);
    q.finish(&first.ticket);
    let second = q.take_batch(10).expect("the identify");
    assert_eq!(items_json(&second)[0]["attributes"], json!({"a": 1, "b": 2}));
}

/// A barrier first in line, all before it taken, still waits: once what is
/// in flight completes, it and what follows it go at once, without waiting
/// for the linger time (`Sink::due` asks this).
#[test]
fn a_barrier_first_in_line_still_counts_as_waiting() {
    let mut q = Queue::default();
    assert!(!q.has_barrier(), "none pushed");
    let new = identify("new", json!({"e": 1}), 1);
    push_all(&mut q, vec![delete("old"), CustomerOp::Barrier, new, event("new", "joined")]);
    assert!(q.has_barrier(), "behind the delete");
    let first = q.take_batch(100).expect("the delete");
    assert!(q.has_barrier(), "first in line, the delete in flight");
    assert!(q.take_batch(100).is_none());
    q.finish(&first.ticket);
    assert!(q.has_barrier(), "first in line, free to pass");
    let second = q.take_batch(100).expect("the identify, behind the barrier passed");
    assert_eq!(q.waiting(), 1, "the event waits for the identify");
    assert!(!q.has_barrier(), "passed, with an operation still waiting behind it");
    q.finish(&second.ticket);
    let third = q.take_batch(100).expect("the event");
    q.finish(&third.ticket);
    // A barrier alone, then one more behind it: still the newest one waits.
    push_all(&mut q, vec![CustomerOp::Barrier, identify("x", json!({}), 2), CustomerOp::Barrier]);
    assert!(q.has_barrier());
    assert_eq!(q.take_batch(100).expect("x").items[0].customers, ["x"]);
    assert!(q.has_barrier(), "the second barrier waits for x");
}

/// The memory estimate adds up each part once: the operation's overhead,
/// its strings, and for each attribute or data entry (nested ones too) its
/// slot, its name and its value; an array element adds 32 bytes, a number,
/// a boolean or a null counts 8. The memory budget rests on it.
#[test]
fn the_memory_estimate_adds_up_each_part_once() {
    use crate::customer::{AnonymousEvent, Event};
    let (op, slot) = (OP_OVERHEAD, ATTRIBUTE_OVERHEAD);
    let attributes = json!({
        "name": "Ada Lovelace",
        "n": 7,
        "address": {"city": "London"},
        "tags": ["ab", true],
    });
    let parts = (slot + 4 + 12)
        + (slot + 1 + 8)
        + (slot + 7 + (slot + 4 + 6))
        + (slot + 4 + (32 + 2) + (32 + 8));
    assert_eq!(estimate(&identify("abc", attributes.clone(), 1)), held(op + 3 + parts));
    assert_eq!(estimate(&delete("abcd")), held(op + 4));
    assert_eq!(estimate(&CustomerOp::Suppress { id: "abcde".into() }), held(op + 5));
    let merge = CustomerOp::Merge { primary: "primary1".into(), secondary: "old".into() };
    assert_eq!(estimate(&merge), held(op + 8 + 3));
    let data = attributes.as_object().expect("an object").clone();
    let event = Event {
        customer: "ab".into(),
        name: "signed_up".into(),
        event_id: "01ID7".into(),
        timestamp: 1,
        data: data.clone(),
        watch: None,
    };
    assert_eq!(estimate(&CustomerOp::Event(event)), held(op + 2 + 9 + 5 + parts));
    let anonymous = AnonymousEvent {
        anonymous_id: "cookie".into(),
        name: "viewed".into(),
        event_id: "01ID7".into(),
        timestamp: 1,
        data,
    };
    assert_eq!(estimate(&CustomerOp::AnonymousEvent(anonymous)), held(op + 6 + 6 + 5 + parts));
}

/// Two identifies merge while their wire estimates add up to at most
/// 30,000 bytes: the 32,000-byte item limit less a margin for what the
/// estimate does not see (JSON escapes).
#[test]
fn identifies_merge_up_to_the_item_limit_less_the_margin() {
    let budget = MAX_BATCH_ITEM_BYTES - MERGE_MARGIN_BYTES;
    let first = identify("1", json!({"a": "x".repeat(10_000)}), 1);
    let empty = wire_estimate(&identify("1", json!({"b": ""}), 2));
    for (total, pushed) in [(budget, Pushed::Coalesced), (budget + 1, Pushed::Queued)] {
        let later =
            identify("1", json!({"b": "y".repeat(total - wire_estimate(&first) - empty)}), 2);
        assert_eq!(wire_estimate(&first) + wire_estimate(&later), total);
        let mut q = Queue::default();
        let got = push_all(&mut q, vec![first.clone(), later]);
        assert_eq!(got, [Pushed::Queued, pushed], "together {total} bytes");
    }
}
