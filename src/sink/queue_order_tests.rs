//! The queue's order between customers that move an email (see
//! `super::super::order`): keys for known releases, the lane for unknown ones.

use serde_json::{json, Value};

use super::*;

fn identify(id: &str, attributes: Value) -> CustomerOp {
    let Value::Object(attributes) = attributes else { panic!("not an object") };
    CustomerOp::Identify { id: id.into(), attributes, timestamp: 1 }
}

fn email(id: &str, address: &str) -> CustomerOp {
    identify(id, json!({ "email": address }))
}

fn was(address: &str) -> Released {
    Released::Email(bytes::Bytes::copy_from_slice(address.as_bytes()))
}

fn push(q: &mut Queue, op: CustomerOp, released: Released) -> Pushed {
    q.push_releasing(op, &released, Instant::now())
}

/// The next batch's customers, in order (empty when nothing may go).
fn take(q: &mut Queue, max_ops: usize) -> (Vec<String>, Option<Ticket>) {
    match q.take_batch(max_ops) {
        Some(taken) => {
            let ids = taken
                .items
                .iter()
                .map(|i| i.customers.first().cloned().unwrap_or_default())
                .collect();
            (ids, Some(taken.ticket))
        }
        None => (Vec::new(), None),
    }
}

/// Takes and finishes batches until none is left: each batch's customers.
fn drain(q: &mut Queue, max_ops: usize) -> Vec<Vec<String>> {
    let mut batches = Vec::new();
    while let (ids, Some(ticket)) = take(q, max_ops) {
        batches.push(ids);
        q.finish(&ticket);
    }
    assert!(q.is_done(), "everything went");
    batches
}

#[test]
fn a_swap_through_a_temporary_value_goes_release_first_when_the_old_emails_are_known() {
    let mut q = Queue::default();
    // A: x -> tmp, B: y -> x, A: tmp -> y, in one transaction.
    assert_eq!(push(&mut q, email("a", "tmp@x.io"), was("x@x.io")), Pushed::Queued);
    assert_eq!(push(&mut q, email("b", "x@x.io"), was("y@x.io")), Pushed::Queued);
    assert_eq!(
        push(&mut q, email("a", "y@x.io"), was("tmp@x.io")),
        Pushed::Queued,
        "merged, A would take y before B gave it up"
    );
    q.commit(Lsn::from_u64(10));
    assert_eq!(drain(&mut q, 500), vec![vec!["a"], vec!["b"], vec!["a"]]);
    assert_eq!(q.ackable(), Some((Lsn::from_u64(10), 1)));
}

#[test]
fn a_claim_waits_while_the_release_is_in_flight() {
    let mut q = Queue::default();
    // A gives x up for z, B takes x; C is unrelated.
    push(&mut q, email("a", "z@x.io"), was("x@x.io"));
    push(&mut q, email("b", "X@x.io"), was("w@x.io"));
    push(&mut q, email("c", "c@x.io"), was("c0@x.io"));
    let (first, ticket) = take(&mut q, 500);
    assert_eq!(first, vec!["a", "c"], "b shares the key x with a: never in one batch");
    assert_eq!(take(&mut q, 500).0, Vec::<String>::new(), "nor while a is in flight");
    q.finish(&ticket.expect("a batch"));
    assert_eq!(drain(&mut q, 500), vec![vec!["b"]]);
    assert!(q.busy.is_empty() && q.last_of.is_empty(), "no key left behind");
}

#[test]
fn a_delete_releases_the_old_rows_email() {
    let mut q = Queue::default();
    push(&mut q, CustomerOp::Delete { id: "a".into() }, was("Ann@x.io"));
    push(&mut q, email("c", "ann@X.io"), Released::Nothing);
    assert_eq!(drain(&mut q, 500), vec![vec!["a"], vec!["c"]]);
}

#[test]
fn a_change_of_case_only_is_one_key_and_goes_at_once() {
    let mut q = Queue::default();
    push(&mut q, email("a", "A@x.io"), was("a@x.io"));
    push(&mut q, email("b", "b@x.io"), Released::Nothing);
    assert_eq!(drain(&mut q, 500), vec![vec!["a", "b"]]);
}

