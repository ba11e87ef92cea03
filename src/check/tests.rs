//! The judgements of `ciosync check`, from facts given by hand: no database.

use super::*;

fn config() -> Config {
    config_with("")
}

/// The test config with one more `[postgres]` line.
fn config_with(postgres_line: &str) -> Config {
    let text = format!(
        r#"
[postgres]
url = "postgres://ciosync@127.0.0.1:5432/app"
publication = "cio"
{postgres_line}

[customerio]
site_id = "s"
api_key = "k"

[[sync]]
table = "users"
id_column = "id"
filter = "NOT is_staff"

[sync.attributes]
email = "email"

[[sync]]
table = "crm.accounts"
id_column = "id"

[sync.attributes]
name = "name"
"#
    );
    Config::from_toml(&text, Vec::new()).unwrap()
}

#[test]
fn a_misfit_with_a_statement_prints_it_as_the_fix() {
    let fix = setup::Fix {
        problem: "publication cio publishes only some columns of public.users".into(),
        run: Some(
            "BEGIN; ALTER PUBLICATION \"cio\" DROP TABLE \"public\".\"users\"; COMMIT".into(),
        ),
    };
    let finding = misfit_finding("publication cio", fix);
    assert_eq!(finding.level, Level::Error);
    assert_eq!(finding.message, "publication cio publishes only some columns of public.users");
    assert_eq!(
        finding.fix.as_deref(),
        Some("BEGIN; ALTER PUBLICATION \"cio\" DROP TABLE \"public\".\"users\"; COMMIT;")
    );
}

#[test]
fn a_misfit_without_a_statement_points_at_its_own_text() {
    let fix = setup::Fix {
        problem: "publication cio includes public.users through FOR ALL TABLES".into(),
        run: None,
    };
    let finding = misfit_finding("publication cio", fix);
    assert_eq!(finding.level, Level::Error);
    assert_eq!(finding.message, "publication cio includes public.users through FOR ALL TABLES");
    assert_eq!(finding.fix.as_deref(), Some("see above"));
}

#[test]
fn missing_tables_are_added_quoted_with_public_as_the_default_schema() {
    let missing = vec!["crm.accounts".to_owned(), "users".to_owned()];
    let finding = judge_missing_tables("publication cio", "cio", &missing);
    assert_eq!(finding.level, Level::Error);
    assert_eq!(finding.message, "exists but does not include crm.accounts, users");
    assert_eq!(
        finding.fix.as_deref(),
        Some("ALTER PUBLICATION \"cio\" ADD TABLE \"crm\".\"accounts\", \"public\".\"users\";")
    );
}

#[test]
fn an_absent_publication_the_role_can_create_is_fine() {
    let facts = Creatable { user: "ciosync", can_create: true, not_owned: &[] };
    let finding = judge_absent_publication("publication cio", &facts, &config());
    assert_eq!(finding, Finding::ok("publication cio", "does not exist yet; run will create it"));
}

#[test]
fn an_absent_publication_without_create_privilege_goes_to_the_owner() {
    let facts = Creatable { user: "ciosync", can_create: false, not_owned: &[] };
    let finding = judge_absent_publication("publication cio", &facts, &config());
    assert_eq!(finding.level, Level::Error);
    assert_eq!(
        finding.message,
        "does not exist and role ciosync cannot create it (no CREATE privilege on the database)"
    );
    assert_eq!(
        finding.fix.as_deref(),
        Some(
            "as the tables' owner: CREATE PUBLICATION \"cio\" FOR TABLE \"public\".\"users\" \
             WHERE (NOT is_staff), \"crm\".\"accounts\" WITH (publish_via_partition_root = true);"
        )
    );
}

#[test]
fn an_absent_publication_over_tables_the_role_does_not_own_names_them() {
    let not_owned = vec!["crm.accounts".to_owned()];
    let facts = Creatable { user: "ciosync", can_create: true, not_owned: &not_owned };
    let finding = judge_absent_publication("publication cio", &facts, &config());
    assert_eq!(finding.level, Level::Error);
    assert_eq!(
        finding.message,
        "does not exist and role ciosync cannot create it (it does not own crm.accounts)"
    );
    assert!(finding.fix.as_deref().is_some_and(|f| f.starts_with("as the tables' owner: CREATE")));
}

#[test]
fn postgres_14_is_too_old() {
    let finding = failover::version_finding("14.12", 140_012, &config());
    assert_eq!(finding.level, Level::Error);
    assert_eq!(finding.message, "PostgreSQL 14.12; ciosync needs PostgreSQL 15 or newer");
    assert!(finding.fix.as_deref().is_some_and(|f| f.starts_with("upgrade PostgreSQL")));
}

#[test]
fn postgres_15_and_16_lose_the_slot_on_promotion() {
    for (version, num) in [("15.8", 150_008), ("16.4", 160_004)] {
        let auto = failover::version_finding(version, num, &config());
        assert_eq!(auto.level, Level::Ok, "{version}");
        assert!(auto.message.contains("no failover slots before 17"), "{}", auto.message);
        let on = failover::version_finding(version, num, &config_with("failover_slot = \"on\""));
        assert_eq!(on.level, Level::Error, "{version}");
        assert_eq!(
            on.fix.as_deref(),
            Some("upgrade to PostgreSQL 17+, or set postgres.failover_slot = \"auto\"")
        );
    }
}

#[test]
fn postgres_17_says_what_failover_slot_makes_of_the_slot() {
    let auto = failover::version_finding("17.2", 170_002, &config());
    assert_eq!(
        auto,
        Finding::ok(
            "postgres version",
            "PostgreSQL 17.2: failover slots available; postgres.failover_slot = auto makes the \
             slot one"
        )
    );
    let off = failover::version_finding("17.2", 170_002, &config_with("failover_slot = \"off\""));
    assert_eq!(off.level, Level::Ok);
    assert!(off.message.ends_with("= off keeps an ordinary slot, lost when a standby is promoted"));
}
