//! The judgements of `ciosync check`, from facts given by hand: no database.
//! The tables' judgements are in `tables_tests.rs`.

use super::gather::{
    Customerio, DeadLetters, FailoverFacts, Publication, SlotFacts, WriteBack, WrittenColumn,
};
use super::judge::{self, Creatable};
use super::*;
use crate::config::fixture::two_tables;
use crate::pg::catalog::{PhysicalSlot, Schema};
use crate::pg::name::TableName;
use crate::pg::PgError;
use crate::sink::SinkError;
use crate::source::setup::{self, SlotState};

fn config() -> Config {
    two_tables("", "filter = \"NOT is_staff\"")
}

/// The test config with one more `[postgres]` line.
fn config_with(postgres_line: &str) -> Config {
    two_tables(postgres_line, "filter = \"NOT is_staff\"")
}

fn role(name: &str) -> Role {
    Role {
        name: name.into(),
        replication: false,
        superuser: false,
        provider_replication_role: None,
        can_create_in_database: true,
    }
}

fn fix_of(finding: &Finding) -> &str {
    finding.fix.as_deref().unwrap_or_default()
}

#[test]
fn a_misfit_with_a_statement_prints_it_as_the_fix() {
    let fix = setup::Fix {
        problem: "publication cio publishes only some columns of public.users".into(),
        run: Some(
            "BEGIN; ALTER PUBLICATION \"cio\" DROP TABLE \"public\".\"users\"; COMMIT".into(),
        ),
    };
    let finding = judge::misfit_finding("publication cio", fix);
    assert_eq!(finding.level, Level::Error);
    assert_eq!(finding.message, "publication cio publishes only some columns of public.users");
    assert_eq!(
        fix_of(&finding),
        "BEGIN; ALTER PUBLICATION \"cio\" DROP TABLE \"public\".\"users\"; COMMIT;"
    );
}

#[test]
fn a_misfit_without_a_statement_points_at_its_own_text() {
    let fix = setup::Fix {
        problem: "publication cio includes public.users through FOR ALL TABLES".into(),
        run: None,
    };
    let finding = judge::misfit_finding("publication cio", fix);
    assert_eq!(finding.level, Level::Error);
    assert_eq!(finding.message, "publication cio includes public.users through FOR ALL TABLES");
    assert_eq!(fix_of(&finding), "see above");
}

#[test]
fn missing_tables_are_added_quoted_with_public_as_the_default_schema() {
    let missing = vec!["crm.accounts".to_owned(), "users".to_owned()];
    let finding = judge::judge_missing_tables("publication cio", "cio", &missing);
    assert_eq!(finding.level, Level::Error);
    assert_eq!(finding.message, "exists but does not include crm.accounts, users");
    assert_eq!(
        fix_of(&finding),
        "ALTER PUBLICATION \"cio\" ADD TABLE \"crm\".\"accounts\", \"public\".\"users\";"
    );
}

#[test]
fn an_absent_publication_the_role_can_create_is_fine() {
    let facts =
        Creatable { user: "ciosync", can_create: true, not_owned: Vec::new(), own: Vec::new() };
    let finding = judge::judge_absent_publication("publication cio", &facts, &config());
    assert_eq!(finding, Finding::ok("publication cio", "does not exist yet; run will create it"));
}

#[test]
fn an_absent_publication_without_create_privilege_goes_to_the_owner() {
    let facts =
        Creatable { user: "ciosync", can_create: false, not_owned: Vec::new(), own: Vec::new() };
    let finding = judge::judge_absent_publication("publication cio", &facts, &config());
    assert_eq!(finding.level, Level::Error);
    assert_eq!(
        finding.message,
        "does not exist and role ciosync cannot create it (no CREATE privilege on the database)"
    );
    assert_eq!(
        fix_of(&finding),
        "as the tables' owner: CREATE PUBLICATION \"cio\" FOR TABLE \"public\".\"users\" \
         WHERE (NOT is_staff), \"crm\".\"accounts\" WITH (publish_via_partition_root = true);"
    );
}

