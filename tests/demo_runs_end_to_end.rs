//! `ciosync demo`, the README's first command: it starts its own Postgres
//! and emulator, shows each call, and exits 0 after cleaning up.

use crate::support::daemon::binary;

#[tokio::test]
async fn demo_runs_end_to_end_and_cleans_up() {
    let output = tokio::task::spawn_blocking(|| {
        std::process::Command::new(binary()).arg("demo").output().expect("run demo")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed:\n{stdout}\n{stderr}");
    for expected in [
        "identify id=1 {\"created_at\":",
        "identify id=1 {\"plan\":\"pro\"}",
        "(no call)",
        "identify id=3 {\"first_name\":null}",
        "delete   id=2",
        "merge    id=3 into id=30",
        "30: {",
        "Stopped; the throwaway database is gone.",
    ] {
        assert!(stdout.contains(expected), "missing {expected:?} in:\n{stdout}");
    }
    assert!(!stderr.contains("ERROR"), "{stderr}");
}
