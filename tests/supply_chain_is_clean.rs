//! `cargo deny check licenses bans sources` is clean: every dependency under
//! a permissive license, no wildcard versions, only crates.io (`deny.toml`).
//! `.ci/run` installs cargo-deny and CI fails without it; elsewhere the test
//! says it skipped.
//! Not `--offline`: cargo-deny reads every platform's dependencies, which
//! a build for this one has not downloaded. Advisories need the RustSec
//! database from GitHub, which CI here cannot reach.

use crate::support::tools;

#[test]
fn cargo_deny_licenses_bans_and_sources_are_clean() {
    let present = tools::runs("cargo", &["deny", "--version"]);
    if !tools::available(
        present,
        "cargo-deny",
        "cargo install --locked cargo-deny",
        "the supply chain",
    ) {
        return;
    }
    let output = std::process::Command::new("cargo")
        .args(["deny", "check", "licenses", "bans", "sources"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo deny");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let summary = stderr.lines().last().unwrap_or_default();
    assert!(output.status.success(), "cargo deny failed: {summary}\n{stderr}");
}
