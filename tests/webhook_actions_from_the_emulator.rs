//! The whole loop without a workspace: the emulator's campaigns, started by
//! a person entering or leaving a segment (changed through the Track API,
//! as Customer.io's own segment logic would) or by hand, send their webhook
//! actions to ciosync, which keeps the memberships table exact, sets the
//! synced row without echoing it, and applies a resent delivery once.

use ciosync_emulator::{CampaignSpec, Delivery, Emulator};
use serde_json::json;

use crate::support::daemon::{API_KEY, SITE_ID};
use crate::support::emulator::{self, identifies_of, wait_for, wait_for_attribute};
use crate::support::postgres::TestDb;
use crate::support::webhooks::ACTION_SECRET;
use crate::webhook_actions_write_into_postgres::{prepared, started};

const SEGMENT: i32 = 7;

fn campaign(name: &str, trigger: serde_json::Value, url: &str, body: &str) -> CampaignSpec {
    serde_json::from_value(json!({
        "name": name,
        "trigger": trigger,
        "action": {"method": "POST", "url": url, "body": body},
    }))
    .expect("a valid campaign")
}

/// `add_customers` or `remove_customers` on the emulator's Track API.
async fn segment(emulator: &Emulator, change: &str, ids: &[&str]) {
    let status = reqwest::Client::new()
        .post(format!("{}/api/v1/segments/{SEGMENT}/{change}", emulator.url()))
        .basic_auth(SITE_ID, Some(API_KEY))
        .json(&json!({"ids": ids}))
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success(), "{change}: {status}");
}

fn delivered(emulator: &Emulator, campaign: &str) -> Vec<Delivery> {
    emulator
        .deliveries()
        .into_iter()
        .filter(|d| {
            d.campaign == campaign && d.attempts.last().is_some_and(|a| a.status == Some(200))
        })
        .collect()
}

async fn memberships(db: &TestDb) -> Vec<(String, bool)> {
    let sql = "SELECT customer_id, left_at IS NULL FROM ciosync.segment_memberships \
               WHERE segment = 'vip' ORDER BY 1";
    db.client.query(sql, &[]).await.unwrap().iter().map(|r| (r.get(0), r.get(1))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaigns_write_segments_and_scores_into_postgres() {
    let db = prepared("actions_from_emulator").await;
    let emulator = emulator::start().await;
    let daemon = started(&db, &emulator, true).await;
    db.exec("INSERT INTO users (id, email) VALUES (1, 'a@x.io'), (2, 'b@x.io')").await;
    assert!(wait_for_attribute(&emulator, "2", "email", json!("b@x.io")).await);

    // The campaigns, as their authors would write them: Basic auth in the
    // URL, the bodies in Liquid.
    let base = daemon.webhook_url("/webhooks/customerio/actions");
    let with_auth = base.replacen("http://", &format!("http://ciosync:{ACTION_SECRET}@"), 1);
    let moved = |change: &str| {
        format!(
            r#"{{"customer": {{"id": "{{{{customer.id}}}}"}}, "segment": "vip", "change": "{change}", "at": {{{{ 'now' | date: '%s' }}}}}}"#
        )
    };
    let segments = format!("{with_auth}/segments");
    emulator
        .add_campaign(campaign(
            "vip-in",
            json!({"segment_id": SEGMENT, "on": "enter"}),
            &segments,
            &moved("enter"),
        ))
        .unwrap();
    emulator
        .add_campaign(campaign(
            "vip-out",
            json!({"segment_id": SEGMENT, "on": "leave"}),
            &segments,
            &moved("leave"),
        ))
        .unwrap();
    let score = r#"{"customer": {"id": "{{customer.id}}"}, "score": {{event.score}}}"#;
    emulator
        .add_campaign(campaign(
            "score",
            json!({"manual": true}),
            &format!("{with_auth}/score"),
            score,
        ))
        .unwrap();

    segment(&emulator, "add_customers", &["1", "2"]).await;
    assert!(wait_for(&emulator, |e| delivered(e, "vip-in").len() == 2).await);
    assert_eq!(memberships(&db).await, vec![("1".into(), true), ("2".into(), true)]);
    segment(&emulator, "remove_customers", &["1"]).await;
    assert!(wait_for(&emulator, |e| delivered(e, "vip-out").len() == 1).await);
    assert_eq!(memberships(&db).await, vec![("1".into(), false), ("2".into(), true)]);

    // Customer.io repeats the enter of 1 (a retry after a lost 2xx): the
    // same X-CIO-Idempotency-Key, so nothing changes.
    let first = delivered(&emulator, "vip-in").into_iter().find(|d| d.customer_id == "1").unwrap();
    emulator.resend_delivery(&first.delivery_id).unwrap();
    let resent = |e: &Emulator| {
        e.deliveries().iter().any(|d| {
            d.delivery_id == first.delivery_id
                && d.attempts.len() == 2
                && d.attempts[1].status == Some(200)
        })
    };
    assert!(wait_for(&emulator, resent).await);
    assert_eq!(memberships(&db).await, vec![("1".into(), false), ("2".into(), true)]);
    assert_eq!(
        daemon
            .counters
            .actions
            .get("segments", ciosync::telemetry::actions::ActionOutcome::Duplicate),
        1
    );

    // A manual campaign sets the lead score; it is never echoed back.
    let event = json!({"score": 77}).as_object().unwrap().clone();
    emulator.trigger_campaign("score", "1", event).unwrap();
    assert!(wait_for(&emulator, |e| delivered(e, "score").len() == 1).await);
    let score: Option<i32> =
        db.client.query_one("SELECT lead_score FROM users WHERE id = 1", &[]).await.unwrap().get(0);
    assert_eq!(score, Some(77));
    db.exec("UPDATE users SET plan = 'marker' WHERE id = 1").await;
    assert!(wait_for_attribute(&emulator, "1", "plan", json!("marker")).await);
    let echoed =
        identifies_of(&emulator, "1").iter().any(|a| a.get("lead_score") == Some(&json!(77)));
    assert!(!echoed, "the campaign's write came back to Customer.io");
    daemon.stop().await.unwrap();
}
