//! The deployment files under `deploy/` are valid and agree with the daemon:
//! every YAML and JSON file parses, every Kubernetes object is named, alerts
//! and the dashboard name only metrics the daemon exports, the ConfigMap
//! loads with ciosync's own config loader in the Deployment's environment,
//! and the Deployment runs one pod, recreated, probed on /healthz and /readyz.
//!
//! Nothing here needs Postgres or a cluster: a wrong file fails `cargo test`
//! before it fails a `kubectl apply` or a silent alert.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::deploy::{repo, yaml_documents};
use crate::support::tools;
use ciosync::config::Config;
use ciosync::telemetry::exporter::exported_metric_names;
use serde_norway::Value;

const KUBERNETES: &str = "deploy/kubernetes";
const DASHBOARD: &str = "deploy/grafana/ciosync-dashboard.json";
/// Shows the Secret's shape; deliberately not applied by the kustomization.
const SECRET_EXAMPLE: &str = "secret.example.yaml";
/// The suffixes of a histogram's series; the family name is what is exported.
const HISTOGRAM_SUFFIXES: [&str; 3] = ["_bucket", "_sum", "_count"];

/// Files under `dir` (recursively) whose name ends with one of `extensions`.
fn files_under(dir: &Path, extensions: &[&str]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| extensions.contains(&e))
            {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Every Kubernetes object under deploy/kubernetes, with its file's name.
fn kubernetes_objects() -> Vec<(String, Value)> {
    files_under(&repo().join(KUBERNETES), &["yaml", "yml"])
        .iter()
        .flat_map(|path| {
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            yaml_documents(path).into_iter().map(move |doc| (file.clone(), doc))
        })
        .collect()
}

/// The one object of `kind` among the applied ones (the Secret example aside).
fn the<'a>(objects: &'a [(String, Value)], kind: &str) -> &'a Value {
    let found: Vec<&Value> = objects
        .iter()
        .filter(|(file, doc)| file != SECRET_EXAMPLE && doc["kind"].as_str() == Some(kind))
        .map(|(_, doc)| doc)
        .collect();
    assert_eq!(found.len(), 1, "expected exactly one {kind} in {KUBERNETES}");
    found[0]
}

fn text<'a>(value: &'a Value, what: &str) -> &'a str {
    value.as_str().unwrap_or_else(|| panic!("{what} must be a string, is {value:?}"))
}

fn list<'a>(value: &'a Value, what: &str) -> &'a [Value] {
    value.as_sequence().unwrap_or_else(|| panic!("{what} must be a list, is {value:?}"))
}

/// The ciosync container of the Deployment.
fn container(deployment: &Value) -> &Value {
    let containers = list(&deployment["spec"]["template"]["spec"]["containers"], "containers");
    containers
        .iter()
        .find(|c| c["name"].as_str() == Some("ciosync"))
        .expect("a container named ciosync")
}

/// The names of Prometheus metrics in a PromQL expression: identifiers
/// starting with `ciosync_` or `process_` (as the regex
/// `\b(ciosync|process)_[a-z0-9_]+` would find them).
fn metric_names_in(expr: &str) -> Vec<String> {
    let is_identifier = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let bytes = expr.as_bytes();
    let mut names = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let at_word_start = i == 0 || !is_identifier(bytes[i - 1]);
        let rest = &bytes[i..];
        if at_word_start && (rest.starts_with(b"ciosync_") || rest.starts_with(b"process_")) {
            let len = rest
                .iter()
                .take_while(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || **b == b'_')
                .count();
            names.push(String::from_utf8_lossy(&rest[..len]).into_owned());
            i += len;
        } else {
            i += 1;
        }
    }
    names
}

/// `name` is exported, itself or as a histogram's `_bucket`/`_sum`/`_count`.
fn is_exported(name: &str, exported: &[String]) -> bool {
    let known = |n: &str| exported.iter().any(|e| e == n);
    known(name) || HISTOGRAM_SUFFIXES.iter().any(|s| name.strip_suffix(s).is_some_and(known))
}