#[test]
fn changes_that_move_no_email_still_merge() {
    let mut q = Queue::default();
    push(&mut q, email("a", "tmp@x.io"), was("x@x.io"));
    push(&mut q, email("b", "x@x.io"), was("y@x.io"));
    let plan = identify("a", json!({"plan": "pro"}));
    assert_eq!(push(&mut q, plan.clone(), was("tmp@x.io")), Pushed::Coalesced);
    assert_eq!(push(&mut q, plan, Released::Unknown), Pushed::Coalesced);
    assert_eq!(drain(&mut q, 500), vec![vec!["a"], vec!["b"]]);
}

#[test]
fn a_merged_claim_orders_later_merges_of_other_customers() {
    let mut q = Queue::default();
    push(&mut q, email("d", "d@x.io"), Released::Nothing);
    push(&mut q, email("a", "tmp@x.io"), was("x@x.io"));
    // Merges into A's waiting identify: A now claims y too.
    assert_eq!(push(&mut q, email("a", "y@x.io"), was("tmp@x.io")), Pushed::Coalesced);
    // D claiming y must not jump ahead of A's claim into D's earlier identify.
    assert_eq!(push(&mut q, email("d", "y@x.io"), was("d@x.io")), Pushed::Queued);
    assert_eq!(drain(&mut q, 500), vec![vec!["d", "a"], vec!["d"]]);
}

#[test]
fn under_default_identity_a_swap_shares_a_batch_in_push_order_and_never_merges() {
    let mut q = Queue::default();
    push(&mut q, email("a", "tmp@x.io"), Released::Unknown);
    push(&mut q, email("b", "x@x.io"), Released::Unknown);
    assert_eq!(push(&mut q, email("a", "y@x.io"), Released::Unknown), Pushed::Queued);
    assert_eq!(drain(&mut q, 500), vec![vec!["a", "b"], vec!["a"]]);
}

#[test]
fn under_default_identity_a_claim_waits_for_a_release_in_another_batch() {
    let mut q = Queue::default();
    push(&mut q, email("a", "z@x.io"), Released::Unknown);
    push(&mut q, email("b", "x@x.io"), Released::Unknown);
    let (first, ticket) = take(&mut q, 1);
    assert_eq!(first, vec!["a"]);
    assert_eq!(take(&mut q, 1).0, Vec::<String>::new(), "a may be giving x up");
    q.finish(&ticket.expect("a batch"));
    assert_eq!(drain(&mut q, 1), vec![vec!["b"]]);
}

#[test]
fn an_unknown_release_held_back_holds_back_later_claims_only() {
    let mut q = Queue::default();
    push(&mut q, email("a", "a@x.io"), Released::Nothing);
    let (_, in_flight) = take(&mut q, 500);
    // A is busy: its next identify waits, and may free what B claims.
    push(&mut q, email("a", "z@x.io"), Released::Unknown);
    push(&mut q, email("b", "x@x.io"), Released::Nothing);
    push(&mut q, identify("c", json!({"plan": "pro"})), Released::Nothing);
    push(&mut q, CustomerOp::Delete { id: "d".into() }, Released::Unknown);
    let (second, second_ticket) = take(&mut q, 500);
    assert_eq!(second, vec!["c", "d"]);
    q.finish(&in_flight.expect("a batch"));
    assert_eq!(take(&mut q, 500).0, Vec::<String>::new(), "d may be freeing z or x");
    q.finish(&second_ticket.expect("a batch"));
    assert_eq!(drain(&mut q, 500), vec![vec!["a", "b"]], "the release first");
}

#[test]
fn under_default_identity_hot_rows_keeping_their_email_still_merge() {
    let mut q = Queue::default();
    let row = |id: &str, plan: &str| identify(id, json!({"email": "A@x.io", "plan": plan}));
    push(&mut q, row("a", "1"), Released::Unknown);
    push(&mut q, email("b", "b@x.io"), Released::Unknown);
    assert_eq!(push(&mut q, row("a", "2"), Released::Unknown), Pushed::Coalesced);
}

#[test]
fn a_bulk_update_under_default_identity_still_goes_a_full_batch_at_a_time() {
    let mut q = Queue::default();
    for n in 0..2_000 {
        let op = identify(&n.to_string(), json!({"email": format!("{n}@x.io"), "plan": "pro"}));
        assert_eq!(push(&mut q, op, Released::Unknown), Pushed::Queued);
    }
    let sizes: Vec<usize> = drain(&mut q, 500).iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![500; 4]);
    // The same under FULL identity, where no release is unknown, goes
    // several batches at once.
    for n in 0..1_000 {
        let op = identify(&n.to_string(), json!({"email": format!("{n}@y.io")}));
        push(&mut q, op, was(&format!("{n}@x.io")));
    }
    assert!(q.take_batch(500).is_some() && q.take_batch(500).is_some());
}

