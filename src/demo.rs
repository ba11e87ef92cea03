//! `ciosync demo`.

use std::process::ExitCode;

/// Runs the demo.
pub async fn run(keep: bool) -> ExitCode {
    let _ = keep;
    ExitCode::SUCCESS
}
