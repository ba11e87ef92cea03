//! The configuration's parsing, overrides and validation, from whole files.

use super::*;

const MINIMAL: &str = r#"
[postgres]
url = "postgres://ciosync@127.0.0.1:5432/app"
slot = "ciosync"
publication = "ciosync"

[customerio]
site_id = "YOUR_SITE_ID"
api_key = "YOUR_API_KEY"
region = "us"

[[sync]]
table = "public.users"
id_column = "id"

[sync.attributes]
email = "email"
first_name = "first_name"
plan = "plan"
created_at = "created_at"
"#;

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

fn error_of(text: &str) -> String {
    Config::from_toml(text, no_env()).unwrap_err().to_string()
}

#[test]
fn the_minimal_config_from_the_readme_parses() {
    let config = Config::from_toml(MINIMAL, no_env()).unwrap();
    assert_eq!(config.postgres.slot, "ciosync");
    assert_eq!(config.customerio.base_url(), "https://track.customer.io");
    assert_eq!(config.sync[0].schema_and_name(), ("public", "users"));
    assert_eq!(config.sync[0].attributes["first_name"], "first_name");
    assert_eq!(config.sync[0].on_id_change, OnIdChange::Merge);
    assert_eq!(config.pipeline.shutdown_timeout_secs, DEFAULT_SHUTDOWN_TIMEOUT_SECS);
    assert_eq!(config.metrics.listen_addr().unwrap(), "127.0.0.1:9820".parse().unwrap());
    assert_eq!(config.metrics.stall_timeout_secs, DEFAULT_STALL_TIMEOUT_SECS);
}

#[test]
fn a_filter_is_optional_and_kept_as_written() {
    let config = Config::from_toml(MINIMAL, no_env()).unwrap();
    assert_eq!(config.sync[0].filter, None);
    let text = MINIMAL.replace(
        "id_column = \"id\"",
        "id_column = \"id\"\nfilter = \"email_verified AND NOT is_staff\"",
    );
    let config = Config::from_toml(&text, no_env()).unwrap();
    assert_eq!(config.sync[0].filter.as_deref(), Some("email_verified AND NOT is_staff"));
}

#[test]
fn metrics_listen_takes_ipv4_and_ipv6_and_the_environment() {
    let text = MINIMAL.to_owned() + "\n[metrics]\nlisten = \"[::1]:9900\"\n";
    let config = Config::from_toml(&text, no_env()).unwrap();
    assert_eq!(config.metrics.listen_addr().unwrap(), "[::1]:9900".parse().unwrap());
    let env = vec![("CIOSYNC_METRICS_LISTEN".to_owned(), "0.0.0.0:9821".to_owned())];
    let config = Config::from_toml(MINIMAL, env).unwrap();
    assert_eq!(config.metrics.listen_addr().unwrap(), "0.0.0.0:9821".parse().unwrap());
}

#[test]
fn the_example_config_parses() {
    let text = include_str!("../../config/example.toml");
    let config = Config::from_toml(text, no_env()).unwrap();
    assert!(!config.sync.is_empty());
    assert_eq!(config.metrics.listen, DEFAULT_METRICS_LISTEN);
    assert_eq!(config.metrics.stall_timeout_secs, DEFAULT_STALL_TIMEOUT_SECS);
}

