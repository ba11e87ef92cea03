//! TLS on the emulator's listener, with a real HTTPS client trusting only
//! the CA the emulator wrote: in-process (`Emulator::start_tls`) and as the
//! binary with `--tls-self-signed` and with `--tls-cert`/`--tls-key`. Plain
//! HTTP without the flags is `behaves_like_customerio`'s binary test.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ciosync_emulator::{Emulator, EmulatorConfig, ServerTls, CERT_FILE, KEY_FILE};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(10);
/// `site:key`, base64.
const AUTH: &str = "Basic c2l0ZTprZXk=";

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("serves_tls-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn trusting(ca: &Path) -> reqwest::Client {
    let pem = std::fs::read(ca).expect("read CA");
    let ca = reqwest::Certificate::from_pem(&pem).expect("CA PEM");
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .build()
        .expect("client")
}

async fn region(client: &reqwest::Client, base: &str) -> Result<u16, reqwest::Error> {
    let response =
        client.get(format!("{base}/api/v1/accounts/region")).header("authorization", AUTH).send();
    response.await.map(|response| response.status().as_u16())
}

#[tokio::test]
async fn https_with_the_written_ca_and_nothing_else() {
    let dir = scratch("in-process");
    let (tls, ca) = ServerTls::self_signed(&dir, &["emulator.test".to_owned()]).expect("tls");
    assert_eq!(ca, dir.join("ca.pem"));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let emu = Emulator::start_tls(listener, EmulatorConfig::new("site", "key"), tls)
        .await
        .expect("start");
    assert!(emu.url().starts_with("https://127.0.0.1:"), "{}", emu.url());
    let client = trusting(&ca);
    assert_eq!(region(&client, &emu.url()).await.ok(), Some(200));
    let by_name = format!("https://localhost:{port}");
    assert_eq!(region(&client, &by_name).await.ok(), Some(200), "localhost is in the certificate");

    let untrusting = reqwest::Client::builder().tls_built_in_root_certs(true).build().unwrap();
    assert!(region(&untrusting, &emu.url()).await.is_err(), "the CA is what makes it trusted");
    let plain = format!("http://127.0.0.1:{port}");
    assert!(region(&reqwest::Client::new(), &plain).await.is_err(), "no plain HTTP on it");
    assert_eq!(region(&client, &emu.url()).await.ok(), Some(200), "failed handshakes harm nothing");
    let key_mode = std::fs::metadata(dir.join(KEY_FILE)).expect("key").permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&key_mode) & 0o077, 0, "key is private");
    emu.shutdown().await;
}

/// Starts the binary with `args`; returns it, its URL and the CA path it
/// printed, if any.
async fn binary(args: &[&str]) -> (tokio::process::Child, String, Option<PathBuf>) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ciosync-emulator"))
        .args(["--listen", "127.0.0.1:0", "--site-id", "site", "--api-key", "key"])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ciosync-emulator");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut next = async || {
        let line = tokio::time::timeout(WAIT, lines.next_line()).await.expect("line in time");
        line.expect("read").expect("a line")
    };
    let url =
        next().await.strip_prefix("ciosync-emulator listening on ").expect("format").to_owned();
    let ca = if args.contains(&"--tls-self-signed") {
        let line = next().await;
        Some(PathBuf::from(
            line.strip_prefix("ciosync-emulator CA certificate: ").expect("CA line"),
        ))
    } else {
        None
    };
    (child, url, ca)
}

#[tokio::test]
async fn the_binary_serves_https_self_signed_or_with_given_files() {
    let dir = scratch("binary");
    let dir_text = dir.to_str().expect("utf-8 path");
    let (mut child, url, ca) = binary(&["--tls-self-signed", dir_text]).await;
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let ca = ca.expect("CA path printed");
    assert_eq!(region(&trusting(&ca), &url).await.ok(), Some(200));
    child.kill().await.expect("kill");

    // The files it wrote work as --tls-cert/--tls-key.
    let (cert, key) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
    let args = ["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()];
    let (mut child, url, printed) = binary(&args).await;
    assert!(url.starts_with("https://") && printed.is_none(), "{url}");
    assert_eq!(region(&trusting(&ca), &url).await.ok(), Some(200));
    child.kill().await.expect("kill");
}

#[test]
fn the_binary_refuses_a_key_without_a_certificate_or_unreadable_files() {
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ciosync-emulator"))
            .args(["--listen", "127.0.0.1:0", "--site-id", "s", "--api-key", "k"])
            .args(args)
            .output()
            .expect("run")
    };
    assert_eq!(run(&["--tls-key", "k.pem"]).status.code(), Some(2));
    let missing = run(&["--tls-cert", "/nonexistent/c.pem", "--tls-key", "/nonexistent/k.pem"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/c.pem"));
}
