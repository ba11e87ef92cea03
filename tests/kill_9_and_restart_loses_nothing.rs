//! `kill -9` of the daemon while part of a transaction is delivered and the
//! rest is not, changes written while it is down, a restart: nothing past
//! the undelivered part was acknowledged, and every customer ends equal to
//! its row.

use ciosync_emulator::Faults;

use crate::support::customers_match_rows;
use crate::support::daemon::{config_file, signal, spawn_binary};
use crate::support::emulator::{self, wait_for, wait_for_customers};
use crate::support::postgres::{TestDb, USERS_TABLE};

#[tokio::test]
async fn kill_9_with_writes_while_down_then_restart_converges() {
    let db = TestDb::new("kill9").await;
    db.exec(USERS_TABLE).await;
    let emulator = emulator::start().await;
    // One request of 50 customers a second, one at a time: the 300 rows of
    // one transaction take six requests, so the test can stop Customer.io
    // after the first.
    let text = db.config(&emulator.url(), "").replacen(
        "linger_ms = 0\n",
        "linger_ms = 0\nmax_batch_ops = 50\nmax_in_flight = 1\nmax_requests_per_second = 1\n",
        1,
    );
    let config = config_file(&text);
    let logs = tempfile::tempdir().unwrap();
    let mut daemon = spawn_binary(config.path(), &logs.path().join("1.log"));
    db.wait_for_streaming().await;

    let committed = db
        .exec_then_lsn(
            "INSERT INTO users (id, email, plan) \
             SELECT g, 'u' || g || '@x.io', 'free' FROM generate_series(1, 300) g",
        )
        .await;
    assert!(wait_for_customers(&emulator, |c| !c.is_empty()).await);
    // From the next request on Customer.io fails, so the transaction stays
    // part delivered. Wait until the daemon has tried and failed twice, and
    // for a few status intervals, before looking at the slot.
    emulator.set_faults(Faults { fail_next: u32::MAX, ..Faults::default() });
    let failed = |e: &ciosync_emulator::Emulator| {
        e.requests().iter().filter(|r| r.path == "/api/v2/batch" && r.status == 500).count()
    };
    assert!(wait_for(&emulator, |e| failed(e) >= 2).await, "no request failed");
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let delivered = emulator.customers().len();
    assert!(delivered < 300, "all 300 were delivered before the kill: nothing was at stake");
    let confirmed = db.confirmed_flush(&db.name).await;
    assert!(
        confirmed < committed,
        "the slot was acknowledged to {confirmed}, at or past the commit ending at {committed}, \
         with only {delivered} of its 300 customers delivered"
    );
    signal(&daemon, "KILL");
    daemon.wait().unwrap();
    emulator.set_faults(Faults::default());

    db.exec("UPDATE users SET plan = 'pro' WHERE id % 3 = 0").await;
    db.exec("DELETE FROM users WHERE id % 10 = 0").await;
    db.exec("INSERT INTO users (id, email, plan) VALUES (1000, 'late@x.io', 'team')").await;

    let restarted = db.config(&emulator.url(), "");
    let restarted = config_file(&restarted);
    let mut daemon = spawn_binary(restarted.path(), &logs.path().join("2.log"));
    let converged = customers_match_rows(&db, &emulator).await;
    signal(&daemon, "TERM");
    assert!(daemon.wait().unwrap().success());
    assert!(converged, "customers differ from rows after kill -9 and restart");
}
