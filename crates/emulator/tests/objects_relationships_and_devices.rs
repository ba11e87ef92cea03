//! Objects, relationships and devices over real HTTP, as a client sees
//! them: what each route accepts, refuses (v2: 400 for the request, 207
//! per item with `batch_index`; v1: 400 `{"meta":{"errors":[…]}}`) and
//! stores, shown by the inspection endpoints. The rules in detail (limits,
//! shapes, who holds a token) are the unit tests of `model_links.rs` and
//! `items.rs`.
//!
//! Every request these tests send that the emulator accepts (a 200, or an
//! item a 207 does not list) is also checked against Customer.io's
//! published Track API document when it is at hand (`$CIOSYNC_SHARED_SPECS`,
//! else `../shared/specs` beside the workspace), so what the emulator
//! accepts is what the document allows. One correction is made to the
//! document first, and a test shows why: its `v2_cio_relationships` (an
//! object item's people) refuses every entry, its own example included.

use std::path::PathBuf;
use std::sync::OnceLock;

use base64::engine::general_purpose;
use base64::Engine;
use ciosync_emulator::{Emulator, EmulatorConfig, Faults};
use serde_json::{json, Value};
use tokio::net::TcpListener;

const BATCH: &str = "/paths/~1api~1v2~1batch/post/requestBody/content/application~1json/schema";
const ENTITY: &str = "/paths/~1api~1v2~1entity/post/requestBody/content/application~1json/schema";
const V1_IDENTIFY: &str =
    "/paths/~1api~1v1~1customers~1%7Bidentifier%7D/put/requestBody/content/application~1json/schema";
const V1_DEVICE: &str = "/paths/~1api~1v1~1customers~1%7Bidentifier%7D~1devices/put/requestBody/content/application~1json/schema";

fn published_document() -> Option<Value> {
    let dir = match std::env::var_os("CIOSYNC_SHARED_SPECS") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/specs"),
    };
    let text = std::fs::read_to_string(dir.join("customer-io-track-api-openapi.json")).ok()?;
    Some(serde_json::from_str(&text).expect("the published Track API document is JSON"))
}

/// The document with `required` added to each branch of
/// `v2_cio_relationships`' `identifiers` `oneOf` (`id`, `email`, `cio_id`):
/// without it every entry matches all three branches.
fn corrected(mut document: Value) -> Value {
    let pointer = "/components/schemas/v2_cio_relationships/items/properties/identifiers/oneOf";
    let branches = document.pointer_mut(pointer).and_then(Value::as_array_mut).expect(pointer);
    for branch in branches {
        let names: Vec<Value> = branch["properties"]
            .as_object()
            .expect("branch properties")
            .keys()
            .map(|name| json!(name))
            .collect();
        branch["required"] = Value::Array(names);
    }
    document
}

fn validator(document: &Value, pointer: &str) -> jsonschema::Validator {
    let mut root = document.clone();
    root["$ref"] = json!(format!("#{pointer}"));
    jsonschema::draft202012::options()
        .build(&root)
        .unwrap_or_else(|error| panic!("{pointer} does not compile: {error}"))
}

struct Spec {
    batch: jsonschema::Validator,
    entity: jsonschema::Validator,
    v1_identify: jsonschema::Validator,
    v1_device: jsonschema::Validator,
}

fn spec() -> Option<&'static Spec> {
    static SPEC: OnceLock<Option<Spec>> = OnceLock::new();
    SPEC.get_or_init(|| {
        let Some(document) = published_document() else {
            eprintln!("NOTE: no published Track API document; request shapes are not checked");
            return None;
        };
        let document = corrected(document);
        Some(Spec {
            batch: validator(&document, BATCH),
            entity: validator(&document, ENTITY),
            v1_identify: validator(&document, V1_IDENTIFY),
            v1_device: validator(&document, V1_DEVICE),
        })
    })
    .as_ref()
}

/// Asserts the published document accepts a request the emulator accepted.
fn assert_documented(method: &str, path: &str, body: &Value) {
    let Some(spec) = spec() else {
        return;
    };
    let validator = match (method, path) {
        ("POST", "/api/v2/batch") => &spec.batch,
        ("POST", "/api/v2/entity") => &spec.entity,
        ("PUT", p) if p.ends_with("/devices") => &spec.v1_device,
        ("PUT", p) if p.starts_with("/api/v1/customers/") => &spec.v1_identify,
        _ => return,
    };
    let errors: Vec<String> = validator.iter_errors(body).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{method} {path}: accepted but not documented: {errors:?}\n{body}");
}

