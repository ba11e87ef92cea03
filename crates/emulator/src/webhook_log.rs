//! The webhook queue and its record: every webhook the emulator queued,
//! oldest first, with each attempt's outcome. The queue is the log itself:
//! the sender always takes the oldest webhook not yet delivered or given up,
//! which is what makes delivery head-of-line blocking. Lives in the shared
//! state, so `wait_until` conditions and `GET /_emulator/webhooks` see it.

use std::collections::VecDeque;

use ciosync_track_api::Identifier;
use serde::Serialize;
use serde_json::Value;

use crate::config::EmulatorConfig;
use crate::identity::identity_value;
use crate::model::{Activity, World};
use crate::webhook::{
    payload, ulid, Message, WebhookPerson, WebhookRequest, CUSTOMER_OBJECT, EMAIL_OBJECT,
};

/// Most webhooks kept; past it the oldest finished ones are forgotten (the
/// unfinished ones never are, they are the queue).
pub const MAX_RECORDED_WEBHOOKS: usize = 10_000;

/// Where a webhook stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookStatus {
    /// Not attempted yet.
    Queued,
    /// Attempted and failed; tried again at `next_attempt_at_ms`.
    Retrying,
    /// Answered 2xx.
    Delivered,
    /// Given up on after the configured attempts or time.
    Failed,
}

impl WebhookStatus {
    /// Delivered or failed: the sender is done with it.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Delivered | Self::Failed)
    }
}

/// One try at delivering a webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebhookAttempt {
    /// 1 for the first try.
    pub number: u32,
    /// Unix seconds sent as `X-CIO-Timestamp` (and signed).
    pub timestamp: i64,
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

impl WebhookAttempt {
    /// A 2xx answer.
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|status| (200..300).contains(&status))
    }
}

/// One webhook, as `GET /_emulator/webhooks` lists it. Holds no secret:
/// the signature is per attempt and not kept.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebhookRecord {
    /// Queue position, from 1.
    pub seq: u64,
    /// The payload's `event_id`, the same on every attempt.
    pub event_id: String,
    /// The payload's `object_type`.
    pub object_type: String,
    /// The payload's `metric`.
    pub metric: String,
    /// Where it stands.
    pub status: WebhookStatus,
    /// When it was queued, Unix milliseconds.
    pub queued_at_ms: i64,
    /// When the next try is due (only while retrying), Unix milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at_ms: Option<i64>,
    /// Every try, oldest first.
    pub attempts: Vec<WebhookAttempt>,
    /// The body, as sent on every attempt.
    pub payload: Value,
}

/// What the sender decided after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// It was delivered.
    Delivered,
    /// Try again at this Unix millisecond.
    RetryAt(i64),
    /// It failed for good.
    GiveUp,
}

/// The queue and record of webhooks.
#[derive(Debug, Default)]
pub struct WebhookLog {
    records: VecDeque<WebhookRecord>,
    next_seq: u64,
    next_delivery: u64,
}

impl WebhookLog {
    /// Every webhook kept, oldest first.
    pub fn records(&self) -> impl Iterator<Item = &WebhookRecord> {
        self.records.iter()
    }

    /// The webhook to send next: the oldest one not finished. Everything
    /// queued after it waits for it.
    pub fn head(&self) -> Option<&WebhookRecord> {
        self.records.iter().find(|record| !record.status.is_finished())
    }

    /// Records an attempt at the webhook `event_id` and what comes next.
    /// Does nothing if it is gone (the emulator was reset meanwhile).
    pub fn record_attempt(&mut self, event_id: &str, attempt: WebhookAttempt, next: Next) {
        let Some(record) = self.records.iter_mut().find(|r| r.event_id == event_id) else {
            return;
        };
        record.attempts.push(attempt);
        (record.status, record.next_attempt_at_ms) = match next {
            Next::Delivered => (WebhookStatus::Delivered, None),
            Next::RetryAt(at) => (WebhookStatus::Retrying, Some(at)),
            Next::GiveUp => (WebhookStatus::Failed, None),
        };
    }

