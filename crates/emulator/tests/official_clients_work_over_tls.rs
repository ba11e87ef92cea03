//! Customer.io's official clients, unmodified, against the emulator over
//! TLS with only the CA path set (the Python client always builds
//! `https://` URLs): every call they offer gets the documented status, and
//! its effect shows in the inspection endpoints.
//!
//! The clients come from their registries (PyPI `customerio==3.2.0` into a
//! venv, npm `customerio-node@5.2.0` into a directory, both under the target
//! dir and kept for the next run). Python trusts the CA through
//! `REQUESTS_CA_BUNDLE`, Node through `NODE_EXTRA_CA_CERTS`. When a registry or the
//! interpreter cannot be reached the test says `SKIPPED: …` and passes,
//! except in CI (`CI=true`), where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ciosync_emulator::{Emulator, EmulatorConfig, Secret, ServerTls};
use serde_json::{json, Value};
use tokio::net::TcpListener;

const PYTHON_CLIENT: &str = "customerio==3.2.0";
const NODE_CLIENT: &str = "customerio-node@5.2.0";

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
call("add_device_2", lambda: cio.add_device(customer_id="42", device_id="tok2", platform="android",
                                            last_used=1700000000, attributes={"app_version": "2.1"}))
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

    /// Queues a `sent` webhook for person `id`: its delivery id.
    async fn delivery_to(&self, id: &str) -> String {
        let webhook = json!({"object_type": "email", "metric": "sent", "customer_id": id});
        let response = self.http.post(format!("{}/_emulator/webhooks", self.url)).json(&webhook);
        let record: Value = response.send().await.expect("queue").json().await.expect("json");
        record["payload"]["data"]["delivery_id"].as_str().expect("delivery_id").to_owned()
    }
}

async fn start_tls(name: &str) -> (Emulator, PathBuf, Inspector) {
    let (tls, ca) = ServerTls::self_signed(&clients_dir().join(name), &[]).expect("tls");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let config = EmulatorConfig {
        // Nothing listens there: webhooks are only queued, which gives
        // unsubscribe a delivery to find.
        webhook_url: Some("http://127.0.0.1:9/webhooks".to_owned()),
        webhook_signing_key: Some(Secret::new("signing")),
        ..EmulatorConfig::new("site", "key")
    };
    let emu = Emulator::start_tls(listener, config, tls).await.expect("start");
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
    assert_eq!(inspect.get("customers/42/devices").await, kept_device(), "tok1 added then deleted");
    let log = inspect.get("requests").await;
    assert_eq!(
        log.as_array().unwrap().len(),
        results.as_object().unwrap().len(),
        "one request per call"
    );
    emu.shutdown().await;
}

/// The device both clients leave on person 42: the second one added, with
/// its `last_used` and attributes as each client sends them.
fn kept_device() -> Value {
    json!([{"token": "tok2", "platform": "android", "last_used": 1700000000,
            "attributes": {"app_version": "2.1"}}])
}