struct Api {
    emu: Emulator,
    http: reqwest::Client,
    auth: String,
}

async fn start(config: EmulatorConfig) -> Api {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let emu = Emulator::start(listener, config).await.expect("start");
    let auth = format!("Basic {}", general_purpose::STANDARD.encode("site:key"));
    Api { emu, http: reqwest::Client::new(), auth }
}

async fn start_default() -> Api {
    start(EmulatorConfig::new("site", "key")).await
}

impl Api {
    /// Sends a Track API request; checks what was accepted against the
    /// published document.
    async fn send(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let verb = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self
            .http
            .request(verb, format!("{}{path}", self.emu.url()))
            .header("authorization", &self.auth);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("send");
        let status = response.status().as_u16();
        let answer = response.json().await.unwrap_or(Value::Null);
        if let Some(body) = body {
            self.check_accepted(method, path, body, status, &answer);
        }
        (status, answer)
    }

    fn check_accepted(&self, method: &str, path: &str, body: &Value, status: u16, answer: &Value) {
        match status {
            200 => assert_documented(method, path, body),
            207 => {
                let refused: Vec<&Value> = answer["errors"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|error| &error["batch_index"])
                    .collect();
                for (index, item) in body["batch"].as_array().into_iter().flatten().enumerate() {
                    if !refused.contains(&&json!(index)) {
                        assert_documented(method, path, &json!({"batch": [item]}));
                    }
                }
            }
            _ => {}
        }
    }

    async fn batch(&self, items: Value) -> (u16, Value) {
        self.send("POST", "/api/v2/batch", Some(&json!({"batch": items}))).await
    }

    async fn entity(&self, item: Value) -> (u16, Value) {
        self.send("POST", "/api/v2/entity", Some(&item)).await
    }

    /// `GET /_emulator/{path}`: status and body.
    async fn inspect(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}/_emulator/{path}", self.emu.url()))
            .send()
            .await
            .expect("get");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn shown(&self, path: &str) -> Value {
        let (status, body) = self.inspect(path).await;
        assert_eq!(status, 200, "GET /_emulator/{path}: {body}");
        body
    }
}

fn acme() -> Value {
    json!({"object_type_id": "1", "object_id": "acme"})
}

fn object(action: &str, identifiers: Value, rest: Value) -> Value {
    let mut item = json!({"type": "object", "action": action, "identifiers": identifiers});
    item.as_object_mut().unwrap().extend(rest.as_object().cloned().unwrap_or_default());
    item
}

fn person(action: &str, id: &str, rest: Value) -> Value {
    let mut item = json!({"type": "person", "action": action, "identifiers": {"id": id}});
    item.as_object_mut().unwrap().extend(rest.as_object().cloned().unwrap_or_default());
    item
}

fn relate_to(identifiers: Value, attributes: Value) -> Value {
    json!({"cio_relationships": [{"identifiers": identifiers, "relationship_attributes": attributes}]})
}