/// Every PromQL expression of a dashboard: panel targets (rows' panels
/// included) and the template variables' queries.
fn dashboard_exprs(dashboard: &serde_json::Value) -> Vec<String> {
    fn panels(list: &serde_json::Value, out: &mut Vec<String>) {
        for panel in list.as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                out.push(target["expr"].as_str().expect("every target has an expr").to_owned());
            }
            panels(&panel["panels"], out);
        }
    }
    let mut exprs = Vec::new();
    panels(&dashboard["panels"], &mut exprs);
    for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        if variable["type"] == "query" {
            let query = &variable["query"];
            let query = query["query"].as_str().or(query.as_str()).expect("a variable's query");
            exprs.push(query.to_owned());
        }
    }
    exprs
}

#[test]
fn every_yaml_and_json_file_under_deploy_parses() {
    let deploy = repo().join("deploy");
    let yaml = files_under(&deploy, &["yaml", "yml"]);
    assert!(yaml.len() >= 6, "the Kubernetes manifests are found: {yaml:?}");
    for path in &yaml {
        assert!(!yaml_documents(path).is_empty(), "{} has a document", path.display());
    }
    let json = files_under(&deploy, &["json"]);
    assert!(!json.is_empty(), "the dashboard is found");
    for path in json {
        let text = std::fs::read_to_string(&path).unwrap();
        serde_json::from_str::<serde_json::Value>(&text)
            .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()));
    }
}

#[test]
fn every_kubernetes_object_is_named_and_the_kustomization_applies_them_all() {
    let objects = kubernetes_objects();
    for (file, doc) in &objects {
        let kind = text(&doc["kind"], &format!("{file}: kind"));
        text(&doc["apiVersion"], &format!("{file}: apiVersion"));
        if kind != "Kustomization" {
            let name = text(&doc["metadata"]["name"], &format!("{file}: metadata.name"));
            assert!(!name.is_empty(), "{file}: metadata.name is empty");
        }
    }
    // Every manifest is applied, except the Secret example: real
    // credentials are created with kubectl, never committed.
    let kustomization = the(&objects, "Kustomization");
    let resources: Vec<&str> = list(&kustomization["resources"], "resources")
        .iter()
        .map(|r| text(r, "a resource"))
        .collect();
    assert!(!resources.contains(&SECRET_EXAMPLE), "{SECRET_EXAMPLE} must not be applied");
    for resource in &resources {
        assert!(repo().join(KUBERNETES).join(resource).is_file(), "{resource} exists");
    }
    for (file, doc) in &objects {
        if file != SECRET_EXAMPLE && doc["kind"].as_str() != Some("Kustomization") {
            assert!(resources.contains(&file.as_str()), "kustomization.yaml lists {file}");
        }
    }
}

#[test]
fn alerts_and_the_dashboard_name_only_exported_metrics() {
    let exported = exported_metric_names();
    let objects = kubernetes_objects();
    let rule = the(&objects, "PrometheusRule");
    assert_eq!(rule["apiVersion"].as_str(), Some("monitoring.coreos.com/v1"));
    let mut rule_exprs = Vec::new();
    for group in list(&rule["spec"]["groups"], "spec.groups") {
        for alert in list(&group["rules"], "rules") {
            let name = text(&alert["alert"], "alert");
            rule_exprs.push(text(&alert["expr"], &format!("{name}: expr")).to_owned());
            text(&alert["labels"]["severity"], &format!("{name}: labels.severity"));
            text(&alert["annotations"]["summary"], &format!("{name}: annotations.summary"));
            text(&alert["annotations"]["description"], &format!("{name}: description"));
        }
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join(DASHBOARD)).unwrap()).unwrap();
    let dashboard_exprs = dashboard_exprs(&dashboard);

    for (source, exprs) in [("prometheusrule.yaml", &rule_exprs), (DASHBOARD, &dashboard_exprs)] {
        let mut named = Vec::new();
        for expr in exprs {
            for name in metric_names_in(expr) {
                assert!(
                    is_exported(&name, &exported),
                    "{source} names {name}, which the daemon does not export, in: {expr}"
                );
                named.push(name);
            }
        }
        // The alerts that matter most, and the panels that show them.
        for expected in [
            "ciosync_slot_retained_wal_bytes",
            "ciosync_slot_safe_wal_size_bytes",
            "ciosync_slot_wal_status",
            "ciosync_replication_lag_seconds",
            "ciosync_ready",
        ] {
            assert!(named.iter().any(|n| n == expected), "{source} uses {expected}");
        }
    }
    assert!(rule_exprs.iter().any(|e| e.contains("up{")), "an alert fires when the daemon is down");
    assert!(
        rule_exprs.iter().any(|e| e.contains("ciosync_dead_letter_store_failing")),
        "an alert fires while refused operations cannot be stored"
    );
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for variable in ["datasource", "job", "instance"] {
        assert!(variables.contains(&variable), "the dashboard has a ${variable} variable");
    }
}

