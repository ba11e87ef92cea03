//! Fault injection for the Track API routes: added latency, random 500s and
//! 429s, and a deterministic "fail the next N requests" counter for tests.
//! Per-item faults (refused person ids or event names, transient item
//! errors) are decided here too, but applied by the v1 and v2 handlers,
//! which know the items.
//!
//! Customer.io documents no 429 for the Track API (UNCONFIRMED, see the facts
//! sheet §3), but clients must survive one, so the emulator can send it, with
//! or without `Retry-After`. Faults never apply to `/_emulator/*`.
//!
//! Here the decisions and the answers; the middleware that applies them to
//! a request is `inject`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ciosync_track_api::{Identifier, V1ErrorResponse};
use serde::{Deserialize, Serialize};

use crate::model::Op;
use crate::validate::{Problem, REASON_INVALID};

/// Status used by `fail_next` unless `fail_status` says otherwise.
pub const DEFAULT_FAIL_STATUS: u16 = 500;
/// `reason` of an injected transient item error (the emulator's own word:
/// Customer.io documents no transient per-item reason).
pub const REASON_INTERNAL_ERROR: &str = "internal_error";
/// `message` of an injected transient item error.
pub const TRANSIENT_ITEM_MESSAGE: &str = "temporarily unable to process this item; retry";
/// `message` of an item or request refused through `reject_ids`.
pub const REJECTED_ID_MESSAGE: &str = "person id refused (emulator fault reject_ids)";
/// `message` of an event refused through `reject_event_names`.
pub const REJECTED_EVENT_MESSAGE: &str = "event name refused (emulator fault reject_event_names)";

/// The faults to inject. `Default` injects none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Share of requests (0.0–1.0) answered 500 without being applied.
    pub error_rate: f64,
    /// Share of requests (0.0–1.0) answered 429 without being applied.
    pub rate_limit_rate: f64,
    /// `Retry-After` header, in seconds, on every injected 429; none if unset.
    pub retry_after_secs: Option<u64>,
    /// Milliseconds to wait before answering each request.
    pub latency_ms: u64,
    /// Answer the next N Track API requests with `fail_status`; counts down.
    /// Checked before the random rates, so tests can be deterministic.
    pub fail_next: u32,
    /// Let this many Track API requests through (counting down) before
    /// `fail_next` starts, so a test can fail a run's third request rather
    /// than its first. 0 by default.
    pub pass_next: u32,
    /// Status for `fail_next` answers (default 500; 429 gets `Retry-After`,
    /// a 3xx a `Location` back to the same path, so a client that followed
    /// redirects would be seen doing it).
    pub fail_status: u16,
    /// When true, a `fail_next` request is applied first and only its answer
    /// is replaced: the "Customer.io took it but the reply was lost" case
    /// that forces a client to retry something already applied.
    pub fail_after_apply: bool,
    /// Person ids refused for good, the way Customer.io refuses an invalid
    /// item, until the faults change (so a test can "fix the cause" by
    /// clearing the list). A v2 batch item naming one of them (in
    /// `identifiers`, or either side of a merge) is not applied and is
    /// listed in the 207 with `reason` "invalid"; an `/api/v2/entity` item
    /// or a v1 request naming one gets that route's 400. Only `id` is
    /// matched, not email, phone or `cio_id`. Empty by default.
    pub reject_ids: Vec<String>,
    /// Event names refused for good, like `reject_ids`: a person event (a
    /// v2 `event` item, or v1 `/customers/{id}/events`) or an anonymous
    /// event (`POST /api/v1/events`) with one of these names is not
    /// applied; a batch lists it in the 207 with `reason` "invalid" and
    /// `field` "name", any other route answers its 400. So a client's
    /// dead-letter path can be tested for events alone, the person's other
    /// calls still accepted. Empty by default.
    pub reject_event_names: Vec<String>,
    /// The next N v2 batch items, counted across requests in order, are not
    /// applied and are listed in the 207 with `reason` "internal_error" and
    /// a message asking to retry; counts down like `fail_next`. Items
    /// already refused (invalid, or by `reject_ids`) do not use up the
    /// count. Customer.io documents no transient per-item reason (the facts
    /// sheet knows 207 reasons only for invalid items): this exists so a
    /// client's "retry transient item errors, dead-letter definite ones"
    /// path can be tested. Batches only; 0 by default.
    pub item_errors_next: u32,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            error_rate: 0.0,
            rate_limit_rate: 0.0,
            retry_after_secs: None,
            latency_ms: 0,
            fail_next: 0,
            pass_next: 0,
            fail_status: DEFAULT_FAIL_STATUS,
            fail_after_apply: false,
            reject_ids: Vec::new(),
            reject_event_names: Vec::new(),
            item_errors_next: 0,
        }
    }
}

