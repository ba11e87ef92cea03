//! What `ciosync check` says about the server's version and about failover:
//! whether a promoted standby will have the slot, and what the primary and
//! the standby must be set to for it. Read from the primary only: the
//! standby's own settings are not visible from there, so those are printed
//! as what to set. Pure: the facts come from [`super::gather`].

use super::gather::FailoverFacts;
use super::Finding;
use crate::config::{Config, FailoverSlot};
use crate::pg::catalog::PhysicalSlot;
use crate::pg::quote::{quote_ident, quote_literal};

/// Roles that managed services grant instead of the `REPLICATION`
/// attribute: membership lets a role stream from slots (RDS and Aurora:
/// `rds_replication`).
pub const PROVIDER_REPLICATION_ROLES: [&str; 1] = ["rds_replication"];

/// The version line: what this major gives or lacks for failover.
pub fn version_finding(version: &str, version_num: i32, config: &Config) -> Finding {
    let check = "postgres version";
    if version_num < 150_000 {
        return Finding::error(
            check,
            format!("PostgreSQL {version}; ciosync needs PostgreSQL 15 or newer"),
            "upgrade PostgreSQL (the initial copy's slot creation and row-filter checks need 15)",
        );
    }
    if version_num < 170_000 {
        let lacks = format!(
            "PostgreSQL {version}: no failover slots before 17, so when a standby is promoted the \
             slot is lost (run stops with exit status 3; on_slot_lost = \"recreate_and_backfill\" \
             recovers by backfilling)"
        );
        return match config.postgres.failover_slot {
            FailoverSlot::On => Finding::error(
                check,
                lacks,
                "upgrade to PostgreSQL 17+, or set postgres.failover_slot = \"auto\"",
            ),
            _ => Finding::ok(check, lacks),
        };
    }
    let wanted = config.postgres.failover_slot != FailoverSlot::Off;
    Finding::ok(
        check,
        format!(
            "PostgreSQL {version}: failover slots available; postgres.failover_slot = {} {}",
            match config.postgres.failover_slot {
                FailoverSlot::Auto => "auto",
                FailoverSlot::On => "on",
                FailoverSlot::Off => "off",
            },
            if wanted {
                "makes the slot one"
            } else {
                "keeps an ordinary slot, lost when a standby is promoted"
            }
        ),
    )
}

/// Connected to a standby: nothing can be created or streamed there.
pub fn standby(in_recovery: bool) -> Option<Finding> {
    in_recovery.then(|| {
        Finding::error(
            "primary",
            "connected to a standby (in recovery): ciosync streams from the primary",
            "point postgres.url at the primary, or list every host with \
             target_session_attrs=read-write so ciosync finds the primary itself",
        )
    })
}

/// Whether the failover lines apply: PostgreSQL 17+ with a failover slot
/// wanted.
pub fn applies(config: &Config, version_num: i32) -> bool {
    version_num >= 170_000 && config.postgres.failover_slot != FailoverSlot::Off
}

/// The failover lines (see [`applies`]): the slot's `failover` flag, a
/// physical slot for the standby, `synchronized_standby_slots`, and what to
/// set on the standby.
pub fn judge(config: &Config, facts: &FailoverFacts) -> Vec<Finding> {
    let mut out = vec![failover_slot(&config.postgres.slot, facts.slot_failover)];
    out.extend(standbys(&facts.physical));
    out.push(synchronized_standby_slots(&facts.synchronized, &facts.physical));
    out
}

fn failover_slot(slot: &str, failover: Option<bool>) -> Finding {
    match failover {
        Some(true) => Finding::ok("failover slot", format!("slot {slot} is a failover slot")),
        Some(false) => Finding::warning(
            "failover slot",
            format!("slot {slot} is not a failover slot: a promoted standby will not have it"),
            format!(
                "run makes it one when it next starts the stream (ALTER_REPLICATION_SLOT {} \
                 (FAILOVER true) on a replication connection)",
                quote_ident(slot)
            ),
        ),
        None => Finding::ok(
            "failover slot",
            format!("slot {slot} does not exist yet; run creates it as a failover slot"),
        ),
    }
}

