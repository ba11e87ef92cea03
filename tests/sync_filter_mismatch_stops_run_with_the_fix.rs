//! A publication whose row filter is not the config's (one where the config
//! has none, none where it has one, or another expression) stops `run` with
//! exit 1 before anything is created or sent, naming the table and printing
//! the SQL that fixes it; after that SQL, the daemon starts. (With the
//! record of what Customer.io accepted on, a publication that carries no
//! filter is no misfit: ciosync evaluates the filter itself, see
//! `sync_filter_syncs_only_matching_rows`.)

use crate::support::daemon::{config_file, run_binary, InProcess};
use crate::support::emulator;
use crate::support::postgres::TestDb;
use crate::sync_filter_syncs_only_matching_rows::{config_with_filter, FILTERED_USERS};

const FILTER: &str = "email_verified AND NOT is_staff";

#[tokio::test]
async fn a_publication_with_another_row_filter_stops_run_with_the_fix() {
    let db = TestDb::new("sync_filter_mismatch").await;
    db.exec(FILTERED_USERS).await;
    db.exec("INSERT INTO users (id, email, email_verified) VALUES (1, 'a@x.io', true)").await;
    let emulator = emulator::start().await;
    let filtered = config_with_filter(&db, &emulator.url(), FILTER);
    let unfiltered = db.config(&emulator.url(), "");
    let filtered_unrecorded = format!("{filtered}\n[pipeline]\nrecord_accepted = false\n");
    let publication = &db.name;
    let cases = [
        ("WHERE (email_verified)", &filtered, "not with sync[0].filter"),
        ("", &filtered_unrecorded, "publishes every row of public.users but sync[0].filter"),
        ("WHERE (email_verified AND NOT is_staff)", &unfiltered, "but sync[0] has no filter"),
    ];
    for (published, config, expected) in cases {
        db.exec(&format!(
            "DROP PUBLICATION IF EXISTS {publication};
             CREATE PUBLICATION {publication} FOR TABLE users {published}"
        ))
        .await;
        let file = config_file(config);
        let output = run_binary(&["run", "--log-format", "text"], file.path()).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(expected), "expected {expected:?} in: {stderr}");
        assert!(
            stderr.contains(&format!(
                "ALTER PUBLICATION \"{publication}\" DROP TABLE \"public\".\"users\""
            )),
            "{stderr}"
        );
        assert_eq!(db.created_objects().await, (0, 1), "run created a slot");
        assert!(emulator.requests().is_empty(), "run sent something");
    }

    // The printed SQL makes the publication fit: `run` gets past it and
    // creates its slot.
    db.exec(&format!(
        "DROP PUBLICATION {publication}; CREATE PUBLICATION {publication} FOR TABLE users"
    ))
    .await;
    let file = config_file(&filtered_unrecorded);
    let output = run_binary(&["run", "--log-format", "text"], file.path()).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let fix = stderr.split(": run ").nth(1).expect("a fix").lines().next().unwrap();
    db.exec(fix).await;
    let daemon = InProcess::start(&filtered_unrecorded);
    db.wait_for_streaming().await;
    assert!(emulator::wait_for_customers(&emulator, |c| c.contains_key("1")).await);
    daemon.stop().await.unwrap();
}
