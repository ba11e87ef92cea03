//! A bad config exits 2 naming the field, before anything is created or sent.

use crate::support::daemon::{binary, config_file};
use crate::support::postgres::{TestDb, USERS_TABLE};

/// The `[[objects]]` entry of the objects tests with `line` added.
fn objects_with(line: &str) -> String {
    use crate::objects_are_created_diffed_and_deleted::OBJECTS;
    OBJECTS.replace("soft_delete_column", &format!("{line}\nsoft_delete_column"))
}

#[tokio::test]
async fn bad_configs_exit_2_naming_the_field_and_create_nothing() {
    let db = TestDb::new("bad_config").await;
    db.exec(USERS_TABLE).await;
    let good = db.config("http://127.0.0.1:9", "");
    let cases = [
        (good.replace("[customerio]", "[customerio]\nregoin = \"us\""), "regoin"),
        (good.replace("track_url = \"http://127.0.0.1:9\"", "region = \"mars\""), "region"),
        (good.replace(&format!("slot = \"{}\"", db.name), "slot = \"Bad Slot\""), "postgres.slot"),
        (good.replace("id_column = \"id\"", "id_column = \"\""), "sync[0].id_column"),
        (
            good.replace("status_interval_ms = 200", "status_interval_ms = \"fast\""),
            "postgres.status_interval_ms",
        ),
        (good.replace("[[sync]]", "[[sync]]\nfilter = 1"), "filter"),
        (good.replace("[[sync]]", "[[sync]]\nfilter = \" \""), "sync[0].filter"),
        (
            good.replace("listen = \"127.0.0.1:0\"", "listen = \"everywhere:9820\""),
            "metrics.listen",
        ),
        (
            good.replace(
                "stall_timeout_secs = 120",
                "stall_timeout_secs = 120\nmax_connections = 0",
            ),
            "metrics.max_connections",
        ),
        (
            good.clone()
                + "\n[webhooks]\nlisten = \"127.0.0.1:0\"\nsigning_key = \"k\"\n\
                   max_buffered_bytes = 1024\n",
            "webhooks.max_buffered_bytes",
        ),
        (
            good.clone()
                + "\n[[devices]]\ntable = \"push_tokens\"\ncustomer_id_column = \"user_id\"\n\
                   token_column = \"token\"\nplatform = \"web\"\n",
            "devices[0].platform",
        ),
        (
            good.clone()
                + "\n[[devices]]\ntable = \"users\"\ncustomer_id_column = \"id\"\n\
                   token_column = \"email\"\nplatform = \"ios\"\n",
            "devices[0].table",
        ),
        // An [[objects]] entry's key is named by its entry, not by its place
        // among the synced tables (after the [[sync]] one: sync[1]).
        (good.clone() + &objects_with("filter = \" \""), "objects[0].filter: "),
        ("not toml at all [".to_owned(), "invalid config"),
        // As libpq: verify-ca needs the CA's file (else any public CA would do).
        (good.replace("sslmode=disable", "sslmode=verify-ca"), "sslrootcert=<file"),
        (good.replace("sslmode=disable", "sslmode=verify-ca"), "postgres.url"),
        (good.replace("sslmode=disable", "require_auth=md5,!password"), "require_auth"),
    ];
    for (text, field) in cases {
        let file = config_file(&text);
        for command in ["run", "check"] {
            let output = std::process::Command::new(binary())
                .args([command, "--config"])
                .arg(file.path())
                .env_remove("CIOSYNC_CUSTOMERIO_API_KEY")
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{command} with bad {field}: {stderr}");
            assert!(stderr.contains(field), "{command}: expected {field} in: {stderr}");
            assert!(
                !stderr.contains(crate::support::daemon::API_KEY),
                "the API key leaked: {stderr}"
            );
        }
    }
    let missing = std::process::Command::new(binary())
        .args(["run", "--config", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    let usage = std::process::Command::new(binary()).args(["run"]).output().unwrap();
    assert_eq!(usage.status.code(), Some(2), "missing --config is bad usage");

    assert_eq!(db.created_objects().await, (0, 0), "a bad config created something");
}

/// A table named by two entries (here `[[devices]]` and `[[objects]]`,
/// `[[sync]]` or `[[relationships]]`) exits 2 naming both entries and
/// saying a table can be only one of them.
#[tokio::test]
async fn a_table_in_two_sections_exits_2_naming_both_entries() {
    use crate::objects_are_created_diffed_and_deleted::OBJECTS;
    use crate::relationships_follow_memberships::RELATIONSHIPS;
    let db = TestDb::new("bad_config_twice").await;
    let teams = OBJECTS.replace("public.accounts", "public.teams").replace("\"1\"", "\"2\"");
    let good = db.config("http://127.0.0.1:9", &format!("{OBJECTS}{teams}{RELATIONSHIPS}"));
    let devices = |table: &str| {
        format!(
            "\n[[devices]]\ntable = \"{table}\"\ncustomer_id_column = \"user_id\"\n\
             token_column = \"token\"\nplatform = \"ios\"\n"
        )
    };
    for (table, other) in [
        ("public.teams", "objects[1].table"),
        ("users", "sync[0].table"),
        ("memberships", "relationships[0].table"),
    ] {
        let file = config_file(&(good.clone() + &devices("push_tokens") + &devices(table)));
        for command in ["run", "check"] {
            let output = std::process::Command::new(binary())
                .args([command, "--config"])
                .arg(file.path())
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{command}, devices and {other}: {stderr}");
            for said in ["devices[1].table", other, "a table can be only one of"] {
                assert!(stderr.contains(said), "{command}: expected {said:?} in: {stderr}");
            }
        }
    }
    assert_eq!(db.created_objects().await, (0, 0), "a bad config created something");
}
