//! `GET /_emulator/health` and the probe of `ciosync-emulator
//! --health-check`, which container images without a shell or curl (the
//! distroless one of the Dockerfile) run as their healthcheck.

use std::time::Duration;

/// The health route: 200 `{"status":"ok"}`, no auth, not recorded.
pub const HEALTH_PATH: &str = "/_emulator/health";

/// How long the probe waits for each answer.
pub const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Asks the emulator at `addr` (`HOST:PORT`) for [`HEALTH_PATH`]: over
/// plain HTTP, then over HTTPS, so one probe fits both modes. The HTTPS
/// attempt accepts any certificate: it sends no credentials and only asks
/// whether this listener answers; it is not a way to reach anything else.
/// `Ok` on a 200; otherwise what each attempt got.
pub async fn check_health(addr: &str) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(HEALTH_CHECK_TIMEOUT)
        .danger_accept_invalid_certs(true)
        .build()
        .map_err(|error| format!("cannot build the HTTP client: {error}"))?;
    let mut failures = Vec::new();
    for scheme in ["http", "https"] {
        let url = format!("{scheme}://{addr}{HEALTH_PATH}");
        match client.get(&url).send().await {
            Ok(response) if response.status().is_success() => return Ok(()),
            Ok(response) => failures.push(format!("{url}: {}", response.status())),
            Err(error) => failures.push(format!("{url}: {}", with_causes(&error))),
        }
    }
    Err(failures.join("; "))
}

/// An error and its causes, `: `-joined (reqwest's own message alone says
/// only "error sending request").
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        text.push_str(&format!(": {error}"));
        cause = error.source();
    }
    text
}
