//! The emulator's shared state: the workspace model, the request log, the
//! current faults and the webhook queue behind one std `Mutex`, plus a change counter that wakes
//! anyone waiting for a condition.
//!
//! The lock is only taken inside the closures of `read`/`update`, which are
//! synchronous, so it is never held across an `.await`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::accept_only;
use crate::campaign_log::{Campaigns, Delivery};
use crate::config::EmulatorConfig;
use crate::devices::Device;
use crate::faults::Faults;
use crate::identity::parse_path_identifier;
use crate::journal::RecordedRequest;
use crate::model::{Failure, Op, Settings, StoredEvent, World};
use crate::objects::{ObjectRef, ObjectSummary, ObjectView, Relationship};
use crate::segments::Segments;
use crate::validate::Problem;
use crate::webhook::WebhookRequest;
use crate::webhook_log::{WebhookLog, WebhookRecord};

/// Most requests kept in the log; older ones are dropped first, so a long
/// staging run does not grow without bound.
pub const MAX_RECORDED_REQUESTS: usize = 10_000;
/// Most request body bytes kept in the log (as received; parsed JSON takes
/// several times more). Without it, 10,000 full batches would hold gigabytes:
/// a copy of one million rows once kept 4.3 GB, most of it here.
pub const MAX_RECORDED_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Everything that changes while the emulator runs.
#[derive(Debug)]
pub struct Inner {
    /// People, events, suppressions, failures.
    pub world: World,
    /// Track API requests, oldest first.
    pub requests: VecDeque<RecordedRequest>,
    /// Faults applied to the next Track API requests.
    pub faults: Faults,
    /// Webhooks queued, being retried, delivered or given up.
    pub webhooks: WebhookLog,
    /// Manual segments' members.
    pub segments: Segments,
    /// Campaigns with a webhook action, and their deliveries.
    pub campaigns: Campaigns,
    next_request_seq: u64,
    /// How many resets came before this state (entries logged before one
    /// are not settled after it: their numbers are reused).
    resets: u64,
    /// Sum of `body_bytes` over `requests`.
    recorded_body_bytes: usize,
}

impl Inner {
    fn new(config: &EmulatorConfig) -> Self {
        Self {
            world: World::new(Settings {
                empty_removes: config.empty_removes,
                allow_email_update_by_id: config.allow_email_update_by_id,
                relationships_create_objects: config.relationships_create_objects,
            }),
            requests: VecDeque::new(),
            faults: config.faults.clone(),
            webhooks: WebhookLog::default(),
            segments: Segments::default(),
            campaigns: Campaigns::default(),
            next_request_seq: 0,
            resets: 0,
            recorded_body_bytes: 0,
        }
    }

    /// Empties the request log.
    pub fn clear_requests(&mut self) {
        self.requests.clear();
        self.recorded_body_bytes = 0;
    }

    /// Empties the request log, returning what it held, oldest first (an
    /// entry whose request is still being answered keeps its provisional
    /// status, 200).
    pub fn take_requests(&mut self) -> Vec<RecordedRequest> {
        self.recorded_body_bytes = 0;
        self.requests.drain(..).collect()
    }

    /// Appends to the request log, numbering the entry; drops the oldest
    /// entries past the count and byte limits. Returns what names the
    /// entry for [`Inner::settle`]: the resets before it and its number.
    pub fn record(&mut self, mut request: RecordedRequest) -> (u64, u64) {
        self.next_request_seq += 1;
        let seq = self.next_request_seq;
        request.seq = seq;
        self.recorded_body_bytes += request.body_bytes;
        self.requests.push_back(request);
        while self.requests.len() > MAX_RECORDED_REQUESTS
            || (self.recorded_body_bytes > MAX_RECORDED_BODY_BYTES && self.requests.len() > 1)
        {
            if let Some(dropped) = self.requests.pop_front() {
                self.recorded_body_bytes -= dropped.body_bytes;
            }
        }
        (self.resets, seq)
    }

    /// Sets the answer of the entry `record` named, logged before it was
    /// answered (gone already if the log dropped, cleared or took it, or
    /// the state was reset).
    pub fn settle(&mut self, (resets, seq): (u64, u64), status: u16, injected_fault: bool) {
        if resets != self.resets {
            return;
        }
        if let Ok(at) = self.requests.binary_search_by_key(&seq, |r| r.seq) {
            self.requests[at].status = status;
            self.requests[at].injected_fault = injected_fault;
        }
    }
}

