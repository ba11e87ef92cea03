//! The judgements of `ciosync check` over the server, the role, the
//! publication, the slot, the `ciosync` schema, the webhook receiver and
//! Customer.io: pure functions from the facts [`super::gather`] read (and
//! the config) to report lines, each with the fix. The tables' lines are in
//! [`super::tables`], the version and failover lines in [`super::failover`].

use super::gather::{Customerio, DeadLetters, Publication, SlotFacts, WriteBack};
use super::Finding;
use crate::config::webhooks::WebhooksConfig;
use crate::config::{Config, OnSlotLost, Region};
use crate::error::error_chain;
use crate::pg::catalog::{Role, Schema};
use crate::pg::quote::{quote_ident, quoted_table};
use crate::pg::{lost_message, Lost, PgError};
use crate::sink::SinkError;
use crate::source::own_filters::Named;
use crate::source::setup::{self, SlotState};
use crate::wording::{count, plural};

/// The connection failed: `display` is where to (no password), `refusal`
/// what TLS refused when it was TLS.
pub fn connection_failed(display: &str, error: &str, refusal: Option<String>) -> Finding {
    let fix = refusal.unwrap_or_else(|| {
        "check postgres.url (host, port, user, password, database, sslmode) and that the \
         server accepts this client in pg_hba.conf"
            .to_owned()
    });
    Finding::error("postgres connection", format!("cannot connect to {display}: {error}"), fix)
}

/// The connection line: where, which version, whether over TLS.
pub fn connected(display: &str, version: Option<&str>, tls: Option<bool>) -> Finding {
    Finding::ok(
        "postgres connection",
        format!(
            "connected to {display} (PostgreSQL {}, TLS {})",
            version.unwrap_or("unknown"),
            if tls == Some(true) { "on" } else { "off" }
        ),
    )
}

/// A check query failed midway: the findings so far stand.
pub fn query_failed(error: &tokio_postgres::Error) -> Finding {
    Finding::error(
        "postgres",
        format!("a check query failed: {}", error_chain(error)),
        "run check again; if it persists, check the role's privileges",
    )
}

pub fn wal_level(wal_level: &str) -> Finding {
    if wal_level == "logical" {
        Finding::ok("wal_level", "logical")
    } else {
        Finding::error(
            "wal_level",
            format!("is {wal_level}; logical replication needs logical"),
            "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL",
        )
    }
}

/// The role may stream from a slot: `REPLICATION`, superuser, or member of
/// one of `provider_roles` (a managed service's stand-in).
pub fn replication_privilege(role: &Role, provider_roles: &[&str]) -> Finding {
    let check = "replication privilege";
    let user = &role.name;
    match (role.replication || role.superuser, &role.provider_replication_role) {
        (true, _) => Finding::ok(check, format!("role {user} may replicate")),
        (false, Some(granted)) => {
            Finding::ok(check, format!("role {user} may replicate (member of {granted})"))
        }
        (false, None) => Finding::error(
            check,
            format!(
                "role {user} has neither REPLICATION nor SUPERUSER, nor a managed service's \
                 replication role ({})",
                provider_roles.join(", ")
            ),
            format!(
                "ALTER ROLE {user_ident} REPLICATION; (on Amazon RDS or Aurora: GRANT \
                 rds_replication TO {user_ident};)",
                user_ident = quote_ident(user)
            ),
        ),
    }
}