#[test]
fn the_email_keys_count_toward_memory_when_queued_and_when_merged() {
    use crate::sink::order::Order;
    use crate::sink::size::estimate;
    let mut q = Queue::default();
    let first = email("a", "tmp@x.io");
    let keys = Order::of(&first, &was("x@x.io")).bytes();
    assert!(keys > 0);
    push(&mut q, first.clone(), was("x@x.io"));
    assert_eq!(q.waiting_bytes(), estimate(&first) + keys);
    // Merged: A now claims y too, and releases tmp (which it claimed).
    push(&mut q, identify("a", json!({"email": "y@x.io", "plan": "pro"})), was("tmp@x.io"));
    let merged = identify("a", json!({"email": "y@x.io", "plan": "pro"}));
    let mut joined = Order::of(&first, &was("x@x.io"));
    joined.join(Order::of(&merged, &was("tmp@x.io")));
    assert_eq!(joined.keys.len(), 3);
    assert_eq!(q.waiting_bytes(), estimate(&merged) + joined.bytes());
    // In flight, the keys are still held (the busy set, the ticket).
    let taken = q.take_batch(10).expect("a batch");
    let json = taken.items[0].wire_bytes();
    assert_eq!(q.pending_bytes(), crate::sink::size::in_flight(json) + joined.bytes());
    q.finish(&taken.ticket);
    assert_eq!(q.pending_bytes(), 0, "released as counted");
}

#[test]
fn under_default_identity_only_a_release_of_the_same_transaction_holds_a_claim_back() {
    let lsn = |n: u64| Lsn::from(n);
    let mut q = Queue::default();
    // Transaction 1: A changes its row (email unknown before), in flight.
    push(&mut q, email("a", "a2@x.io"), Released::Unknown);
    q.commit(lsn(1));
    let (first, Some(ticket)) = take(&mut q, 10) else { panic!("A goes") };
    assert_eq!(first, vec!["a"]);
    // Transaction 2: B and C each change theirs. Live traffic of small
    // transactions is not serialized behind A's request...
    push(&mut q, email("b", "b2@x.io"), Released::Unknown);
    push(&mut q, email("c", "c2@x.io"), Released::Unknown);
    q.commit(lsn(2));
    let (second, Some(second_ticket)) = take(&mut q, 10) else { panic!("B and C go") };
    assert_eq!(second, vec!["b", "c"], "B and C share a batch, B first, beside A's");
    // ... while within one transaction a claim still waits for a release
    // in flight before it.
    push(&mut q, email("d", "d2@x.io"), Released::Unknown);
    push(&mut q, email("e", "b@x.io"), Released::Unknown);
    let (third, Some(third_ticket)) = take(&mut q, 1) else { panic!("D goes") };
    assert_eq!(third, vec!["d"]);
    assert_eq!(take(&mut q, 10).0, Vec::<String>::new(), "D may be giving b@ up");
    q.finish(&ticket);
    q.finish(&second_ticket);
    assert_eq!(take(&mut q, 10).0, Vec::<String>::new(), "other transactions do not free it");
    q.finish(&third_ticket);
    q.commit(lsn(3));
    assert_eq!(drain(&mut q, 10), vec![vec!["e".to_owned()]]);
}

#[test]
fn a_release_merged_into_an_earlier_transactions_operation_still_holds_its_own_claims() {
    let mut q = Queue::default();
    // Transaction 0: A's first change goes; its second waits behind it.
    push(&mut q, identify("a", json!({"plan": "pro"})), Released::Nothing);
    let (first, Some(ticket)) = take(&mut q, 10) else { panic!("A goes") };
    assert_eq!(first, vec!["a"]);
    push(&mut q, identify("a", json!({"plan": "team"})), Released::Nothing);
    q.commit(Lsn::from(1));
    // Transaction 1: A gives up its email (unknown under DEFAULT) and B takes
    // it. A's change merges into its waiting one, numbered in transaction 0.
    assert_eq!(push(&mut q, email("a", "b@x.io"), Released::Unknown), Pushed::Coalesced);
    push(&mut q, email("b", "a@x.io"), Released::Unknown);
    assert_eq!(take(&mut q, 10).0, Vec::<String>::new(), "B would overtake A's release");
    q.finish(&ticket);
    q.commit(Lsn::from(2));
    assert_eq!(drain(&mut q, 10), vec![vec!["a".to_owned(), "b".to_owned()]]);
}

