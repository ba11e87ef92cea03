//! External tools some tests need (cargo-deny, systemd-analyze, a
//! PostgreSQL major): in CI (`CI=true`, where `.ci/run` installs them) a
//! missing tool fails the test; elsewhere the test is skipped with one line
//! that names what was not checked.

use std::process::Command;

/// Whether this run is CI's: `CI` set to anything but empty, `0` or `false`.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| means_ci(&value))
}

fn means_ci(value: &str) -> bool {
    !matches!(value.trim().to_ascii_lowercase().as_str(), "" | "0" | "false")
}

/// Whether `program args…` runs and exits 0 (a version probe).
pub fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program).args(args).output().is_ok_and(|o| o.status.success())
}

/// `true` when the tool is there. When it is not: in CI, panics with
/// `install` (how to get it); elsewhere prints that `unchecked` was not
/// checked and returns `false`, and the caller returns.
pub fn available(present: bool, tool: &str, install: &str, unchecked: &str) -> bool {
    if present {
        return true;
    }
    assert!(!in_ci(), "{tool} is missing in CI ({install}): {unchecked} cannot be checked");
    skipped(&format!("{tool} is not installed ({install}), so {unchecked} was not checked"));
    false
}

/// Prints `SKIPPED: <what>` straight to stderr, past the test harness's
/// capture, so a passing run still shows what it did not check.
pub fn skipped(what: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {what}");
}

#[test]
fn ci_is_read_as_ci_services_set_it() {
    for (value, ci) in [("true", true), ("1", true), ("", false), ("0", false), ("FALSE", false)] {
        assert_eq!(means_ci(value), ci, "CI={value:?}");
    }
}
