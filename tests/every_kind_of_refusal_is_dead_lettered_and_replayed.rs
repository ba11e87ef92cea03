//! Every kind of operation the sink sends — identify, delete, suppress,
//! merge, a person event and an anonymous event — refused for good by
//! Customer.io lands in `ciosync.dead_letters` while the other customers'
//! changes keep flowing and the slot moves past the refused change;
//! `dlq list` shows each as what it did, and `dlq retry` replays each by the
//! route it was sent on. Events and suppressions used to be refused by the
//! store itself, which stopped the daemon: on restart it replayed the same
//! refusal and stopped again, holding up every customer (issue 26). Here
//! the daemon runs on and stays ready throughout.

use std::sync::atomic::Ordering;

use ciosync_emulator::Faults;
use serde_json::Value;

use crate::support::daemon::{config_file, run_binary};
use crate::support::dead_letters::{assert_no_secrets, texts};
use crate::support::emulator::wait_for_customers;
use crate::support::endpoint::wait_for_status;
use crate::support::postgres::USERS_TABLE;
use crate::support::Scenario;

const TABLES: &str = "
    CREATE TABLE members (id bigint PRIMARY KEY, email text);
    ALTER TABLE members REPLICA IDENTITY FULL;
    CREATE TABLE activity (id serial PRIMARY KEY, user_id bigint, visitor text, name text);
";

/// `members` suppresses on delete; `activity` rows are events, anonymous
/// when they name no user.
const CONFIG: &str = r#"
[[sync]]
table = "public.members"
id_column = "id"
delete_action = "suppress"

[sync.attributes]
email = "email"

[[events]]
table = "public.activity"
customer_id_column = "user_id"
anonymous_id_column = "visitor"
name_column = "name"
"#;

/// One kind of refusal: `setup` is delivered first, then `change` is
/// refused through `faults`.
struct Case {
    setup: &'static str,
    faults: Faults,
    change: &'static str,
    /// The letter's customer id and operation.
    customer: &'static str,
    operation: &'static str,
    /// How `dlq list` shows the operation.
    listed: &'static str,
}

fn reject_ids(id: &str) -> Faults {
    Faults { reject_ids: vec![id.into()], ..Faults::default() }
}

fn reject_event(name: &str) -> Faults {
    Faults { reject_event_names: vec![name.into()], ..Faults::default() }
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            setup: "",
            faults: reject_ids("11"),
            change: "INSERT INTO users (id, email) VALUES (11, 'u11@x.io')",
            customer: "11",
            operation: "identify",
            listed: "identify",
        },
        Case {
            setup: "INSERT INTO users (id, email) VALUES (12, 'u12@x.io')",
            faults: reject_ids("12"),
            change: "DELETE FROM users WHERE id = 12",
            customer: "12",
            operation: "delete",
            listed: "delete",
        },
        Case {
            setup: "INSERT INTO members (id, email) VALUES (13, 'm13@x.io')",
            faults: reject_ids("13"),
            change: "DELETE FROM members WHERE id = 13",
            customer: "13",
            operation: "suppress",
            listed: "suppress",
        },
        Case {
            setup: "INSERT INTO users (id, email) VALUES (14, 'u14@x.io')",
            faults: reject_ids("14"),
            change: "UPDATE users SET id = 114 WHERE id = 14",
            customer: "114",
            operation: "merge",
            listed: "merge 14 into 114",
        },
        Case {
            setup: "INSERT INTO users (id, email) VALUES (15, 'u15@x.io')",
            faults: reject_event("signed_up"),
            change: "INSERT INTO activity (user_id, name) VALUES (15, 'signed_up')",
            customer: "15",
            operation: "event",
            listed: "event \"signed_up\"",
        },
        Case {
            setup: "",
            faults: reject_event("viewed_pricing"),
            change: "INSERT INTO activity (visitor, name) VALUES ('cookie-16', 'viewed_pricing')",
            customer: "cookie-16",
            operation: "event",
            listed: "anonymous event \"viewed_pricing\"",
        },
    ]
}

