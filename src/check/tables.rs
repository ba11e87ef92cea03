//! The judgements of `ciosync check` over the tables the config names: a
//! `[[sync]]` table (it exists and can be read, its id column is a key, its
//! mapped columns exist, its replica identity, its row filter), its soft
//! deletes and change events, and an `[[events]]` table. Pure: the facts
//! come from [`super::gather`].

use super::gather::{FilterProbe, SyncTable};
use super::{objects, Finding};
use crate::config::{EventTableConfig, SyncConfig, Target};
use crate::pg::catalog::{IdentityKind, Table};
use crate::pg::quote::quote_ident;
use crate::schema;
use crate::source::row_filter;
use crate::wording::{count, plural};

/// The table as a table: `None` when nothing has its name or it is a view,
/// a sequence, ….
fn as_table(table: Option<&Table>) -> Option<&Table> {
    table.filter(|t| t.is_table)
}

fn label(table: &crate::pg::name::TableName) -> String {
    format!("table {table}")
}

/// A synced table's lines, for role `user`, in report order; `entry` is
/// how the file names it (`sync[0]`, `objects[1]`: `config::sync::entry`).
/// A table that does not exist, or lacks the id column, stops there: the
/// rest would only repeat it. `record`: whether the record of what
/// Customer.io accepted is on (`pipeline.record_accepted`).
pub fn sync_table(
    entry: &str,
    sync: &SyncConfig,
    user: &str,
    facts: &SyncTable,
    record: bool,
) -> Vec<Finding> {
    let label = label(&sync.table);
    let section = sync.section();
    let Some(table) = as_table(facts.table.as_ref()) else {
        return vec![Finding::error(
            &label,
            "does not exist (or is not a table)",
            format!("create the table, or fix [[{section}]] table"),
        )];
    };
    let mut out = Vec::new();
    if !table.can_select {
        out.push(Finding::error(
            &label,
            format!("role {user} cannot read it"),
            super::grant_select(&sync.table, table, user),
        ));
    }
    let id = &sync.id_column;
    let Some(id_column) = table.column(id) else {
        let key = sync.key_name("id_column");
        out.push(Finding::error(
            &label,
            format!("has no column {id} ({key})"),
            format!("fix [[{section}]] {key}"),
        ));
        return out;
    };
    let identity = match &sync.target {
        Target::Person => None,
        Target::Object { .. } => objects::object_identity(&label, sync, table),
        Target::Relationship { object_id_column, .. } => {
            out.push(objects::object_column(&label, object_id_column, table));
            objects::relationship_identity(&label, sync, object_id_column, table)
        }
    };
    // A person has several memberships: a relationship table's id is no key.
    if !matches!(sync.target, Target::Relationship { .. }) {
        out.push(id_key(sync, id_column.not_null && table.unique_columns.contains(id)));
    }
    out.extend(columns(sync, table, facts));
    out.push(identity.unwrap_or_else(|| replica_identity(&label, sync, table, record)));
    if let (Some(probe), true) = (&facts.filter, table.can_select) {
        out.push(filter(entry, sync, table, probe, facts.own_filter));
    }
    out
}

/// The id column must be a key: unique and not null.
fn id_key(sync: &SyncConfig, is_key: bool) -> Finding {
    let label = label(&sync.table);
    let id = &sync.id_column;
    if is_key {
        return Finding::ok(&label, format!("id column {id} is unique and not null"));
    }
    let quoted = sync.table.quoted();
    Finding::error(
        &label,
        format!("id column {id} must be unique and not null (a primary key or unique index)"),
        format!(
            "ALTER TABLE {quoted} ALTER COLUMN {0} SET NOT NULL; CREATE UNIQUE INDEX ON \
             {quoted} ({0});",
            quote_ident(id)
        ),
    )
}

/// The columns the config reads: against the shape the daemon kept, when
/// it streamed the table (a rename, a drop or a JSON-type change, each
/// with its fix), else whether the mapped ones exist.
fn columns(sync: &SyncConfig, table: &Table, facts: &SyncTable) -> Vec<Finding> {
    let Some((now, kept)) = &facts.shape else { return vec![mapped_columns(sync, table)] };
    let breaks = schema::judge(&schema::Needs::of_sync(sync), now, kept);
    if breaks.is_empty() {
        return vec![Finding::ok(
            &label(&sync.table),
            format!("{}, with the JSON types ciosync has sent", all_mapped_exist(sync)),
        )];
    }
    breaks
        .iter()
        .map(|b| {
            let what = format!(
                "{} ({}; on_schema_change = {:?})",
                b,
                b.change.reason(),
                sync.on_schema_change
            );
            Finding::error(&label(&sync.table), what, b.fix())
        })
        .collect()
}