#[test]
fn a_hot_row_under_default_identity_keeps_its_transactions_list_short() {
    let mut q = Queue::default();
    // One customer's email-carrying change in each of 40 transactions,
    // while nothing can be sent: they merge, a new operation per 16.
    push(&mut q, identify("a", json!({"plan": "p"})), Released::Nothing);
    let (_, Some(_in_flight)) = take(&mut q, 10) else { panic!("A goes") };
    let mut coalesced = 0;
    for n in 0..40u64 {
        let pushed = push(&mut q, email("a", &format!("a{n}@x.io")), Released::Unknown);
        coalesced += usize::from(pushed == Pushed::Coalesced);
        q.commit(Lsn::from(n + 1));
    }
    assert_eq!(q.waiting(), 3, "40 transactions, at most 16 per operation");
    assert_eq!(coalesced, 37);
    assert!(q.entries.values().all(|e| e.order.txs.len() <= order::MAX_TXS));
}

/// The default budget fills at no more operations than the process can
/// hold in 32 MiB: about 6,300 of the delivery bench's rows (`cargo bench
/// --bench delivery -- rss`: six attributes, an email claimed). Counted at
/// their own allocations alone it let 10,600 wait, and the process peaked
/// at 41.6 MiB (BENCHMARKS.md, 2026-12-07).
#[test]
fn the_default_budget_fills_at_what_the_process_can_hold() {
    use crate::config::runtime::DEFAULT_MAX_PENDING_BYTES;
    let mut q = Queue::default();
    let mut queued = 0;
    while q.pending_bytes() < DEFAULT_MAX_PENDING_BYTES {
        queued += 1;
        let row = identify(
            &(500_000 + queued).to_string(),
            json!({
                "email": format!("user{}@example.com", 500_000 + queued),
                "first_name": format!("First{}", 500_000 + queued),
                "plan": "starter",
                "created_at": 1_609_459_200,
                "counter": null,
                "sent_ms": null,
            }),
        );
        assert_eq!(push(&mut q, row, Released::Nothing), Pushed::Queued);
    }
    assert!((5_000..=6_500).contains(&queued), "{queued} operations fill the default budget");
}

fn account(id: &str) -> CustomerOp {
    let action = crate::customer::ObjectAction::Identify { attributes: Default::default() };
    CustomerOp::Object(crate::customer::ObjectOp::new("1", id.into(), action))
}

fn member(customer: &str, account: &str) -> CustomerOp {
    CustomerOp::Relationship(crate::customer::RelationshipOp {
        customer: customer.into(),
        object_type_id: "1".into(),
        object_id: account.into(),
        action: crate::customer::RelationshipAction::Add { attributes: Default::default() },
    })
}

#[test]
fn a_relationship_goes_after_its_objects_operations_and_beside_its_siblings() {
    let mut q = Queue::default();
    push(&mut q, account("acme"), Released::Nothing);
    push(&mut q, member("42", "acme"), Released::Nothing);
    push(&mut q, member("43", "acme"), Released::Nothing);
    push(&mut q, member("44", "globex"), Released::Nothing);
    let acme = crate::object_op::object_key("1", "acme");
    // The object first; a relationship to another object beside it.
    assert_eq!(
        drain(&mut q, 10),
        vec![vec![acme.clone(), "44".into()], vec!["42".into(), "43".into()]]
    );
    // And never while the object's operation is in flight.
    push(&mut q, account("acme"), Released::Nothing);
    push(&mut q, member("42", "acme"), Released::Nothing);
    let (first, ticket) = take(&mut q, 10);
    assert_eq!(first, vec![acme]);
    assert_eq!(take(&mut q, 10).0, Vec::<String>::new(), "waits for the object");
    q.finish(&ticket.expect("a batch"));
    assert_eq!(drain(&mut q, 10), vec![vec!["42".to_owned()]]);
}