/// The commented-out `[webhooks]` section, uncommented, is valid and
/// names only known keys, with the defaults it documents.
#[test]
fn the_example_webhooks_section_parses() {
    use actions::Action;
    let text = include_str!("../../config/example.toml");
    let start = text.find("# [webhooks]").expect("the example has a [webhooks] section");
    let end = start + text[start..].find("\n\n").expect("the section ends");
    let section: String = text[start..end].lines().map(|l| format!("{}\n", &l[2..])).collect();
    let text = format!("{}{section}{}", &text[..start], &text[end..]);
    let secret = "0123456789abcdef".to_owned();
    let env = vec![
        ("CIOSYNC_WEBHOOKS_ACTIONS_SEGMENTS_SECRET".to_owned(), secret.clone()),
        ("CIOSYNC_WEBHOOKS_ACTIONS_LEAD_SCORE_SECRET".to_owned(), secret),
    ];
    let config = Config::from_toml(&text, env).unwrap();
    let actions = actions::resolve(&config).unwrap();
    assert_eq!(actions.iter().map(Action::kind).collect::<Vec<_>>(), ["segment", "update"]);
    let webhooks = config.webhooks.expect("the section is read");
    assert_eq!(webhooks.header_timeout_secs, webhooks::DEFAULT_HEADER_TIMEOUT_SECS);
    assert_eq!(webhooks.max_connections, webhooks::DEFAULT_MAX_CONNECTIONS);
    assert_eq!(webhooks.write_back.len(), 1);
    assert_eq!(webhooks.actions[0].dedupe_window_secs, actions::DEFAULT_DEDUPE_WINDOW_SECS);
}

#[test]
fn unknown_keys_are_named() {
    let text = MINIMAL.replace("region = \"us\"", "region = \"us\"\nregoin = \"eu\"");
    let err = error_of(&text);
    assert!(err.contains("regoin"), "{err}");
}

#[test]
fn bad_values_name_the_field() {
    let cases = [
        (MINIMAL.replace("region = \"us\"", "region = \"ap\""), "region"),
        (MINIMAL.replace("slot = \"ciosync\"", "slot = \"Bad-Slot\""), "postgres.slot"),
        (MINIMAL.replace("postgres://ciosync@", "mysql://ciosync@"), "postgres.url"),
        (MINIMAL.replace("id_column = \"id\"", "id_column = \"\""), "sync[0].id_column"),
        (MINIMAL.replace("region = \"us\"", "track_url = \"not a url\""), "customerio.track_url"),
        (
            MINIMAL.replace("region = \"us\"", "track_url = \"https://u:pw-zq@relay.io\""),
            "customerio.track_url: must not hold a user name or password",
        ),
        (MINIMAL.replace("email = \"email\"", "id = \"email\""), "sync[0].attributes.id"),
        (
            MINIMAL.replace("id_column = \"id\"", "id_column = \"id\"\nfilter = \" \""),
            "sync[0].filter",
        ),
        (
            MINIMAL
                .replace("id_column = \"id\"", "id_column = \"id\"\nfilter = \"a; DROP TABLE x\""),
            "sync[0].filter",
        ),
        (
            MINIMAL.to_owned() + "\n[pipeline]\nshutdown_timeout_secs = -1\n",
            "pipeline.shutdown_timeout_secs",
        ),
        (MINIMAL.to_owned() + "\n[metrics]\nlisten = \"localhost\"\n", "metrics.listen"),
        (MINIMAL.to_owned() + "\n[metrics]\nlisten = \"1.2.3.4:99999\"\n", "metrics.listen"),
        (MINIMAL.to_owned() + "\n[metrics]\nlisten = 9820\n", "metrics.listen"),
        (
            MINIMAL.to_owned() + "\n[metrics]\nstall_timeout_secs = 0\n",
            "metrics.stall_timeout_secs",
        ),
        (
            MINIMAL.to_owned() + "\n[metrics]\nheader_timeout_secs = 0\n",
            "metrics.header_timeout_secs",
        ),
        (
            MINIMAL.to_owned() + "\n[metrics]\nidle_timeout_secs = 3601\n",
            "metrics.idle_timeout_secs",
        ),
        (MINIMAL.to_owned() + "\n[metrics]\nmax_connections = 0\n", "metrics.max_connections"),
    ];
    for (text, field) in cases {
        let err = error_of(&text);
        assert!(err.contains(field), "expected {field} in: {err}");
    }
}

