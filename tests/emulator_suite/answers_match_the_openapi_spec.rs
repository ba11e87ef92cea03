//! Checks the emulator against Customer.io's Track API schemas (the
//! project's own in `tests/fixtures/`, and the published ones where
//! available: `support::spec`): every kind of answer it gives (200, 207
//! including those of injected per-item faults, 400) matches the response
//! schemas, the shared wire types in `track_api` produce request bodies the
//! request schemas accept, and the emulator's strict v1 value check agrees
//! with the v1 identify schema.

use ciosync_emulator::{Emulator, EmulatorConfig, Faults};
use ciosync_track_api::{BatchRequest, Identifier, PersonAction, PersonItem};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::support::spec::{check, Shape};

async fn post(emu: &Emulator, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let response = reqwest::Client::new()
        .request(method, format!("{}{path}", emu.url()))
        .basic_auth("site", Some("key"))
        .json(body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn sample_items() -> Vec<PersonItem> {
    let id = || Identifier::Id("42".into());
    let attributes = json!({"plan": "pro", "score": 0.5, "nickname": null, "tags": ["a"]});
    vec![
        PersonItem::new(PersonAction::Identify {
            identifiers: id(),
            timestamp: Some(1_700_000_000),
            attributes: attributes.as_object().cloned().unwrap_or_default(),
        }),
        PersonItem::new(PersonAction::Event {
            identifiers: id(),
            name: "signup".into(),
            id: Some("01HZY5V6J3K9Q3W8Z6X1N2M3P4".into()),
            timestamp: Some(1_700_000_000),
            attributes: Some(serde_json::Map::new()),
        }),
        PersonItem::new(PersonAction::Merge {
            primary: id(),
            secondary: Identifier::Email("old@x.io".into()),
        }),
        PersonItem::new(PersonAction::Suppress { identifiers: id() }),
        PersonItem::new(PersonAction::Unsuppress { identifiers: id() }),
        PersonItem::new(PersonAction::Delete { identifiers: id() }),
    ]
}

#[tokio::test]
async fn answers_and_wire_types_match_the_published_schemas() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let emu = Emulator::start(listener, EmulatorConfig::default()).await.expect("start");

    // Requests: the shared wire types, one by one, as a batch and as entities.
    let items = sample_items();
    let batch_request = check(Shape::BatchRequest);
    let entity_request = check(Shape::EntityRequest);
    for item in &items {
        let value = serde_json::to_value(item).expect("item serializes");
        entity_request.assert_valid(&value, "entity request");
        // The spec documents 200 as "an empty object" without a schema.
        assert_eq!(post(&emu, "POST", "/api/v2/entity", &value).await, (200, json!({})));
    }
    // The validators do reject: a person with no identifier fails the spec.
    let anonymous = json!({"type": "person", "action": "identify", "identifiers": {}});
    entity_request.assert_invalid(&anonymous, "a person without identifiers");
    let batch = serde_json::to_value(BatchRequest { batch: items }).expect("batch serializes");
    batch_request.assert_valid(&batch, "batch request");
    assert_eq!(post(&emu, "POST", "/api/v2/batch", &batch).await, (200, json!({})));

    // 207 and the whole-request 400s of v2.
    let bad_batch = json!({"batch": [{"type": "person", "action": "delete", "identifiers": {}},
                                     {"type": "person", "action": "delete", "identifiers": {"id": "1"}}]});
    let (status, body) = post(&emu, "POST", "/api/v2/batch", &bad_batch).await;
    assert_eq!(status, 207);
    let partial = check(Shape::BatchPartial);
    partial.assert_valid(&body, "207 answer");
    partial.assert_invalid(
        &json!({"errors": [{"batch_index": "first"}]}),
        "a batch_index that is text",
    );
    // The 207s of the per-item faults: a refused id, then a transient error.
    let person =
        |id: &str| json!({"type": "person", "action": "delete", "identifiers": {"id": id}});
    emu.set_faults(Faults { reject_ids: vec!["1".into()], ..Faults::default() });
    let (status, body) =
        post(&emu, "POST", "/api/v2/batch", &json!({"batch": [person("1")]})).await;
    assert_eq!((status, body["errors"][0]["reason"].clone()), (207, json!("invalid")));
    partial.assert_valid(&body, "207 answer for a rejected id");
    emu.set_faults(Faults { item_errors_next: 1, ..Faults::default() });
    let (status, body) =
        post(&emu, "POST", "/api/v2/batch", &json!({"batch": [person("2")]})).await;
    assert_eq!((status, body["errors"][0]["reason"].clone()), (207, json!("internal_error")));
    partial.assert_valid(&body, "207 answer for a transient item error");
    let (status, body) = post(&emu, "POST", "/api/v2/batch", &json!({"nope": 1})).await;
    assert_eq!(status, 400);
    check(Shape::BatchRefusal).assert_valid(&body, "batch 400 answer");
    let (status, body) = post(&emu, "POST", "/api/v2/entity", &json!({"type": "person"})).await;
    assert_eq!(status, 400);
    check(Shape::EntityRefusal).assert_valid(&body, "entity 400 answer");

    // v1 answers: region, the shared 400, merge's own 400.
    let region = reqwest::Client::new()
        .get(format!("{}/api/v1/accounts/region", emu.url()))
        .basic_auth("site", Some("key"))
        .send()
        .await
        .expect("region");
    let region: Value = region.json().await.expect("region json");
    check(Shape::Region).assert_valid(&region, "region answer");
    let (status, body) =
        post(&emu, "PUT", "/api/v1/customers/1", &json!({"n".repeat(151): 1})).await;
    assert_eq!(status, 400);
    check(Shape::V1Refusal).assert_valid(&body, "v1 400 answer");
    let merge = json!({"primary": {"id": "1", "email": "a@x.io"}, "secondary": {"id": "2"}});
    let (status, body) = post(&emu, "POST", "/api/v1/merge_customers", &merge).await;
    assert_eq!(status, 400);
    check(Shape::MergeRefusal).assert_valid(&body, "merge 400 answer");
    // The v1 merge *request* schema is not checked: its `oneOf` branches
    // have no `required`, so `{"id": "1"}` matches all three and every
    // body fails `oneOf`. The v2 `person_merge` above has `required` and is.

    let event = json!({"name": "purchase", "id": "01HZY5V6J3K9Q3W8Z6X1N2M3P4", "timestamp": 1, "data": {"price": 1.5}});
    check(Shape::V1Event).assert_valid(&event, "v1 event request");
    assert_eq!(post(&emu, "POST", "/api/v1/customers/1/events", &event).await, (200, json!({})));
    emu.shutdown().await;
}

/// Strict v1 mode rejects exactly what the v1 identify schema rejects.
#[tokio::test]
async fn strict_v1_values_agree_with_the_identify_schema() {
    let schema = check(Shape::V1Identify);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let emu = Emulator::start(listener, EmulatorConfig::default()).await.expect("start");
    let values = [
        json!("x"),
        json!(""),
        json!(7),
        json!(true),
        json!(0.5),
        json!(null),
        json!({}),
        json!([1]),
    ];
    for value in values {
        let body = json!({"custom": value});
        let (status, _) = post(&emu, "PUT", "/api/v1/customers/1", &body).await;
        assert_eq!(status == 200, schema.is_valid(&body), "emulator and schema disagree on {body}");
    }
    let sink_style = json!({"email": "a@x.io", "created_at": 1_700_000_000, "_timestamp": 1_700_000_001, "plan": "pro"});
    schema.assert_valid(&sink_style, "v1 identify request");
    emu.shutdown().await;
}

/// The routes beyond people and events (segments, forms, metrics, push
/// metrics, unsubscribe) refuse a body in the documented v1 400 shape.
#[tokio::test]
async fn the_other_v1_routes_refuse_in_the_documented_shape() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let emu = Emulator::start(listener, EmulatorConfig::default()).await.expect("start");
    let refusal = check(Shape::V1Refusal);
    let bad = [
        ("/api/v1/segments/7/add_customers", json!({"ids": []})),
        ("/api/v1/segments/7/remove_customers", json!({"ids": [1]})),
        ("/api/v1/forms/f/submit", json!({"data": {"first_name": "Ann"}})),
        ("/api/v1/metrics", json!({"delivery_id": "d", "metric": "read"})),
        ("/api/v1/push/events", json!({"event": "bounced"})),
        ("/unsubscribe/d1", json!({"unsubscribe": 1})),
    ];
    for (path, body) in bad {
        let (status, answer) = post(&emu, "POST", path, &body).await;
        assert_eq!(status, 400, "{path}");
        refusal.assert_valid(&answer, path);
    }
    emu.shutdown().await;
}
