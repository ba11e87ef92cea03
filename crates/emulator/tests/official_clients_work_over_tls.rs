//! Customer.io's official clients, unmodified, against the emulator over
//! TLS with only the CA path set (the Python client always builds
//! `https://` URLs): every call they offer gets the documented status, and
//! its effect shows in the inspection endpoints.
//!
//! The clients come from their registries (PyPI `customerio==3.2.0`, into a
//! venv under the target dir, kept for the next run). When a registry or the
//! interpreter cannot be reached the test says `SKIPPED: …` and passes,
//! except in CI (`CI=true`), where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ciosync_emulator::{Emulator, EmulatorConfig, ServerTls};
use serde_json::{json, Value};
use tokio::net::TcpListener;

const PYTHON_CLIENT: &str = "customerio==3.2.0";

/// Reports a missing prerequisite: a failure in CI, a plain skip elsewhere.
fn skip(reason: &str) {
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("CI=true and {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("official-clients")
}

fn run(command: &mut Command) -> Result<String, String> {
    let output = command.output().map_err(|error| format!("cannot run {command:?}: {error}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: String = stderr.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
        Err(format!("{command:?} failed ({}): {tail}", output.status))
    }
}

/// A venv with the Python client, made once: its interpreter.
fn python_with_client() -> Result<PathBuf, String> {
    let venv = clients_dir().join("python-venv");
    let python = venv.join("bin/python");
    let marker = venv.join(format!("installed-{PYTHON_CLIENT}"));
    if marker.exists() {
        return Ok(python);
    }
    let _ = std::fs::remove_dir_all(&venv);
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    let pip = [
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--timeout",
        "30",
        PYTHON_CLIENT,
    ];
    run(Command::new(&python).args(pip)).map_err(|error| format!("PyPI unreachable? {error}"))?;
    std::fs::write(&marker, b"").map_err(|error| error.to_string())?;
    Ok(python)
}

/// Every call of the Python client's Track API class, in order; prints
/// `{call: "ok" | "error: …"}`.
const PYTHON_CALLS: &str = r#"
import json, sys
from customerio import CustomerIO
from customerio.constants import ID

cio = CustomerIO(site_id="site", api_key="key", host="127.0.0.1", port=int(sys.argv[1]), retries=0)
results = {}

def call(name, f):
    try:
        f()
        results[name] = "ok"
    except Exception as e:
        results[name] = ("error: %s" % e)[:300]

call("identify", lambda: cio.identify(id="42", email="ann@x.io", plan="pro"))
call("identify_with_a_float", lambda: cio.identify(id="43", score=0.5))
call("track", lambda: cio.track(customer_id="42", name="paid", data={"amount": 3}))
call("track_anonymous", lambda: cio.track_anonymous(anonymous_id="anon-1", name="visit"))
call("invite", lambda: cio.track_anonymous(anonymous_id="", name="invite", data={"recipient": "new@x.io"}))
call("pageview", lambda: cio.pageview(customer_id="42", page="/pricing", ref="ad"))
call("backfill", lambda: cio.backfill(customer_id="42", name="old", timestamp=1600000000, x="y"))
call("add_device", lambda: cio.add_device(customer_id="42", device_id="tok1", platform="ios"))
call("delete_device", lambda: cio.delete_device(customer_id="42", device_id="tok1"))
call("identify_7", lambda: cio.identify(id="7", city="Oslo"))
call("merge_customers", lambda: cio.merge_customers(ID, "42", ID, "7"))
call("batch", lambda: cio.batch([{"type": "person", "identifiers": {"id": "b1"},
                                   "action": "identify", "attributes": {"n": 1.5}}]))
call("identify_sup", lambda: cio.identify(id="sup"))
call("suppress", lambda: cio.suppress(customer_id="sup"))
call("unsuppress", lambda: cio.unsuppress(customer_id="sup"))
call("identify_gone", lambda: cio.identify(id="gone"))
call("delete", lambda: cio.delete(customer_id="gone"))
print(json.dumps(results))
"#;

struct Inspector {
    http: reqwest::Client,
    url: String,
}

impl Inspector {
    async fn get(&self, path: &str) -> Value {
        let response = self.http.get(format!("{}/_emulator/{path}", self.url)).send().await;
        response.expect("inspect").json().await.expect("json")
    }
}

async fn start_tls(name: &str) -> (Emulator, PathBuf, Inspector) {
    let (tls, ca) = ServerTls::self_signed(&clients_dir().join(name), &[]).expect("tls");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let emu = Emulator::start_tls(listener, EmulatorConfig::new("site", "key"), tls)
        .await
        .expect("start");
    let pem = std::fs::read(&ca).expect("CA");
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA PEM"))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let inspector = Inspector { http, url: emu.url() };
    (emu, ca, inspector)
}

#[tokio::test]
async fn the_official_python_client_works_over_tls_with_only_the_ca_set() {
    let python = match tokio::task::spawn_blocking(python_with_client).await.expect("join") {
        Ok(python) => python,
        Err(reason) => return skip(&format!("the Python client is not installed: {reason}")),
    };
    let (emu, ca, inspect) = start_tls("python-tls").await;
    let port = emu.addr().port().to_string();
    let mut command = Command::new(&python);
    command.args(["-c", PYTHON_CALLS, &port]).env("REQUESTS_CA_BUNDLE", &ca);
    command.env("NO_PROXY", "127.0.0.1,localhost").env_remove("CURL_CA_BUNDLE");
    let output = tokio::task::spawn_blocking(move || run(&mut command)).await.expect("join");
    let results: Value = serde_json::from_str(&output.expect("python ran")).expect("results");

    for (call, result) in results.as_object().expect("results") {
        if call == "identify_with_a_float" {
            // Strict v1 values by default (--lenient-v1-values to accept).
            assert!(result.as_str().unwrap().contains("400"), "{call}: {result}");
        } else {
            assert_eq!(result, "ok", "{call}");
        }
    }
    let customers = inspect.get("customers").await;
    assert_eq!(customers["42"]["email"], "ann@x.io");
    assert_eq!(customers["42"]["plan"], "pro");
    assert_eq!(customers["b1"]["n"], 1.5, "v2 takes floats");
    for gone in ["43", "7", "sup", "gone"] {
        assert!(customers.get(gone).is_none(), "{gone}: {customers}");
    }
    let events = inspect.get("customers/42/events").await;
    let names: Vec<&str> =
        events.as_array().unwrap().iter().filter_map(|e| e["name"].as_str()).collect();
    assert_eq!(names, ["paid", "/pricing", "old"]);
    assert_eq!(events[1]["type"], "page");
    assert_eq!(events[2]["timestamp"], 1600000000);
    let anonymous = inspect.get("anonymous_events").await;
    assert_eq!(anonymous[0]["anonymous_id"], "anon-1");
    assert_eq!(
        (&anonymous[1]["name"], &anonymous[1]["anonymous_id"]),
        (&json!("invite"), &Value::Null)
    );
    // Unsuppress frees the identifier it names (the person's cio_id stays blocked).
    let suppressed = inspect.get("suppressed").await;
    assert!(!suppressed.to_string().contains("id:sup"), "{suppressed}");
    assert_eq!(suppressed.as_array().map(Vec::len), Some(1), "suppress blocked something");
    let items = inspect.get("unmodelled").await["items"].to_string();
    assert!(items.contains("add_device") && items.contains("delete_device"), "{items}");
    let log = inspect.get("requests").await;
    assert_eq!(
        log.as_array().unwrap().len(),
        results.as_object().unwrap().len(),
        "one request per call"
    );
    emu.shutdown().await;
}