/// The publication: fine as it is, or what to run.
pub fn publication(config: &Config, role: &Role, facts: Publication) -> Finding {
    let label = format!("publication {}", config.postgres.publication);
    match facts {
        Publication::Unreadable(e) => {
            Finding::error(&label, error_chain(&e), "check the role's privileges")
        }
        Publication::Complete(Ok(None), own) if !own.is_empty() => Finding::ok(
            &label,
            format!(
                "exists and includes every synced table; ciosync evaluates the filter of {} \
                 itself, on each change (their replica identity cannot carry it)",
                own.iter().map(|(s, n)| format!("{s}.{n}")).collect::<Vec<_>>().join(", ")
            ),
        ),
        Publication::Complete(Ok(None), _) if config.sync.iter().any(|s| s.filter.is_some()) => {
            Finding::ok(
                &label,
                "exists and includes every synced table, with the configured row filters",
            )
        }
        Publication::Complete(Ok(None), _) => {
            Finding::ok(&label, "exists and includes every synced table")
        }
        Publication::Complete(Ok(Some(fix)), _) => misfit_finding(&label, fix),
        Publication::Complete(Err(PgError::Definite(problem)), _) => {
            Finding::error(&label, problem, "see above")
        }
        Publication::Complete(Err(e), _) => {
            Finding::error(&label, error_chain(&e), "check the role's privileges")
        }
        Publication::Incomplete(missing) => {
            judge_missing_tables(&label, &config.postgres.publication, &missing)
        }
        Publication::Absent { not_owned, own } => {
            let user = &role.name;
            let can_create = role.can_create_in_database;
            let creatable = Creatable { user, can_create, not_owned, own };
            judge_absent_publication(&label, &creatable, config)
        }
    }
}

/// A publication that exists but lacks synced tables (`schema.table`):
/// the `ALTER PUBLICATION … ADD TABLE` that adds them.
pub fn judge_missing_tables(label: &str, publication: &str, missing: &[String]) -> Finding {
    let tables = missing
        .iter()
        .map(|t| {
            let (s, n) = t.split_once('.').unwrap_or(("public", t));
            quoted_table(s, n)
        })
        .collect::<Vec<_>>()
        .join(", ");
    Finding::error(
        label,
        format!("exists but does not include {}", missing.join(", ")),
        format!("ALTER PUBLICATION {} ADD TABLE {tables};", quote_ident(publication)),
    )
}

/// What decides whether `ciosync run` can create a missing publication:
/// `CREATE PUBLICATION … FOR TABLE` needs CREATE on the database and
/// ownership of every table.
pub struct Creatable<'a> {
    pub user: &'a str,
    pub can_create: bool,
    /// Synced tables (`schema.table`) the role does not own.
    pub not_owned: Vec<String>,
    /// Tables whose filter ciosync would evaluate itself: published without it.
    pub own: Vec<Named>,
}

/// A publication that does not exist: fine when `run` can create it, else
/// the statement for the tables' owner to run.
pub fn judge_absent_publication(label: &str, facts: &Creatable, config: &Config) -> Finding {
    if facts.can_create && facts.not_owned.is_empty() {
        return Finding::ok(label, "does not exist yet; run will create it");
    }
    let why = if facts.can_create {
        format!("it does not own {}", facts.not_owned.join(", "))
    } else {
        "no CREATE privilege on the database".to_owned()
    };
    Finding::error(
        label,
        format!("does not exist and role {} cannot create it ({why})", facts.user),
        format!("as the tables' owner: {};", setup::create_publication_sql(config, &facts.own)),
    )
}

/// A publication that exists but does not fit: the problem, and the
/// statement to run when there is one (else the problem text says what to do).
pub fn misfit_finding(label: &str, fix: setup::Fix) -> Finding {
    match fix.run {
        Some(sql) => Finding::error(label, fix.problem, format!("{sql};")),
        None => Finding::error(label, fix.problem, "see above"),
    }
}