#[tokio::test]
async fn every_kind_is_dead_lettered_without_stopping_anyone_and_replayed_by_its_route() {
    let schema = format!("{USERS_TABLE}{TABLES}");
    let Scenario { db, emulator, daemon } =
        Scenario::start_with("dlq_every_kind", &schema, |c| c + CONFIG).await;
    let cases = cases();

    for (i, case) in cases.iter().enumerate() {
        let kind = case.listed;
        if !case.setup.is_empty() {
            let setup = db.exec_then_lsn(case.setup).await;
            assert!(db.wait_for_confirmed(&db.name, setup).await, "{kind}: setup delivered");
        }
        emulator.set_faults(case.faults.clone());
        let refused = db.exec_then_lsn(case.change).await;
        // Another customer's change, committed after the refused one.
        let other = (21 + i).to_string();
        let later = db
            .exec_then_lsn(&format!(
                "INSERT INTO users (id, email) VALUES ({other}, 'o{other}@x.io')"
            ))
            .await;
        assert!(later > refused);
        assert!(
            wait_for_customers(&emulator, |c| c.contains_key(&other)).await,
            "{kind}: the next customer's change was not delivered"
        );
        assert!(
            db.wait_for_confirmed(&db.name, later).await,
            "{kind}: the slot did not move past the refused change ({} < {later})",
            db.confirmed_flush(&db.name).await
        );
        let letters: Vec<String> = db
            .client
            .query(
                "SELECT operation FROM ciosync.dead_letters WHERE customer_id = $1",
                &[&case.customer],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(letters, [case.operation], "{kind}: one dead letter");
    }
    assert_eq!(daemon.counters.ops_dead_lettered.load(Ordering::Relaxed), cases.len() as u64);
    assert!(wait_for_status(&daemon.url("/readyz"), 200).await, "ready throughout");
    daemon.stop().await.expect("the daemon ran on and stops cleanly");

    let config = config_file(&db.config(&emulator.url(), CONFIG));
    let listed = run_binary(&["dlq", "list"], config.path()).await;
    let (stdout, stderr) = texts(&listed);
    assert!(listed.status.success(), "{stderr}");
    assert_no_secrets(&listed, &["u11@x.io", "m13@x.io"]);
    for case in &cases {
        let row = stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(case.customer))
            .unwrap_or_else(|| panic!("{} is not listed:\n{stdout}", case.customer));
        assert!(row.contains(&format!("  {}  ", case.listed)), "{row}");
    }

    // The causes fixed, each letter is replayed by its own route.
    emulator.set_faults(Faults::default());
    emulator.clear_requests();
    let merge_letter: i64 = db
        .client
        .query_one("SELECT id FROM ciosync.dead_letters WHERE operation = 'merge'", &[])
        .await
        .unwrap()
        .get(0);
    let retried = run_binary(&["dlq", "retry", "--all"], config.path()).await;
    let (stdout, stderr) = texts(&retried);
    assert!(retried.status.success(), "{stdout}{stderr}");
    // The identify with the row's current values; the rest as they were
    // (the deleted and suppressed customers have no row again), the
    // merge's primary refreshed from its row after it.
    let left: i64 =
        db.client.query_one("SELECT count(*) FROM ciosync.dead_letters", &[]).await.unwrap().get(0);
    assert_eq!(left, 0);

    let requests = emulator.requests();
    assert!(requests.iter().all(|r| r.status == 200), "{requests:?}");
    let sent = |path: &str| -> Vec<Value> {
        requests.iter().filter(|r| r.path == path).filter_map(|r| r.body.clone()).collect()
    };
    let actions: Vec<Value> =
        sent("/api/v2/batch").iter().map(|b| b["batch"][0]["action"].clone()).collect();
    assert_eq!(actions, ["identify", "delete", "suppress", "merge", "identify", "event"]);
    let anonymous = sent("/api/v1/events");
    assert_eq!(anonymous.len(), 1, "the anonymous event alone, to v1");
    assert_eq!(
        (&anonymous[0]["anonymous_id"], &anonymous[0]["name"]),
        (&Value::from("cookie-16"), &Value::from("viewed_pricing"))
    );

    assert_eq!(emulator.customer("11").unwrap()["email"], "u11@x.io");
    assert!(emulator.customer("12").is_none(), "deleted");
    assert!(emulator.view(|v| v.world().suppressed().any(|s| s == "id:13")), "suppressed");
    assert!(emulator.customer("14").is_none() && emulator.customer("114").is_some(), "merged");
    // The email went to 114 after the merge, refused while 14 still had it:
    // the refresh after the replayed merge brings it.
    assert_eq!(emulator.customer("114").unwrap()["email"], "u14@x.io");
    let events: Vec<String> = emulator.events("15").into_iter().map(|e| e.name).collect();
    assert_eq!(events, ["signed_up"]);
    let anonymous = emulator.view(|v| v.world().anonymous_events().to_vec());
    assert_eq!(anonymous.len(), 1);
    assert_eq!(anonymous[0].anonymous_id.as_deref(), Some("cookie-16"));
    assert_eq!(
        stdout,
        format!(
            "retried 6: delivered 5, refreshed from the row 1, skipped 0, refused again 0\n  \
             #{merge_letter} sent as it was refused: a merge; then its primary was refreshed \
             from the row\n"
        )
    );
}
