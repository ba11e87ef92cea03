//! The registered campaigns and the record of their deliveries, which is
//! also the queue: per campaign, the sender takes the oldest delivery not
//! yet delivered or given up, so one campaign's deliveries go in order
//! while different campaigns do not wait for each other. Pure: callers
//! pass the time; lives in the shared state so `wait_until` conditions and
//! `GET /_emulator/campaigns/deliveries` see it.
//!
//! A delivery's body is rendered when it is queued, from the person as the
//! emulator holds them then. Its `delivery_id` and `idempotency_key` are
//! sent as `X-CIO-Delivery-ID` and `X-CIO-Idempotency-Key` on every
//! attempt, retries and resends alike (community answer, UNCONFIRMED: both
//! stay the same when Customer.io retries a delivery that timed out).

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use ciosync_track_api::Identifier;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::campaign::{ActionRequest, Campaign, Trigger};
use crate::liquid::Scope;
use crate::model::World;
use crate::segments::Change;
use crate::webhook::ulid;
use crate::webhook_log::{Next, WebhookStatus};

/// Most deliveries kept; past it the oldest finished ones are forgotten.
pub const MAX_RECORDED_DELIVERIES: usize = 10_000;

/// One try at sending a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionAttempt {
    /// 1 for the first try; resends go on counting.
    pub number: u32,
    /// When the request went out, Unix milliseconds.
    pub sent_at_ms: i64,
    /// How long until the answer or the error.
    pub duration_ms: u64,
    /// The receiver's HTTP status, if it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why no answer came (timeout, connection refused…), if none did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ActionAttempt {
    /// A 2xx answer.
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|status| (200..300).contains(&status))
    }
}

/// One campaign delivery to one person, as `GET
/// /_emulator/campaigns/deliveries` lists it: never a credential (the
/// request it is sent with is kept aside, unlisted).
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    /// Queue position, from 1.
    pub seq: u64,
    /// Sent as `X-CIO-Delivery-ID`.
    pub delivery_id: String,
    /// Sent as `X-CIO-Idempotency-Key`.
    pub idempotency_key: String,
    /// The campaign's name.
    pub campaign: String,
    /// `segment 5 enter`, `segment 5 leave` or `manual`.
    pub trigger: String,
    /// The person's key (id, else email, else `cio_<cio_id>`) when queued.
    pub customer_id: String,
    /// The person's `cio_id`.
    pub cio_id: String,
    /// The HTTP method.
    pub method: String,
    /// The URL, without user info and with query values redacted.
    pub url: String,
    /// The rendered body, the same on every attempt.
    pub body: String,
    /// Where it stands.
    pub status: WebhookStatus,
    /// When it was queued, Unix milliseconds.
    pub queued_at_ms: i64,
    /// When the next try is due (only while retrying), Unix milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at_ms: Option<i64>,
    /// Every try, resends included, oldest first.
    pub attempts: Vec<ActionAttempt>,
    /// How often it was sent again on request after it finished.
    pub resends: u32,
    /// Attempts before the current round (a resend starts a new one), so
    /// the retry limits count each round on its own.
    #[serde(skip)]
    round_start: usize,
    /// Where and how it goes, credentials included.
    #[serde(skip)]
    request: Arc<ActionRequest>,
}

impl Delivery {
    /// The request it is sent with (credentials included: never list it).
    pub fn request(&self) -> &Arc<ActionRequest> {
        &self.request
    }

    /// Attempts in the current round (since it was queued or resent).
    pub fn round_attempts(&self) -> &[ActionAttempt] {
        &self.attempts[self.round_start.min(self.attempts.len())..]
    }
}

/// Why a trigger queued nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriggerError {
    /// No campaign has that name.
    UnknownCampaign,
    /// No person matches the identifier.
    UnknownPerson,
}

/// Why a resend did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResendError {
    /// No delivery has that id (or it was forgotten).
    Unknown,
    /// It is still queued or being retried.
    NotFinished,
}