    /// Queues an on-demand webhook (already validated). The person is the
    /// workspace's if one matches `customer_id`, else `email`, else
    /// `cio_id`; otherwise the request's identifiers are used as given.
    pub fn queue_request(
        &mut self,
        world: &World,
        request: &WebhookRequest,
        now_ms: i64,
    ) -> WebhookRecord {
        let lookups = [
            request.customer_id.clone().map(Identifier::Id),
            request.email.clone().map(Identifier::Email),
            request.cio_id.clone().map(Identifier::CioId),
        ];
        let known = lookups.into_iter().flatten().find_map(|identifier| {
            world.person(&identifier).map(|person| person.cio_id().to_owned())
        });
        let person = match known.and_then(|cio_id| person_of(world, &cio_id)) {
            Some(person) => WebhookPerson {
                id: person.id.or_else(|| request.customer_id.clone()),
                email: person.email.or_else(|| request.email.clone()),
                cio_id: person.cio_id,
            },
            None => WebhookPerson {
                id: request.customer_id.clone(),
                email: request.email.clone(),
                cio_id: request.cio_id.clone().unwrap_or_else(|| self.made_up_cio_id()),
            },
        };
        let message = Message {
            delivery_id: self.new_delivery_id(),
            subject: "Emulated message".to_owned(),
            trigger_event_id: None,
        };
        let timestamp = request.timestamp.unwrap_or(now_ms / 1000);
        let object_type = request.object_type().to_owned();
        self.queue(&object_type, &request.metric, timestamp, &person, &message, request, now_ms)
    }