struct SharedInner {
    config: EmulatorConfig,
    /// The self-signed CA's certificate, served at `/_emulator/ca.pem`.
    ca_pem: Option<Arc<str>>,
    inner: Mutex<Inner>,
    changes: watch::Sender<u64>,
    /// What accept-only mode counted (outside the lock: no model to guard).
    accepted: accept_only::Counts,
}

/// Cheap-to-clone handle on the state, used as the axum router state.
#[derive(Clone)]
pub struct Shared(Arc<SharedInner>);

impl Shared {
    /// Fresh state for `config`.
    pub fn new(config: EmulatorConfig) -> Self {
        Self::with_ca(config, None)
    }

    /// Fresh state for `config`, serving `ca_pem` (a self-signed CA's).
    pub fn with_ca(config: EmulatorConfig, ca_pem: Option<Arc<str>>) -> Self {
        let inner = Mutex::new(Inner::new(&config));
        Self(Arc::new(SharedInner {
            config,
            ca_pem,
            inner,
            changes: watch::channel(0).0,
            accepted: accept_only::Counts::default(),
        }))
    }

    /// The certificate of the CA the emulator made, if it made one.
    pub fn ca_pem(&self) -> Option<&str> {
        self.0.ca_pem.as_deref()
    }

    /// The configuration the emulator started with.
    pub fn config(&self) -> &EmulatorConfig {
        &self.0.config
    }

    /// The accept-only mode's counts.
    pub fn accepted(&self) -> &accept_only::Counts {
        &self.0.accepted
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the model half-updated
        // in a way worse than the panic itself; keep serving.
        self.0.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads the state.
    pub fn read<R>(&self, f: impl FnOnce(&Inner) -> R) -> R {
        f(&self.lock())
    }

    /// Changes the state and wakes waiters.
    pub fn update<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let result = f(&mut self.lock());
        self.0.changes.send_modify(|version| *version += 1);
        result
    }

    /// Applies operations to the model in order, under one lock, and queues
    /// the webhooks the configuration asks for on what they did. An op that
    /// would break a limit depending on what is stored (`World::admit`) is
    /// not applied: its entry in the answer, one per op, names the problem.
    pub fn apply(&self, ops: impl IntoIterator<Item = Op>) -> Vec<Option<Problem>> {
        let config = &self.0.config;
        self.update(|inner| {
            crate::journal::log_with_effects(|entry| inner.record(entry));
            let refused = ops
                .into_iter()
                .map(|op| match inner.world.admit(&op) {
                    Ok(()) => {
                        inner.world.apply(op);
                        None
                    }
                    Err(problem) => Some(problem),
                })
                .collect();
            // Always drained, so the model's notes never pile up.
            let activity = inner.world.take_activity();
            if config.webhook_url.is_some() {
                let now_ms = chrono::Utc::now().timestamp_millis();
                for done in activity {
                    inner.webhooks.queue_activity(&inner.world, config, done, now_ms);
                }
            }
            refused
        })
    }

    /// Queues one webhook on demand. Fails, naming the problem, when no
    /// `webhook_url` is configured or the request names no real webhook.
    pub fn queue_webhook(&self, request: &WebhookRequest) -> Result<WebhookRecord, String> {
        if self.0.config.webhook_url.is_none() {
            return Err("no webhook_url is configured (--webhook-url)".to_owned());
        }
        request.validate()?;
        let now_ms = chrono::Utc::now().timestamp_millis();
        Ok(self.update(|inner| inner.webhooks.queue_request(&inner.world, request, now_ms)))
    }

    /// Reads and changes the faults.
    pub fn with_faults<R>(&self, f: impl FnOnce(&mut Faults) -> R) -> R {
        self.update(|inner| f(&mut inner.faults))
    }

    /// Forgets everything: people, events, requests, webhooks, campaigns and
    /// their deliveries (queued ones too; one in flight finishes
    /// unrecorded), and faults go back to those
    /// the emulator started with; accept-only counts go back to 0.
    pub fn reset(&self) {
        let fresh = Inner::new(&self.0.config);
        self.update(|inner| {
            let resets = inner.resets + 1;
            *inner = fresh;
            inner.resets = resets;
        });
        self.0.accepted.reset();
    }

