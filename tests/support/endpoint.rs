//! Reading the daemon's metrics and health endpoint.

use std::time::Duration;

/// `GET url`: the status and the body.
pub async fn get(url: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    let body = response.text().await.expect("a text body");
    super::leaks::scan(&format!("the body of GET {url}"), &body);
    super::leaks::assert_none();
    (status, body)
}

/// `GET url`'s status, or `None` when nothing answers.
pub async fn status(url: &str) -> Option<u16> {
    let response =
        reqwest::Client::new().get(url).timeout(Duration::from_secs(5)).send().await.ok()?;
    Some(response.status().as_u16())
}

/// The value of one series (`name` or `name{label="value"}`) in a
/// Prometheus text exposition; `None` if absent.
pub fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Polls `url` until it answers `expected` (true) or [`super::CONVERGE`]
/// passes (false).
pub async fn wait_for_status(url: &str, expected: u16) -> bool {
    let deadline = tokio::time::Instant::now() + super::CONVERGE;
    loop {
        if status(url).await == Some(expected) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `/metrics` at `url` until `cond` holds for its text; whether it
/// did before [`super::CONVERGE`] passed, and the last text read.
pub async fn wait_for_metrics(url: &str, cond: impl Fn(&str) -> bool) -> (bool, String) {
    let deadline = tokio::time::Instant::now() + super::CONVERGE;
    loop {
        let (_, text) = get(url).await;
        if cond(&text) {
            return (true, text);
        }
        if tokio::time::Instant::now() >= deadline {
            return (false, text);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
