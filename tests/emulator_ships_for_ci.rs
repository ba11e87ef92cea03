//! The emulator ships for other people's CI: the Dockerfile's `emulator`
//! target is small and non-root and runs what the README says, and the
//! README's GitHub Actions and GitLab CI recipes and
//! `deploy/compose/docker-compose.yml` name the same image, port, flags and
//! healthcheck, whose endpoint the emulator serves. (That the Dockerfile's
//! entrypoint and healthcheck commands work with the built binary is
//! `crates/emulator/tests/health_check_answers.rs`.) No image is built:
//! base images cannot be pulled on the development machine.

use crate::support::deploy::{
    code_blocks, dockerfile_stages, exec_form, markdown_section, read, yaml_text_documents, Stage,
};
use ciosync::config::Config;
use ciosync_emulator::{Emulator, EmulatorConfig, ServerTls, HEALTH_PATH};
use serde_norway::{Mapping, Value};

const COMPOSE: &str = "deploy/compose/docker-compose.yml";
const CI_SECTION: &str = "### In CI and docker compose";
const CREDENTIALS: [&str; 2] = ["CIOSYNC_EMULATOR_SITE_ID", "CIOSYNC_EMULATOR_API_KEY"];

fn stages() -> Vec<Stage> {
    dockerfile_stages(&read("Dockerfile"))
}

fn stage<'a>(stages: &'a [Stage], name: &str) -> &'a Stage {
    let found = stages.iter().find(|s| s.name.as_deref() == Some(name));
    found.unwrap_or_else(|| panic!("the Dockerfile has a stage `{name}`"))
}

/// The stage a `COPY --from=STAGE SRC DEST` of `stage` copies the binary
/// from, and the binary's path in the image.
fn copied_binary<'a>(stages: &'a [Stage], stage: &Stage) -> (&'a Stage, String) {
    let copy = stage.one("COPY");
    let words: Vec<&str> = copy.split_whitespace().collect();
    let from = words[0].strip_prefix("--from=").expect("COPY --from=<build stage>");
    (self::stage(stages, from), words.last().unwrap().to_string())
}

/// The user is given by a non-zero uid (a name could map to root).
fn assert_non_root(stage: &Stage) {
    let user = stage.one("USER");
    let uid: u32 = user.split(':').next().unwrap().parse().expect("USER as a numeric uid");
    assert_ne!(uid, 0, "USER {user}");
}

fn exposed_port(stage: &Stage) -> u16 {
    stage.one("EXPOSE").parse().expect("one EXPOSE port")
}

/// The emulator stage's entrypoint, healthcheck command and port.
struct EmulatorImage {
    entrypoint: Vec<String>,
    healthcheck: Vec<String>,
    port: u16,
}

fn emulator_image() -> EmulatorImage {
    let stages = stages();
    let emulator = stage(&stages, "emulator");
    let healthcheck = emulator.one("HEALTHCHECK");
    let command = healthcheck.split_once("CMD ").expect("HEALTHCHECK … CMD [...]").1;
    EmulatorImage {
        entrypoint: exec_form(emulator.one("ENTRYPOINT")),
        healthcheck: exec_form(command),
        port: exposed_port(emulator),
    }
}

#[test]
fn the_dockerfile_builds_a_small_non_root_emulator_beside_the_daemon() {
    let stages = stages();
    let emulator = stage(&stages, "emulator");
    assert!(emulator.from.starts_with("gcr.io/distroless/"), "small: {}", emulator.from);
    let (build, binary) = copied_binary(&stages, emulator);
    let run = build.one("RUN");
    for needed in ["cargo build", "--release", "--locked", "-p ciosync-emulator"] {
        assert!(run.contains(needed), "the emulator's build runs {needed}: {run}");
    }
    assert!(run.contains("--bin ciosync-emulator"), "{run}");
    assert!(!run.contains("--bin ciosync "), "the emulator's build leaves the daemon out: {run}");
    assert_non_root(emulator);

    let image = emulator_image();
    let listen = format!("0.0.0.0:{}", image.port);
    assert_eq!(image.entrypoint, [binary.as_str(), "--listen", &listen], "on every interface");
    assert_eq!(
        image.healthcheck,
        [binary.as_str(), "--health-check", &format!("127.0.0.1:{}", image.port)]
    );

    // A plain `docker build` still builds the daemon: it is the last stage.
    let daemon = stages.last().unwrap();
    assert_eq!(daemon.name.as_deref(), Some("daemon"));
    assert_eq!(exec_form(daemon.one("ENTRYPOINT")), ["/usr/local/bin/ciosync"]);
    let (build, _) = copied_binary(&stages, daemon);
    assert!(build.one("RUN").contains("--locked --bin ciosync "), "{}", build.one("RUN"));
    assert_non_root(daemon);
    assert_eq!(exposed_port(daemon), 9820);

    // What the README says the image runs, on which port, and how it is built.
    let readme = read("README.md");
    let section = markdown_section(&readme, CI_SECTION);
    let runs = format!("`ciosync-emulator {}`", image.entrypoint[1..].join(" "));
    let probe = format!("`ciosync-emulator {}`", image.healthcheck[1..].join(" "));
    for said in [runs, probe, format!("exposes port\n{}", image.port), HEALTH_PATH.to_owned()] {
        assert!(
            section.replace('\n', " ").contains(&said.replace('\n', " ")),
            "the README says {said}"
        );
    }
    let image_name = compose_emulator()["image"].as_str().unwrap().to_owned();
    let build_line = format!("docker build --target emulator -t {image_name} .");
    assert!(section.contains(&build_line), "the README builds {image_name}: {build_line}");
}