#[test]
fn an_absent_publication_over_tables_the_role_does_not_own_names_them() {
    let facts = Creatable {
        user: "ciosync",
        can_create: true,
        not_owned: vec!["crm.accounts".to_owned()],
        own: Vec::new(),
    };
    let finding = judge::judge_absent_publication("publication cio", &facts, &config());
    assert_eq!(finding.level, Level::Error);
    assert_eq!(
        finding.message,
        "does not exist and role ciosync cannot create it (it does not own crm.accounts)"
    );
    assert!(fix_of(&finding).starts_with("as the tables' owner: CREATE"));
}

#[test]
fn the_publication_line_reads_the_role_and_says_when_filters_are_in_it() {
    let absent = Publication::Absent { not_owned: vec!["crm.accounts".into()], own: Vec::new() };
    let finding = judge::publication(&config(), &role("ciosync"), absent);
    assert!(finding.message.ends_with("(it does not own crm.accounts)"), "{}", finding.message);
    let fits = judge::publication(
        &config(),
        &role("ciosync"),
        Publication::Complete(Ok(None), Vec::new()),
    );
    assert_eq!(
        fits.message,
        "exists and includes every synced table, with the configured row filters"
    );
    let unfiltered = two_tables("", "");
    let fits =
        judge::publication(&unfiltered, &role("c"), Publication::Complete(Ok(None), Vec::new()));
    assert_eq!(fits, Finding::ok("publication cio", "exists and includes every synced table"));
    let definite =
        Publication::Complete(Err(PgError::Definite("sync[0].filter is bad".into())), Vec::new());
    let refused = judge::publication(&config(), &role("c"), definite);
    assert_eq!(refused, Finding::error("publication cio", "sync[0].filter is bad", "see above"));
}

