//! Order between customers where an email moves from one to another, or a
//! device token (see [`device_key`]), and between an object and the
//! relationships to it (see `Order::follows` and `crate::object_op`).
//!
//! In workspaces that identify people by email as well, Customer.io refuses
//! (an HTTP 200 and an "Attribute Update Failure", which the client never
//! sees) to give a person an email another person still has. So an identify
//! that *claims* an email must reach Customer.io after the operation that
//! *releases* it from its previous holder: an identify giving that person
//! another email (or none), a delete, a suppress, a merge.
//!
//! - A known release (REPLICA IDENTITY FULL: the old row names the email) and
//!   a claim carry the email, lower-cased as Customer.io compares it, as an
//!   ordering key: the queue orders operations sharing a key exactly as it
//!   orders one customer's operations (never in one batch, never two
//!   batches at once, never one before an earlier one still waiting), and
//!   never merges an operation into an earlier one across an operation that
//!   shares one of its keys.
//! - An unknown release (DEFAULT identity: no old row) cannot be keyed. A
//!   claim then never goes in a later batch than an earlier unknown release
//!   of its own transaction still waiting, nor while one is in flight; it
//!   may share its batch, after it (Customer.io applies a batch's items in
//!   order as far as anyone has seen, but does not promise it). A bulk
//!   UPDATE in one transaction still goes a full batch at a time, one batch
//!   in flight; separate transactions (the usual small ones) do not wait
//!   for each other, so their moves across transactions are not ordered. An identify carrying an email merges
//!   into an earlier one of its customer across an unknown release only
//!   when both carry the same email (so nothing moves).

use crate::customer::{CustomerOp, Released};
use crate::mapping::EMAIL;

/// The queue's maps and sets of customer ids and ordering keys, hashed with
/// foldhash rather than SipHash: every change hashes a key about twenty
/// times, which SipHash made a tenth of ciosync's instructions per change
/// (issue 24). foldhash is seeded at random per process; the keys come
/// from the operator's own tables, and the queue they index is bounded by
/// `max_pending_bytes`.
pub(super) type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub(super) type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// What ties an operation to other customers' operations.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Order {
    /// Ordering keys, without repeats: emails it claims or releases
    /// ([`key`]), the device token it adds or deletes ([`device_key`]).
    pub keys: Vec<String>,
    /// It carries a non-empty email: it must not overtake an unknown release.
    pub claims: bool,
    /// It may free an email no one can name.
    pub unknown_release: bool,
    /// The transactions its claims and unknown releases came from (the
    /// queue's count of commits before each; more than one once a later
    /// change merged into it; none when it has neither): a claim waits
    /// only for unknown releases of its own transactions.
    pub txs: Vec<u64>,
    /// Object keys it follows (a relationship: its object's): it waits for
    /// their operations waiting or in flight, and their later operations
    /// wait for it; relationships to one object do not wait for each other
    /// (they go together).
    pub follows: Vec<String>,
}

/// Most transactions one operation's claims and releases come from: a
/// later change that would add another is queued behind it instead of
/// merged, so a hot row under DEFAULT identity keeps the list short.
pub(super) const MAX_TXS: usize = 16;

impl Order {
    /// The ordering of `op`, which frees `released` (the old row's email).
    /// Only an operation that can free an email takes the release: an
    /// identify carrying `email`, a delete, a suppress, a merge.
    pub fn of(op: &CustomerOp, released: &Released) -> Self {
        let claimed = claimed(op);
        let frees = match op {
            CustomerOp::Identify { attributes, .. } => attributes.contains_key(EMAIL),
            CustomerOp::Delete { .. } | CustomerOp::Suppress { .. } | CustomerOp::Merge { .. } => {
                true
            }
            CustomerOp::Event(_)
            | CustomerOp::AnonymousEvent(_)
            | CustomerOp::Object(_)
            | CustomerOp::Relationship(_)
            | CustomerOp::AddDevice(_)
            | CustomerOp::DeleteDevice { .. }
            | CustomerOp::Barrier => false,
        };
        let mut order = Self { claims: claimed.is_some(), ..Self::default() };
        match op {
            CustomerOp::Relationship(relationship) => {
                order.follows.push(relationship.object_key());
            }
            CustomerOp::AddDevice(device) => order.keys.push(device_key(&device.token)),
            CustomerOp::DeleteDevice { token, .. } => order.keys.push(device_key(token)),
            _ => {}
        }
        order.keys.extend(claimed);
        match released {
            Released::Email(email) if frees => order.add(key(&String::from_utf8_lossy(email))),
            Released::Unknown if frees => order.unknown_release = true,
            _ => {}
        }
        order
    }