fn compose() -> Value {
    yaml_text_documents(&read(COMPOSE), COMPOSE).remove(0)
}

fn compose_emulator() -> Value {
    compose()["services"]["customerio"].clone()
}

/// The container port of a `HOST:CONTAINER` or `IP:HOST:CONTAINER` mapping.
fn container_port(mapping: &Value) -> u16 {
    let text = mapping.as_str().expect("a port mapping as a string");
    text.rsplit(':').next().unwrap().parse().expect("a port number")
}

fn keys(mapping: &Value) -> Vec<&str> {
    mapping.as_mapping().map_or(Vec::new(), |m| m.keys().filter_map(Value::as_str).collect())
}

/// The YAML blocks of the README's CI section, parsed.
fn readme_recipes() -> Vec<Value> {
    let readme = read("README.md");
    let section = markdown_section(&readme, CI_SECTION);
    let blocks = code_blocks(section, "yaml");
    assert_eq!(blocks.len(), 3, "two GitHub Actions recipes and a GitLab CI one");
    blocks.iter().map(|b| yaml_text_documents(b, "a README YAML block").remove(0)).collect()
}

/// The one entry of `services` (a mapping or a list) that runs `image`.
fn service_running<'a>(services: &'a Value, image: &str, field: &str) -> Option<&'a Value> {
    let all: Vec<&Value> = match services {
        Value::Mapping(m) => m.values().collect(),
        Value::Sequence(s) => s.iter().collect(),
        _ => Vec::new(),
    };
    all.into_iter().find(|s| s[field].as_str() == Some(image))
}

#[test]
fn the_ci_recipes_and_the_compose_file_name_the_same_image_port_and_flags() {
    let image = emulator_image();
    let compose = compose();
    let emulator = &compose["services"]["customerio"];
    let name = emulator["image"].as_str().expect("the compose file names the image");
    assert_eq!(emulator["build"]["target"].as_str(), Some("emulator"));
    let ports = emulator["ports"].as_sequence().expect("ports");
    assert!(ports.iter().any(|p| container_port(p) == image.port), "{ports:?}");
    assert_eq!(keys(&emulator["environment"]), CREDENTIALS);
    let mut test = vec![Value::from("CMD")];
    test.extend(image.healthcheck.iter().map(|w| Value::from(w.as_str())));
    assert_eq!(emulator["healthcheck"]["test"], Value::Sequence(test), "the image's healthcheck");
    let postgres = &compose["services"]["postgres"];
    let command: Vec<&str> =
        postgres["command"].as_sequence().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(command.contains(&"wal_level=logical"), "{command:?}");
    let ciosync = &compose["services"]["ciosync"];
    assert_eq!(ciosync["build"]["target"].as_str(), Some("daemon"));
    assert_eq!(ciosync["depends_on"]["customerio"]["condition"].as_str(), Some("service_healthy"));

    let recipes = readme_recipes();
    let github: Vec<&Value> = recipes.iter().filter(|r| r["jobs"].is_mapping()).collect();
    assert_eq!(github.len(), 2, "GitHub Actions over HTTP and over HTTPS");
    for recipe in github {
        let job = recipe["jobs"].as_mapping().unwrap().values().next().unwrap();
        check_github_job(job, name, image.port);
    }

    let gitlab = recipes.iter().find(|r| !r["jobs"].is_mapping()).unwrap();
    let job = gitlab
        .as_mapping()
        .unwrap()
        .values()
        .find(|j| j["services"].is_sequence())
        .expect("a GitLab job");
    let service = service_running(&job["services"], name, "name").expect("the emulator service");
    let alias = service["alias"].as_str().expect("an alias");
    assert_eq!(keys(&service["variables"]), CREDENTIALS);
    let url = job["variables"]["CUSTOMERIO_TRACK_URL"].as_str().unwrap();
    assert!(url.starts_with(&format!("http://{alias}:{}/", image.port)), "{url}");
    let job_variables = job["variables"].as_mapping().unwrap().clone();
    assert_same_credentials(&service["variables"], &job_variables);
}