#[test]
fn the_configmap_loads_in_the_deployments_environment() {
    let objects = kubernetes_objects();
    let deployment = the(&objects, "Deployment");
    let container = container(deployment);
    let secret =
        &objects.iter().find(|(file, _)| file == SECRET_EXAMPLE).expect("the Secret example").1;

    // The environment the Deployment sets, with the Secret example's
    // placeholders for what comes from the Secret.
    let mut env = Vec::new();
    for variable in list(&container["env"], "env") {
        let name = text(&variable["name"], "env name").to_owned();
        let value = match &variable["valueFrom"]["secretKeyRef"] {
            Value::Null => text(&variable["value"], &name).to_owned(),
            reference => {
                assert_eq!(reference["name"].as_str(), secret["metadata"]["name"].as_str());
                let key = text(&reference["key"], &format!("{name}: secretKeyRef.key"));
                text(&secret["stringData"][key], &format!("{SECRET_EXAMPLE}: {key}")).to_owned()
            }
        };
        env.push((name, value));
    }
    assert!(env.iter().any(|(n, _)| n == "CIOSYNC_POSTGRES_URL"), "the URL comes from the Secret");
    assert!(env.iter().any(|(n, _)| n == "CIOSYNC_CUSTOMERIO_API_KEY"), "so does the API key");

    // The file the container is told to read is the ConfigMap's key.
    let args: Vec<&str> = list(&container["args"], "args").iter().map(|a| text(a, "arg")).collect();
    let config_path =
        args.windows(2).find(|w| w[0] == "--config").map(|w| w[1]).expect("run --config <file>");
    let mount = list(&container["volumeMounts"], "volumeMounts")
        .iter()
        .find(|m| config_path.starts_with(text(&m["mountPath"], "mountPath")))
        .expect("the config file is on a mounted volume");
    let file_name = Path::new(config_path).file_name().unwrap().to_str().unwrap();
    let volume = list(&deployment["spec"]["template"]["spec"]["volumes"], "volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mount's volume");
    let configmap = the(&objects, "ConfigMap");
    assert_eq!(volume["configMap"]["name"], configmap["metadata"]["name"]);
    let toml = text(&configmap["data"][file_name], &format!("ConfigMap data.{file_name}"));

    let config = Config::from_toml(toml, env)
        .unwrap_or_else(|e| panic!("the ConfigMap's {file_name} does not load: {e}"));

    // The endpoint listens on the pod's IP, on the port the probes use.
    let listen = config.metrics.listen_addr().unwrap();
    assert!(listen.ip().is_unspecified(), "metrics.listen must be 0.0.0.0 in a pod: {listen}");
    let metrics_port = list(&container["ports"], "ports")
        .iter()
        .find(|p| p["name"].as_str() == Some("metrics"))
        .expect("a container port named metrics");
    assert_eq!(metrics_port["containerPort"].as_u64(), Some(u64::from(listen.port())));

    // The kubelet waits for the drain and the final acknowledgement:
    // shutdown_timeout_secs, then one status interval plus a 2 s margin
    // (src/pipeline/mod.rs, `final_ack_wait`).
    let grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    let needed = Duration::from_secs(config.pipeline.shutdown_timeout_secs)
        + config.status_interval()
        + Duration::from_secs(2);
    assert!(
        Duration::from_secs(grace) > needed,
        "terminationGracePeriodSeconds {grace} must exceed {needed:?}"
    );
}