#[test]
fn failover_slot_is_on_where_the_server_has_them_unless_told() {
    assert_eq!(FailoverSlot::Auto.wanted(160_004), Ok(false));
    assert_eq!(FailoverSlot::Auto.wanted(170_000), Ok(true));
    assert_eq!(FailoverSlot::Off.wanted(180_001), Ok(false));
    assert_eq!(FailoverSlot::On.wanted(170_002), Ok(true));
    let refused = FailoverSlot::On.wanted(160_004).unwrap_err();
    assert!(refused.contains("postgres.failover_slot") && refused.contains("16.0"), "{refused}");
    let parsed = Config::from_toml(
        &MINIMAL.replace("slot = \"ciosync\"\n", "slot = \"ciosync\"\nfailover_slot = \"on\"\n"),
        Vec::new(),
    )
    .unwrap();
    assert_eq!(parsed.postgres.failover_slot, FailoverSlot::On);
    let env = vec![("CIOSYNC_POSTGRES_FAILOVER_SLOT".to_owned(), "off".to_owned())];
    assert_eq!(Config::from_toml(MINIMAL, env).unwrap().postgres.failover_slot, FailoverSlot::Off);
    assert_eq!(
        Config::from_toml(MINIMAL, Vec::new()).unwrap().postgres.failover_slot,
        FailoverSlot::Auto
    );
}

#[test]
fn env_overrides_the_file_and_keeps_strings_strings() {
    let env = vec![
        ("CIOSYNC_CUSTOMERIO_API_KEY".to_owned(), "from-env".to_owned()),
        ("CIOSYNC_CUSTOMERIO_SITE_ID".to_owned(), "12345".to_owned()),
        ("CIOSYNC_POSTGRES_URL".to_owned(), "postgres://other@db/app".to_owned()),
        ("CIOSYNC_PIPELINE_SHUTDOWN_TIMEOUT_SECS".to_owned(), "3".to_owned()),
        ("UNRELATED".to_owned(), "x".to_owned()),
    ];
    let config = Config::from_toml(MINIMAL, env).unwrap();
    assert_eq!(config.customerio.api_key.expose(), "from-env");
    assert_eq!(config.customerio.site_id, "12345");
    assert_eq!(config.postgres.connection().display(), "other@db:5432/app");
    assert_eq!(config.pipeline.shutdown_timeout_secs, 3);
}

#[test]
fn env_can_supply_secrets_missing_from_the_file() {
    let text = MINIMAL.replace("api_key = \"YOUR_API_KEY\"\n", "");
    assert!(error_of(&text).contains("api_key"));
    let env = vec![("CIOSYNC_CUSTOMERIO_API_KEY".to_owned(), "k".to_owned())];
    assert!(Config::from_toml(&text, env).is_ok());
}

#[test]
fn an_unknown_env_override_is_rejected_by_name() {
    let env = vec![("CIOSYNC_POSTGRES_SLOTT".to_owned(), "x".to_owned())];
    let err = Config::from_toml(MINIMAL, env).unwrap_err().to_string();
    assert!(err.contains("slott"), "{err}");
}

#[test]
fn secrets_never_show_in_debug_output_or_errors() {
    let text = MINIMAL
        .replace("YOUR_API_KEY", "sk-very-secret")
        .replace("ciosync@127", "ciosync:pw-very-secret@127");
    let config = Config::from_toml(&text, no_env()).unwrap();
    let debug = format!("{config:?}");
    assert!(!debug.contains("sk-very-secret") && !debug.contains("pw-very-secret"), "{debug}");
    let bad = text.replace("sslmode", "x").replace("/app\"", "/app?sslmode=nope\"");
    let err = error_of(&bad);
    assert!(!err.contains("pw-very-secret"), "{err}");
}

