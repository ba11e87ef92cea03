//! `dlq retry` of a letter whose key no row can have is settled as one
//! whose row is gone, never stopping the command: a key holding a NUL (a
//! letter naming a NUL is stored escaped, its payload decoding to the NUL;
//! no Postgres text holds one, and the client refuses a query holding one)
//! and a key that is no value of its column's type (`abc` against a
//! `bigint` id: Postgres refuses the cast, SQLSTATE class 22). Before, the
//! NUL stopped `dlq retry --all` at that letter (exit 1) every time, and
//! every later letter waited. A removal naming a NUL is sent (no row can
//! have brought it back) without touching the record, which holds none.

use serde_json::json;

use crate::dlq_retry_removes_nothing_another_table_keeps::{letter, setup};
use crate::support::daemon::{config_file, run_binary};
use crate::support::dead_letters::{rows, store, texts};
use crate::support::emulator::batch_items;

const GONE: &str = "skipped: the row is gone or no longer syncs";

#[tokio::test]
async fn letters_whose_key_no_row_can_have_are_skipped() {
    let (db, emulator, text) = setup("dlq_impossible_keys").await;
    let object = |id: &str| {
        json!({"type": "object", "identifiers": {"object_type_id": "1", "object_id": id},
               "action": "identify", "attributes": {"name": "N"}})
    };
    let person = |id: &str| {
        json!({"type": "person", "action": "identify", "identifiers": {"id": id},
               "timestamp": 1_700_000_000, "attributes": {"plan": "old"}})
    };
    let related = json!({"type": "person", "identifiers": {"id": "4\u{0}2"},
                         "action": "add_relationships",
                         "cio_relationships": [{"identifiers": {"object_type_id": "1",
                                                                "object_id": "acme"},
                                                "relationship_attributes": {"role": "x"}}]});
    let device = json!({"type": "person", "identifiers": {"id": "7"}, "action": "add_device",
                        "device": {"token": "t\u{0}", "platform": "ios"}});
    let removal = json!({"type": "person", "action": "delete", "identifiers": {"id": "9\u{0}"}});
    let letters = [
        letter("identify", "abc", &["plan"], person("abc")),
        letter("object_identify", "object 1/ac\u{0}me", &["name"], object("ac\u{0}me")),
        letter("identify", "7\u{0}", &["plan"], person("7\u{0}")),
        letter("add_relationship", "4\u{0}2", &[], related),
        letter("add_device", "7\u{0}", &[], device),
        letter("delete", "9\u{0}", &[], removal),
        // A letter after them is replayed too.
        letter("identify", "7", &["plan"], person("7")),
    ];
    store(&text).record(&letters).await.unwrap();
    // Postgres refuses a NUL in a text column: the store keeps such a
    // letter escaped, its payload as it was sent (NULs and all).
    let stored = rows(&db).await;
    let escaped = stored.iter().filter(|r| r.error.contains("stored escaped")).count();
    assert_eq!(escaped, 5, "{stored:?}");
    let ids: Vec<i64> = stored.iter().map(|r| r.id).collect();

    let config = config_file(&text);
    let out = run_binary(&["dlq", "retry", "--all"], config.path()).await;
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.starts_with(
            "retried 7: delivered 1, refreshed from the row 1, skipped 5, refused again 0\n"
        ),
        "{stdout}"
    );
    for id in &ids[..5] {
        assert!(stdout.contains(&format!("#{id} {GONE}")), "#{id}: {stdout}");
    }
    assert!(rows(&db).await.is_empty(), "every letter settled");
    let sent = batch_items(&emulator);
    let actions: Vec<String> = sent.iter().map(|i| i["action"].to_string()).collect();
    assert_eq!(actions, [r#""delete""#, r#""identify""#], "{sent:?}");
    assert_eq!(sent[1]["attributes"]["plan"], "pro");
}