/// What to set on the standby that streams through `physical_slot`.
fn standby_settings(physical_slot: &str) -> String {
    format!(
        "on the standby set sync_replication_slots = on, hot_standby_feedback = on, \
         primary_slot_name = {}, and dbname=<a database> in primary_conninfo (not visible \
         from the primary)",
        quote_literal(physical_slot)
    )
}

/// Physical slots: what a standby streams through. One with an `xmin` has
/// a standby that sends hot_standby_feedback, which slot sync needs.
fn standbys(physical: &[PhysicalSlot]) -> Vec<Finding> {
    let check = "standby for failover";
    if physical.is_empty() {
        return vec![Finding::warning(
            check,
            "no physical replication slot on this server: no standby can carry the slot",
            format!(
                "SELECT pg_create_physical_replication_slot('standby_1'); then {}",
                standby_settings("standby_1")
            ),
        )];
    }
    physical
        .iter()
        .map(|PhysicalSlot { name, active, feedback }| match (active, feedback) {
            (true, true) => Finding::ok(
                check,
                format!(
                    "physical slot {name}: a standby streams through it with \
                     hot_standby_feedback; {}",
                    standby_settings(name)
                ),
            ),
            (true, false) => Finding::warning(
                check,
                format!(
                    "physical slot {name}: a standby streams through it without \
                         hot_standby_feedback, so it cannot sync the slot"
                ),
                standby_settings(name),
            ),
            (false, _) => Finding::warning(
                check,
                format!("physical slot {name}: no standby streams through it now"),
                standby_settings(name),
            ),
        })
        .collect()
}

/// The primary holds changes back from ciosync until these standbys have
/// them; without it a promoted standby may lack changes ciosync delivered
/// (nothing is lost to Customer.io, but its synced slot may not fit).
fn synchronized_standby_slots(synchronized: &str, physical: &[PhysicalSlot]) -> Finding {
    let check = "synchronized_standby_slots";
    let names: Vec<&str> =
        synchronized.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    if names.is_empty() {
        let example = physical.first().map_or("standby_1", |slot| slot.name.as_str());
        return Finding::warning(
            check,
            "is unset: ciosync may deliver changes a standby has not received yet; if that \
             standby is promoted, Customer.io holds changes the new primary never had",
            format!(
                "ALTER SYSTEM SET synchronized_standby_slots = {}; SELECT pg_reload_conf(); \
                 (ciosync then waits for that standby: if it is down, nothing streams)",
                quote_literal(example)
            ),
        );
    }
    let missing: Vec<&str> =
        names.into_iter().filter(|n| !physical.iter().any(|slot| slot.name == *n)).collect();
    if missing.is_empty() {
        Finding::ok(check, synchronized.to_owned())
    } else {
        Finding::warning(
            check,
            format!(
                "names {} with no physical slot here: logical decoding waits for it",
                missing.join(", ")
            ),
            "create the physical slot for that standby, or remove it from the setting",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Level;
    use crate::config::fixture::two_tables;

    fn config(failover_slot: &str) -> Config {
        two_tables(&format!("failover_slot = \"{failover_slot}\""), "")
    }

    #[test]
    fn the_version_line_says_what_each_major_gives() {
        let before = version_finding("16.4", 160_004, &config("auto"));
        assert_eq!(before.level, Level::Ok);
        assert!(before.message.contains("the slot is lost"), "{}", before.message);
        assert_eq!(version_finding("16.4", 160_004, &config("on")).level, Level::Error);
        assert_eq!(version_finding("14.9", 140_009, &config("auto")).level, Level::Error);
        let after = version_finding("17.2", 170_002, &config("auto"));
        assert!(after.message.contains("failover slots available"), "{}", after.message);
        let off = version_finding("17.2", 170_002, &config("off"));
        assert!(off.message.contains("lost when a standby is promoted"), "{}", off.message);
    }
}