#[tokio::test]
async fn objects_are_created_updated_and_deleted_with_their_relationships() {
    let api = start_default().await;
    let created = object(
        "identify",
        acme(),
        json!({"attributes": {"name": "Acme", "plan": "pro", "seats": 5}}),
    );
    let (status, answer) = api.batch(json!([created, person("identify", "42", json!({}))])).await;
    assert_eq!((status, answer), (200, json!({})));
    let cio_object_id = "obb7fd050001";
    assert_eq!(
        api.shown("objects").await,
        json!([{"object_type_id": "1", "object_id": "acme", "cio_object_id": cio_object_id,
                "attributes": {"name": "Acme", "plan": "pro", "seats": 5}, "relationship_count": 0}])
    );
    // By cio_object_id; "" and null remove.
    let update = object(
        "identify",
        json!({"cio_object_id": cio_object_id}),
        json!({"attributes": {"plan": "", "seats": null, "tier": "gold"}}),
    );
    assert_eq!(api.entity(update).await, (200, json!({})));
    let related = object(
        "add_relationships",
        acme(),
        relate_to(json!({"id": "42"}), json!({"role": "admin"})),
    );
    assert_eq!(api.entity(related).await.0, 200);
    assert_eq!(
        api.shown("objects/1/acme").await,
        json!({"object_type_id": "1", "object_id": "acme", "cio_object_id": cio_object_id,
               "attributes": {"name": "Acme", "tier": "gold"},
               "relationships": [{"customer": "42", "cio_id": "03000001", "attributes": {"role": "admin"}}]})
    );
    assert_eq!(
        api.shown("customers/42/relationships").await,
        json!([{"object_type_id": "1", "object_id": "acme", "cio_object_id": cio_object_id,
                "attributes": {"role": "admin"}}])
    );
    assert_eq!(api.shown("objects").await[0]["relationship_count"], 1);

    assert_eq!(api.entity(object("delete", acme(), json!({}))).await, (200, json!({})));
    assert_eq!(api.shown("objects").await, json!([]));
    assert_eq!(api.shown("customers/42/relationships").await, json!([]));
    assert_eq!(api.inspect("objects/1/acme").await, (404, json!({"error": "no such object"})));
    // Deleting it again, or anything unknown, is still a 200.
    assert_eq!(api.entity(object("delete", acme(), json!({}))).await.0, 200);
    assert!(api.emu.object("1", "acme").is_none());
}

/// The relationships of 42, 43 and 44 as `object_id: attributes`.
async fn related(api: &Api, who: &str) -> Value {
    let list = api.shown(&format!("customers/{who}/relationships")).await;
    let pairs = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["object_id"].as_str().unwrap().to_owned(), r["attributes"].clone()));
    Value::Object(pairs.collect())
}

#[tokio::test]
async fn relationships_are_added_and_removed_through_every_route() {
    let api = start_default().await;
    let course = json!({"object_type_id": "2", "object_id": "c1"});
    let beta = json!({"object_type_id": "1", "object_id": "beta"});
    let objects = json!([
        object("identify", acme(), json!({})),
        object("identify", course.clone(), json!({"attributes": {"title": "Rust"}})),
        object("identify", beta.clone(), json!({})),
        person("identify", "42", json!({})),
    ]);
    assert_eq!(api.batch(objects).await.0, 200);

    // Add: person add_relationships, person identify (v2 and v1), object identify.
    let add = person("add_relationships", "42", relate_to(acme(), json!({"role": "admin"})));
    let identify = person(
        "identify",
        "43",
        json!({"attributes": {"plan": "pro"}, "cio_relationships": [{"identifiers": acme(),
               "relationship_attributes": {"role": "member", "since": 2020}}]}),
    );
    let by_object = object("identify", beta.clone(), relate_to(json!({"id": "42"}), json!({})));
    assert_eq!(api.batch(json!([add, identify, by_object])).await, (200, json!({})));
    let v1 = json!({"plan": "basic", "cio_relationships": {"action": "add_relationships",
                    "relationships": [{"identifiers": course, "relationship_attributes": {"seat": "3"}}]}});
    assert_eq!(api.send("PUT", "/api/v1/customers/44", Some(&v1)).await, (200, json!({})));
    assert_eq!(related(&api, "42").await, json!({"acme": {"role": "admin"}, "beta": {}}));
    assert_eq!(related(&api, "43").await, json!({"acme": {"role": "member", "since": 2020}}));
    assert_eq!(related(&api, "44").await, json!({"c1": {"seat": "3"}}));
    assert_eq!(api.emu.customer("44").and_then(|c| c.get("plan").cloned()), Some(json!("basic")));
    assert!(api.emu.customer("44").is_some_and(|c| !c.contains_key("cio_relationships")));

    // Change attributes ("" removes), then remove through each route.
    let change =
        person("add_relationships", "43", relate_to(acme(), json!({"role": "", "since": 2021})));
    let unrelate = person(
        "delete_relationships",
        "42",
        json!({"cio_relationships": [{"identifiers": acme()}]}),
    );
    let by_object = object(
        "delete_relationships",
        beta,
        json!({"cio_relationships": [{"identifiers": {"id": "42"}}]}),
    );
    assert_eq!(api.batch(json!([change, unrelate, by_object])).await, (200, json!({})));
    let v1 = json!({"cio_relationships": {"action": "delete_relationships",
                    "relationships": [{"identifiers": {"object_type_id": "2", "object_id": "c1"}}]}});
    assert_eq!(api.send("PUT", "/api/v1/customers/44", Some(&v1)).await.0, 200);
    assert_eq!(related(&api, "42").await, json!({}));
    assert_eq!(related(&api, "43").await, json!({"acme": {"since": 2021}}));
    assert_eq!(related(&api, "44").await, json!({}));

    // An object that does not exist is not created by relating to it (the
    // default); the call is a 200 and a logged failure.
    let ghost = json!({"object_type_id": "1", "object_id": "ghost"});
    assert_eq!(
        api.entity(person("add_relationships", "42", relate_to(ghost, json!({})))).await.0,
        200
    );
    assert!(api.emu.object("1", "ghost").is_none());
    let failures = api.shown("failures").await;
    assert_eq!(failures[0]["identifier"], "object:1:ghost", "{failures}");
}