/// The campaigns, in registration order, and their deliveries.
#[derive(Debug, Default)]
pub struct Campaigns {
    campaigns: Vec<Campaign>,
    deliveries: VecDeque<Delivery>,
    next_seq: u64,
}

impl Campaigns {
    /// Registers `campaign`; `Err` if one with its name exists.
    pub fn add(&mut self, campaign: Campaign) -> Result<Value, String> {
        if self.campaigns.iter().any(|known| known.name == campaign.name) {
            return Err(format!("a campaign named {:?} exists", campaign.name));
        }
        let listing = campaign.listing();
        self.campaigns.push(campaign);
        Ok(listing)
    }

    /// Every campaign as listed (no credentials), in registration order.
    pub fn listings(&self) -> Vec<Value> {
        self.campaigns.iter().map(Campaign::listing).collect()
    }

    /// Forgets the campaign; its deliveries already queued still go.
    /// Whether it existed.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.campaigns.len();
        self.campaigns.retain(|campaign| campaign.name != name);
        self.campaigns.len() != before
    }

    /// Every delivery kept, oldest first.
    pub fn deliveries(&self) -> impl Iterator<Item = &Delivery> {
        self.deliveries.iter()
    }

    /// Queues a delivery of every campaign triggered by these real
    /// membership changes of `segment_id` (people by `cio_id`), in order.
    pub fn on_segment_change(
        &mut self,
        world: &World,
        segment_id: i32,
        changes: &[(String, Change)],
        now_ms: i64,
    ) {
        for (cio_id, change) in changes {
            let trigger = Trigger::Segment { segment_id, enter: *change == Change::Add };
            let names: Vec<String> = self
                .campaigns
                .iter()
                .filter(|campaign| campaign.trigger == trigger)
                .map(|campaign| campaign.name.clone())
                .collect();
            for name in names {
                let person = Identifier::CioId(cio_id.clone());
                let _ = self.queue(world, &name, &person, &Map::new(), trigger, now_ms);
            }
        }
    }

    /// Queues one delivery of campaign `name` to the person `identifier`
    /// names, with `event` as the event's properties. Any campaign can be
    /// triggered so, not only manual ones.
    pub fn trigger(
        &mut self,
        world: &World,
        name: &str,
        identifier: &Identifier,
        event: &Map<String, Value>,
        now_ms: i64,
    ) -> Result<Delivery, TriggerError> {
        self.queue(world, name, identifier, event, Trigger::Manual, now_ms)
    }

    fn queue(
        &mut self,
        world: &World,
        name: &str,
        identifier: &Identifier,
        event: &Map<String, Value>,
        trigger: Trigger,
        now_ms: i64,
    ) -> Result<Delivery, TriggerError> {
        let campaign = self
            .campaigns
            .iter()
            .find(|campaign| campaign.name == name)
            .ok_or(TriggerError::UnknownCampaign)?;
        let person = world.person(identifier).ok_or(TriggerError::UnknownPerson)?;
        let scope =
            Scope { customer: person.attributes(), event, now_secs: now_ms.div_euclid(1000) };
        self.next_seq += 1;
        let delivery = Delivery {
            seq: self.next_seq,
            delivery_id: ulid(now_ms.max(0) as u64, rand::random::<u128>()),
            idempotency_key: hex::encode(rand::random::<[u8; 16]>()),
            campaign: campaign.name.clone(),
            trigger: trigger.describe(),
            customer_id: person.key(),
            cio_id: person.cio_id().to_owned(),
            method: campaign.request.method.clone(),
            url: campaign.request.listed_url(),
            body: campaign.body.render(&scope),
            status: WebhookStatus::Queued,
            queued_at_ms: now_ms,
            next_attempt_at_ms: None,
            attempts: Vec::new(),
            resends: 0,
            round_start: 0,
            request: Arc::new(campaign.request.clone()),
        };
        self.deliveries.push_back(delivery.clone());
        self.forget_oldest_finished();
        Ok(delivery)
    }

    /// Queues a finished delivery again, unchanged: the same id, key,
    /// headers and body, as a retry after a lost 2xx would send them.
    pub fn resend(&mut self, delivery_id: &str) -> Result<Delivery, ResendError> {
        let delivery = self
            .deliveries
            .iter_mut()
            .find(|delivery| delivery.delivery_id == delivery_id)
            .ok_or(ResendError::Unknown)?;
        if !delivery.status.is_finished() {
            return Err(ResendError::NotFinished);
        }
        delivery.status = WebhookStatus::Queued;
        delivery.next_attempt_at_ms = None;
        delivery.resends += 1;
        delivery.round_start = delivery.attempts.len();
        Ok(delivery.clone())
    }

    /// The delivery each campaign sends next: its oldest unfinished one.
    pub fn heads(&self) -> Vec<&Delivery> {
        let mut seen = BTreeSet::new();
        self.deliveries
            .iter()
            .filter(|delivery| !delivery.status.is_finished())
            .filter(|delivery| seen.insert(delivery.campaign.as_str()))
            .collect()
    }

    /// Records an attempt at `delivery_id` and what comes next. Does
    /// nothing if it is gone (the emulator was reset meanwhile).
    pub fn record_attempt(&mut self, delivery_id: &str, attempt: ActionAttempt, next: Next) {
        let Some(delivery) = self.deliveries.iter_mut().find(|d| d.delivery_id == delivery_id)
        else {
            return;
        };
        delivery.attempts.push(attempt);
        (delivery.status, delivery.next_attempt_at_ms) = match next {
            Next::Delivered => (WebhookStatus::Delivered, None),
            Next::RetryAt(at) => (WebhookStatus::Retrying, Some(at)),
            Next::GiveUp => (WebhookStatus::Failed, None),
        };
    }

    fn forget_oldest_finished(&mut self) {
        while self.deliveries.len() > MAX_RECORDED_DELIVERIES {
            match self.deliveries.iter().position(|delivery| delivery.status.is_finished()) {
                Some(index) => {
                    self.deliveries.remove(index);
                }
                None => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::CampaignSpec;
    use crate::model::{Op, Settings};
    use serde_json::json;

    fn world() -> World {
        let mut world = World::new(Settings {
            empty_removes: true,
            allow_email_update_by_id: true,
            relationships_create_objects: false,
        });
        let attributes = json!({"email": "a@x.io", "plan": "gold"});
        world.apply(Op::Identify {
            target: Identifier::Id("42".into()),
            attributes: attributes.as_object().cloned().unwrap_or_default(),
            timestamp: 1,
            update_only: false,
        });
        world
    }

    fn campaign(name: &str, trigger: Value) -> Campaign {
        let spec: CampaignSpec = serde_json::from_value(json!({
            "name": name,
            "trigger": trigger,
            "action": {"url": "http://u:p@127.0.0.1:9/x", "body": "{{customer.id}} {{customer.plan}} {{event.n}}"}
        }))
        .expect("spec");
        Campaign::from_spec(spec).expect("valid")
    }

    fn attempt(number: u32, status: u16) -> ActionAttempt {
        ActionAttempt { number, sent_at_ms: 1, duration_ms: 1, status: Some(status), error: None }
    }

    fn cio_id(world: &World) -> String {
        world.person(&Identifier::Id("42".into())).map(|p| p.cio_id().to_owned()).expect("42")
    }

    #[test]
    fn segment_changes_queue_the_campaigns_with_that_trigger_only() {
        let world = world();
        let mut campaigns = Campaigns::default();
        campaigns.add(campaign("in", json!({"segment_id": 5, "on": "enter"}))).expect("add");
        campaigns.add(campaign("out", json!({"segment_id": 5, "on": "leave"}))).expect("add");
        campaigns.add(campaign("other", json!({"segment_id": 6, "on": "enter"}))).expect("add");
        assert!(campaigns.add(campaign("in", json!({"manual": true}))).is_err(), "duplicate");
        let person = cio_id(&world);
        campaigns.on_segment_change(&world, 5, &[(person.clone(), Change::Add)], 1_000);
        campaigns.on_segment_change(&world, 5, &[(person, Change::Remove)], 2_000);
        let queued: Vec<(&str, &str, &str)> = campaigns
            .deliveries()
            .map(|d| (d.campaign.as_str(), d.trigger.as_str(), d.body.as_str()))
            .collect();
        assert_eq!(
            queued,
            vec![("in", "segment 5 enter", "42 gold "), ("out", "segment 5 leave", "42 gold ")]
        );
        let first = campaigns.deliveries().next().expect("one");
        assert_eq!(
            (first.customer_id.as_str(), first.url.as_str()),
            ("42", "http://127.0.0.1:9/x")
        );
        assert_ne!(first.delivery_id, campaigns.deliveries().nth(1).expect("two").delivery_id);
    }

    #[test]
    fn a_trigger_needs_a_known_campaign_and_person_and_renders_the_event() {
        let world = world();
        let mut campaigns = Campaigns::default();
        campaigns.add(campaign("m", json!({"manual": true}))).expect("add");
        let event = json!({"n": 7}).as_object().cloned().unwrap_or_default();
        let id = |raw: &str| Identifier::Id(raw.into());
        let delivery = campaigns.trigger(&world, "m", &id("42"), &event, 0).expect("queued");
        assert_eq!(delivery.body, "42 gold 7");
        assert_eq!(
            campaigns.trigger(&world, "m", &id("7"), &event, 0).err(),
            Some(TriggerError::UnknownPerson)
        );
        assert_eq!(
            campaigns.trigger(&world, "x", &id("42"), &event, 0).err(),
            Some(TriggerError::UnknownCampaign)
        );
        assert!(campaigns.remove("m") && !campaigns.remove("m"));
        assert_eq!(campaigns.deliveries().count(), 1, "queued deliveries outlive the campaign");
    }

    #[test]
    fn each_campaign_goes_in_order_and_resends_reopen_a_finished_delivery() {
        let world = world();
        let mut campaigns = Campaigns::default();
        campaigns.add(campaign("a", json!({"manual": true}))).expect("add");
        campaigns.add(campaign("b", json!({"manual": true}))).expect("add");
        let person = Identifier::Id("42".into());
        let none = Map::new();
        let a1 = campaigns.trigger(&world, "a", &person, &none, 0).expect("a1");
        let a2 = campaigns.trigger(&world, "a", &person, &none, 0).expect("a2");
        let b1 = campaigns.trigger(&world, "b", &person, &none, 0).expect("b1");
        let heads = |c: &Campaigns| c.heads().iter().map(|d| d.seq).collect::<Vec<_>>();
        assert_eq!(heads(&campaigns), vec![a1.seq, b1.seq]);
        campaigns.record_attempt(&a1.delivery_id, attempt(1, 500), Next::RetryAt(5));
        assert_eq!(heads(&campaigns), vec![a1.seq, b1.seq], "a retrying delivery holds its line");
        assert_eq!(campaigns.resend(&a1.delivery_id).err(), Some(ResendError::NotFinished));
        campaigns.record_attempt(&a1.delivery_id, attempt(2, 200), Next::Delivered);
        assert_eq!(heads(&campaigns), vec![a2.seq, b1.seq]);
        let again = campaigns.resend(&a1.delivery_id).expect("resend");
        assert_eq!((again.resends, again.round_attempts().len()), (1, 0));
        assert_eq!(again.idempotency_key, a1.idempotency_key);
        assert_eq!(heads(&campaigns), vec![a1.seq, b1.seq], "the resend goes first again");
        assert_eq!(campaigns.resend("nope").err(), Some(ResendError::Unknown));
    }
}