#[test]
fn postgres_14_is_too_old() {
    let finding = failover::version_finding("14.12", 140_012, &config());
    assert_eq!(finding.level, Level::Error);
    assert_eq!(finding.message, "PostgreSQL 14.12; ciosync needs PostgreSQL 15 or newer");
    assert!(fix_of(&finding).starts_with("upgrade PostgreSQL"));
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
            fix_of(&on),
            "upgrade to PostgreSQL 17+, or set postgres.failover_slot = \"auto\""
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

#[test]
fn the_failover_lines_apply_from_17_unless_turned_off() {
    assert!(!failover::applies(&config(), 160_004));
    assert!(failover::applies(&config(), 170_000));
    assert!(!failover::applies(&config_with("failover_slot = \"off\""), 180_001));
}

fn physical(name: &str, active: bool, feedback: bool) -> PhysicalSlot {
    PhysicalSlot { name: name.into(), active, feedback }
}

#[test]
fn failover_without_a_standby_says_what_to_create_and_set() {
    let facts =
        FailoverFacts { slot_failover: None, physical: Vec::new(), synchronized: String::new() };
    let lines = failover::judge(&config(), &facts);
    let checks: Vec<&str> = lines.iter().map(|f| f.check.as_str()).collect();
    assert_eq!(checks, ["failover slot", "standby for failover", "synchronized_standby_slots"]);
    assert_eq!(lines[0].level, Level::Ok);
    assert!(
        lines[0].message.contains("does not exist yet; run creates it"),
        "{}",
        lines[0].message
    );
    assert!(
        fix_of(&lines[1]).starts_with("SELECT pg_create_physical_replication_slot('standby_1')")
    );
    assert!(fix_of(&lines[2]).contains("synchronized_standby_slots = 'standby_1'"));
}

#[test]
fn failover_judges_each_physical_slot_and_the_names_the_setting_gives() {
    let facts = FailoverFacts {
        slot_failover: Some(false),
        physical: vec![
            physical("a", true, true),
            physical("b", true, false),
            physical("c", false, false),
        ],
        synchronized: "a, gone".into(),
    };
    let lines = failover::judge(&config(), &facts);
    let levels: Vec<Level> = lines.iter().map(|f| f.level).collect();
    use Level::{Ok, Warning};
    assert_eq!(levels, [Warning, Ok, Warning, Warning, Warning]);
    assert!(fix_of(&lines[0]).contains("ALTER_REPLICATION_SLOT \"ciosync\" (FAILOVER true)"));
    assert!(lines[2].message.contains("without hot_standby_feedback"), "{}", lines[2].message);
    assert!(lines[3].message.contains("no standby streams through it now"));
    assert!(
        lines[4].message.starts_with("names gone with no physical slot"),
        "{}",
        lines[4].message
    );
    let synced = FailoverFacts { synchronized: "a".into(), ..facts };
    assert_eq!(
        failover::judge(&config(), &synced)[4],
        Finding::ok("synchronized_standby_slots", "a")
    );
}

#[test]
fn a_standby_is_no_primary() {
    assert_eq!(failover::standby(false), None);
    let finding = failover::standby(true).expect("a line for a standby");
    assert_eq!((finding.level, finding.check.as_str()), (Level::Error, "primary"));
}

#[test]
fn wal_level_must_be_logical() {
    assert_eq!(judge::wal_level("logical"), Finding::ok("wal_level", "logical"));
    let replica = judge::wal_level("replica");
    assert_eq!(replica.message, "is replica; logical replication needs logical");
    assert_eq!(fix_of(&replica), "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL");
}

#[test]
fn replication_comes_from_the_attribute_superuser_or_a_provider_role() {
    let providers = failover::PROVIDER_REPLICATION_ROLES;
    let plain = role("app user");
    let refused = judge::replication_privilege(&plain, &providers);
    assert_eq!(refused.level, Level::Error);
    assert!(refused.message.ends_with("replication role (rds_replication)"), "{}", refused.message);
    assert!(fix_of(&refused).starts_with("ALTER ROLE \"app user\" REPLICATION;"));
    let rds = Role { provider_replication_role: Some("rds_replication".into()), ..plain.clone() };
    assert_eq!(
        judge::replication_privilege(&rds, &providers).message,
        "role app user may replicate (member of rds_replication)"
    );
    let superuser = Role { superuser: true, ..plain };
    assert_eq!(
        judge::replication_privilege(&superuser, &providers),
        Finding::ok("replication privilege", "role app user may replicate")
    );
}

fn slot_facts(state: SlotState) -> SlotFacts {
    SlotFacts { state: Ok(state), recorded: false, in_use: 0 }
}

#[test]
fn a_slot_is_usable_busy_unusable_lost_or_to_be_created() {
    let usable = SlotState::Usable {
        active: false,
        confirmed_flush_lsn: Some("0/16B3748".into()),
        failover: None,
    };
    let line = judge::slot(&config(), 10, slot_facts(usable));
    assert_eq!(line.message, "exists (pgoutput), confirmed up to 0/16B3748");
    let busy = SlotState::Usable { active: true, confirmed_flush_lsn: None, failover: None };
    assert_eq!(judge::slot(&config(), 10, slot_facts(busy)).level, Level::Warning);
    let unusable = judge::slot(&config(), 10, slot_facts(SlotState::Unusable("why".into())));
    assert_eq!(unusable, Finding::error("replication slot ciosync", "why", "see above"));
    let invalidated = judge::slot(&config(), 10, slot_facts(SlotState::Invalidated));
    assert_eq!(invalidated.level, Level::Error);
    let recreate = config_with("on_slot_lost = \"recreate_and_backfill\"");
    let dropped = SlotFacts { state: Ok(SlotState::Missing), recorded: true, in_use: 0 };
    let warned = judge::slot(&recreate, 10, dropped);
    assert_eq!(warned.level, Level::Warning);
    assert!(fix_of(&warned).starts_with("postgres.on_slot_lost = recreate_and_backfill"));
    let room = SlotFacts { state: Ok(SlotState::Missing), recorded: false, in_use: 9 };
    assert_eq!(judge::slot(&config(), 10, room).level, Level::Ok);
    let full = SlotFacts { state: Ok(SlotState::Missing), recorded: false, in_use: 10 };
    let full = judge::slot(&config(), 10, full);
    assert_eq!(full.message, "does not exist and all 10 replication slots are in use");
}

#[test]
fn the_state_schema_is_writable_creatable_or_a_grant() {
    let user = role("ciosync");
    let missing = Schema { exists: false, writable: false };
    assert_eq!(judge::state_schema(missing, &user).level, Level::Ok);
    let no_create = Role { can_create_in_database: false, ..user.clone() };
    let refused = judge::state_schema(missing, &no_create);
    assert_eq!(fix_of(&refused), "CREATE SCHEMA ciosync AUTHORIZATION \"ciosync\";");
    let read_only = judge::state_schema(Schema { exists: true, writable: false }, &user);
    assert_eq!(fix_of(&read_only), "GRANT USAGE, CREATE ON SCHEMA ciosync TO \"ciosync\";");
    let fine = judge::state_schema(Schema { exists: true, writable: true }, &no_create);
    assert_eq!(fine.level, Level::Ok);
}

#[test]
fn dead_letters_are_a_warning_when_waiting_and_an_error_when_unwritable() {
    assert_eq!(judge::dead_letters(DeadLetters::NoTable, "c"), None);
    assert_eq!(
        judge::dead_letters(DeadLetters::Waiting(0), "c"),
        Some(Finding::ok("dead letters", "none"))
    );
    let waiting = judge::dead_letters(DeadLetters::Waiting(2), "c").expect("a line");
    assert_eq!(waiting.level, Level::Warning);
    assert!(waiting.message.starts_with("2 operations Customer.io refused wait"), "{waiting:?}");
    let one = judge::dead_letters(DeadLetters::Waiting(1), "c").expect("a line");
    assert!(one.message.starts_with("1 operation Customer.io refused waits"), "{one:?}");
    let refused = judge::dead_letters(DeadLetters::NotWritable, "c").expect("a line");
    assert_eq!(refused.level, Level::Error);
    assert!(fix_of(&refused).contains("GRANT USAGE ON SEQUENCE ciosync.dead_letters_id_seq"));
}

#[test]
fn write_back_names_every_missing_grant_and_each_unknown_column_first() {
    let users = TableName::parse("users").expect("a name");
    let facts = WriteBack {
        denied_functions: vec!["pg_catalog.pg_replication_origin_oid(text)"],
        columns: vec![
            WrittenColumn {
                index: 0,
                table: users.clone(),
                column: "bounced".into(),
                may_update: Some(false),
            },
            WrittenColumn {
                index: 1,
                table: users.clone(),
                column: "nope".into(),
                may_update: None,
            },
            WrittenColumn {
                index: 2,
                table: users,
                column: "opened".into(),
                may_update: Some(true),
            },
        ],
    };
    let lines = judge::write_back(&facts, "ciosync");
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0].message, "write_back[1].column nope is not a column of public.users");
    assert_eq!(
        fix_of(&lines[1]),
        "GRANT EXECUTE ON FUNCTION pg_catalog.pg_replication_origin_oid(text) TO \"ciosync\"; \
         GRANT UPDATE (\"bounced\") ON \"public\".\"users\" TO \"ciosync\";"
    );
    let granted = WriteBack { denied_functions: Vec::new(), columns: Vec::new() };
    assert_eq!(judge::write_back(&granted, "ciosync")[0].level, Level::Ok);
}

