//! PostgreSQL 15, 16, 17 and 18: the whole suite runs on the newest major
//! installed (see `support::postgres`); this runs the core scenarios again
//! on each other supported major, by running this test binary once more,
//! filtered to them, with `CIOSYNC_PG_BIN` pointing at that major.
//!
//! Majors beyond Debian's come from `scripts/fetch-postgres.sh`, which
//! `.ci/run` runs. In CI a missing major fails; elsewhere it is skipped
//! with a line saying so.

use std::process::Command;
use std::sync::Mutex;

use ciosync_testkit::throwaway::{default_installation, installations, Installation};

use crate::support::tools;

/// The majors ciosync supports (README: "PostgreSQL versions").
pub const SUPPORTED_MAJORS: [u32; 4] = [15, 16, 17, 18];

/// Test-name filters (module prefixes) of the core scenarios: end to end
/// (insert, update, delete, id change, TOAST, identity), initial copy, kill
/// -9, row filters, webhooks, the setup and privileges each major checks
/// differently, slot loss, heartbeats and watermarks (logical messages).
const CORE: [&str; 20] = [
    "identify_on_insert::",
    "update_sends_only_changed_attributes::",
    "delete_deletes_the_customer::",
    "id_change_merges_the_old_customer::",
    "unchanged_toast_is_not_sent::",
    "default_identity_sends_every_mapped_attribute::",
    "partitioned_table_is_synced_via_its_root::",
    "initial_copy_identifies_existing_users::",
    "initial_copy_survives_kill_9::",
    "kill_9_and_restart_loses_nothing::",
    "sync_filter_syncs_only_matching_rows::",
    "sync_filter_comparison_follows_postgres::",
    "sync_filter_outside_the_replica_identity_is_refused::",
    "webhooks_store_each_event_once::",
    "webhooks_write_back_without_echo::",
    "check_reports_what_to_fix::",
    "least_privilege_role_runs_everything::",
    "lost_slot_is_never_recreated_silently::",
    "heartbeats_advance_a_quiet_slot::",
    "backfill_yields_to_newer_changes::",
];

/// The installation of `major`, or `None` when the test should skip.
fn installed(major: u32) -> Option<Installation> {
    let found = installations().into_iter().find(|i| i.major == major);
    let install =
        if major == 15 { "apt-get install postgresql" } else { "scripts/fetch-postgres.sh" };
    let what = format!("the core scenarios on PostgreSQL {major}");
    tools::available(found.is_some(), &format!("PostgreSQL {major}"), install, &what)
        .then_some(found)
        .flatten()
}

/// One major at a time: each run is a whole test binary with its own
/// cluster, beside the rest of the suite.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn core_scenarios_on(major: u32) {
    let Some(installation) = installed(major) else { return };
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let newest = default_installation().expect("a PostgreSQL installation");
    if newest.bin == installation.bin {
        eprintln!("PostgreSQL {major} runs the whole suite; the core scenarios are part of it");
        return;
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args(CORE)
        .env("CIOSYNC_PG_BIN", &installation.bin)
        .output()
        .expect("run the test binary again");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "core scenarios failed on PostgreSQL {}:\n{stdout}\n{stderr}",
        installation.version
    );
    let passed: Vec<&str> =
        stdout.lines().filter_map(|l| l.strip_prefix("test ")?.strip_suffix(" ... ok")).collect();
    // Each filter matched a test that passed: a renamed file must not
    // silently drop out of the matrix.
    for filter in CORE {
        assert!(
            passed.iter().any(|name| name.starts_with(filter)),
            "no test matching {filter} passed on PostgreSQL {}:\n{stdout}",
            installation.version
        );
    }
    let ran_on = format!("tests run on PostgreSQL {} (", installation.version);
    assert!(stderr.contains(&ran_on), "the tests did not say they ran on it:\n{stderr}");
    eprintln!("PostgreSQL {}: {} core tests passed", installation.version, passed.len());
}

#[test]
fn core_scenarios_pass_on_postgres_15() {
    core_scenarios_on(15);
}

#[test]
fn core_scenarios_pass_on_postgres_16() {
    core_scenarios_on(16);
}

#[test]
fn core_scenarios_pass_on_postgres_17() {
    core_scenarios_on(17);
}

#[test]
fn core_scenarios_pass_on_postgres_18() {
    core_scenarios_on(18);
}

/// The README's version table, `scripts/fetch-postgres.sh`'s pins and the
/// tests above name the same majors.
#[test]
fn the_readme_and_the_fetch_script_name_the_supported_majors() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let table = readme.split("#### PostgreSQL versions").nth(1).expect("the versions section");
    let mut listed: Vec<u32> = table
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| l.split('|').nth(1)?.trim().parse().ok())
        .collect();
    listed.sort();
    assert_eq!(listed, SUPPORTED_MAJORS, "README.md's PostgreSQL versions table");
    let script = std::fs::read_to_string(root.join("scripts/fetch-postgres.sh")).unwrap();
    for major in SUPPORTED_MAJORS.iter().filter(|m| **m > 15) {
        assert!(script.contains(&format!("[{major}]=")), "fetch-postgres.sh pins no {major}");
    }
}
