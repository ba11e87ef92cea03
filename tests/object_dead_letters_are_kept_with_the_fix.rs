//! An object Customer.io refuses for good (a 400, for the batch and then
//! for the object alone) is dead-lettered, named readably and by kind, and
//! the daemon goes on; `dlq retry` does not
//! send it as it was (its row may have changed) but keeps it, saying to
//! backfill the table.

use ciosync_emulator::Faults;
use serde_json::json;

use crate::objects_are_created_diffed_and_deleted::ACCOUNTS;
use crate::support::daemon::{config_file, run_binary};
use crate::support::dead_letters::{rows, texts};
use crate::support::emulator::wait_for;
use crate::support::Scenario;

const OBJECTS: &str = r#"
[[objects]]
table = "public.accounts"
object_type_id = "1"
id_column = "id"

[objects.attributes]
name = "name"
"#;

#[tokio::test]
async fn object_dead_letters_are_kept_with_the_fix() {
    let Scenario { db, emulator, daemon } =
        Scenario::start_with("object_letters", ACCOUNTS, |c| c + OBJECTS).await;
    // A single item's batch refused with a 400 is that item's refusal.
    emulator.set_faults(Faults { fail_next: 1, fail_status: 400, ..Faults::default() });
    db.exec("INSERT INTO accounts (id, name, plan) VALUES ('acme', 'Acme', 'free')").await;
    let mut letters = Vec::new();
    for _ in 0..300 {
        letters = rows(&db).await;
        if !letters.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    db.exec("INSERT INTO users (id, email) VALUES (1, 'a@x.io')").await;
    assert!(wait_for(&emulator, |e| e.customer("1").is_some()).await, "the daemon stopped");
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!((letters[0].customer_id.as_str(), letters[0].status), ("object 1/acme", 400));
    let operation: String = db
        .client
        .query_one("SELECT operation FROM ciosync.dead_letters", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(operation, "object_identify");
    assert!(emulator.objects().is_empty(), "{:?}", emulator.objects());

    let config = config_file(&(db.config(&emulator.url(), "") + OBJECTS));
    emulator.clear_requests();
    let out = run_binary(&["dlq", "retry", "--all"], config.path()).await;
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("backfill --table"), "{stdout}");
    let kept = rows(&db).await;
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].error.contains("is not replayed"), "{kept:?}");
    let sent = emulator.requests().iter().filter(|r| r.path == "/api/v2/batch").count();
    assert_eq!(sent, 0, "the letter was sent as it was");
    assert_eq!(emulator.customer("1").unwrap().get("email"), Some(&json!("a@x.io")));
    daemon.stop().await.unwrap();
}