#[tokio::test]
async fn relating_can_create_the_object_when_configured() {
    let api = start(EmulatorConfig {
        relationships_create_objects: true,
        ..EmulatorConfig::new("site", "key")
    })
    .await;
    let add = person("add_relationships", "42", relate_to(acme(), json!({"role": "admin"})));
    assert_eq!(api.entity(add).await.0, 200);
    assert_eq!(api.shown("objects").await[0]["relationship_count"], 1);
    assert_eq!(related(&api, "42").await, json!({"acme": {"role": "admin"}}));
}

async fn devices(api: &Api, who: &str) -> Value {
    api.shown(&format!("customers/{who}/devices")).await
}

#[tokio::test]
async fn devices_are_added_updated_moved_and_deleted_over_v1_and_v2() {
    let api = start_default().await;
    let v1 = json!({"device": {"id": "tok1", "platform": "ios", "last_used": 1700000000,
                               "attributes": {"app_version": "1.0"}}});
    assert_eq!(api.send("PUT", "/api/v1/customers/42/devices", Some(&v1)).await, (200, json!({})));
    let tok2 =
        person("add_device", "42", json!({"device": {"token": "tok2", "platform": "android"}}));
    let update = person(
        "add_device",
        "42",
        json!({"device": {"token": "tok1", "platform": "ios",
        "last_used": 1700000100, "attributes": {"device_os": "17.1", "push_enabled": "true"}}}),
    );
    assert_eq!(api.batch(json!([tok2, update])).await, (200, json!({})));
    let listed = devices(&api, "42").await;
    assert_eq!(
        listed[0],
        json!({"token": "tok1", "platform": "ios", "last_used": 1700000100,
               "attributes": {"app_version": "1.0", "device_os": "17.1", "push_enabled": "true"}})
    );
    assert_eq!((&listed[1]["token"], &listed[1]["platform"]), (&json!("tok2"), &json!("android")));
    assert!(listed[1]["last_used"].as_i64().is_some_and(|t| t > 1_700_000_000), "receive time");

    // A token is one device: adding it for 43 takes it from 42.
    let moved = json!({"device": {"id": "tok1", "platform": "ios"}});
    assert_eq!(api.send("PUT", "/api/v1/customers/43/devices", Some(&moved)).await.0, 200);
    assert_eq!(devices(&api, "42").await.as_array().map(Vec::len), Some(1));
    assert_eq!(devices(&api, "43").await[0]["attributes"]["app_version"], "1.0");

    assert_eq!(
        api.send("DELETE", "/api/v1/customers/43/devices/tok1", None).await,
        (200, json!({}))
    );
    let delete = person("delete_device", "42", json!({"device": {"token": "tok2"}}));
    assert_eq!(api.entity(delete).await, (200, json!({})));
    assert_eq!(devices(&api, "42").await, json!([]));
    assert_eq!(devices(&api, "43").await, json!([]));
    assert_eq!(api.send("DELETE", "/api/v1/customers/43/devices/never", None).await.0, 200);
    assert_eq!(
        api.inspect("customers/nobody/devices").await,
        (404, json!({"error": "no such customer"}))
    );
    assert_eq!(api.emu.devices("42"), Some(vec![]));
}

