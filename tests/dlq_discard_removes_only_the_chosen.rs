//! `dlq discard --id N` removes exactly that letter and `--all` the rest;
//! an unknown id changes nothing (exit 1); `retry` or `discard` without
//! `--id` or `--all` is bad usage (exit 2) and changes nothing.

use serde_json::json;

use crate::support::daemon::{config_file, run_binary};
use crate::support::dead_letters::{
    assert_no_secrets, config_with_password, delete, identify, rows, store, texts,
};
use crate::support::postgres::TestDb;

#[tokio::test]
async fn discard_removes_exactly_the_chosen_letters() {
    let db = TestDb::new("dlq_discard").await;
    let text = config_with_password(&db, "http://127.0.0.1:9");
    let config = config_file(&text);
    store(&text)
        .record(&[identify("1", json!({"plan": "pro"})), delete("2"), delete("3")])
        .await
        .unwrap();
    let before = rows(&db).await;

    for command in ["retry", "discard"] {
        let out = run_binary(&["dlq", command], config.path()).await;
        let (_, stderr) = texts(&out);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        assert!(stderr.contains("--id N") && stderr.contains("--all"), "{stderr}");
        assert_no_secrets(&out, &[]);
    }
    let unknown = run_binary(&["dlq", "discard", "--id", "999999"], config.path()).await;
    let (_, stderr) = texts(&unknown);
    assert_eq!(unknown.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no dead letter 999999") && stderr.contains("dlq list"), "{stderr}");
    assert_eq!(rows(&db).await, before, "a refused command changed something");

    let middle = before[1].id.to_string();
    let out = run_binary(&["dlq", "discard", "--id", &middle], config.path()).await;
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, "discarded 1 dead letter\n");
    assert_no_secrets(&out, &[]);
    assert_eq!(rows(&db).await, [before[0].clone(), before[2].clone()]);

    let out = run_binary(&["dlq", "discard", "--all"], config.path()).await;
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, "discarded 2 dead letters\n");
    assert!(rows(&db).await.is_empty());
}
