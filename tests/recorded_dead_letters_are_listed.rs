//! What `DeadLetterStore::record` writes, `dlq list` shows: for this slot
//! only, with the attribute names, status, error and attempts, and without
//! the payload (attribute values) unless `--payload` asks for it.

use serde_json::{json, Value};

use crate::support::daemon::{config_file, run_binary};
use crate::support::dead_letters::{
    assert_no_secrets, config_with_password, delete, identify, store, texts,
};
use crate::support::postgres::TestDb;

#[tokio::test]
async fn recorded_letters_are_listed_with_names_and_without_values() {
    let db = TestDb::new("dlq_list").await;
    let text = config_with_password(&db, "http://127.0.0.1:9");
    let config = config_file(&text);

    let empty = run_binary(&["dlq", "list"], config.path()).await;
    let (stdout, stderr) = texts(&empty);
    assert!(empty.status.success(), "{stderr}");
    assert_eq!(stdout, format!("no dead letters for slot {}\n", db.name));
    let empty = run_binary(&["dlq", "list", "--json"], config.path()).await;
    let (stdout, stderr) = texts(&empty);
    assert!(empty.status.success() && stdout.is_empty(), "{stdout}{stderr}");
    assert!(stderr.contains("no dead letters"), "{stderr}");

    let mut refused = identify("42", json!({"email": "value-a@x.io", "plan": "value-pro"}));
    refused.status = 207;
    refused.error = "value for attribute 'plan' cannot be longer than 1000 bytes".to_owned();
    refused.attempts = 3;
    let deleted = delete("43");
    store(&text).record(&[refused.clone(), deleted.clone()]).await.unwrap();
    // Another slot's letter in the same database is not this config's.
    store(&text.replace(&format!("slot = \"{}\"", db.name), "slot = \"other_slot\""))
        .record(&[identify("99", json!({"plan": "value-other"}))])
        .await
        .unwrap();

    let listed = run_binary(&["dlq", "list", "--json"], config.path()).await;
    let (stdout, stderr) = texts(&listed);
    assert!(listed.status.success(), "{stderr}");
    assert_no_secrets(&listed, &[]);
    assert!(!stdout.contains("value-"), "attribute values were listed: {stdout}");
    let lines: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    let keys = [
        "attempts",
        "attributes",
        "customer_id",
        "error",
        "first_attempt_at",
        "id",
        "last_attempt_at",
        "operation",
        "status",
    ];
    for line in &lines {
        let mut found: Vec<&str> = line.as_object().unwrap().keys().map(String::as_str).collect();
        found.sort_unstable();
        assert_eq!(found, keys, "{line}");
    }
    let view = |l: &Value| {
        json!([
            l["customer_id"],
            l["operation"],
            l["attributes"],
            l["status"],
            l["error"],
            l["attempts"]
        ])
    };
    assert_eq!(
        view(&lines[0]),
        json!(["42", "identify", ["email", "plan"], 207, refused.error, 3])
    );
    assert_eq!(view(&lines[1]), json!(["43", "delete", [], 400, "refused in the test", 1]));

    let with_payload = run_binary(&["dlq", "list", "--json", "--payload"], config.path()).await;
    let (stdout, stderr) = texts(&with_payload);
    assert!(with_payload.status.success(), "{stderr}");
    let payloads: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["payload"].clone())
        .collect();
    let sent = |payload: &[u8]| serde_json::from_slice::<Value>(payload).unwrap();
    assert_eq!(payloads, [sent(&refused.payload), sent(&deleted.payload)]);

    let table = run_binary(&["dlq", "list"], config.path()).await;
    let (stdout, stderr) = texts(&table);
    assert!(table.status.success(), "{stderr}");
    assert_no_secrets(&table, &[]);
    let rows: Vec<&str> = stdout.lines().collect();
    assert_eq!(rows.len(), 3, "{stdout}");
    assert!(rows[0].starts_with("ID ") && rows[0].ends_with("ERROR"), "{stdout}");
    for expected in ["42", "identify", "email,plan", "207", &refused.error] {
        assert!(rows[1].contains(expected), "{expected} missing from: {stdout}");
    }
    assert!(!stdout.contains("value-") && !stdout.contains("99"), "{stdout}");
}
