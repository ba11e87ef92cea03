//! An `[[objects]]` table: an INSERT creates the Customer.io object, an
//! UPDATE (REPLICA IDENTITY FULL) sends only the attribute it changed, NULL
//! removes an attribute, a soft delete and a DELETE delete the object, and
//! every request the sink sent validates against the published schema.

use serde_json::{json, Value};

use crate::support::emulator::wait_for;
use crate::support::spec::{check, Shape};
use crate::support::Scenario;

pub const ACCOUNTS: &str = "
    CREATE TABLE public.users (id bigint PRIMARY KEY, email text, first_name text, plan text,
                               created_at timestamptz, password_hash text, bio text);
    CREATE TABLE public.accounts (id text PRIMARY KEY, name text, plan text, seats int,
                                  deleted_at timestamptz);
    ALTER TABLE public.accounts REPLICA IDENTITY FULL;
";

pub const OBJECTS: &str = r#"
[[objects]]
table = "public.accounts"
object_type_id = "1"
id_column = "id"
soft_delete_column = "deleted_at"

[objects.attributes]
name = "name"
plan = "plan"
seats = "seats"
"#;

/// Every object item the sink sent, in order.
pub fn object_items(emulator: &ciosync_emulator::Emulator) -> Vec<Value> {
    emulator
        .requests()
        .into_iter()
        .filter(|r| r.path == "/api/v2/batch")
        .flat_map(|r| r.body.and_then(|b| b["batch"].as_array().cloned()).unwrap_or_default())
        .filter(|item| item["type"] == "object")
        .collect()
}

/// Every batch request the sink sent validates against the schemas (and
/// none was refused, beside the faults a test injects).
pub fn assert_requests_match_the_schema(emulator: &ciosync_emulator::Emulator) {
    let batch = check(Shape::BatchRequest);
    for request in emulator.requests().iter().filter(|r| r.path == "/api/v2/batch") {
        assert!(![400, 207].contains(&request.status), "{:?}", request.body);
        batch.assert_valid(request.body.as_ref().unwrap(), "a batch the sink sent");
    }
}

#[tokio::test]
async fn objects_are_created_diffed_and_deleted() {
    let Scenario { db, emulator, daemon } =
        Scenario::start_with("objects_diffed", ACCOUNTS, |c| c + OBJECTS).await;

    db.exec("INSERT INTO accounts VALUES ('acme', 'Acme', 'free', 5, NULL), ('globex', 'Globex', 'pro', NULL, NULL)").await;
    let attributes =
        |e: &ciosync_emulator::Emulator, id: &str| e.object("1", id).map(|o| o.attributes);
    assert!(
        wait_for(&emulator, |e| attributes(e, "acme")
            == Some(
                json!({"name": "Acme", "plan": "free", "seats": 5}).as_object().cloned().unwrap()
            ))
        .await,
        "acme was not created: {:?}",
        emulator.objects()
    );
    db.exec("UPDATE accounts SET plan = 'pro' WHERE id = 'acme'").await;
    db.exec("UPDATE accounts SET seats = NULL WHERE id = 'acme'").await;
    let diffed = |e: &ciosync_emulator::Emulator| {
        attributes(e, "acme")
            .is_some_and(|a| a.get("plan") == Some(&json!("pro")) && !a.contains_key("seats"))
    };
    assert!(wait_for(&emulator, diffed).await, "{:?}", emulator.object("1", "acme"));
    let sent: Vec<Value> = object_items(&emulator)
        .into_iter()
        .filter(|i| i["identifiers"]["object_id"] == "acme")
        .map(|i| i["attributes"].clone())
        .collect();
    assert_eq!(
        sent[1..],
        [json!({"plan": "pro"}), json!({"seats": null})],
        "an update sends only the attribute it changed: {sent:?}"
    );

    db.exec("UPDATE accounts SET deleted_at = now() WHERE id = 'acme'").await;
    db.exec("DELETE FROM accounts WHERE id = 'globex'").await;
    assert!(
        wait_for(&emulator, |e| e.objects().is_empty()).await,
        "soft-deleted and deleted accounts are still objects: {:?}",
        emulator.objects()
    );
    assert!(emulator.customers().is_empty(), "objects are not people: {:?}", emulator.customers());
    daemon.stop().await.unwrap();
    assert_requests_match_the_schema(&emulator);
}
