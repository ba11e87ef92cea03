//! `GET /_emulator/health` answers 200 without credentials, over HTTP and
//! HTTPS, and is not recorded; `ciosync-emulator --health-check HOST:PORT`
//! (the container image's healthcheck, which has no curl) exits 0 against a
//! running emulator in either mode and 1 when nothing answers.

use std::path::Path;
use std::process::Command;

use ciosync_emulator::{Emulator, EmulatorConfig, ServerTls, HEALTH_PATH};
use tokio::net::TcpListener;

const BINARY: &str = env!("CARGO_BIN_EXE_ciosync-emulator");

async fn plain() -> Emulator {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    Emulator::start(listener, EmulatorConfig::new("site", "key")).await.expect("start")
}

async fn tls(name: &str) -> Emulator {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("health-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    let (tls, _ca) = ServerTls::self_signed(&dir, &[]).expect("tls");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    Emulator::start_tls(listener, EmulatorConfig::new("site", "key"), tls).await.expect("start")
}

/// Runs the binary's probe without any of the serving flags or their
/// variables, as a container healthcheck runs it.
async fn probe(addr: String) -> (bool, String) {
    let output = tokio::task::spawn_blocking(move || {
        Command::new(BINARY)
            .args(["--health-check", &addr])
            .env_remove("CIOSYNC_EMULATOR_SITE_ID")
            .env_remove("CIOSYNC_EMULATOR_API_KEY")
            .output()
            .expect("run ciosync-emulator")
    })
    .await
    .unwrap();
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[tokio::test]
async fn health_answers_200_without_credentials_and_is_not_logged() {
    let emu = plain().await;
    let response = reqwest::get(format!("{}{HEALTH_PATH}", emu.url())).await.expect("GET");
    assert_eq!(response.status().as_u16(), 200);
    let body: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(body, serde_json::json!({"status": "ok"}));
    assert!(emu.requests().is_empty(), "a healthcheck every few seconds would flood the log");

    let emu = tls("get").await;
    let client = reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap();
    let response = client.get(format!("{}{HEALTH_PATH}", emu.url())).send().await.expect("GET");
    assert_eq!(response.status().as_u16(), 200, "over HTTPS too");
}

#[tokio::test]
async fn the_probe_passes_against_http_and_https_and_fails_when_nothing_answers() {
    let emu = plain().await;
    let (healthy, stderr) = probe(emu.addr().to_string()).await;
    assert!(healthy, "plain HTTP: {stderr}");
    let emu_tls = tls("probe").await;
    let (healthy, stderr) = probe(emu_tls.addr().to_string()).await;
    assert!(healthy, "HTTPS with the emulator's own certificate: {stderr}");

    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let (healthy, stderr) = probe(addr.to_string()).await;
    assert!(!healthy, "nothing listens on {addr}");
    assert!(stderr.contains("not healthy") && stderr.contains(HEALTH_PATH), "{stderr}");
}
