//! A daemon restart resumes an unfinished backfill from its last delivered
//! key instead of starting over or forgetting it.

use crate::backfill_yields_to_newer_changes::{backfill_state, wait_for_backfill};
use crate::support::daemon::{config_file, run_binary, InProcess};
use crate::support::emulator::{identifies_of, wait_for};
use crate::support::postgres::USERS_TABLE;
use crate::support::{customers_match_rows, Scenario};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_an_unfinished_backfill() {
    let schema = format!(
        "{USERS_TABLE} INSERT INTO users (id, email, plan)
         SELECT g, 'u' || g || '@x.io', 'free' FROM generate_series(1, 6000) g;
         CREATE FUNCTION slowly() RETURNS boolean LANGUAGE sql VOLATILE
             AS 'SELECT pg_sleep(0.0005); SELECT true';"
    );
    let Scenario { db, emulator, daemon } =
        Scenario::start_with("backfill_resume", &schema, |c| c).await;
    assert!(customers_match_rows(&db, &emulator).await);
    let text = db.config(&emulator.url(), "");
    let config = config_file(&text);
    // Ignoring the record, so every row is sent and the emulator can tell
    // which were sent twice.
    let args = ["backfill", "--detach", "--ignore-record", "--where", "slowly()"];
    let out = run_binary(&args, config.path()).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id: i64 =
        db.client.query_one("SELECT max(id) FROM ciosync.backfills", &[]).await.unwrap().get(0);

    let deadline = tokio::time::Instant::now() + crate::support::CONVERGE;
    while backfill_state(&db, id).await.1 < 1000 {
        assert!(tokio::time::Instant::now() < deadline, "the backfill made no progress");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    daemon.stop().await.unwrap();
    let (state, done_before) = backfill_state(&db, id).await;
    assert_eq!(state, "running", "stopped before it finished");
    assert!(done_before < 6000);

    let daemon = InProcess::start(&text);
    assert!(wait_for_backfill(&db, id, "done").await, "the backfill was not resumed");
    assert_eq!(backfill_state(&db, id).await.1, 6000);
    // Row 1 went out with the initial copy and once with the backfill's first
    // chunk; the resumed run did not send it again.
    assert!(wait_for(&emulator, |e| identifies_of(e, "6000").len() == 2).await);
    assert_eq!(identifies_of(&emulator, "1").len(), 2);
    daemon.stop().await.unwrap();
}