    /// A receiver that sees a new value after every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.changes.subscribe()
    }
}

/// Read-only view of the state, handed to `wait_until` conditions.
pub struct EmulatorView<'a> {
    inner: &'a Inner,
}

impl<'a> EmulatorView<'a> {
    /// A view of `inner`.
    pub fn new(inner: &'a Inner) -> Self {
        Self { inner }
    }

    /// A person's attributes, named as in a v1 path: `cio_…`, an email
    /// (any case) or an id.
    pub fn customer(&self, identifier: &str) -> Option<Map<String, Value>> {
        self.inner
            .world
            .person(&parse_path_identifier(identifier))
            .map(|person| person.attributes().clone())
    }

    /// Every person's attributes, keyed by id, else email, else `cio_<cio_id>`.
    pub fn customers(&self) -> BTreeMap<String, Map<String, Value>> {
        self.inner
            .world
            .people()
            .map(|person| (person.key(), person.attributes().clone()))
            .collect()
    }

    /// A person's events (empty if there is no such person).
    pub fn events(&self, identifier: &str) -> Vec<StoredEvent> {
        self.inner
            .world
            .person(&parse_path_identifier(identifier))
            .map(|person| person.events().to_vec())
            .unwrap_or_default()
    }

    /// Every object, by type then id, with its attributes and how many
    /// people it is related to.
    pub fn objects(&self) -> Vec<ObjectSummary> {
        self.inner.world.objects()
    }

    /// One object (`object_type_id` as sent, e.g. `"1"`) with the people
    /// related to it and each relationship's attributes.
    pub fn object(&self, object_type_id: &str, object_id: &str) -> Option<ObjectView> {
        let type_id = object_type_id.parse().ok()?;
        let object = ObjectRef::Key { type_id, object_id: object_id.to_owned() };
        self.inner.world.object(&object)
    }

    /// A person's devices by token, named as in a v1 path; `None` if there
    /// is no such person.
    pub fn devices(&self, identifier: &str) -> Option<Vec<Device>> {
        self.inner.world.devices_of(&parse_path_identifier(identifier))
    }

    /// A person's relationships to objects, with their attributes, named as
    /// in a v1 path; `None` if there is no such person.
    pub fn relationships(&self, identifier: &str) -> Option<Vec<Relationship>> {
        self.inner.world.relationships_of(&parse_path_identifier(identifier))
    }

    /// Track API requests, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.requests.iter().cloned().collect()
    }

    /// Calls answered 200 but not applied.
    pub fn failures(&self) -> &[Failure] {
        self.inner.world.failures()
    }

    /// Every webhook kept, oldest first, with its attempts.
    pub fn webhooks(&self) -> Vec<WebhookRecord> {
        self.inner.webhooks.records().cloned().collect()
    }

    /// Every campaign delivery kept, oldest first, with its attempts.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.inner.campaigns.deliveries().cloned().collect()
    }

    /// Each manual segment's members by key (as `customers` keys them).
    pub fn segments(&self) -> BTreeMap<i32, Vec<String>> {
        self.inner.segments.members(&self.inner.world)
    }

    /// The whole model, for anything the helpers above do not cover.
    pub fn world(&self) -> &World {
        &self.inner.world
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body_bytes: usize) -> RecordedRequest {
        RecordedRequest {
            seq: 0,
            method: "POST".into(),
            path: "/api/v2/batch".into(),
            query: None,
            status: 200,
            body: None,
            body_text: None,
            body_bytes,
            received_at_ms: 0,
            injected_fault: false,
        }
    }

    #[test]
    fn the_request_log_is_bounded_by_count_and_by_bytes() {
        let mut inner = Inner::new(&EmulatorConfig::default());
        for _ in 0..MAX_RECORDED_REQUESTS + 5 {
            inner.record(request(1));
        }
        assert_eq!(inner.requests.len(), MAX_RECORDED_REQUESTS);
        assert_eq!(inner.requests.front().map(|r| r.seq), Some(6), "the oldest go first");

        inner.clear_requests();
        for _ in 0..3 {
            inner.record(request(MAX_RECORDED_BODY_BYTES / 2 + 1));
        }
        assert_eq!(inner.requests.len(), 1);
        inner.record(request(MAX_RECORDED_BODY_BYTES * 2));
        assert_eq!(inner.requests.len(), 1, "one oversized request is still kept");
    }
}
