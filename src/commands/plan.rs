//! `ciosync plan`: what a backfill would send now, without sending
//! anything. One read-only REPEATABLE READ transaction (one snapshot)
//! reads the synced tables as a backfill does (every mapped attribute of
//! each row, the retyped ones left out, `--attributes` only) and diffs each
//! person's row against the record of what Customer.io accepted, as the
//! sink does before sending; and it counts the customers the record holds
//! whose row is gone, filtered out or soft-deleted (deletes no backfill
//! sends). Objects, relationships and devices are not in the record: every
//! row's operations go, counted by kind (`object_identify`,
//! `add_relationship`, `add_device`, `delete_device`, …), with the rows
//! that send nothing and why.
//!
//! Exit 0: nothing to send; [`EXIT_WOULD_SEND`]: a backfill would send
//! something (or the record holds customers whose row is gone); 2: a bad
//! argument or config; 1: it could not look.

use std::collections::BTreeMap;
use std::process::ExitCode;

use serde::Serialize;
use tokio_postgres::Client;

use super::gone;
use crate::backfill::runner::{as_change, as_sent};
use crate::config::{Config, CopiedTable, Target};
use crate::customer::CustomerOp;
use crate::error::{error_chain, EXIT_FAILURE, EXIT_USAGE};
use crate::mapping::Mapper;
use crate::pg::PgError;
use crate::record::{self, Diff};
use crate::schema::store::retyped_attributes;
use crate::source::reader::{postgres_now, TableReader};
use crate::state::State;
use crate::wording::{count, count_of, plural};

/// The exit status of a plan that would send something.
pub const EXIT_WOULD_SEND: u8 = 4;

/// Customer ids shown per kind with `--show-ids`.
const EXAMPLES: usize = 5;
/// Rows read per page: a page is held whole with its operations and the
/// record's rows of its customers (the backfill's chunks are bounded in
/// bytes too; a plan's pages only in rows).
const PAGE_ROWS: usize = 1000;

/// What `ciosync plan` was asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// Only this `[[sync]]` or `[[devices]]` table (default: every
    /// `[[sync]]` table, as a backfill).
    pub table: Option<String>,
    /// Only these attributes, as `backfill --attributes`.
    pub attributes: Option<Vec<String>>,
    /// Print a few customer ids of each kind.
    pub show_ids: bool,
    /// Print JSON instead of text.
    pub json: bool,
}

/// What a backfill would do, per table and in all.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Plan {
    pub tables: Vec<TablePlan>,
    /// Customers the record holds with no row that syncs in any table, as
    /// `ciosync deletes gone` counts them (removals the breaker holds are
    /// left to `deletes approve`).
    pub deletes: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub delete_examples: Vec<String>,
    /// Identifies a backfill would send, and the requests and seconds that
    /// takes at the configured batch size and request budget.
    pub identifies: u64,
    /// Operations of objects, relationships and devices it would send (not
    /// in the record: every row's, counted by kind in each table's
    /// `operations`).
    pub operations: u64,
    pub requests: u64,
    pub seconds: f64,
}

/// One table's part.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct TablePlan {
    pub table: String,
    /// `people`, `objects`, `relationships` or `devices`.
    pub kind: &'static str,
    pub rows: u64,
    /// Customers the record knows nothing of: sent whole.
    pub unknown: u64,
    /// Customers with attributes whose value differs from the record.
    pub changed: u64,
    /// Customers whose every value Customer.io holds: nothing sent.
    pub unchanged: u64,
    /// Attribute → customers it would be sent for.
    pub attributes: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unknown_examples: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changed_examples: Vec<String>,
    /// Objects', relationships' and devices' operations by kind: every one
    /// is sent (the record does not keep them).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub operations: BTreeMap<&'static str, u64>,
    /// Rows of those tables that send nothing, by why (as the stream's
    /// `ciosync_changes_skipped_total` reasons).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub skipped: BTreeMap<&'static str, u64>,
    /// Rows of a devices table a backfill leaves out: their customers have
    /// no row that syncs, and an `add_device` would create them (see
    /// `source::living::living_devices`). Not in `rows`.
    #[serde(skip_serializing_if = "is_zero")]
    pub left_out: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Runs `ciosync plan`.
