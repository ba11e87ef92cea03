//! A Postgres error that no retry fixes (a missing table) stops `run` with
//! exit 1 and a message naming the problem, instead of retrying forever.

use crate::support::daemon::{config_file, run_binary};
use crate::support::postgres::TestDb;

#[tokio::test]
async fn a_missing_table_stops_run_with_exit_1() {
    let db = TestDb::new("missing_table").await;
    let file = config_file(&db.config("http://127.0.0.1:9", ""));
    let output = run_binary(&["run", "--log-format", "text"], file.path()).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("relation \"public.users\" does not exist"), "{stderr}");
}

#[tokio::test]
async fn a_publication_that_would_lose_changes_stops_run_with_the_fix() {
    let db = TestDb::new("bad_publication").await;
    db.exec(crate::support::postgres::USERS_TABLE).await;
    db.exec(&format!("CREATE PUBLICATION {} FOR TABLE users WITH (publish = 'insert')", db.name))
        .await;
    let file = config_file(&db.config("http://127.0.0.1:9", ""));
    let output = run_binary(&["run", "--log-format", "text"], file.path()).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("does not publish every INSERT, UPDATE and DELETE"), "{stderr}");
    assert!(stderr.contains("ALTER PUBLICATION"), "{stderr}");
}
