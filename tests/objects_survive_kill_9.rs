//! `kill -9` of the daemon while a transaction of accounts and memberships
//! is part delivered, changes of both while it is down, a restart: every
//! account ends an object equal to its row, and every person's
//! relationships equal their memberships.

use std::collections::BTreeSet;

use ciosync_emulator::{Emulator, Faults};

use crate::objects_are_created_diffed_and_deleted::{ACCOUNTS, OBJECTS};
use crate::relationships_follow_memberships::{MEMBERSHIPS, RELATIONSHIPS};
use crate::support::daemon::{config_file, signal, spawn_binary};
use crate::support::emulator::{self, wait_for};
use crate::support::postgres::TestDb;

/// Accounts as (id, name, plan), memberships as (user, account, role).
pub type Triples = BTreeSet<(String, String, String)>;

/// What the rows say: each account's (id, name, plan), each membership's
/// (user, account, role).
pub async fn rows(db: &TestDb) -> (Triples, Triples) {
    let accounts = db
        .client
        .query("SELECT id, name, plan FROM accounts", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let memberships = db
        .client
        .query("SELECT user_id::text, account_id, role FROM memberships", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    (accounts, memberships)
}

/// What Customer.io holds, in the same form.
pub fn held(e: &Emulator, users: &[String]) -> (Triples, Triples) {
    let text = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).unwrap_or("?").to_owned();
    let objects = e
        .objects()
        .into_iter()
        .map(|o| (o.object_id, text(o.attributes.get("name")), text(o.attributes.get("plan"))))
        .collect();
    let relationships = users
        .iter()
        .flat_map(|user| {
            e.relationships(user)
                .unwrap_or_default()
                .into_iter()
                .map(move |r| (user.clone(), r.object_id, text(r.attributes.get("role"))))
        })
        .collect();
    (objects, relationships)
}

#[tokio::test]
async fn objects_and_relationships_survive_kill_9() {
    let db = TestDb::new("objects_kill9").await;
    db.exec(&format!("{ACCOUNTS}{MEMBERSHIPS}")).await;
    let emulator = emulator::start().await;
    let base = db.config(&emulator.url(), "") + OBJECTS + RELATIONSHIPS;
    let text = base.replacen(
        "linger_ms = 0\n",
        "linger_ms = 0\nmax_batch_ops = 50\nmax_in_flight = 1\nmax_requests_per_second = 2\n",
        1,
    );
    let config = config_file(&text);
    let logs = tempfile::tempdir().unwrap();
    let log = |n: &str| logs.path().join(n);
    let mut daemon = spawn_binary(config.path(), &log("1.log"));
    db.wait_for_streaming().await;

    let committed = db
        .exec_then_lsn(
            "BEGIN;
             INSERT INTO users (id, email) SELECT g, 'u' || g || '@x.io' FROM generate_series(1, 100) g;
             INSERT INTO accounts (id, name, plan) SELECT 'a' || g, 'Account ' || g, 'free'
                 FROM generate_series(1, 50) g;
             INSERT INTO memberships (user_id, account_id, role)
                 SELECT g, 'a' || (g % 50 + 1), 'member' FROM generate_series(1, 100) g;
             INSERT INTO memberships (user_id, account_id, role)
                 SELECT g, 'a' || ((g + 7) % 50 + 1), 'admin' FROM generate_series(1, 100, 3) g;
             COMMIT;",
        )
        .await;
    assert!(wait_for(&emulator, |e| !e.customers().is_empty()).await);
    emulator.set_faults(Faults { fail_next: u32::MAX, ..Faults::default() });
    let failed = |e: &Emulator| {
        e.requests().iter().filter(|r| r.path == "/api/v2/batch" && r.status == 500).count()
    };
    assert!(wait_for(&emulator, |e| failed(e) >= 2).await, "no request failed");
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let confirmed = db.confirmed_flush(&db.name).await;
    assert!(confirmed < committed, "acknowledged past a transaction not delivered");
    signal(&daemon, "KILL");
    daemon.wait().unwrap();
    emulator.set_faults(Faults::default());

    db.exec("UPDATE accounts SET plan = 'pro' WHERE right(id, 1) IN ('1', '4', '7')").await;
    db.exec("UPDATE memberships SET role = 'owner' WHERE id % 5 = 0").await;
    db.exec("UPDATE memberships SET account_id = 'a1' WHERE id % 11 = 0 AND account_id <> 'a1'")
        .await;
    db.exec("DELETE FROM memberships WHERE id % 7 = 0").await;

    let restarted = config_file(&base);
    let mut daemon = spawn_binary(restarted.path(), &log("2.log"));
    let users: Vec<String> = (1..=100).map(|u| u.to_string()).collect();
    let wanted = rows(&db).await;
    let converged = wait_for(&emulator, |e| held(e, &users) == wanted).await;
    signal(&daemon, "TERM");
    assert!(daemon.wait().unwrap().success());
    if !converged {
        for name in ["1.log", "2.log"] {
            eprintln!("--- {name}\n{}", std::fs::read_to_string(log(name)).unwrap_or_default());
        }
        let (objects, relationships) = held(&emulator, &users);
        let missing: Vec<_> = wanted.1.difference(&relationships).collect();
        let extra: Vec<_> = relationships.difference(&wanted.1).collect();
        panic!(
            "Customer.io differs from the rows after kill -9: objects equal: {}; relationships \
             missing {missing:?}, extra {extra:?}",
            objects == wanted.0
        );
    }
}