/// A fault chosen for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Injected {
    /// Status to answer.
    pub status: u16,
    /// `Retry-After` seconds, for 429s.
    pub retry_after_secs: Option<u64>,
    /// Apply the request before answering with `status`.
    pub after_apply: bool,
}

/// A fault chosen for one item that passed validation: it is not applied,
/// and its answer names the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemFault {
    /// Refused for good through `reject_ids`; `field` holds the listed id
    /// (`identifiers`, or `primary`/`secondary` for a merge).
    Rejected { field: String },
    /// An event refused for good through `reject_event_names`.
    RejectedEvent,
    /// Refused this once through `item_errors_next`; a retry may pass.
    Transient,
}

impl ItemFault {
    /// The problem to report: v2 sends all three parts, v1 the message.
    pub fn problem(&self) -> Problem {
        match self {
            ItemFault::Rejected { field } => {
                Problem::new(REASON_INVALID, field.clone(), REJECTED_ID_MESSAGE)
            }
            ItemFault::RejectedEvent => {
                Problem::new(REASON_INVALID, "name", REJECTED_EVENT_MESSAGE)
            }
            ItemFault::Transient => Problem::new(REASON_INTERNAL_ERROR, "", TRANSIENT_ITEM_MESSAGE),
        }
    }
}

impl Faults {
    /// Checks rates and status, naming the bad field.
    pub fn validate(&self) -> Result<(), String> {
        for (name, rate) in
            [("error_rate", self.error_rate), ("rate_limit_rate", self.rate_limit_rate)]
        {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0.0 and 1.0, not {rate}"));
            }
        }
        if !(100..=599).contains(&self.fail_status) {
            return Err(format!(
                "fail_status must be an HTTP status (100-599), not {}",
                self.fail_status
            ));
        }
        if self.reject_ids.iter().any(String::is_empty) {
            return Err("reject_ids must not contain an empty id".to_owned());
        }
        if self.reject_event_names.iter().any(String::is_empty) {
            return Err("reject_event_names must not contain an empty name".to_owned());
        }
        Ok(())
    }

    /// The first of `people` (field, identifier) whose `id` is listed in
    /// `reject_ids`, as a refusal naming that field.
    pub fn rejection(&self, people: &[(&str, &Identifier)]) -> Option<ItemFault> {
        people.iter().find_map(|(field, identifier)| match identifier {
            Identifier::Id(id) if self.reject_ids.contains(id) => {
                Some(ItemFault::Rejected { field: (*field).to_owned() })
            }
            _ => None,
        })
    }

    /// The refusal for good of `op`, if any: a listed person id
    /// ([`Faults::rejection`]), else a listed event name.
    pub fn refusal(&self, op: &Op) -> Option<ItemFault> {
        self.rejection(&op.people()).or_else(|| {
            let name = match op {
                Op::Event { event, .. } | Op::AnonymousEvent { event } => &event.name,
                _ => return None,
            };
            self.reject_event_names.contains(name).then_some(ItemFault::RejectedEvent)
        })
    }

    /// Picks the fault for one valid v2 batch item: a refusal for good
    /// first (which leaves the count alone), then `item_errors_next`,
    /// counted down.
    pub fn decide_item(&mut self, op: &Op) -> Option<ItemFault> {
        if let Some(rejected) = self.refusal(op) {
            return Some(rejected);
        }
        if self.item_errors_next > 0 {
            self.item_errors_next -= 1;
            return Some(ItemFault::Transient);
        }
        None
    }

    /// Picks the fault for one request, given two uniform rolls in [0, 1).
    /// Pure apart from counting `fail_next` down, so it is testable without
    /// randomness.
    pub fn decide(&mut self, roll_error: f64, roll_rate_limit: f64) -> Option<Injected> {
        if self.fail_next > 0 && self.pass_next > 0 {
            self.pass_next -= 1;
        } else if self.fail_next > 0 {
            self.fail_next -= 1;
            return Some(Injected {
                status: self.fail_status,
                retry_after_secs: self.retry_after_for(self.fail_status),
                after_apply: self.fail_after_apply,
            });
        }
        if roll_rate_limit < self.rate_limit_rate {
            return Some(Injected {
                status: 429,
                retry_after_secs: self.retry_after_secs,
                after_apply: false,
            });
        }
        if roll_error < self.error_rate {
            return Some(Injected { status: 500, retry_after_secs: None, after_apply: false });
        }
        None
    }

    fn retry_after_for(&self, status: u16) -> Option<u64> {
        (status == 429).then_some(self.retry_after_secs).flatten()
    }
}