/// The Node client installed once: the directory holding its node_modules.
fn node_with_client() -> Result<PathBuf, String> {
    let dir = clients_dir().join("node");
    let marker = dir.join(format!("installed-{NODE_CLIENT}"));
    if marker.exists() {
        return Ok(dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|error| error.to_string())?;
    run(Command::new("node").arg("--version"))?;
    let install = [
        "install",
        "--no-audit",
        "--no-fund",
        "--no-save",
        "--fetch-timeout=30000",
        "--fetch-retries=1",
        "--prefix",
    ];
    run(Command::new("npm").args(install).arg(&dir).arg(NODE_CLIENT))
        .map_err(|error| format!("npm registry unreachable? {error}"))?;
    std::fs::write(&marker, b"").map_err(|error| error.to_string())?;
    Ok(dir)
}

/// Every call of the Node client's `TrackClient`, in order; prints
/// `{call: "ok" | "error: STATUS …"}`. Arguments: port, delivery id.
const NODE_CALLS: &str = r#"
const { TrackClient, IdentifierType } = require("customerio-node");
const [port, deliveryId] = process.argv.slice(1);
const cio = new TrackClient("site", "key", { url: `https://127.0.0.1:${port}/api/v1`, retry: { maxRetries: 0 } });
const calls = [
  ["getAccountRegion", () => cio.getAccountRegion()],
  ["identify", () => cio.identify("42", { email: "ann@x.io", plan: "pro" })],
  ["identify_with_a_float", () => cio.identify("43", { score: 0.5 })],
  ["track", () => cio.track("42", { name: "paid", data: { amount: 3 } })],
  ["trackAnonymous", () => cio.trackAnonymous("anon-1", { name: "visit" })],
  ["invite", () => cio.trackAnonymous("", { name: "invite", data: { recipient: "new@x.io" } })],
  ["trackPageView", () => cio.trackPageView("42", "/pricing")],
  ["addDevice", () => cio.addDevice("42", "tok1", "ios")],
  ["deleteDevice", () => cio.deleteDevice("42", "tok1")],
  ["addDevice_2", () => cio.addDevice("42", "tok2", "android", { last_used: 1700000000, app_version: "2.1" })],
  ["trackPush", () => cio.trackPush({ delivery_id: "dp", event: "opened", device_id: "tok1" })],
  ["reportMetric", () => cio.reportMetric({ delivery_id: "dm", metric: "clicked", href: "https://x.io" })],
  ["unsubscribe", () => cio.unsubscribe(deliveryId)],
  ["addCustomersToSegment", () => cio.addCustomersToSegment(5, ["42", "nobody"])],
  ["addCustomersToSegment_by_email", () => cio.addCustomersToSegment(6, ["ann@x.io"], IdentifierType.Email)],
  ["removeCustomersFromSegment", () => cio.removeCustomersFromSegment(6, ["42"])],
  ["submitForm", () => cio.submitForm("signup", { email: "form@x.io", plan: "pro" })],
  ["identify_7", () => cio.identify("7", { city: "Oslo" })],
  ["mergeCustomers", () => cio.mergeCustomers(IdentifierType.Id, "42", IdentifierType.Id, "7")],
  ["batch", () => cio.batch([{ type: "person", identifiers: { id: "b1" }, action: "identify", attributes: { n: 1.5 } }])],
  ["entity", () => cio.entity({ type: "person", identifiers: { id: "e1" }, action: "identify", attributes: { plan: "v2" } })],
  ["identify_sup", () => cio.identify("sup", {})],
  ["suppress", () => cio.suppress("sup")],
  ["unsuppress", () => cio.unsuppress("sup")],
  ["identify_gone", () => cio.identify("gone", {})],
  ["destroy", () => cio.destroy("gone")],
];
(async () => {
  const results = {};
  for (const [name, call] of calls) {
    try {
      await call();
      results[name] = "ok";
    } catch (e) {
      results[name] = `error: ${e.statusCode ?? ""} ${e.message} ${e.cause ?? ""}`.slice(0, 300);
    }
  }
  console.log(JSON.stringify(results));
})();
"#;

#[tokio::test]
async fn the_official_node_client_works_over_tls_with_only_the_ca_set() {
    let dir = match tokio::task::spawn_blocking(node_with_client).await.expect("join") {
        Ok(dir) => dir,
        Err(reason) => return skip(&format!("the Node client is not installed: {reason}")),
    };
    let (emu, ca, inspect) = start_tls("node-tls").await;
    let delivery_id = inspect.delivery_to("42").await;
    let port = emu.addr().port().to_string();
    let mut command = Command::new("node");
    command.args(["-e", NODE_CALLS, &port, &delivery_id]).current_dir(&dir);
    command.env("NODE_EXTRA_CA_CERTS", &ca).env("NO_PROXY", "127.0.0.1,localhost");
    let output = tokio::task::spawn_blocking(move || run(&mut command)).await.expect("join");
    let results: Value = serde_json::from_str(&output.expect("node ran")).expect("results");

    for (call, result) in results.as_object().expect("results") {
        if call == "identify_with_a_float" {
            assert!(result.as_str().unwrap().contains("400"), "{call}: {result}");
        } else {
            assert_eq!(result, "ok", "{call}");
        }
    }
    // The delivery was queued before 42 existed: unsubscribe finds the
    // person by the webhook's `id`.
    let customers = inspect.get("customers").await;
    assert_eq!(customers["42"]["email"], "ann@x.io");
    assert_eq!(customers["42"]["unsubscribed"], true, "{customers}");
    assert_eq!(customers["form@x.io"]["plan"], "pro");
    assert_eq!(customers["b1"]["n"], 1.5);
    assert_eq!(customers["e1"]["plan"], "v2");
    for gone in ["43", "7", "sup", "gone"] {
        assert!(customers.get(gone).is_none(), "{gone}: {customers}");
    }
    let events = inspect.get("customers/42/events").await;
    let names: Vec<&str> =
        events.as_array().unwrap().iter().filter_map(|e| e["name"].as_str()).collect();
    assert_eq!(names, ["paid", "/pricing"]);
    let anonymous = inspect.get("anonymous_events").await;
    assert_eq!(anonymous[0]["anonymous_id"], "anon-1");
    assert_eq!(anonymous[1]["name"], "invite");
    let segments = inspect.get("segments").await;
    assert_eq!(segments["segments"], json!({"5": ["42"], "6": []}), "{segments}");
    assert_eq!(segments["ignored"][0]["value"], "nobody");
    let items = inspect.get("unmodelled").await["items"].to_string();
    assert_eq!(inspect.get("customers/42/devices").await, kept_device(), "tok1 added then deleted");
    for kind in ["push_metrics", "metrics", "unsubscribe", "submit_form"] {
        assert!(items.contains(&format!("\"v1\":\"{kind}\"")), "{kind}: {items}");
    }
    let log = inspect.get("requests").await;
    assert_eq!(log.as_array().unwrap().len(), results.as_object().unwrap().len());
    emu.shutdown().await;
}