pub async fn run(config: &Config, request: Request) -> ExitCode {
    let tables = match super::backfill::select_tables(config, request.table.as_deref(), None) {
        Ok(tables) => tables,
        Err(message) => return usage(&message),
    };
    if let Err(message) = super::backfill::check_attributes(&tables, request.attributes.as_deref())
    {
        return usage(&message);
    }
    match look(config, &tables, &request).await {
        Ok(plan) => {
            let text = if request.json {
                serde_json::to_string_pretty(&plan).unwrap_or_default() + "\n"
            } else {
                render(&plan, config, request.table.is_none())
            };
            print!("{text}");
            let would_send = plan.identifies > 0 || plan.operations > 0 || plan.deletes > 0;
            ExitCode::from(if would_send { EXIT_WOULD_SEND } else { 0 })
        }
        Err(error) => {
            eprintln!("ciosync: {}", error_chain(&error));
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn usage(message: &str) -> ExitCode {
    eprintln!("ciosync: {message}");
    ExitCode::from(EXIT_USAGE)
}

async fn look(
    config: &Config,
    tables: &[CopiedTable<'_>],
    request: &Request,
) -> Result<Plan, PgError> {
    let sql = config.postgres.connection().connect_sql().await.map_err(PgError::sql("connect"))?;
    State::open(&sql, &config.postgres.slot).await?;
    sql.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(PgError::sql("begin the plan's snapshot"))?;
    let mapper = Mapper::new(&config.sync)
        .with_device_tables(&config.devices)
        .with_record(config.pipeline.record_accepted);
    let mut plan = Plan::default();
    for table in tables {
        let table = look_at_table(&sql, config, &mapper, *table, request).await?;
        plan.identifies += table.unknown + table.changed;
        plan.operations += table.operations.values().sum::<u64>();
        plan.tables.push(table);
    }
    // As `ciosync deletes gone` sees them (removals the breaker holds left out).
    plan.deletes = gone::count(&sql, config).await?;
    if request.show_ids {
        plan.delete_examples = gone::gone(&sql, config, EXAMPLES as i64).await?;
    }
    sql.batch_execute("COMMIT").await.map_err(PgError::sql("end the plan's snapshot"))?;
    let per_request = config.customerio.max_batch_ops.max(1) as u64;
    plan.requests = (plan.identifies + plan.operations).div_ceil(per_request);
    plan.seconds =
        plan.requests as f64 / f64::from(config.customerio.max_requests_per_second.max(1));
    Ok(plan)
}

async fn look_at_table(
    sql: &Client,
    config: &Config,
    mapper: &Mapper,
    table: CopiedTable<'_>,
    request: &Request,
) -> Result<TablePlan, PgError> {
    let reader = TableReader::of_copied(sql, table, None, Some(&config.sync)).await?;
    let (retyped, every_row) = match table {
        CopiedTable::Sync(sync) => {
            (retyped_attributes(sql, &config.postgres.slot, sync).await?, None)
        }
        CopiedTable::Devices(_) => {
            let every = TableReader::of_copied(sql, table, None, None).await?;
            (Vec::new(), Some(every.count(sql).await?))
        }
    };
    let timestamp = postgres_now(sql).await?;
    let mut plan = TablePlan { table: table.name(), kind: kind(table), ..TablePlan::default() };
    let mut after: Option<String> = None;
    loop {
        let rows = reader.page(sql, after.as_deref(), PAGE_ROWS).await?;
        let Some((last, _)) = rows.last() else {
            // Same snapshot: the rows not read are the ones left out.
            plan.left_out = every_row.map_or(0, |n| (n as u64).saturating_sub(plan.rows));
            return Ok(plan);
        };
        after = Some(last.clone());
        plan.rows += rows.len() as u64;
        let mut identifies = Vec::new();
        for (_, row) in rows {
            let mapped = mapper.map(&as_change(reader.table(), row, timestamp));
            let mut sends = false;
            for op in as_sent(mapped.ops, &retyped, request.attributes.as_deref()) {
                match op {
                    CustomerOp::Identify { id, attributes, .. } => {
                        identifies.push((id, attributes));
                    }
                    // Barriers, and the watched values a person's row records.
                    CustomerOp::Barrier | CustomerOp::Event(_) => continue,
                    other => *plan.operations.entry(other.kind()).or_default() += 1,
                }
                sends = true;
            }
            if !sends && plan.kind != "people" {
                let why = mapped.skipped.map_or("nothing to send", |reason| reason.as_str());
                *plan.skipped.entry(why).or_default() += 1;
            }
        }
        let customers: Vec<String> = identifies.iter().map(|(id, _)| id.clone()).collect();
        let known = record::store::load(sql, &config.postgres.slot, &customers).await?;
        for (id, mut attributes) in identifies {
            let held = known.get(&id);
            plan.count(id, &mut attributes, held, request.show_ids);
        }
    }
}

/// What a table's rows are, as the plan names them.
fn kind(table: CopiedTable<'_>) -> &'static str {
    match table {
        CopiedTable::Sync(sync) => match sync.target {
            Target::Person => "people",
            Target::Object { .. } => "objects",
            Target::Relationship { .. } => "relationships",
        },
        CopiedTable::Devices(_) => "devices",
    }
}

impl TablePlan {
    fn count(
        &mut self,
        id: String,
        attributes: &mut serde_json::Map<String, serde_json::Value>,
        known: Option<&record::Fingerprints>,
        show_ids: bool,
    ) {
        let (diff, _) = record::diff(attributes, known);
        let examples = match diff {
            Diff::Unchanged => {
                self.unchanged += 1;
                return;
            }
            Diff::Unknown => {
                self.unknown += 1;
                &mut self.unknown_examples
            }
            Diff::Stripped(_) => {
                self.changed += 1;
                &mut self.changed_examples
            }
        };
        if show_ids && examples.len() < EXAMPLES {
            examples.push(id);
        }
        for name in attributes.keys() {
            *self.attributes.entry(name.clone()).or_default() += 1;
        }
    }
}

/// The plan as text; `every_table`: a plan of every table (no `--table`),
/// which says which devices tables it leaves out.
fn render(plan: &Plan, config: &Config, every_table: bool) -> String {
    let mut out = String::new();
    for table in &plan.tables {
        if table.kind == "people" {
            render_people(&mut out, table);
        } else {
            render_unrecorded(&mut out, table);
        }
    }
    out.push_str(&format!(
        "deletes: {} in the record {} no row that syncs (gone, filtered out or \
         soft-deleted){}; a backfill does not delete them, `ciosync deletes gone --send` does\n",
        count(plan.deletes, "customer"),
        plural(plan.deletes, "has", "have"),
        ids(&plan.delete_examples)
    ));
    let left_out = config.devices.iter().filter(|_| every_table);
    for devices in left_out.filter(|d| !plan.tables.iter().any(|t| t.table == d.table.to_string()))
    {
        out.push_str(&format!(
            "devices table {0}: not in a backfill of every table; `ciosync plan --table {0}` \
             counts it\n",
            devices.table
        ));
    }
    let operations = match plan.operations {
        0 => String::new(),
        n => format!(" and {n} object, relationship and device operations"),
    };
    out.push_str(&format!(
        "a backfill would send {}{operations} in {} of up to {}: about {:.1} s at {} \
         requests/s\n",
        count_of(plan.identifies, "identify", "identifies"),
        count(plan.requests, "request"),
        config.customerio.max_batch_ops,
        plan.seconds,
        config.customerio.max_requests_per_second
    ));
    out
}

/// A people table: its rows diffed against the record.
fn render_people(out: &mut String, table: &TablePlan) {
    out.push_str(&format!("table {}: {}\n", table.table, count(table.rows, "row")));
    out.push_str(&format!(
        "  {} not in the record (sent whole){}\n",
        table.unknown,
        ids(&table.unknown_examples)
    ));
    out.push_str(&format!(
        "  {} with values Customer.io lacks{}\n",
        table.changed,
        ids(&table.changed_examples)
    ));
    out.push_str(&format!("  {} as Customer.io has them (nothing sent)\n", table.unchanged));
    for (name, customers) in &table.attributes {
        out.push_str(&format!("    {name}: {customers}\n"));
    }
}

/// An objects, relationships or devices table: nothing to diff against.
fn render_unrecorded(out: &mut String, table: &TablePlan) {
    out.push_str(&format!(
        "table {} ({}): {}, not in the record, every row sent\n",
        table.table,
        table.kind,
        count(table.rows, "row")
    ));
    for (kind, count) in &table.operations {
        out.push_str(&format!("  {count} {kind}\n"));
    }
    for (why, rows) in &table.skipped {
        let verb = plural(rows, "sends", "send");
        out.push_str(&format!("  {} {verb} nothing ({why})\n", count(rows, "row")));
    }
    if table.left_out > 0 {
        out.push_str(&format!(
            "  {} left out: their customers have no row that syncs (an add_device would \
             re-create them)\n",
            count(table.left_out, "more row")
        ));
    }
}

fn ids(examples: &[String]) -> String {
    if examples.is_empty() {
        String::new()
    } else {
        format!(", e.g. {}", examples.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(n: u64) -> Plan {
        let table = TablePlan {
            table: "public.users".into(),
            kind: "people",
            rows: n,
            ..TablePlan::default()
        };
        Plan { tables: vec![table], deletes: n, identifies: n, requests: n, ..Plan::default() }
    }

    #[test]
    fn counts_of_one_are_said_in_the_singular() {
        let config = crate::config::fixture::two_tables("", "");
        let one = render(&plan(1), &config, true);
        assert!(one.starts_with("table public.users: 1 row\n"), "{one}");
        assert!(one.contains("deletes: 1 customer in the record has no row"), "{one}");
        assert!(one.contains("would send 1 identify in 1 request of up to"), "{one}");
        let two = render(&plan(2), &config, true);
        assert!(two.starts_with("table public.users: 2 rows\n"), "{two}");
        assert!(two.contains("deletes: 2 customers in the record have no row"), "{two}");
        assert!(two.contains("would send 2 identifies in 2 requests of up to"), "{two}");
    }

    #[test]
    fn only_a_plan_of_every_table_names_the_devices_tables_it_leaves_out() {
        let config = crate::config::fixture::users_and_devices();
        let users =
            TablePlan { table: "public.users".into(), kind: "people", ..Default::default() };
        let plan = Plan { tables: vec![users], ..Plan::default() };
        let note = "devices table public.push_tokens: not in a backfill of every table";
        assert!(render(&plan, &config, true).contains(note));
        assert!(!render(&plan, &config, false).contains(note), "with --table users");
    }
}