/// `the 1 mapped column exists`, `all 3 mapped columns exist`.
fn all_mapped_exist(sync: &SyncConfig) -> String {
    let n = sync.attributes.len();
    let all = plural(n, "the", "all");
    format!("{all} {} {}", count(n, "mapped column"), plural(n, "exists", "exist"))
}

fn mapped_columns(sync: &SyncConfig, table: &Table) -> Finding {
    let label = label(&sync.table);
    let missing: Vec<&str> =
        sync.attributes.values().map(String::as_str).filter(|c| !table.has_column(c)).collect();
    if missing.is_empty() {
        Finding::ok(&label, all_mapped_exist(sync))
    } else {
        Finding::error(
            &label,
            format!("mapped columns missing: {}", missing.join(", ")),
            format!("fix [{}.attributes] or add the columns", sync.section()),
        )
    }
}

fn replica_identity(label: &str, sync: &SyncConfig, table: &Table, record: bool) -> Finding {
    let keyed = table.identity_columns.contains(&sync.id_column);
    let full = format!("ALTER TABLE {} REPLICA IDENTITY FULL;", sync.table.quoted());
    match table.identity_kind {
        IdentityKind::Full => Finding::ok(label, "replica identity FULL"),
        IdentityKind::Nothing => Finding::error(
            label,
            "replica identity NOTHING: Postgres refuses UPDATE and DELETE on a published table \
             without one",
            full,
        ),
        IdentityKind::Default if !table.has_primary_key => Finding::error(
            label,
            "replica identity DEFAULT without a primary key: Postgres refuses UPDATE and DELETE \
             on it once published",
            full,
        ),
        IdentityKind::Default | IdentityKind::Index
            if record && keyed && sync.attributes.contains_key(crate::mapping::EMAIL) =>
        {
            Finding::warning(
                label,
                "replica identity DEFAULT/INDEX: updates send only the attributes that changed \
                 (by the record of what Customer.io accepted), but an email moved between \
                 customers by two separate transactions is not ordered, and a claim Customer.io \
                 drops (answering 200) stays recorded until the email changes again; FULL \
                 orders every move",
                full,
            )
        }
        IdentityKind::Default | IdentityKind::Index if record && keyed => Finding::ok(
            label,
            "replica identity DEFAULT/INDEX: updates send only the attributes that changed, by \
             the record of what Customer.io accepted (FULL is not needed for that; it would \
             write each updated row whole into the WAL)",
        ),
        IdentityKind::Default | IdentityKind::Index if record => Finding::warning(
            label,
            format!(
                "replica identity DEFAULT/INDEX without id column {}: updates send only the \
                 attributes that changed (by the record of what Customer.io accepted), but a \
                 change of the id is not seen as an id change (the old person stays)",
                sync.id_column
            ),
            full,
        ),
        IdentityKind::Default | IdentityKind::Index => Finding::warning(
            label,
            "replica identity DEFAULT/INDEX: updates carry no old row, so every mapped \
             attribute is sent on each update (not only the changed ones), and a change of a \
             non-key id column is not seen as an id change",
            full,
        ),
    }
}

/// The entry's `filter`: it works on the table, and its columns are in the
/// replica identity (otherwise publishing it makes Postgres refuse the
/// table's UPDATEs and DELETEs). Whether the publication has it is the
/// publication line's part.
fn filter(
    entry: &str,
    sync: &SyncConfig,
    table: &Table,
    probe: &FilterProbe,
    own: bool,
) -> Finding {
    let label = label(&sync.table);
    let field = format!("{entry}.filter");
    let columns = match probe {
        FilterProbe::Refused(reason) => {
            return Finding::error(
                &label,
                format!(
                    "{field} ({}) does not work on the table: {reason}",
                    sync.filter.as_deref().unwrap_or_default()
                ),
                format!(
                    "fix {field}: an SQL boolean expression over the columns of {}",
                    sync.table
                ),
            )
        }
        FilterProbe::Reads(columns) => columns,
    };
    let missing = table.identity().missing(columns);
    if !missing.is_empty() && own {
        return Finding::ok(
            &label,
            format!(
                "{field} reads {} outside the replica identity, so the publication does not \
                 carry it: ciosync evaluates it on each change, and removes a customer whose \
                 row leaves it only if Customer.io holds them (by the record of what it \
                 accepted)",
                missing.join(", ")
            ),
        );
    }
    if !missing.is_empty() {
        let (what, fix) = row_filter::identity_problem(
            &field,
            &sync.table.to_string(),
            &sync.table.quoted(),
            &missing,
        );
        return Finding::error(&label, what, fix);
    }
    Finding::ok(
        &label,
        match columns.as_slice() {
            [] => format!("{field} works on the table and reads no column"),
            columns => format!(
                "{field} works on the table; the columns it reads ({}) are in the replica \
                 identity",
                columns.join(", ")
            ),
        },
    )
}