fn add_device(customer: &str, token: &str, last_used: i64, attributes: Value) -> CustomerOp {
    let Value::Object(attributes) = attributes else { panic!("not an object") };
    CustomerOp::AddDevice(Box::new(crate::customer::Device {
        customer: customer.into(),
        token: token.into(),
        platform: "ios",
        last_used: Some(last_used),
        attributes,
    }))
}

#[test]
fn adds_of_one_device_merge_and_nothing_else_of_devices_does() {
    let mut q = Queue::default();
    let none = || Released::Nothing;
    assert_eq!(
        push(&mut q, add_device("1", "t", 1, json!({"a": "1", "b": "1"})), none()),
        Pushed::Queued
    );
    let later = add_device("1", "t", 2, json!({"b": "2"}));
    assert_eq!(push(&mut q, later, none()), Pushed::Coalesced, "the same token: one call");
    // Another token, a delete, an identify: each queued behind, in order.
    assert_eq!(push(&mut q, add_device("1", "u", 3, json!({})), none()), Pushed::Queued);
    let delete = CustomerOp::DeleteDevice { customer: "1".into(), token: "u".into() };
    assert_eq!(push(&mut q, delete, none()), Pushed::Queued);
    assert_eq!(push(&mut q, add_device("1", "u", 4, json!({})), none()), Pushed::Queued);
    assert_eq!(push(&mut q, identify("1", json!({"plan": "pro"})), none()), Pushed::Queued);
    let taken = q.take_batch(10).expect("a batch");
    assert_eq!(taken.items.len(), 1, "one customer's operations go one at a time");
    let item: Value = serde_json::from_slice(&taken.items[0].json).unwrap();
    assert_eq!(
        item["device"],
        json!({"token": "t", "platform": "ios", "last_used": 2, "attributes": {"a": "1", "b": "2"}})
    );
}

/// Two adds of one token whose attributes together pass the 32 KB item
/// limit (each alone within it) are not merged: queued behind instead.
#[test]
fn adds_of_one_device_merge_only_within_the_item_limit() {
    let mut q = Queue::default();
    let none = || Released::Nothing;
    let wide = |name: &str| add_device("1", "t", 1, json!({ name: "v".repeat(16_000) }));
    assert_eq!(push(&mut q, wide("a"), none()), Pushed::Queued);
    assert_eq!(push(&mut q, wide("b"), none()), Pushed::Queued, "32,000 bytes merged");
    assert_eq!(push(&mut q, add_device("1", "t", 2, json!({"c": "1"})), none()), Pushed::Coalesced);
}

/// A device call's memory: its customer, token and attributes (each
/// attribute a slot, its name and its value), as for an identify.
#[test]
fn a_device_call_is_estimated_like_the_other_operations() {
    use crate::sink::size::{held, ATTRIBUTE_OVERHEAD, OP_OVERHEAD};
    let add = add_device("ab", "token", 1, json!({"app_version": "1.2"}));
    let parts = ATTRIBUTE_OVERHEAD + 11 + 3;
    assert_eq!(estimate(&add), held(OP_OVERHEAD + 2 + 5 + parts));
    let delete = CustomerOp::DeleteDevice { customer: "ab".into(), token: "token".into() };
    assert_eq!(estimate(&delete), held(OP_OVERHEAD + 2 + 5));
    for op in [add, delete] {
        let json = batch::encode(op.clone()).expect("an item").json;
        assert!(wire_estimate(&op) >= json.len(), "{} < {}", wire_estimate(&op), json.len());
    }
}

fn object(id: &str, action: crate::customer::ObjectAction) -> CustomerOp {
    CustomerOp::Object(crate::customer::ObjectOp::new("1", id.into(), action))
}

fn object_identify(id: &str, attributes: Value) -> CustomerOp {
    let Value::Object(attributes) = attributes else { panic!("not an object") };
    object(id, crate::customer::ObjectAction::Identify { attributes })
}