    /// Queues what `config` asks for on `activity`: a `customer`
    /// `subscribed` for a new person, the `webhook_on_activity` email
    /// metrics (one message, one `delivery_id`) for an accepted event.
    /// Nothing for a person no longer there.
    pub fn queue_activity(
        &mut self,
        world: &World,
        config: &EmulatorConfig,
        activity: Activity,
        now_ms: i64,
    ) {
        let timestamp = now_ms / 1000;
        let none = WebhookRequest::default();
        match activity {
            Activity::PersonCreated { cio_id } if config.webhook_on_new_person => {
                let Some(person) = person_of(world, &cio_id) else {
                    return;
                };
                let message = Message {
                    delivery_id: String::new(),
                    subject: String::new(),
                    trigger_event_id: None,
                };
                self.queue(
                    CUSTOMER_OBJECT,
                    "subscribed",
                    timestamp,
                    &person,
                    &message,
                    &none,
                    now_ms,
                );
            }
            Activity::EventAccepted { cio_id, name, event_id }
                if !config.webhook_on_activity.is_empty() =>
            {
                let Some(person) = person_of(world, &cio_id) else {
                    return;
                };
                let message = Message {
                    delivery_id: self.new_delivery_id(),
                    subject: name,
                    trigger_event_id: event_id,
                };
                for metric in &config.webhook_on_activity {
                    self.queue(EMAIL_OBJECT, metric, timestamp, &person, &message, &none, now_ms);
                }
            }
            _ => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn queue(
        &mut self,
        object_type: &str,
        metric: &str,
        timestamp: i64,
        person: &WebhookPerson,
        message: &Message,
        request: &WebhookRequest,
        now_ms: i64,
    ) -> WebhookRecord {
        self.next_seq += 1;
        let event_id = ulid(now_ms.max(0) as u64, rand::random::<u128>());
        let body =
            payload(&event_id, object_type, metric, timestamp, person, message, &request.data);
        let record = WebhookRecord {
            seq: self.next_seq,
            event_id,
            object_type: object_type.to_owned(),
            metric: metric.to_owned(),
            status: WebhookStatus::Queued,
            queued_at_ms: now_ms,
            next_attempt_at_ms: None,
            attempts: Vec::new(),
            payload: body,
        };
        self.records.push_back(record.clone());
        self.forget_oldest_finished();
        record
    }

    fn forget_oldest_finished(&mut self) {
        while self.records.len() > MAX_RECORDED_WEBHOOKS {
            match self.records.iter().position(|record| record.status.is_finished()) {
                Some(index) => {
                    self.records.remove(index);
                }
                None => return,
            }
        }
    }

    fn new_delivery_id(&mut self) -> String {
        self.next_delivery += 1;
        format!("emulated-delivery-{:08}", self.next_delivery)
    }

    fn made_up_cio_id(&self) -> String {
        format!("emulated{:08x}", self.next_seq + 1)
    }
}

/// A workspace person's identifiers, by `cio_id`.
fn person_of(world: &World, cio_id: &str) -> Option<WebhookPerson> {
    let person = world.person(&Identifier::CioId(cio_id.to_owned()))?;
    let attribute = |name: &str| person.attributes().get(name).and_then(identity_value);
    Some(WebhookPerson {
        id: attribute("id"),
        email: attribute("email"),
        cio_id: person.cio_id().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Op, Settings, StoredEvent};
    use serde_json::Map;

    fn world_with_42() -> World {
        let mut world = World::new(Settings {
            empty_removes: true,
            allow_email_update_by_id: true,
            relationships_create_objects: false,
        });
        let attributes = serde_json::json!({"email": "a@x.io"});
        world.apply(Op::Identify {
            target: Identifier::Id("42".into()),
            attributes: attributes.as_object().cloned().unwrap_or_default(),
            timestamp: 1,
            update_only: false,
        });
        world
    }

    fn attempt(status: u16) -> WebhookAttempt {
        WebhookAttempt {
            number: 1,
            timestamp: 1,
            sent_at_ms: 1_000,
            duration_ms: 1,
            status: Some(status),
            error: None,
        }
    }

    #[test]
    fn the_head_is_the_oldest_unfinished_webhook() {
        let world = world_with_42();
        let mut log = WebhookLog::default();
        let first = log.queue_request(&world, &WebhookRequest::new("email", "sent"), 1_000);
        let second = log.queue_request(&world, &WebhookRequest::new("email", "opened"), 1_000);
        assert_ne!(first.event_id, second.event_id);
        log.record_attempt(&first.event_id, attempt(500), Next::RetryAt(2_000));
        assert_eq!(log.head().map(|r| r.seq), Some(1), "a failing webhook holds the line");
        log.record_attempt(&first.event_id, attempt(200), Next::Delivered);
        assert_eq!(log.head().map(|r| r.seq), Some(2));
        log.record_attempt(&second.event_id, attempt(500), Next::GiveUp);
        assert_eq!(log.head(), None);
        let statuses: Vec<_> = log.records().map(|r| r.status).collect();
        assert_eq!(statuses, vec![WebhookStatus::Delivered, WebhookStatus::Failed]);
    }

    #[test]
    fn requests_about_a_known_person_use_the_workspace_identifiers() {
        let world = world_with_42();
        let mut log = WebhookLog::default();
        let record = log.queue_request(
            &world,
            &WebhookRequest::new("email", "sent").for_customer("42"),
            5_000,
        );
        let identifiers = &record.payload["data"]["identifiers"];
        assert_eq!(
            (identifiers["id"].as_str(), identifiers["email"].as_str()),
            (Some("42"), Some("a@x.io"))
        );
        assert_eq!(identifiers["cio_id"], "03000001");
        assert_eq!(record.payload["timestamp"], 5);
        let stranger =
            log.queue_request(&world, &WebhookRequest::new("email", "sent").for_customer("7"), 0);
        assert_eq!(stranger.payload["data"]["identifiers"]["id"], "7");
    }

    #[test]
    fn an_accepted_event_queues_the_configured_metrics_as_one_message() {
        let mut world = world_with_42();
        world.apply(Op::Event {
            target: Identifier::Id("42".into()),
            event: StoredEvent {
                name: "signup".into(),
                kind: "event".into(),
                id: None,
                timestamp: 1,
                data: Map::new(),
                anonymous_id: None,
            },
        });
        let config = EmulatorConfig {
            webhook_on_activity: vec!["sent".into(), "delivered".into()],
            webhook_on_new_person: true,
            ..EmulatorConfig::default()
        };
        let mut log = WebhookLog::default();
        for activity in world.take_activity() {
            log.queue_activity(&world, &config, activity, 1_000);
        }
        let kinds: Vec<(String, String)> =
            log.records().map(|r| (r.object_type.clone(), r.metric.clone())).collect();
        let pair = |o: &str, m: &str| (o.to_owned(), m.to_owned());
        assert_eq!(
            kinds,
            vec![pair("customer", "subscribed"), pair("email", "sent"), pair("email", "delivered")]
        );
        let deliveries: Vec<&Value> =
            log.records().skip(1).map(|r| &r.payload["data"]["delivery_id"]).collect();
        assert_eq!(deliveries[0], deliveries[1], "sent and delivered are one message");
        assert_eq!(
            log.records().nth(1).map(|r| &r.payload["data"]["subject"]),
            Some(&Value::from("signup"))
        );
    }
}