#[tokio::test]
async fn deleting_or_suppressing_a_person_takes_their_devices_and_relationships() {
    let api = start_default().await;
    let mut items = vec![object("identify", acme(), json!({}))];
    for who in ["42", "43"] {
        items.push(person(
            "add_device",
            who,
            json!({"device": {"token": format!("t{who}"), "platform": "ios"}}),
        ));
        items.push(person("add_relationships", who, relate_to(acme(), json!({"role": who}))));
    }
    assert_eq!(api.batch(json!(items)).await.0, 200);
    assert_eq!(api.shown("objects").await[0]["relationship_count"], 2);
    assert_eq!(api.send("DELETE", "/api/v1/customers/42", None).await.0, 200);
    assert_eq!(api.entity(person("suppress", "43", json!({}))).await.0, 200);
    assert_eq!(api.shown("objects/1/acme").await["relationships"], json!([]));
    assert_eq!(api.send("PUT", "/api/v1/customers/42", Some(&json!({}))).await.0, 200);
    assert_eq!(devices(&api, "42").await, json!([]), "re-created without the old devices");
    assert_eq!(related(&api, "42").await, json!({}));
    // The deleted person's token is free for someone else.
    let reuse =
        person("add_device", "44", json!({"device": {"token": "t42", "platform": "android"}}));
    assert_eq!(api.entity(reuse).await.0, 200);
    assert_eq!(devices(&api, "44").await[0]["token"], "t42");
}