#[test]
fn an_objects_operation_waits_for_the_relationships_to_it_ahead() {
    let mut q = Queue::default();
    let acme = crate::object_op::object_key("1", "acme");
    push(&mut q, member("42", "acme"), Released::Nothing);
    push(&mut q, object("acme", crate::customer::ObjectAction::Delete), Released::Nothing);
    push(&mut q, member("43", "acme"), Released::Nothing);
    push(&mut q, account("globex"), Released::Nothing);
    // The delete never shares the membership's batch nor overtakes it; the
    // membership after the delete waits for it; another object goes at once.
    assert_eq!(
        drain(&mut q, 10),
        vec![
            vec!["42".to_owned(), crate::object_op::object_key("1", "globex")],
            vec![acme.clone()],
            vec!["43".to_owned()]
        ]
    );
    // Nor while the membership is in flight.
    push(&mut q, member("42", "acme"), Released::Nothing);
    let (first, ticket) = take(&mut q, 10);
    assert_eq!(first, vec!["42".to_owned()]);
    push(&mut q, object("acme", crate::customer::ObjectAction::Delete), Released::Nothing);
    assert_eq!(take(&mut q, 10).0, Vec::<String>::new(), "waits for the membership");
    q.finish(&ticket.expect("a batch"));
    assert_eq!(drain(&mut q, 10), vec![vec![acme]]);
}

#[test]
fn an_objects_identifies_merge_and_its_delete_never_moves_ahead() {
    let mut q = Queue::default();
    let none = || Released::Nothing;
    let deleted = object("acme", crate::customer::ObjectAction::Delete);
    push(&mut q, deleted, none());
    let back = object_identify("acme", json!({"plan": "free", "seats": 1}));
    assert_eq!(push(&mut q, back, none()), Pushed::Queued, "nothing merges into a delete");
    push(&mut q, member("42", "acme"), none());
    let later = object_identify("acme", json!({"plan": "pro"}));
    assert_eq!(push(&mut q, later, none()), Pushed::Coalesced, "attributes only: one call");
    let delete = object("acme", crate::customer::ObjectAction::Delete);
    assert_eq!(push(&mut q, delete.clone(), none()), Pushed::Queued, "behind the membership");
    assert_eq!(push(&mut q, delete, none()), Pushed::Queued, "a delete merges into nothing");
    let ticket = q.take_batch(10).expect("the first delete").ticket;
    q.finish(&ticket);
    let taken = q.take_batch(10).expect("a batch");
    let item: Value = serde_json::from_slice(&taken.items[0].json).unwrap();
    assert_eq!(item["attributes"], json!({"plan": "pro", "seats": 1}), "the later value wins");
    // An identify that would pass 300 attributes merged is queued behind.
    let mut q = Queue::default();
    let wide = |from: usize| {
        let attributes: serde_json::Map<_, _> =
            (from..from + 200).map(|n| (format!("a{n}"), json!(n))).collect();
        object_identify("acme", Value::Object(attributes))
    };
    assert_eq!(push(&mut q, wide(0), none()), Pushed::Queued);
    assert_eq!(push(&mut q, wide(200), none()), Pushed::Queued, "400 attributes would not fit");
}

#[test]
fn one_tokens_operations_keep_commit_order_across_customers() {
    let mut q = Queue::default();
    let none = || Released::Nothing;
    let deleted = CustomerOp::DeleteDevice { customer: "1".into(), token: "t".into() };
    push(&mut q, deleted, none());
    push(&mut q, add_device("2", "t", 1, json!({})), none());
    push(&mut q, add_device("3", "u", 1, json!({})), none());
    // The shared tablet: deleted from 1 before it is added to 2; another
    // token goes beside the delete.
    assert_eq!(drain(&mut q, 10), vec![vec!["1", "3"], vec!["2"]]);
    // An add never merges across another customer's call on its token.
    push(&mut q, add_device("1", "t", 1, json!({})), none());
    push(&mut q, add_device("2", "t", 1, json!({})), none());
    assert_eq!(push(&mut q, add_device("1", "t", 2, json!({})), none()), Pushed::Queued);
    assert_eq!(drain(&mut q, 10), vec![vec!["1"], vec!["2"], vec!["1"]]);
    // And never while the delete is in flight.
    push(&mut q, CustomerOp::DeleteDevice { customer: "2".into(), token: "t".into() }, none());
    let (first, ticket) = take(&mut q, 10);
    assert_eq!(first, vec!["2".to_owned()]);
    push(&mut q, add_device("1", "t", 2, json!({})), none());
    assert_eq!(take(&mut q, 10).0, Vec::<String>::new(), "waits for the delete");
    q.finish(&ticket.expect("a batch"));
    assert_eq!(drain(&mut q, 10), vec![vec!["1".to_owned()]]);
}
