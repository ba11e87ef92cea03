//! A CI job cannot read the CA file an emulator in a service container
//! wrote, so `GET /_emulator/ca.pem` serves that certificate (never a key):
//! fetched once, it is all an HTTPS client needs to trust the emulator. The
//! binary takes `--tls-self-signed` and `--tls-name` from variables too,
//! since a GitHub Actions service container takes no arguments.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ciosync_emulator::{Emulator, EmulatorConfig, ServerTls, CA_FILE};
use tokio::net::TcpListener;

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("ca-served-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// What `url`/_emulator/ca.pem answers, fetched without trusting anything
/// yet, as a CI job's first step would (`curl -k`).
async fn fetch_ca(url: &str) -> (u16, String) {
    let client = reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap();
    let response = client.get(format!("{url}/_emulator/ca.pem")).send().await.expect("GET");
    (response.status().as_u16(), response.text().await.unwrap())
}

/// A region call through a client trusting only `ca_pem`, at `url`.
async fn region_trusting(ca_pem: &str, url: &str) -> u16 {
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("a PEM certificate");
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let request =
        client.get(format!("{url}/api/v1/accounts/region")).basic_auth("site", Some("key"));
    request.send().await.expect("trusted by the served CA").status().as_u16()
}

#[tokio::test]
async fn the_served_ca_is_the_written_one_and_is_enough_to_trust_the_emulator() {
    let dir = scratch("in-process");
    let (tls, ca_path) = ServerTls::self_signed(&dir, &[]).expect("tls");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let emu = Emulator::start_tls(listener, EmulatorConfig::new("site", "key"), tls).await.unwrap();
    let (status, pem) = fetch_ca(&emu.url()).await;
    assert_eq!(status, 200);
    assert_eq!(pem, std::fs::read_to_string(ca_path).unwrap(), "the CA the emulator wrote");
    assert!(!pem.contains("PRIVATE KEY"), "never a key");
    assert_eq!(region_trusting(&pem, &emu.url()).await, 200);
    let paths: Vec<String> = emu.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/api/v1/accounts/region"], "inspection routes are not recorded");

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain = Emulator::start(listener, EmulatorConfig::new("site", "key")).await.unwrap();
    let response = reqwest::get(format!("{}/_emulator/ca.pem", plain.url())).await.unwrap();
    assert_eq!(response.status().as_u16(), 404, "no CA without --tls-self-signed");
}

#[tokio::test]
async fn the_binary_takes_its_tls_flags_from_variables() {
    let dir = scratch("binary");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ciosync-emulator"))
        .args(["--listen", "127.0.0.1:0"])
        .env("CIOSYNC_EMULATOR_SITE_ID", "site")
        .env("CIOSYNC_EMULATOR_API_KEY", "key")
        .env("CIOSYNC_EMULATOR_TLS_SELF_SIGNED", &dir)
        .env("CIOSYNC_EMULATOR_TLS_NAMES", "customerio,emulator.test")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ciosync-emulator");
    let mut line = String::new();
    let stdout = child.stdout.take().unwrap();
    std::io::BufReader::new(stdout).read_line(&mut line).expect("the announcement");
    let url = line.trim().rsplit(' ').next().unwrap().to_owned();
    let served = if url.starts_with("https://") { Some(fetch_ca(&url).await) } else { None };
    let names_ok = match &served {
        Some((_, pem)) => {
            let port = url.rsplit(':').next().unwrap();
            let by_name = format!("https://localhost:{port}");
            region_trusting(pem, &by_name).await == 200
        }
        None => false,
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(url.starts_with("https://"), "TLS from CIOSYNC_EMULATOR_TLS_SELF_SIGNED: {line}");
    let (status, pem) = served.unwrap();
    assert_eq!(status, 200);
    assert_eq!(pem, std::fs::read_to_string(dir.join(CA_FILE)).unwrap());
    assert!(names_ok, "the served CA is trusted for the listener");
}
