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
    run_probe(vec!["--health-check".to_owned(), addr]).await
}

async fn run_probe(args: Vec<String>) -> (bool, String) {
    let output = tokio::task::spawn_blocking(move || {
        Command::new(BINARY)
            .args(&args)
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

/// The exec-form (JSON array) words after `prefix` on a line of the
/// Dockerfile's `emulator` stage.
fn dockerfile_command(prefix: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Dockerfile");
    let text = std::fs::read_to_string(path).expect("read the Dockerfile");
    let stage =
        text.split("\nFROM ").find(|s| s.contains(" AS emulator\n")).expect("stage emulator");
    let line = stage.lines().find_map(|l| l.trim().strip_prefix(prefix)).expect(prefix);
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{prefix}{line}: {e}"))
}

/// The image's entrypoint as the binary runs it (on port 0, a free one),
/// plus `extra` flags; the address it announced.
fn start_as_the_image(extra: &[&str]) -> (std::process::Child, String) {
    use std::io::BufRead;
    let entrypoint = dockerfile_command("ENTRYPOINT ");
    assert!(entrypoint[0].ends_with("/ciosync-emulator"), "{entrypoint:?}");
    let listen = entrypoint.iter().position(|w| w == "--listen").expect("--listen") + 1;
    let port = entrypoint[listen].rsplit(':').next().unwrap().to_owned();
    let args: Vec<String> = entrypoint[1..]
        .iter()
        .map(|w| w.replace(&format!(":{port}"), ":0"))
        .chain(extra.iter().map(|w| (*w).to_owned()))
        .collect();
    let mut child = Command::new(BINARY)
        .args(&args)
        .env("CIOSYNC_EMULATOR_SITE_ID", "site")
        .env("CIOSYNC_EMULATOR_API_KEY", "key")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start ciosync-emulator");
    let mut line = String::new();
    let stdout = child.stdout.take().unwrap();
    std::io::BufReader::new(stdout).read_line(&mut line).expect("the announcement");
    let addr = line.trim().rsplit("://").next().unwrap().to_owned();
    if !addr.starts_with("0.0.0.0:") {
        let _ = child.kill();
        panic!("it must listen on every interface, as in a container: {line}");
    }
    (child, addr.replace("0.0.0.0", "127.0.0.1"))
}

/// The image's HEALTHCHECK command, its loopback address replaced by
/// `addr`: whether it passed, and what it said.
async fn image_healthcheck(addr: &str) -> (bool, String) {
    let healthcheck = dockerfile_command("CMD ");
    assert!(healthcheck[0].ends_with("/ciosync-emulator"), "{healthcheck:?}");
    let image_addr = healthcheck.iter().find(|w| w.starts_with("127.0.0.1:"));
    let image_addr = image_addr.expect("it probes the container's loopback").clone();
    let args = healthcheck[1..]
        .iter()
        .map(|w| if *w == image_addr { addr.to_owned() } else { w.clone() })
        .collect();
    run_probe(args).await
}

#[tokio::test]
async fn the_dockerfiles_entrypoint_and_healthcheck_work_with_and_without_tls() {
    let (mut plain, addr) = start_as_the_image(&[]);
    let (healthy, said) = image_healthcheck(&addr).await;
    plain.kill().expect("stop it");
    let _ = plain.wait();
    assert!(healthy, "plain HTTP on {addr}: {said}");

    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("health-image-tls");
    let _ = std::fs::remove_dir_all(&dir);
    let (mut tls, addr) = start_as_the_image(&["--tls-self-signed", dir.to_str().unwrap()]);
    let (healthy, said) = image_healthcheck(&addr).await;
    tls.kill().expect("stop it");
    let _ = tls.wait();
    assert!(healthy, "HTTPS on {addr}: {said}");
}