#[test]
fn slot_safety_and_log_keys_have_defaults_and_are_checked_by_name() {
    let config = Config::from_toml(MINIMAL, no_env()).unwrap();
    assert_eq!(config.postgres.on_slot_lost, OnSlotLost::Stop);
    assert_eq!(config.postgres.heartbeat_interval_secs, DEFAULT_HEARTBEAT_INTERVAL_SECS);
    assert_eq!(config.postgres.retained_wal_warn_bytes, DEFAULT_RETAINED_WAL_WARN_BYTES);
    assert_eq!(config.log.level, "info");

    let env = vec![
        ("CIOSYNC_POSTGRES_ON_SLOT_LOST".to_owned(), "recreate_and_backfill".to_owned()),
        ("CIOSYNC_POSTGRES_HEARTBEAT_INTERVAL_SECS".to_owned(), "0".to_owned()),
        ("CIOSYNC_LOG_LEVEL".to_owned(), "warn,ciosync::sink=debug".to_owned()),
    ];
    let config = Config::from_toml(MINIMAL, env).unwrap();
    assert_eq!(config.postgres.on_slot_lost, OnSlotLost::RecreateAndBackfill);
    assert_eq!(config.postgres.heartbeat_interval_secs, 0);
    assert_eq!(config.log.level, "warn,ciosync::sink=debug");

    let with = |section: &str, line: &str| {
        let text = MINIMAL.replace(&format!("[{section}]\n"), &format!("[{section}]\n{line}\n"));
        let text = if text == MINIMAL { format!("{MINIMAL}\n[{section}]\n{line}\n") } else { text };
        error_of(&text)
    };
    assert!(with("postgres", "on_slot_lost = \"recreate\"").contains("on_slot_lost"));
    assert!(with("postgres", "heartbeat_interval_secs = 100000")
        .contains("postgres.heartbeat_interval_secs"));
    assert!(with("postgres", "retained_wal_warn_bytes = 1000")
        .contains("postgres.retained_wal_warn_bytes"));
    assert!(with("log", "level = \"info,[\"").contains("log.level"));
    assert!(with("log", "format = \"json\"").contains("format"));
}

#[test]
fn webhooks_are_off_unless_configured_and_take_the_key_from_the_environment() {
    let config = Config::from_toml(MINIMAL, no_env()).unwrap();
    assert!(config.webhooks.is_none());
    let text = format!("{MINIMAL}\n[webhooks]\nlisten = \"0.0.0.0:8080\"\n");
    assert!(error_of(&text).contains("signing_key"), "{}", error_of(&text));
    let env = vec![("CIOSYNC_WEBHOOKS_SIGNING_KEY".to_owned(), "0123abcd".to_owned())];
    let config = Config::from_toml(&text, env).unwrap();
    let webhooks = config.webhooks.unwrap();
    assert_eq!(webhooks.signing_key.unwrap().expose(), "0123abcd");
    assert_eq!(webhooks.table, webhooks::DEFAULT_TABLE);
    let same = format!(
        "{MINIMAL}\n[metrics]\nlisten = \"0.0.0.0:9820\"\n\n[webhooks]\n\
             listen = \"0.0.0.0:9820\"\nsigning_key = \"k\"\n"
    );
    assert!(error_of(&same).contains("webhooks.listen"), "{}", error_of(&same));
}

#[test]
fn delete_guard_has_defaults_env_overrides_and_named_limits() {
    let config = Config::from_toml(MINIMAL, no_env()).unwrap();
    assert_eq!(config.delete_guard.max_deletes, DEFAULT_MAX_DELETES);
    assert_eq!(config.delete_guard.max_share, 0.0);
    assert_eq!(config.delete_guard.window_secs, DEFAULT_DELETE_WINDOW_SECS);

    let env = vec![
        ("CIOSYNC_DELETE_GUARD_MAX_DELETES".to_owned(), "0".to_owned()),
        ("CIOSYNC_DELETE_GUARD_MAX_SHARE".to_owned(), "0.05".to_owned()),
    ];
    let config = Config::from_toml(MINIMAL, env).unwrap();
    assert_eq!((config.delete_guard.max_deletes, config.delete_guard.max_share), (0, 0.05));

    for (line, field) in [
        ("max_share = 1.5", "delete_guard.max_share"),
        ("max_share = -0.1", "delete_guard.max_share"),
        ("window_secs = 0", "delete_guard.window_secs"),
        ("max_delete = 3", "max_delete"),
    ] {
        let err = error_of(&format!("{MINIMAL}\n[delete_guard]\n{line}\n"));
        assert!(err.contains(field), "expected {field} in: {err}");
    }
}