#[test]
fn the_deployment_runs_one_pod_recreated_and_probes_health_and_readiness() {
    let objects = kubernetes_objects();
    let deployment = the(&objects, "Deployment");
    assert_eq!(deployment["spec"]["replicas"].as_u64(), Some(1), "one consumer per slot");
    assert_eq!(deployment["spec"]["strategy"]["type"].as_str(), Some("Recreate"));

    let container = container(deployment);
    let metrics_port =
        |port: &Value| port.as_str() == Some("metrics") || port.as_u64() == Some(9820);
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        assert!(metrics_port(&get["port"]), "{probe} on the metrics port: {:?}", get["port"]);
    }
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(security["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"], true);

    let service = the(&objects, "Service");
    let ports = list(&service["spec"]["ports"], "Service ports");
    assert!(ports.iter().any(|p| metrics_port(&p["targetPort"])), "the Service reaches /metrics");
    let monitor = the(&objects, "ServiceMonitor");
    let endpoints = list(&monitor["spec"]["endpoints"], "ServiceMonitor endpoints");
    assert!(
        endpoints.iter().any(|e| e["port"] == "metrics" && e["path"] == "/metrics"),
        "the ServiceMonitor scrapes /metrics on the metrics port"
    );
}

/// `systemd-analyze verify` on the unit, with `ExecStart` pointing at the
/// built binary (the unit's `/usr/local/bin/ciosync` does not exist here).
/// `.ci/run` installs systemd and CI fails without it; elsewhere it says it
/// skipped.
#[test]
fn the_systemd_unit_verifies_clean() {
    let unit = std::fs::read_to_string(repo().join("deploy/systemd/ciosync.service")).unwrap();
    assert!(unit.contains("\nType=notify\n") && unit.contains("\nWatchdogSec="), "{unit}");
    assert!(unit.contains("\nRestartPreventExitStatus=2 3\n"), "{unit}");
    let present = tools::runs("systemd-analyze", &["--version"]);
    if !tools::available(present, "systemd-analyze", "apt-get install systemd", "the systemd unit")
    {
        return;
    }
    let binary = env!("CARGO_BIN_EXE_ciosync");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("ciosync.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/ciosync", binary)).unwrap();
    let output = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Only findings about this unit count; the host's own units are not ours.
    let findings: Vec<&str> = stderr.lines().filter(|l| l.contains("ciosync.service")).collect();
    assert!(output.status.success() && findings.is_empty(), "{stderr}");
}

#[test]
fn the_network_policy_admits_only_prometheus_and_the_ingress() {
    let objects = kubernetes_objects();
    let policy = the(&objects, "NetworkPolicy");
    let deployment = the(&objects, "Deployment");
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"],
        deployment["spec"]["template"]["metadata"]["labels"],
        "the policy selects the ciosync pod"
    );
    let types: Vec<&str> = list(&policy["spec"]["policyTypes"], "policyTypes")
        .iter()
        .map(|t| text(t, "type"))
        .collect();
    assert!(types.contains(&"Ingress"), "{types:?}");
    let rules = list(&policy["spec"]["ingress"], "ingress");
    let namespace_of = |rule: &Value| -> Vec<String> {
        let from = list(&rule["from"], "every rule names where from (none: anyone)");
        assert!(!from.is_empty(), "an ingress rule with an empty from admits everyone");
        from.iter()
            .map(|peer| {
                let labels = &peer["namespaceSelector"]["matchLabels"];
                text(&labels["kubernetes.io/metadata.name"], "a namespace by name").to_owned()
            })
            .collect()
    };
    let ports_of = |rule: &Value| -> Vec<String> {
        list(&rule["ports"], "every rule names its ports")
            .iter()
            .map(|p| {
                p["port"]
                    .as_str()
                    .map_or_else(|| p["port"].as_u64().unwrap().to_string(), str::to_owned)
            })
            .collect()
    };
    let mut seen = Vec::new();
    for rule in rules {
        seen.push((ports_of(rule), namespace_of(rule)));
    }
    let metrics =
        seen.iter().find(|(ports, _)| ports.iter().any(|p| p == "metrics" || p == "9820"));
    assert_eq!(metrics.expect("a rule for the metrics port").1, ["monitoring"]);
    let webhooks = seen.iter().find(|(ports, _)| ports.iter().any(|p| p == "8080"));
    assert_eq!(webhooks.expect("a rule for the webhook port").1, ["ingress-nginx"]);
    assert_eq!(seen.len(), 2, "no other way in: {seen:?}");
}