#[test]
fn customerio_answers_become_a_line() {
    let answered = |region: Result<String, SinkError>| Customerio::Answered {
        base_url: "https://track.customer.io".into(),
        region,
    };
    let us = judge::customerio(&config(), answered(Ok("us".into())));
    assert_eq!(us.message, "accepted by https://track.customer.io (region us)");
    let eu = judge::customerio(&config(), answered(Ok("eu".into())));
    assert_eq!(eu.level, Level::Warning);
    assert_eq!(fix_of(&eu), "set region = \"eu\" in [customerio]");
    let refused = judge::customerio(&config(), answered(Err(SinkError::Unauthorized)));
    assert_eq!(
        refused.message,
        "https://track.customer.io refused the site id and API key (HTTP 401)"
    );
    let bug = judge::customerio(&config(), Customerio::NoClient("no TLS".into()));
    assert_eq!(bug, Finding::error("customer.io credentials", "no TLS", "report this as a bug"));
}

#[test]
fn a_finding_renders_its_fix_on_a_line_of_its_own() {
    let finding = Finding::warning("dead letters", "2 wait", "ciosync dlq list");
    assert_eq!(finding.render(), "warning dead letters: 2 wait\n        fix: ciosync dlq list");
    assert_eq!(
        Finding::ok("config", "parsed and valid").render(),
        "ok      config: parsed and valid"
    );
}