/// The slot: usable, busy, unusable, lost, or to be created.
pub fn slot(config: &Config, max_replication_slots: i32, facts: SlotFacts) -> Finding {
    let label = format!("replication slot {}", config.postgres.slot);
    let state = match facts.state {
        Ok(state) => state,
        Err(e) => return Finding::error(&label, error_chain(&e), "check the role's privileges"),
    };
    match state {
        SlotState::Usable { active: false, confirmed_flush_lsn, .. } => Finding::ok(
            &label,
            format!(
                "exists (pgoutput), confirmed up to {}",
                confirmed_flush_lsn.unwrap_or_else(|| "nothing yet".into())
            ),
        ),
        SlotState::Usable { active: true, .. } => Finding::warning(
            &label,
            "exists but another session is streaming from it (another ciosync?); run waits \
             until it is free",
            "stop the other consumer; only one may use a slot",
        ),
        SlotState::Unusable(reason) => Finding::error(&label, reason, "see above"),
        SlotState::Invalidated => lost_slot(&label, config, Lost::Invalidated),
        SlotState::Missing if facts.recorded => lost_slot(&label, config, Lost::Dropped),
        SlotState::Missing if facts.in_use < max_replication_slots => {
            Finding::ok(&label, "does not exist yet; run will create it")
        }
        SlotState::Missing => Finding::error(
            &label,
            format!("does not exist and all {max_replication_slots} replication slots are in use"),
            "raise max_replication_slots (restart needed) or drop an unused slot",
        ),
    }
}

/// A lost slot: `run` stops on it (or recreates it when configured to).
fn lost_slot(label: &str, config: &Config, how: Lost) -> Finding {
    let message = lost_message(&config.postgres.slot, how);
    match config.postgres.on_slot_lost {
        OnSlotLost::Stop => Finding::error(label, message, "see above"),
        OnSlotLost::RecreateAndBackfill => Finding::warning(
            label,
            message,
            "postgres.on_slot_lost = recreate_and_backfill: run will recreate it and backfill",
        ),
    }
}

/// The daemon keeps its own state in the `ciosync` schema: the initial
/// copy's progress, backfills, and the dead letters, which any refusal by
/// Customer.io writes (so the schema is needed even without an initial copy).
pub fn state_schema(schema: Schema, role: &Role) -> Finding {
    let label = format!("schema {}", crate::state::SCHEMA);
    let user = &role.name;
    match (schema.exists, schema.writable, role.can_create_in_database) {
        (true, true, _) => Finding::ok(
            &label,
            "exists and is writable (initial copy progress, backfills, dead letters)",
        ),
        (false, _, true) => Finding::ok(&label, "does not exist yet; run will create it"),
        (true, false, _) => Finding::error(
            &label,
            format!("exists but role {user} cannot write to it"),
            format!("GRANT USAGE, CREATE ON SCHEMA ciosync TO {};", quote_ident(user)),
        ),
        (false, _, false) => Finding::error(
            &label,
            format!(
                "does not exist and role {user} cannot create it (it records the initial copy, \
                 backfills and dead letters)"
            ),
            format!("CREATE SCHEMA ciosync AUTHORIZATION {};", quote_ident(user)),
        ),
    }
}

/// Dead letters waiting for this slot are worth a look before (re)starting,
/// and the role must be able to write them: a refused operation it cannot
/// store holds up everything after it. `None` before the table exists.
pub fn dead_letters(facts: DeadLetters, user: &str) -> Option<Finding> {
    let label = "dead letters";
    Some(match facts {
        DeadLetters::NoTable => return None,
        DeadLetters::NotWritable => {
            let role = quote_ident(user);
            Finding::error(
                label,
                format!(
                    "role {user} cannot write ciosync.dead_letters: an operation Customer.io \
                     refuses would be retried until it can, and nothing after it acknowledged"
                ),
                format!(
                    "GRANT INSERT ON ciosync.dead_letters TO {role}; \
                     GRANT USAGE ON SEQUENCE ciosync.dead_letters_id_seq TO {role};"
                ),
            )
        }
        DeadLetters::Waiting(0) => Finding::ok(label, "none"),
        DeadLetters::Waiting(waiting) => Finding::warning(
            label,
            format!(
                "{} Customer.io refused {} in ciosync.dead_letters",
                count(waiting, "operation"),
                plural(waiting, "waits", "wait")
            ),
            "ciosync dlq list (then dlq retry once the cause is fixed, or dlq discard)",
        ),
    })
}