/// `soft_delete_column` and `[[sync.events]]`: their columns exist, and the
/// replica identity (or, for events, the record of what Customer.io
/// accepted: `record`) lets ciosync see transitions. Nothing when neither
/// is configured or the table is missing (its own line said so).
pub fn sync_options(sync: &SyncConfig, table: Option<&Table>, record: bool) -> Vec<Finding> {
    let mut out = Vec::new();
    if sync.soft_delete_column.is_none() && sync.events.is_empty() {
        return out;
    }
    let Some(table) = as_table(table) else { return out };
    if let Some(column) = &sync.soft_delete_column {
        out.push(soft_delete(sync, table, column, record));
    }
    if !sync.events.is_empty() {
        out.push(change_events(sync, table, record));
    }
    out
}

/// Where removals of `sync`'s table are decided by the record (a soft
/// delete or a filter leave without the old row): a warning when the
/// record is not complete for it (`complete`: read, and false), so a
/// customer it lacks is removed again on each leave until a backfill.
pub fn record_completeness(sync: &SyncConfig, complete: Option<bool>) -> Option<Finding> {
    if complete != Some(false) {
        return None;
    }
    Some(Finding::warning(
        &label(&sync.table),
        "the record of what Customer.io accepted is not complete for this table (it predates \
         the record, or was emptied): a soft delete or a filter leave of a customer it lacks \
         is sent as a removal, even of someone never in Customer.io",
        format!("ciosync backfill --table {} (records every row that syncs)", sync.table),
    ))
}

fn full_identity_fix(sync: &SyncConfig) -> String {
    format!("ALTER TABLE {} REPLICA IDENTITY FULL;", sync.table.quoted())
}

fn soft_delete(sync: &SyncConfig, table: &Table, column: &str, record: bool) -> Finding {
    let label = label(&sync.table);
    if !table.has_column(column) {
        Finding::error(
            &label,
            format!("has no column {column} (soft_delete_column)"),
            "fix soft_delete_column or add the column",
        )
    } else if table.identity_kind != IdentityKind::Full && record {
        Finding::ok(
            &label,
            format!(
                "soft deletes by {column}, told from updates of deleted rows by the record of \
                 what Customer.io accepted (the WAL has no old row under this identity)"
            ),
        )
    } else if table.identity_kind != IdentityKind::Full {
        Finding::error(
            &label,
            format!(
                "soft_delete_column {column} needs REPLICA IDENTITY FULL, or the record of \
                 what Customer.io accepted (pipeline.record_accepted, off here): without \
                 either a soft delete cannot be told from an update of a deleted row, so each \
                 such update sends the removal again (and counts against the mass-delete \
                 circuit breaker)"
            ),
            full_identity_fix(sync),
        )
    } else {
        Finding::ok(&label, format!("soft deletes by {column}"))
    }
}

fn change_events(sync: &SyncConfig, table: &Table, record: bool) -> Finding {
    let label = label(&sync.table);
    let mut missing: Vec<&str> = sync
        .events
        .iter()
        .flat_map(|e| std::iter::once(e.column()).chain(e.data.iter().map(String::as_str)))
        .filter(|c| !table.has_column(c))
        .collect();
    missing.dedup();
    if !missing.is_empty() {
        Finding::error(
            &label,
            format!("[[sync.events]] name columns it does not have: {}", missing.join(", ")),
            "fix when_changed, when or data, or add the columns",
        )
    } else if table.identity_kind == IdentityKind::Full {
        Finding::ok(&label, format!("{} configured", count(sync.events.len(), "change event")))
    } else if record {
        Finding::ok(
            &label,
            format!(
                "{} configured, decided against the record of what Customer.io accepted \
                 (the WAL has no old row under this identity): a customer's first update \
                 after the record lacks their value sends no event",
                count(sync.events.len(), "change event")
            ),
        )
    } else {
        Finding::error(
            &label,
            "[[sync.events]] need the old row of each update to see a transition: \
             REPLICA IDENTITY FULL sends it, or the record of what Customer.io accepted \
             (pipeline.record_accepted, off here) keeps each watched value; otherwise no \
             change event would ever fire",
            full_identity_fix(sync),
        )
    }
}