    /// Adds what `later`, merged into this operation, claims and releases.
    pub fn join(&mut self, later: Order) {
        for key in later.keys {
            self.add(key);
        }
        self.claims |= later.claims;
        self.unknown_release |= later.unknown_release;
        // Transaction numbers only grow, so a repeat can only be the last.
        for tx in later.txs {
            if self.txs.last() != Some(&tx) {
                self.txs.push(tx);
            }
        }
    }

    fn add(&mut self, key: String) {
        if !self.keys.contains(&key) {
            self.keys.push(key);
        }
    }

    /// Estimated memory of the keys.
    pub fn bytes(&self) -> usize {
        self.keys.iter().chain(&self.follows).map(|k| KEY_OVERHEAD + k.len()).sum()
    }
}

/// Per key: its `Vec` slot and the copies in the queue's indexes.
const KEY_OVERHEAD: usize = 96;

/// An email as an ordering key: lower-cased (Customer.io compares emails
/// without case), after a NUL, which no customer id holds (Postgres text
/// cannot), so keys and customer ids share the queue's sets.
pub(super) fn key(email: &str) -> String {
    format!("\0{}", email.trim().to_lowercase())
}

/// A device token as an ordering key: three NULs, then the token. An
/// email key has one NUL; an object key two, then a type id of digits
/// (never empty), so none is a device key. One token's operations keep
/// commit order across customers: a token deleted from one person and
/// added to another (a shared tablet, a reinstall) lands in that order.
pub(super) fn device_key(token: &str) -> String {
    format!("\0\0\0{token}")
}

/// The key of the email an identify carries, if a non-empty string.
fn claimed(op: &CustomerOp) -> Option<String> {
    let CustomerOp::Identify { attributes, .. } = op else { return None };
    let email = attributes.get(EMAIL)?.as_str()?;
    (!email.trim().is_empty()).then(|| key(email))
}