/// The webhook receiver's table: `tried` is the rolled-back attempt to
/// create and write it (`Err`: why it failed).
pub fn webhooks_table(webhooks: &WebhooksConfig, tried: Result<(), String>, user: &str) -> Finding {
    let label = format!("webhooks.table {}", webhooks.table);
    let (schema, table) = webhooks.schema_and_table();
    let role = quote_ident(user);
    match tried {
        Ok(()) => {
            Finding::ok(&label, "can be created if missing and written (tried, then rolled back)")
        }
        Err(error) => Finding::error(
            &label,
            format!("the webhook receiver could not create or write it: {error}"),
            format!(
                "CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {role}; or create the table as the \
                 README shows and GRANT USAGE ON SCHEMA {} TO {role}; GRANT INSERT ON {} \
                 TO {role};",
                quote_ident(schema),
                quote_ident(schema),
                quoted_table(schema, table),
            ),
        ),
    }
}

/// `[[webhooks.write_back]]`: the replication-origin functions that keep a
/// write-back from echoing, and UPDATE on each written column. A column
/// that does not exist is a line of its own, before the summary.
pub fn write_back(facts: &WriteBack, user: &str) -> Vec<Finding> {
    let label = "webhooks.write_back";
    let role = quote_ident(user);
    let mut out = Vec::new();
    let mut missing: Vec<String> = facts
        .denied_functions
        .iter()
        .map(|function| format!("GRANT EXECUTE ON FUNCTION {function} TO {role};"))
        .collect();
    for written in &facts.columns {
        match written.may_update {
            Some(true) => {}
            Some(false) => missing.push(format!(
                "GRANT UPDATE ({}) ON {} TO {role};",
                quote_ident(&written.column),
                written.table.quoted()
            )),
            None => out.push(Finding::error(
                label,
                format!(
                    "write_back[{}].column {} is not a column of {}",
                    written.index, written.column, written.table
                ),
                "fix webhooks.write_back column or table",
            )),
        }
    }
    out.push(if missing.is_empty() {
        Finding::ok(
            label,
            "the role may use replication origins (no echo) and update the written columns",
        )
    } else {
        Finding::error(
            label,
            format!(
                "role {user} lacks what write-back needs (without the origin functions a \
                 write-back would echo to Customer.io, so run refuses to start)"
            ),
            missing.join(" "),
        )
    });
    out
}

/// The Track API credentials: accepted (in the configured region), or what
/// to set.
pub fn customerio(config: &Config, facts: Customerio) -> Finding {
    let label = "customer.io credentials";
    let (base_url, region) = match facts {
        Customerio::NoClient(why) => return Finding::error(label, why, "report this as a bug"),
        Customerio::Answered { base_url, region } => (base_url, region),
    };
    match region {
        Ok(region) => {
            let configured = match config.customerio.region {
                Region::Us => "us",
                Region::Eu => "eu",
            };
            if config.customerio.track_url.is_none() && region != configured {
                Finding::warning(
                    label,
                    format!(
                        "accepted, but the workspace is in region {region} while region = \
                         {configured}"
                    ),
                    format!("set region = \"{region}\" in [customerio]"),
                )
            } else {
                Finding::ok(label, format!("accepted by {base_url} (region {region})"))
            }
        }
        Err(SinkError::Unauthorized) => Finding::error(
            label,
            format!("{base_url} refused the site id and API key (HTTP 401)"),
            "set customerio.site_id and customerio.api_key (or CIOSYNC_CUSTOMERIO_SITE_ID / \
             CIOSYNC_CUSTOMERIO_API_KEY) to the Track API credentials of the workspace",
        ),
        Err(e) => Finding::error(
            label,
            format!("cannot reach {base_url}: {}", error_chain(&e)),
            "check network access to the Track API, or customerio.region / track_url",
        ),
    }
}