/// A GitHub Actions job runs the emulator `image` as a service on `port`,
/// waits for its healthcheck, and gives its client the same credentials;
/// with TLS, it fetches the CA certificate the emulator serves.
fn check_github_job(job: &Value, image: &str, port: u16) {
    let service = service_running(&job["services"], image, "image").expect("the emulator service");
    let ports = service["ports"].as_sequence().expect("ports");
    assert!(ports.iter().any(|p| container_port(p) == port), "{ports:?}");
    let env = keys(&service["env"]);
    assert!(CREDENTIALS.iter().all(|c| env.contains(c)), "{env:?}");
    let options = service["options"].as_str().expect("options");
    for option in ["--health-interval", "--health-timeout", "--health-retries"] {
        assert!(options.contains(option), "{options}");
    }
    assert!(!options.contains("--health-cmd"), "no shell in the image to run one: {options}");
    let steps = serde_norway::to_string(&job["steps"]).unwrap();
    let tls = service["env"]["CIOSYNC_EMULATOR_TLS_SELF_SIGNED"].is_string();
    let polled = match tls {
        true => format!("https://127.0.0.1:{port}/_emulator/ca.pem"),
        false => format!("http://127.0.0.1:{port}{HEALTH_PATH}"),
    };
    assert!(steps.contains(&polled), "a step fetches {polled}: {steps}");
    assert_same_credentials(&service["env"], &steps_env(job));
}

/// The variables of every step of a GitHub Actions job, merged.
fn steps_env(job: &Value) -> Mapping {
    let mut env = Mapping::new();
    for step in job["steps"].as_sequence().unwrap() {
        if let Some(step_env) = step["env"].as_mapping() {
            env.extend(step_env.clone());
        }
    }
    env
}

/// The client is given the credentials the emulator expects.
fn assert_same_credentials(emulator: &Value, client: &Mapping) {
    for (theirs, ours) in
        [("CUSTOMERIO_SITE_ID", CREDENTIALS[0]), ("CUSTOMERIO_API_KEY", CREDENTIALS[1])]
    {
        assert_eq!(client.get(theirs), emulator.get(ours), "{theirs} is the emulator's {ours}");
    }
}

#[tokio::test]
async fn the_endpoints_the_recipes_fetch_answer_without_credentials() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let emulator = Emulator::start(listener, EmulatorConfig::new("site", "key")).await.unwrap();
    let response = reqwest::get(format!("{}{HEALTH_PATH}", emulator.url())).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);

    let dir = tempfile::tempdir().unwrap();
    let (tls, ca) = ServerTls::self_signed(dir.path(), &[]).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = EmulatorConfig::new("site", "key");
    let emulator = Emulator::start_tls(listener, config, tls).await.unwrap();
    let client = reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap();
    for path in [HEALTH_PATH, "/_emulator/ca.pem"] {
        let response = client.get(format!("{}{path}", emulator.url())).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path} over HTTPS");
        if path.ends_with(".pem") {
            assert_eq!(response.text().await.unwrap(), std::fs::read_to_string(&ca).unwrap());
        }
    }
}

#[test]
fn the_compose_files_ciosync_config_loads_and_reaches_both_services() {
    let compose = compose();
    let services = &compose["services"];
    let ciosync = &services["ciosync"];
    let env: Vec<(String, String)> = ciosync["environment"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().to_owned(), v.as_str().unwrap().to_owned()))
        .collect();
    let volume = ciosync["volumes"][0].as_str().unwrap();
    let file = volume.split(':').next().unwrap().trim_start_matches("./");
    let toml = read(&format!("deploy/compose/{file}"));
    let config = Config::from_toml(&toml, env.clone())
        .unwrap_or_else(|e| panic!("deploy/compose/{file} does not load: {e}"));

    let track =
        url::Url::parse(config.customerio.track_url.as_deref().expect("track_url")).unwrap();
    assert!(services[track.host_str().unwrap()].is_mapping(), "track_url names a service: {track}");
    assert_eq!(track.port(), Some(emulator_image().port));
    let variable = |name: &str| env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let emulator_env = &services["customerio"]["environment"];
    assert_eq!(variable("CIOSYNC_CUSTOMERIO_SITE_ID"), emulator_env[CREDENTIALS[0]].as_str());
    assert_eq!(variable("CIOSYNC_CUSTOMERIO_API_KEY"), emulator_env[CREDENTIALS[1]].as_str());

    let database = url::Url::parse(variable("CIOSYNC_POSTGRES_URL").unwrap()).unwrap();
    let postgres = &services["postgres"]["environment"];
    assert!(services[database.host_str().unwrap()].is_mapping(), "the URL names a service");
    assert_eq!(Some(database.username()), postgres["POSTGRES_USER"].as_str());
    assert_eq!(database.password(), postgres["POSTGRES_PASSWORD"].as_str());
    assert_eq!(
        Some(database.path()),
        postgres["POSTGRES_DB"].as_str().map(|d| format!("/{d}")).as_deref()
    );
    let listen = config.metrics.listen_addr().unwrap();
    assert!(listen.ip().is_unspecified(), "metrics reachable from outside the container");

    let init = read("deploy/compose/init.sql");
    for sync in &config.sync {
        let (schema, table) = sync.schema_and_name();
        assert!(
            init.contains(&format!("CREATE TABLE {schema}.{table} (")),
            "init.sql creates {schema}.{table}"
        );
    }
}
