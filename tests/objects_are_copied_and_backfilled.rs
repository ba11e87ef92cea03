//! Accounts and memberships that exist before the first start reach
//! Customer.io by the initial copy; after Customer.io lost them, `ciosync
//! backfill` (every table: people, then objects, then relationships) sends
//! them again, memberships paged by person and object.

use crate::objects_are_created_diffed_and_deleted::{ACCOUNTS, OBJECTS};
use crate::objects_survive_kill_9::{held, rows};
use crate::relationships_follow_memberships::{MEMBERSHIPS, RELATIONSHIPS};
use crate::support::daemon::{config_file, run_binary};
use crate::support::emulator::wait_for;
use crate::support::Scenario;

#[tokio::test]
async fn objects_and_relationships_are_copied_and_backfilled() {
    let schema = format!(
        "{ACCOUNTS}{MEMBERSHIPS}
         INSERT INTO users (id, email) SELECT g, 'u' || g || '@x.io' FROM generate_series(1, 100) g;
         INSERT INTO accounts (id, name, plan) SELECT 'a' || g, 'Account ' || g, 'free'
             FROM generate_series(1, 30) g;
         INSERT INTO memberships (user_id, account_id, role)
             SELECT g, 'a' || (g % 30 + 1), 'member' FROM generate_series(1, 100) g
             UNION ALL SELECT g, 'a' || ((g + 7) % 30 + 1), 'admin' FROM generate_series(1, 100) g
             UNION ALL SELECT g, 'a' || ((g + 13) % 30 + 1), 'owner'
                 FROM generate_series(1, 100, 2) g;"
    );
    let Scenario { db, emulator, daemon } =
        Scenario::start_with("objects_copied", &schema, |c| c + OBJECTS + RELATIONSHIPS).await;
    let users: Vec<String> = (1..=100).map(|u| u.to_string()).collect();
    let wanted = rows(&db).await;
    assert_eq!((wanted.0.len(), wanted.1.len()), (30, 250));
    assert!(
        wait_for(&emulator, |e| held(e, &users) == wanted).await,
        "the initial copy did not bring every account and membership: {} objects, {} \
         relationships",
        held(&emulator, &users).0.len(),
        held(&emulator, &users).1.len()
    );

    emulator.reset();
    let config = config_file(&(db.config(&emulator.url(), "") + OBJECTS + RELATIONSHIPS));
    let out = run_binary(&["backfill", "--ignore-record"], config.path()).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let (objects, relationships) = held(&emulator, &users);
    assert_eq!(objects, wanted.0, "the backfill did not bring every account back");
    let missing: Vec<_> = wanted.1.difference(&relationships).collect();
    assert!(missing.is_empty(), "the backfill left out memberships: {missing:?}");
    assert_eq!(relationships, wanted.1);
    daemon.stop().await.unwrap();
}

/// Memberships whose account is NULL (pending invites) sort among the rows
/// of a two-column key: they are not read, and do not cut a page short,
/// which would end the copy before the rows after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memberships_without_an_account_do_not_end_the_copy_early() {
    let schema = format!(
        "{ACCOUNTS}{MEMBERSHIPS}
         INSERT INTO users (id, email) SELECT g, 'u' || g || '@x.io' FROM generate_series(1, 600) g;
         INSERT INTO accounts (id, name, plan) VALUES ('a1', 'One', 'free'), ('a2', 'Two', 'pro');
         INSERT INTO memberships (user_id, account_id, role)
             SELECT g, a, 'member' FROM generate_series(1, 600) g, (VALUES ('a1'), ('a2')) v(a)
             UNION ALL SELECT g, NULL, 'invited' FROM generate_series(3, 600, 3) g;"
    );
    let Scenario { db, emulator, daemon } =
        Scenario::start_with("objects_null_keys", &schema, |c| c + OBJECTS + RELATIONSHIPS).await;
    let users: Vec<String> = (1..=600).map(|u| u.to_string()).collect();
    let mut wanted = rows_with_accounts(&db).await;
    assert_eq!(wanted.len(), 1200);
    let copied = wait_for(&emulator, |e| held(e, &users).1 == wanted).await;
    let held_now = held(&emulator, &users).1;
    wanted.retain(|w| !held_now.contains(w));
    assert!(copied, "the copy left out {} memberships, e.g. {:?}", wanted.len(), wanted.first());
    daemon.stop().await.unwrap();
}

async fn rows_with_accounts(
    db: &crate::support::postgres::TestDb,
) -> crate::objects_survive_kill_9::Triples {
    db.client
        .query(
            "SELECT user_id::text, account_id, role FROM memberships WHERE account_id IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}
