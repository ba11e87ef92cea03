//! CI's mutation check of a change (issue 27): every mutant cargo-mutants
//! makes on the lines of the core files (`.cargo/mutants.toml`) that the
//! last commit changed must be caught by the unit tests, or be listed with
//! its reason in `docs/mutants.md`. `scripts/mutants.sh --ci` does the work
//! in a copy of the tree (the rest of the suite runs in this one meanwhile),
//! bounded to `CIOSYNC_MUTANTS_CAP` mutants (a share chosen by the commit
//! when there are more, said in its output).
//!
//! It runs in CI (`CI=true`, where `.ci/run` installs cargo-mutants; missing,
//! the test fails), or anywhere with `CIOSYNC_MUTANTS=1`; otherwise it says
//! it skipped. A change that touches no core file has nothing to check.

use std::process::Command;

use crate::support::tools;

#[test]
fn every_mutant_of_the_last_change_is_caught_or_listed() {
    let asked = std::env::var("CIOSYNC_MUTANTS").is_ok_and(|v| v == "1");
    if !tools::in_ci() && !asked {
        tools::skipped(
            "the mutation check of the last change runs in CI (CI=true) or with \
             CIOSYNC_MUTANTS=1 (scripts/mutants.sh --ci)",
        );
        return;
    }
    let present = tools::runs("cargo", &["mutants", "--version"]);
    let install = "cargo install --locked cargo-mutants";
    if !tools::available(present, "cargo-mutants", install, "the mutation check") {
        return;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let out = std::env::temp_dir().join(format!("ciosync-mutants-{}", std::process::id()));
    let output = Command::new("bash")
        .arg(format!("{root}/scripts/mutants.sh"))
        .arg("--ci")
        .env("CIOSYNC_MUTANTS_OUT", &out)
        .env("CIOSYNC_MUTANTS_CAP", std::env::var("CIOSYNC_MUTANTS_CAP").unwrap_or("10".into()))
        .current_dir(root)
        .output()
        .expect("bash runs");
    let _ = std::fs::remove_dir_all(&out);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{text}");
    assert!(output.status.success(), "the mutation check of the last change failed:\n{text}");
    assert!(text.contains("mutants: "), "the script said nothing about what it checked:\n{text}");
}