/// Bytes of a Kubernetes quantity such as `160Mi` or a systemd size such
/// as `256M` (both binary multiples here).
fn bytes_of(quantity: &str) -> u64 {
    let quantity = quantity.trim();
    let (number, unit) =
        quantity.split_at(quantity.find(|c: char| !c.is_ascii_digit()).unwrap_or(quantity.len()));
    let multiple = match unit {
        "" => 1,
        "Ki" | "K" => 1 << 10,
        "Mi" | "M" => 1 << 20,
        "Gi" | "G" => 1 << 30,
        other => panic!("unit {other:?} of {quantity}"),
    };
    number.parse::<u64>().unwrap() * multiple
}

/// The memory a daemon with `config` may need at its budgets' worst: the
/// pipeline's (64 MiB + 3 × max_pending_bytes, BENCHMARKS.md), then both
/// listeners full (connections and the webhook body budget; webhooks at
/// their defaults when the config has none, so turning them on fits too).
fn memory_needed(config: &Config) -> u64 {
    use ciosync::config::webhooks::{DEFAULT_MAX_BUFFERED_BYTES, DEFAULT_MAX_CONNECTIONS};
    use ciosync::listener::CONNECTION_MEMORY_BYTES;
    let (hook_connections, hook_budget) = config
        .webhooks
        .as_ref()
        .map_or((DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_BUFFERED_BYTES), |w| {
            (w.max_connections, w.max_buffered_bytes)
        });
    let connections = config.metrics.max_connections + hook_connections;
    (64 << 20)
        + 3 * config.pipeline.max_pending_bytes as u64
        + (connections * CONNECTION_MEMORY_BYTES) as u64
        + hook_budget as u64
}

#[test]
fn memory_and_descriptor_limits_leave_room_for_the_listeners() {
    // Kubernetes: the ConfigMap's budgets against the container's limit.
    let objects = kubernetes_objects();
    let configmap = the(&objects, "ConfigMap");
    let toml = text(&configmap["data"]["ciosync.toml"], "ciosync.toml");
    let config = Config::from_toml(toml, Vec::new()).unwrap();
    let limit = text(
        &container(the(&objects, "Deployment"))["resources"]["limits"]["memory"],
        "memory limit",
    );
    let needed = memory_needed(&config);
    assert!(
        bytes_of(limit) >= needed,
        "limits.memory {limit} is below the {needed} bytes the budgets allow"
    );

    // systemd: the defaults against MemoryMax and LimitNOFILE.
    let unit = std::fs::read_to_string(repo().join("deploy/systemd/ciosync.service")).unwrap();
    let setting = |key: &str| {
        unit.lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("the unit sets {key}"))
            .to_owned()
    };
    let defaults = Config::from_toml(
        "[postgres]\nurl = \"postgres://u@h/d\"\n[customerio]\nsite_id = \"s\"\napi_key = \"k\"\n\
         [[sync]]\ntable = \"public.users\"\nid_column = \"id\"\n[sync.attributes]\nemail = \"email\"\n",
        Vec::new(),
    )
    .unwrap();
    let needed = memory_needed(&defaults);
    assert!(bytes_of(&setting("MemoryMax")) >= needed, "MemoryMax is below {needed} bytes");
    // Every connection both listeners may hold, and room for Postgres,
    // Customer.io and the process's own files: never the systemd default 1024.
    let files: usize = setting("LimitNOFILE").parse().unwrap();
    let webhooks = ciosync::config::webhooks::DEFAULT_MAX_CONNECTIONS;
    let caps = defaults.metrics.max_connections + webhooks;
    assert!(files > 1024 && files >= 2 * caps + 256, "LimitNOFILE={files}");
}