/// An `[[events]]` table: it exists and has the columns the config names,
/// of types that can hold what they are for; a warning when role `user`
/// cannot read it (the stream does not need to, `backfill --events` does).
pub fn event_table(events: &EventTableConfig, user: &str, table: Option<&Table>) -> Vec<Finding> {
    let label = format!("event table {}", events.table);
    let Some(table) = as_table(table) else {
        return vec![Finding::error(
            &label,
            "does not exist (or is not a table)",
            "create the table, or fix [[events]] table",
        )];
    };
    let mut out = Vec::new();
    // Published, the table's UPDATEs and DELETEs (an outbox cleaned up after
    // use, say) need a replica identity, or Postgres refuses them.
    let keyless = table.identity_kind == IdentityKind::Default && !table.has_primary_key;
    if table.identity_kind == IdentityKind::Nothing || keyless {
        out.push(Finding::error(
            &label,
            "has no primary key (or replica identity NOTHING): once it is published, Postgres \
             refuses UPDATE and DELETE on it, which would break the application's own writes",
            format!(
                "add a primary key, or ALTER TABLE {} REPLICA IDENTITY FULL;",
                events.table.quoted()
            ),
        ));
    }
    if !table.can_select {
        out.push(Finding::warning(
            &label,
            format!(
                "role {user} cannot read it: its inserts still become events, but `backfill \
                 --events` cannot replay it"
            ),
            super::grant_select(&events.table, table, user),
        ));
    }
    let problems = event_column_problems(events, table);
    out.push(if problems.is_empty() {
        Finding::ok(
            &label,
            match table.can_select {
                true => format!("its inserts become events; {}", replayable(events, table)),
                false => "its inserts become events".to_owned(),
            },
        )
    } else {
        Finding::error(&label, problems.join("; "), "fix [[events]] or the table")
    });
    out
}

/// Whether `backfill --events` can replay the table, and why not: its
/// events' ids come from its primary key, their times from its
/// `timestamp_column`.
fn replayable(events: &EventTableConfig, table: &Table) -> &'static str {
    match (table.has_primary_key, events.timestamp_column.is_some()) {
        (true, true) => "ids from its primary key, so `backfill --events` can replay it",
        (true, false) => {
            "`backfill --events` cannot replay it without timestamp_column (the events \
             would be dated now)"
        }
        (false, _) => {
            "without a primary key its events' ids come from the WAL, and `backfill --events` \
             cannot replay it without duplicates"
        }
    }
}

/// Each column `[[events]]` names that the table lacks, or whose type cannot
/// hold what it is for.
fn event_column_problems(events: &EventTableConfig, table: &Table) -> Vec<String> {
    let named = std::iter::once(("customer_id_column", events.customer_id_column.as_str()))
        .chain(events.anonymous_id_column.as_deref().map(|c| ("anonymous_id_column", c)))
        .chain(events.name_column.as_deref().map(|c| ("name_column", c)))
        .chain(events.data.values().map(|c| ("data", c.as_str())))
        .chain(events.data_column.as_deref().map(|c| ("data_column", c)))
        .chain(events.timestamp_column.as_deref().map(|c| ("timestamp_column", c)));
    let mut problems = Vec::new();
    for (key, column) in named {
        match (key, table.column(column).map(|c| c.type_name.as_str())) {
            (_, None) => problems.push(format!("no column {column} ({key})")),
            ("data_column", Some(t)) if t != "jsonb" && t != "json" => {
                problems.push(format!("data_column {column} is {t}, not json or jsonb"))
            }
            ("timestamp_column", Some(t)) if !t.starts_with("timestamp") && t != "date" => {
                problems.push(format!("timestamp_column {column} is {t}, not a timestamp"))
            }
            _ => {}
        }
    }
    problems
}