/// Whether `later` (ordered by `order`) may merge into the waiting
/// operation `target`, numbered `seq`: not when another waiting operation
/// numbered after it shares one of `later`'s keys (`last_of` names each
/// key's newest waiting operation), nor when `later` claims an email other
/// than the one `target` carries and an unknown release was pushed after
/// `target` (`last_unknown_release`).
pub(super) fn may_merge(
    target: &CustomerOp,
    seq: u64,
    later: &CustomerOp,
    order: &Order,
    last_of: &HashMap<String, u64>,
    last_unknown_release: u64,
) -> bool {
    if order.keys.iter().any(|k| last_of.get(k).is_some_and(|&newest| newest > seq)) {
        return false;
    }
    let moves = order.claims && claimed(later) != claimed(target);
    !(moves && last_unknown_release > seq)
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Map, Value};

    use super::*;

    fn identify(id: &str, attributes: Value) -> CustomerOp {
        let Value::Object(attributes) = attributes else { panic!("not an object") };
        CustomerOp::Identify { id: id.into(), attributes, timestamp: 1 }
    }

    fn email(address: &str) -> Released {
        Released::Email(bytes::Bytes::copy_from_slice(address.as_bytes()))
    }

    #[test]
    fn an_identify_claims_its_email_and_releases_the_old_one_lower_cased() {
        let order = Order::of(&identify("1", json!({"email": "New@X.io"})), &email("Old@x.IO"));
        assert_eq!(order.keys, vec![key("new@x.io"), key("old@x.io")]);
        assert!(order.claims);
        assert!(!order.unknown_release);
        assert_eq!(key(" A@B.c "), "\0a@b.c");
    }

    #[test]
    fn a_case_only_change_has_one_key() {
        let order = Order::of(&identify("1", json!({"email": "A@x.io"})), &email("a@x.io"));
        assert_eq!(order.keys, vec![key("a@x.io")]);
    }

    #[test]
    fn only_what_can_free_an_email_takes_the_release() {
        let plan = identify("1", json!({"plan": "pro"}));
        assert_eq!(Order::of(&plan, &email("a@x.io")), Order::default());
        assert_eq!(Order::of(&plan, &Released::Unknown), Order::default());
        let event = CustomerOp::Event(crate::customer::Event {
            customer: "1".into(),
            name: "n".into(),
            event_id: "e".into(),
            data: Map::new(),
            timestamp: 1,
            watch: None,
        });
        assert_eq!(Order::of(&event, &Released::Unknown), Order::default());
        assert_eq!(Order::of(&CustomerOp::Barrier, &Released::Unknown), Order::default());
        for removal in [
            CustomerOp::Delete { id: "1".into() },
            CustomerOp::Suppress { id: "1".into() },
            CustomerOp::Merge { primary: "2".into(), secondary: "1".into() },
        ] {
            let known = Order::of(&removal, &email("a@x.io"));
            assert_eq!(known, Order { keys: vec![key("a@x.io")], ..Order::default() });
            let unknown = Order::of(&removal, &Released::Unknown);
            assert_eq!(unknown, Order { unknown_release: true, ..Order::default() });
        }
        let unset = Order::of(&identify("1", json!({"email": null})), &email("a@x.io"));
        assert_eq!(unset, Order { keys: vec![key("a@x.io")], ..Order::default() });
        let blank = Order::of(&identify("1", json!({"email": " "})), &Released::Nothing);
        assert_eq!(blank, Order::default());
        let default = Order::of(&identify("1", json!({"email": "a@x.io"})), &Released::Unknown);
        assert_eq!(
            default,
            Order {
                keys: vec![key("a@x.io")],
                claims: true,
                unknown_release: true,
                ..Order::default()
            }
        );
    }

    #[test]
    fn join_adds_keys_once_and_keeps_flags() {
        let mut order = Order { keys: vec![key("a")], ..Order::default() };
        order.join(Order {
            keys: vec![key("a"), key("b")],
            claims: true,
            unknown_release: false,
            txs: vec![2],
            follows: vec![],
        });
        assert_eq!(order.keys, vec![key("a"), key("b")]);
        assert!(order.claims && !order.unknown_release);
        order.join(Order { unknown_release: true, ..Order::default() });
        assert!(order.claims && order.unknown_release);
        assert_eq!(order.bytes(), 2 * KEY_OVERHEAD + 4);
    }

    #[test]
    fn no_merge_across_an_operation_sharing_a_key() {
        let target = identify("1", json!({"email": "tmp@x.io"}));
        let later = identify("1", json!({"email": "y@x.io"}));
        let order = Order::of(&later, &email("tmp@x.io"));
        let mut last_of: HashMap<String, u64> = [(key("tmp@x.io"), 5)].into_iter().collect();
        assert!(may_merge(&target, 5, &later, &order, &last_of, 0));
        last_of.insert(key("y@x.io"), 6);
        assert!(!may_merge(&target, 5, &later, &order, &last_of, 0), "6 claims y after 5");
        assert!(may_merge(&target, 6, &later, &order, &last_of, 0), "newest is the target");
    }

    #[test]
    fn no_email_moves_across_an_unknown_release() {
        let target = identify("1", json!({"email": "tmp@x.io", "plan": "a"}));
        let moved = identify("1", json!({"email": "y@x.io"}));
        let same = identify("1", json!({"email": "TMP@x.io", "plan": "b"}));
        let none = HashMap::default();
        let order = |op| Order::of(op, &Released::Unknown);
        assert!(!may_merge(&target, 5, &moved, &order(&moved), &none, 6));
        assert!(may_merge(&target, 5, &moved, &order(&moved), &none, 5), "pushed before");
        assert!(may_merge(&target, 5, &same, &order(&same), &none, 6), "nothing moves");
        let plan = identify("1", json!({"plan": "c"}));
        assert!(may_merge(&target, 5, &plan, &order(&plan), &none, 6), "claims nothing");
        let delete = CustomerOp::Delete { id: "1".into() };
        assert!(may_merge(&target, 5, &delete, &order(&delete), &none, 6), "a release");
    }
}