#[tokio::test]
async fn invalid_shapes_are_refused_with_each_apis_answer() {
    let api = start_default().await;
    let numeric_type =
        object("identify", json!({"object_type_id": 1, "object_id": "acme"}), json!({}));
    assert_eq!(
        api.entity(numeric_type).await,
        (
            400,
            json!({"errors": [{"reason": "invalid", "field": "identifiers.object_type_id",
            "message": "object_type_id must be a string holding an integer from 1, like \"1\""}]})
        )
    );
    let items = json!([
        object("identify", acme(), json!({"attributes": {"name": "Acme"}})),
        person("add_device", "42", json!({"device": {"token": "t", "platform": "web"}})),
        person("add_device", "42", json!({"device": {"token": "t", "platform": "ios"}})),
        object("delete", json!({"object_type_id": "1", "object_id": "x".repeat(151)}), json!({})),
        person("add_relationships", "42", json!({})),
    ]);
    let (status, answer) = api.batch(items).await;
    assert_eq!(status, 207);
    let refused: Vec<(&Value, &Value)> = answer["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (&e["batch_index"], &e["field"]))
        .collect();
    assert_eq!(
        refused,
        [
            (&json!(1), &json!("device.platform")),
            (&json!(3), &json!("identifiers.object_id")),
            (&json!(4), &json!("cio_relationships"))
        ]
    );
    assert_eq!(answer["errors"][0]["message"], "device platform must be ios or android");
    assert_eq!(api.emu.devices("42").map(|d| d.len()), Some(1), "the valid items applied");
    assert!(api.emu.object("1", "acme").is_some());

    // A limit that depends on what is stored refuses that item alone, and
    // the refused item changes nothing.
    let chunk = |prefix: &str| {
        let attributes: serde_json::Map<String, Value> =
            (0..25).map(|i| (format!("{prefix}{i}"), json!("x".repeat(1000)))).collect();
        object("identify", acme(), json!({"attributes": attributes}))
    };
    let last = object("identify", acme(), json!({"attributes": {"after": 1}}));
    let (status, answer) =
        api.batch(json!([chunk("a"), chunk("b"), chunk("c"), chunk("d"), last])).await;
    assert_eq!(
        (status, answer),
        (
            207,
            json!({"errors": [{"batch_index": 3, "reason": "too_large", "field": "attributes",
            "message": "object attributes cannot total more than 100000 bytes"}]})
        )
    );
    let kept = api.emu.object("1", "acme").map(|o| o.attributes).unwrap_or_default();
    assert_eq!(kept.len(), 77, "name, a/b/c and the item after the refused one");
    assert!(!kept.contains_key("d0") && kept.contains_key("after"));

    // v1: the 400 with `meta.errors`; nothing applied.
    let no_platform = json!({"device": {"id": "t"}});
    assert_eq!(
        api.send("PUT", "/api/v1/customers/7/devices", Some(&no_platform)).await,
        (400, json!({"meta": {"errors": ["device.platform is required"]}}))
    );
    assert_eq!(
        api.send("PUT", "/api/v1/customers/7/devices", Some(&json!({}))).await,
        (400, json!({"meta": {"errors": ["device is required"]}}))
    );
    let no_action = json!({"plan": "x", "cio_relationships": {"relationships": []}});
    assert_eq!(
        api.send("PUT", "/api/v1/customers/7", Some(&no_action)).await,
        (
            400,
            json!({"meta": {"errors": [
            "cio_relationships.action must be add_relationships or delete_relationships"]}})
        )
    );
    assert!(api.emu.customer("7").is_none(), "a refused identify creates nobody");
}

#[tokio::test]
async fn faults_refuse_device_and_relationship_items_by_person() {
    let api = start_default().await;
    api.emu.set_faults(Faults { reject_ids: vec!["bad".into()], ..Faults::default() });
    let items = json!([
        object("identify", acme(), json!({})),
        person("add_device", "bad", json!({"device": {"token": "t1", "platform": "ios"}})),
        object("add_relationships", acme(), relate_to(json!({"id": "bad"}), json!({}))),
        person("add_device", "ok", json!({"device": {"token": "t2", "platform": "ios"}})),
    ]);
    let (status, answer) = api.batch(items).await;
    assert_eq!(status, 207);
    let fields: Vec<(&Value, &Value)> = answer["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (&e["batch_index"], &e["field"]))
        .collect();
    assert_eq!(
        fields,
        [(&json!(1), &json!("identifiers")), (&json!(2), &json!("cio_relationships"))]
    );
    let v1 = json!({"device": {"id": "t1", "platform": "ios"}});
    assert_eq!(api.send("PUT", "/api/v1/customers/bad/devices", Some(&v1)).await.0, 400);
    assert!(
        api.emu.customer("bad").is_none() && api.emu.devices("ok").is_some_and(|d| d.len() == 1)
    );

    api.emu.set_faults(Faults { item_errors_next: 1, ..Faults::default() });
    let named = object("identify", acme(), json!({"attributes": {"name": "Acme"}}));
    let (status, answer) = api.batch(json!([named.clone()])).await;
    assert_eq!((status, &answer["errors"][0]["reason"]), (207, &json!("internal_error")));
    assert!(api.emu.object("1", "acme").is_some_and(|o| o.attributes.is_empty()));
    assert_eq!(api.batch(json!([named])).await.0, 200);
    assert_eq!(api.shown("objects/1/acme").await["attributes"], json!({"name": "Acme"}));
}

#[tokio::test]
async fn reset_forgets_objects_relationships_and_devices() {
    let api = start_default().await;
    let items = json!([
        object("identify", acme(), json!({})),
        person("add_relationships", "42", relate_to(acme(), json!({}))),
        person("add_device", "42", json!({"device": {"token": "t", "platform": "ios"}})),
    ]);
    assert_eq!(api.batch(items).await.0, 200);
    let unmodelled = api.shown("unmodelled").await;
    assert_eq!(unmodelled["items"], json!([]), "nothing of these is kept unapplied");
    let http = reqwest::Client::new();
    let reset =
        http.post(format!("{}/_emulator/reset", api.emu.url())).send().await.expect("reset");
    assert_eq!(reset.status().as_u16(), 204);
    assert_eq!(api.shown("objects").await, json!([]));
    assert_eq!(api.inspect("customers/42/devices").await.0, 404);
    // A fresh workspace: the next object gets the first cio_object_id again.
    assert_eq!(api.entity(object("identify", acme(), json!({}))).await.0, 200);
    assert_eq!(api.shown("objects").await[0]["cio_object_id"], "obb7fd050001");
}

/// Why `corrected` exists: the published `v2_cio_relationships` refuses
/// an object item's people whatever they are, its own example included.
/// When Customer.io fixes its document this fails: drop the correction.
#[test]
fn the_published_document_refuses_its_own_object_relationship_example() {
    let Some(document) = published_document() else {
        eprintln!("NOTE: no published Track API document; nothing to check");
        return;
    };
    let example = document
        .pointer("/components/schemas/object_add_relationships/example")
        .cloned()
        .expect("object_add_relationships has an example");
    assert_eq!(example["cio_relationships"][0]["identifiers"], json!({"id": "42"}));
    let body = json!({"batch": [example]});
    assert!(!validator(&document, BATCH).is_valid(&body), "the published document is fixed");
    assert!(validator(&corrected(document), BATCH).is_valid(&body));
}
