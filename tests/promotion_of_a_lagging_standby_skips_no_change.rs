//! The acknowledgement rule across a promotion: without
//! `synchronized_standby_slots` the standby may lack changes ciosync already
//! delivered and acknowledged. Its promoted WAL then reuses those LSNs for
//! new changes, below what ciosync acknowledged on the old primary: resuming
//! from that acknowledgement would skip them. ciosync sees the new timeline
//! and streams from the slot's own (synced) position instead, so every
//! change written on the promoted server arrives.

use crate::failover_slot_survives_a_standby_promotion::wait_for_synced_copy;
use crate::support::daemon::{config_text, InProcess};
use crate::support::emulator::{self, wait_for_customers};
use crate::support::postgres::{TestDb, USERS_TABLE};
use crate::support::standby::Pair;

// Multi-threaded: starting and stopping clusters blocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_on_the_promoted_server_below_the_old_ack_arrive() {
    let newest = ciosync_testkit::throwaway::installations().last().map_or(0, |i| i.major);
    let Some(pair) = Pair::start(newest.max(17), false).await else { return };
    let db = TestDb::on(&pair.primary, "lagging_standby").await;
    db.exec(USERS_TABLE).await;
    db.exec("CREATE TABLE filler (payload text)").await;
    let emulator = emulator::start().await;
    let config = config_text(&pair.url(&db.name), &db.name, &emulator.url(), "");
    // Heartbeats move the slot on while nothing is written, which is what
    // lets the standby's copy of it persist (see `wait_for_synced_copy`).
    let config = config.replacen(
        "status_interval_ms = 200\n",
        "status_interval_ms = 200\nheartbeat_interval_secs = 1\n",
        1,
    );
    let daemon = InProcess::start(&config);
    db.wait_for_streaming().await;
    db.exec("INSERT INTO users (id, email, plan) VALUES (1, 'a@x.io', 'free')").await;
    assert!(wait_for_customers(&emulator, |c| c.contains_key("1")).await);
    let standby = pair.on_standby(&db).await;
    wait_for_synced_copy(&db, &standby, &db.name).await;

    // The standby goes away; the primary writes on, and ciosync delivers
    // and acknowledges well past where the standby stopped.
    let standby_server = pair.standby;
    let standby_server = tokio::task::spawn_blocking(move || {
        standby_server.stop("fast").expect("the standby stops");
        standby_server
    })
    .await
    .unwrap();
    db.exec("INSERT INTO users (id, email, plan) VALUES (2, 'lost@x.io', 'free')").await;
    db.exec("INSERT INTO filler SELECT repeat('x', 500) FROM generate_series(1, 2000)").await;
    let written = db.exec_then_lsn("INSERT INTO users (id, email) VALUES (3, 'gone@x.io')").await;
    assert!(wait_for_customers(&emulator, |c| c.contains_key("3")).await);
    assert!(db.wait_for_confirmed(&db.name, written).await, "ciosync never acknowledged");

    // The primary dies; the standby, which never got those changes, is promoted.
    let primary = pair.primary;
    let promoted = tokio::task::spawn_blocking(move || {
        primary.stop("immediate").expect("the primary stops");
        drop(primary);
        standby_server.restart().expect("the standby starts again");
        standby_server.promote().expect("the standby is promoted");
        standby_server
    })
    .await
    .unwrap();
    let db = standby.reconnected().await;
    let position = db.current_lsn().await;
    assert!(position < written, "the promoted server's WAL is not behind the old ack");

    // New changes, at LSNs below what ciosync acknowledged on the old primary.
    db.exec("UPDATE users SET plan = 'after' WHERE id = 1").await;
    db.exec("INSERT INTO users (id, email, plan) VALUES (4, 'new@x.io', 'team')").await;
    let arrived = wait_for_customers(&emulator, |c| {
        c.get("4").is_some() && c["1"].get("plan") == Some(&serde_json::json!("after"))
    })
    .await;
    assert!(arrived, "changes written on the promoted server were skipped");
    daemon.stop().await.expect("a clean stop");
    drop(promoted);
}