/// Marks a response decided by fault injection (an injected status, or
/// injected per-item errors), so the request log can say so.
#[derive(Debug, Clone, Copy)]
pub struct InjectedMark;

/// `response`, marked as decided by fault injection.
pub fn mark_injected(mut response: Response) -> Response {
    response.extensions_mut().insert(InjectedMark);
    response
}

/// The injected answer; a redirect points at `location` (the request's own
/// path), as Customer.io points at the other region's host.
pub fn fault_response(fault: Injected, location: Option<&str>) -> Response {
    let status = StatusCode::from_u16(fault.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    // Customer.io's bodies for these answers are unknown; a v1-style error
    // body is a plausible guess that clients parse without trouble.
    let body = V1ErrorResponse {
        meta: ciosync_track_api::V1Meta {
            errors: Vec::new(),
            error: Some(format!("injected fault: {}", status.as_u16())),
        },
    };
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(secs) = fault.retry_after_secs {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if status.is_redirection() {
        if let Some(value) = location.and_then(|l| HeaderValue::from_str(l).ok()) {
            response.headers_mut().insert(header::LOCATION, value);
        }
    }
    mark_injected(response)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn fail_next_counts_down_before_random_faults() {
        let mut faults = Faults {
            fail_next: 2,
            fail_status: 429,
            retry_after_secs: Some(7),
            ..Faults::default()
        };
        let first = faults.decide(0.0, 0.0).map(|f| (f.status, f.retry_after_secs));
        assert_eq!(first, Some((429, Some(7))));
        assert!(faults.decide(0.9, 0.9).is_some());
        assert_eq!(faults.decide(0.9, 0.9), None);
        assert_eq!(faults.fail_next, 0);
    }

    #[test]
    fn pass_next_lets_requests_through_before_fail_next() {
        let mut faults = Faults { pass_next: 2, fail_next: 1, ..Faults::default() };
        assert_eq!(faults.decide(0.9, 0.9), None);
        assert_eq!(faults.decide(0.9, 0.9), None);
        assert_eq!(faults.decide(0.9, 0.9).map(|f| f.status), Some(DEFAULT_FAIL_STATUS));
        assert_eq!(faults.decide(0.9, 0.9), None);
        // Without fail_next it waits: nothing to let through before.
        let mut idle = Faults { pass_next: 1, ..Faults::default() };
        assert_eq!(idle.decide(0.9, 0.9), None);
        assert_eq!(idle.pass_next, 1);
    }

    #[test]
    fn an_injected_redirect_points_back_at_the_request() {
        let fault = Injected { status: 301, retry_after_secs: None, after_apply: false };
        let response = fault_response(fault, Some("/api/v2/batch"));
        assert_eq!(response.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(response.headers()[header::LOCATION], "/api/v2/batch");
        let fault = Injected { status: 503, ..fault };
        assert!(fault_response(fault, Some("/x")).headers().get(header::LOCATION).is_none());
    }

    #[test]
    fn rates_pick_rate_limit_before_error() {
        let mut faults = Faults { error_rate: 1.0, rate_limit_rate: 0.5, ..Faults::default() };
        assert_eq!(faults.decide(0.0, 0.2).map(|f| f.status), Some(429));
        assert_eq!(faults.decide(0.0, 0.7).map(|f| f.status), Some(500));
        assert_eq!(Faults::default().decide(0.0, 0.0), None);
    }

    #[test]
    fn validate_names_the_bad_field() {
        let faults = Faults { error_rate: 1.5, ..Faults::default() };
        assert!(faults.validate().unwrap_err().starts_with("error_rate"));
        let faults = Faults { fail_status: 42, ..Faults::default() };
        assert!(faults.validate().unwrap_err().starts_with("fail_status"));
        let faults = Faults { reject_ids: vec!["1".into(), String::new()], ..Faults::default() };
        assert!(faults.validate().unwrap_err().starts_with("reject_ids"));
    }

    fn id(value: &str) -> Identifier {
        Identifier::Id(value.to_owned())
    }

    fn delete(person: &str) -> Op {
        Op::Delete { target: id(person) }
    }

    #[test]
    fn listed_ids_are_refused_on_either_side_and_only_by_id() {
        let faults = Faults { reject_ids: vec!["bad".into()], ..Faults::default() };
        let rejected = |field: &str| Some(ItemFault::Rejected { field: field.to_owned() });
        assert_eq!(faults.rejection(&delete("bad").people()), rejected("identifiers"));
        assert_eq!(faults.rejection(&delete("good").people()), None);
        let merge = Op::Merge { primary: id("good"), secondary: id("bad") };
        assert_eq!(faults.rejection(&merge.people()), rejected("secondary"));
        let by_email = Op::Delete { target: Identifier::Email("bad".into()) };
        assert_eq!(faults.rejection(&by_email.people()), None);
        let device =
            Op::Device(crate::devices::DeviceOp::Delete { target: id("bad"), token: "t".into() });
        assert_eq!(faults.rejection(&device.people()), rejected("identifiers"));
        let object = crate::objects::ObjectRef::Cio("ob1".into());
        let people =
            vec![crate::objects::PersonLink { person: id("bad"), attributes: Default::default() }];
        let relate =
            Op::Object(crate::objects::ObjectOp::Relationships { object, people, add: true });
        assert_eq!(faults.rejection(&relate.people()), rejected("cio_relationships"));
        let delivery = Op::Unmodelled { item: Value::Null, person: None };
        assert_eq!(faults.rejection(&delivery.people()), None);
    }

    #[test]
    fn listed_event_names_are_refused_for_people_and_anonymous_ids_alike() {
        let faults = Faults { reject_event_names: vec!["bad".into()], ..Faults::default() };
        let event = |name: &str, anonymous_id: Option<&str>| crate::model::StoredEvent {
            name: name.to_owned(),
            kind: "event".to_owned(),
            id: None,
            timestamp: 1,
            data: serde_json::Map::new(),
            anonymous_id: anonymous_id.map(str::to_owned),
        };
        let person = |name: &str| Op::Event { target: id("p"), event: event(name, None) };
        let anonymous = |name: &str| Op::AnonymousEvent { event: event(name, Some("a")) };
        assert_eq!(faults.refusal(&person("bad")), Some(ItemFault::RejectedEvent));
        assert_eq!(faults.refusal(&anonymous("bad")), Some(ItemFault::RejectedEvent));
        assert_eq!(faults.refusal(&person("good")), None);
        assert_eq!(faults.refusal(&anonymous("good")), None);
        assert_eq!(faults.refusal(&delete("p")), None, "the person's other calls pass");
        let problem = ItemFault::RejectedEvent.problem();
        assert_eq!((problem.reason, problem.field.as_str()), ("invalid", "name"));
        let empty = Faults { reject_event_names: vec![String::new()], ..Faults::default() };
        assert!(empty.validate().unwrap_err().starts_with("reject_event_names"));
    }

    #[test]
    fn item_errors_count_down_across_calls_and_skip_refused_items() {
        let mut faults =
            Faults { reject_ids: vec!["bad".into()], item_errors_next: 2, ..Faults::default() };
        let decisions: Vec<Option<ItemFault>> =
            ["a", "bad", "b", "c"].iter().map(|p| faults.decide_item(&delete(p))).collect();
        let rejected = ItemFault::Rejected { field: "identifiers".into() };
        assert_eq!(
            decisions,
            [Some(ItemFault::Transient), Some(rejected), Some(ItemFault::Transient), None]
        );
        assert_eq!(faults.item_errors_next, 0);
        // Refusals stay in force; transient errors are used up.
        assert!(faults.decide_item(&delete("bad")).is_some());
        assert_eq!(faults.decide_item(&delete("a")), None);
    }

    #[test]
    fn item_faults_report_their_reason() {
        let transient = ItemFault::Transient.problem();
        assert_eq!((transient.reason, transient.field.as_str()), ("internal_error", ""));
        assert!(transient.message.contains("retry"));
        let rejected = ItemFault::Rejected { field: "identifiers".into() }.problem();
        assert_eq!((rejected.reason, rejected.field.as_str()), ("invalid", "identifiers"));
    }
}