#[test]
fn the_connection_line_says_where_which_version_and_whether_tls() {
    let at = "ciosync@db.internal:5432/app";
    assert_eq!(
        judge::connected(at, Some("17.4"), Some(true)),
        Finding::ok(
            "postgres connection",
            "connected to ciosync@db.internal:5432/app (PostgreSQL 17.4, TLS on)"
        )
    );
    let unknown = judge::connected(at, None, None);
    assert!(unknown.message.ends_with("(PostgreSQL unknown, TLS off)"), "{}", unknown.message);
    assert!(judge::connected(at, Some("17.4"), Some(false)).message.ends_with("TLS off)"));
}

#[test]
fn a_failed_connection_prints_the_tls_refusal_or_what_to_check() {
    let plain = judge::connection_failed("ciosync@db:5432/app", "connection refused", None);
    assert_eq!(plain.level, Level::Error);
    assert_eq!(plain.message, "cannot connect to ciosync@db:5432/app: connection refused");
    assert!(fix_of(&plain).starts_with("check postgres.url (host, port, user, password"));
    assert!(fix_of(&plain).ends_with("accepts this client in pg_hba.conf"));
    let refusal = Some("the server's certificate is not signed by postgres.ca_file".to_owned());
    let tls = judge::connection_failed("ciosync@db:5432/app", "bad certificate", refusal);
    assert_eq!(fix_of(&tls), "the server's certificate is not signed by postgres.ca_file");
}

fn webhooks(table: &str) -> crate::config::webhooks::WebhooksConfig {
    toml::from_str(&format!("listen = \"127.0.0.1:0\"\nsigning_key = \"k\"\n{table}"))
        .expect("a valid [webhooks] section")
}

#[test]
fn the_webhook_table_line_follows_the_rolled_back_try() {
    let default = webhooks("");
    assert_eq!(
        judge::webhooks_table(&default, Ok(()), "ciosync"),
        Finding::ok(
            "webhooks.table ciosync.message_events",
            "can be created if missing and written (tried, then rolled back)"
        )
    );
    let elsewhere = webhooks("table = \"reports.events\"\n");
    let refused = judge::webhooks_table(&elsewhere, Err("permission denied".into()), "app");
    assert_eq!(refused.check, "webhooks.table reports.events");
    assert_eq!(
        refused.message,
        "the webhook receiver could not create or write it: permission denied"
    );
    assert_eq!(
        fix_of(&refused),
        "CREATE SCHEMA IF NOT EXISTS \"reports\" AUTHORIZATION \"app\"; or create the table as \
         the README shows and GRANT USAGE ON SCHEMA \"reports\" TO \"app\"; GRANT INSERT ON \
         \"reports\".\"events\" TO \"app\";"
    );
}
