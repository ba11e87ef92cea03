//! `kubectl kustomize deploy/kubernetes` renders (no cluster needed), and the
//! rendered objects are what `deploy/README.md` and the README document:
//! the namespace, one pod recreated, liveness on /healthz and readiness on
//! /readyz on the metrics port, the Secret and its keys as the documented
//! `CIOSYNC_*` variables, the resources of the table, and a non-root pod
//! (the Dockerfile's user). Without kubectl it says `SKIPPED: kubectl not
//! found`, and fails in CI.

use std::collections::BTreeSet;
use std::process::Command;

use crate::support::deploy::{
    code_blocks, dockerfile_stages, markdown_section, read, repo, yaml_text_documents,
};
use crate::support::tools;
use serde_norway::Value;

/// The rendered objects, or `None` (after saying so) without kubectl.
fn rendered() -> Option<Vec<Value>> {
    if !tools::runs("kubectl", &["version", "--client"]) {
        assert!(!tools::in_ci(), "kubectl is missing in CI: the kustomize base cannot be rendered");
        tools::skipped("kubectl not found, so the rendered kustomize base was not checked");
        return None;
    }
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(repo().join("deploy/kubernetes"))
        .output()
        .expect("run kubectl kustomize");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "kubectl kustomize deploy/kubernetes: {stderr}");
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    Some(yaml_text_documents(&text, "the rendered kustomize base"))
}

fn the<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = objects.iter().filter(|o| o["kind"].as_str() == Some(kind)).collect();
    assert_eq!(found.len(), 1, "one {kind} rendered");
    found[0]
}

/// The `--from-literal=KEY=…` keys and the name of the README's
/// `kubectl -n NS create secret generic NAME` command, and NS.
fn documented_secret(deploy_readme: &str) -> (String, String, BTreeSet<String>) {
    let kubernetes = markdown_section(deploy_readme, "## Kubernetes");
    let commands = code_blocks(kubernetes, "sh").join("\n").replace("\\\n", " ");
    let line = commands.lines().find(|l| l.contains("create secret generic")).expect("the command");
    let words: Vec<&str> = line.split_whitespace().collect();
    let after = |flag: &str| words[words.iter().position(|w| *w == flag).unwrap() + 1].to_owned();
    let name = after("generic");
    let keys = words
        .iter()
        .filter_map(|w| w.strip_prefix("--from-literal="))
        .map(|w| w.split('=').next().unwrap().to_owned())
        .collect();
    (after("-n"), name, keys)
}

/// The `CIOSYNC_*` names of the sentence "The Secret's values reach the
/// daemon as …".
fn documented_variables(deploy_readme: &str) -> BTreeSet<String> {
    let start =
        deploy_readme.find("The Secret's values reach the daemon as").expect("the sentence");
    let sentence = &deploy_readme[start..start + deploy_readme[start..].find(". ").unwrap()];
    sentence
        .split(|c: char| !(c.is_ascii_uppercase() || c == '_'))
        .filter(|w| w.starts_with("CIOSYNC_"))
        .map(str::to_owned)
        .collect()
}

/// The rows of deploy/README.md's Resources table: (what, value).
fn documented_resources(deploy_readme: &str) -> Vec<(String, String)> {
    let section = markdown_section(deploy_readme, "### Resources");
    section
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            (cells.len() > 3 && !cells[1].is_empty() && !cells[2].starts_with('-'))
                .then(|| (cells[1].to_owned(), cells[2].to_owned()))
        })
        .collect()
}

#[test]
fn the_rendered_deployment_has_the_documented_probes_secret_resources_and_user() {
    let Some(objects) = rendered() else { return };
    let deploy_readme = read("deploy/README.md");
    let (namespace, secret, keys) = documented_secret(&deploy_readme);
    for object in &objects {
        if object["kind"] != "Namespace" {
            assert_eq!(
                object["metadata"]["namespace"].as_str(),
                Some(namespace.as_str()),
                "{:?}",
                object["kind"]
            );
        }
    }
    assert!(
        objects.iter().all(|o| o["kind"] != "Secret"),
        "no Secret is applied: it is created with kubectl"
    );

    let deployment = the(&objects, "Deployment");
    assert_eq!(deployment["spec"]["replicas"].as_u64(), Some(1));
    assert_eq!(deployment["spec"]["strategy"]["type"].as_str(), Some("Recreate"));
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["name"].as_str(), Some("ciosync"));

    // Probes: /healthz and /readyz on the metrics port, which the endpoint
    // listens on and the Service exposes.
    let metrics = container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "metrics")
        .expect("port metrics");
    let port = metrics["containerPort"].as_u64().unwrap();
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        assert!(
            get["port"] == "metrics" || get["port"].as_u64() == Some(port),
            "{probe}: {:?}",
            get["port"]
        );
    }
    let env = container["env"].as_sequence().unwrap();
    let listen =
        env.iter().find(|e| e["name"] == "CIOSYNC_METRICS_LISTEN").expect("CIOSYNC_METRICS_LISTEN");
    assert_eq!(listen["value"].as_str(), Some(format!("0.0.0.0:{port}").as_str()));

    // The Secret: every documented variable comes from it, by its documented keys.
    let from_secret: Vec<&Value> =
        env.iter().filter(|e| e["valueFrom"]["secretKeyRef"].is_mapping()).collect();
    let names: BTreeSet<String> =
        from_secret.iter().map(|e| e["name"].as_str().unwrap().to_owned()).collect();
    assert_eq!(names, documented_variables(&deploy_readme), "the variables the README names");
    let mut used = BTreeSet::new();
    for variable in from_secret {
        let reference = &variable["valueFrom"]["secretKeyRef"];
        assert_eq!(reference["name"].as_str(), Some(secret.as_str()), "{:?}", variable["name"]);
        used.insert(reference["key"].as_str().unwrap().to_owned());
    }
    assert_eq!(used, keys, "the keys of the README's `kubectl create secret`");

    // Resources, as deploy/README.md's table.
    let resources = &container["resources"];
    let table = documented_resources(&deploy_readme);
    assert_eq!(table.len(), 4, "memory and CPU, request and limit: {table:?}");
    for (what, value) in table {
        let (resource, kind) = what.split_once(' ').expect("`memory request`, `CPU limit`, …");
        let kind = format!("{kind}s");
        let rendered = &resources[kind.as_str()][resource.to_ascii_lowercase().as_str()];
        match value.as_str() {
            "none" => assert!(rendered.is_null(), "{what}: none documented, {rendered:?} rendered"),
            value => assert_eq!(rendered.as_str(), Some(value), "{what}"),
        }
    }
    for (documented, said) in [("requests", "request 64Mi"), ("limits", "limit 160Mi")] {
        let memory = resources[documented]["memory"].as_str().unwrap();
        assert!(
            said.ends_with(memory),
            "README's Kubernetes section says {said}, rendered {memory}"
        );
        let readme = read("README.md");
        assert!(markdown_section(&readme, "### Kubernetes").contains(said), "README: {said}");
    }

    // Non-root, as the image's user, nothing to escalate to, read-only.
    let uid: u64 = dockerfile_stages(&read("Dockerfile"))
        .last()
        .unwrap()
        .one("USER")
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(pod["securityContext"]["runAsUser"].as_u64(), Some(uid), "the Dockerfile's USER");
    let security = &container["securityContext"];
    assert_eq!(security["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(security["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(security["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(security["capabilities"]["drop"][0].as_str(), Some("ALL"));
}
