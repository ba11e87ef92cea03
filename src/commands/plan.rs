//! `ciosync plan`: what a backfill would send now, without sending
//! anything. One read-only REPEATABLE READ transaction (one snapshot)
//! reads the synced tables as a backfill does (every mapped attribute of
//! each row, the retyped ones left out, `--attributes` only) and diffs each
//! row against the record of what Customer.io accepted, as the sink does
//! before sending; and it counts the customers the record holds whose row
//! is gone, filtered out or soft-deleted (deletes no backfill sends).
//!
//! Exit 0: nothing to send; [`EXIT_WOULD_SEND`]: a backfill would send
//! something (or the record holds customers whose row is gone); 2: a bad
//! argument or config; 1: it could not look.

use std::collections::BTreeMap;
use std::process::ExitCode;

use serde::Serialize;
use tokio_postgres::Client;

use super::gone;
use crate::backfill::runner::{as_change, as_sent, CHUNK_ROWS};
use crate::config::{Config, SyncConfig};
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

/// What `ciosync plan` was asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// Only this `[[sync]]` table (default: every one).
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
    pub requests: u64,
    pub seconds: f64,
}

/// One table's part.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct TablePlan {
    pub table: String,
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
}

/// Runs `ciosync plan`.
pub async fn run(config: &Config, request: Request) -> ExitCode {
    let syncs = match super::backfill::select_tables(config, request.table.as_deref(), None) {
        Ok(syncs) => syncs,
        Err(message) => return usage(&message),
    };
    if let Some(unknown) = request
        .attributes
        .iter()
        .flatten()
        .find(|a| !syncs.iter().any(|s| s.attributes.contains_key(a.as_str())))
    {
        return usage(&format!("--attributes: `{unknown}` is not a mapped attribute of the table"));
    }
    match look(config, &syncs, &request).await {
        Ok(plan) => {
            let text = if request.json {
                serde_json::to_string_pretty(&plan).unwrap_or_default() + "\n"
            } else {
                render(&plan, config)
            };
            print!("{text}");
            let would_send = plan.identifies > 0 || plan.deletes > 0;
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

async fn look(config: &Config, syncs: &[&SyncConfig], request: &Request) -> Result<Plan, PgError> {
    let sql = config.postgres.connection().connect_sql().await.map_err(PgError::sql("connect"))?;
    State::open(&sql, &config.postgres.slot).await?;
    sql.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(PgError::sql("begin the plan's snapshot"))?;
    let mapper = Mapper::new(&config.sync).with_record(config.pipeline.record_accepted);
    let mut plan = Plan::default();
    for sync in syncs {
        let table = look_at_table(&sql, config, &mapper, sync, request).await?;
        plan.identifies += table.unknown + table.changed;
        plan.tables.push(table);
    }
    // As `ciosync deletes gone` sees them (removals the breaker holds left out).
    plan.deletes = gone::count(&sql, config).await?;
    if request.show_ids {
        plan.delete_examples = gone::gone(&sql, config, EXAMPLES as i64).await?;
    }
    sql.batch_execute("COMMIT").await.map_err(PgError::sql("end the plan's snapshot"))?;
    let per_request = config.customerio.max_batch_ops.max(1) as u64;
    plan.requests = plan.identifies.div_ceil(per_request);
    plan.seconds =
        plan.requests as f64 / f64::from(config.customerio.max_requests_per_second.max(1));
    Ok(plan)
}

async fn look_at_table(
    sql: &Client,
    config: &Config,
    mapper: &Mapper,
    sync: &SyncConfig,
    request: &Request,
) -> Result<TablePlan, PgError> {
    let reader = TableReader::new(sql, sync, None).await?;
    let retyped = retyped_attributes(sql, &config.postgres.slot, sync).await?;
    let timestamp = postgres_now(sql).await?;
    let mut plan = TablePlan { table: sync.table.to_string(), ..TablePlan::default() };
    let mut after: Option<String> = None;
    loop {
        let rows = reader.page(sql, after.as_deref(), CHUNK_ROWS).await?;
        let Some((last, _)) = rows.last() else { return Ok(plan) };
        after = Some(last.clone());
        plan.rows += rows.len() as u64;
        let mut identifies = Vec::new();
        for (_, row) in rows {
            let ops = mapper.map(&as_change(reader.table(), row, timestamp)).ops;
            for op in as_sent(ops, &retyped, request.attributes.as_deref()) {
                if let CustomerOp::Identify { id, attributes, .. } = op {
                    identifies.push((id, attributes));
                }
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

fn render(plan: &Plan, config: &Config) -> String {
    let mut out = String::new();
    for table in &plan.tables {
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
    out.push_str(&format!(
        "deletes: {} in the record {} no row that syncs (gone, filtered out or \
         soft-deleted){}; a backfill does not delete them, `ciosync deletes gone --send` does\n",
        count(plan.deletes, "customer"),
        plural(plan.deletes, "has", "have"),
        ids(&plan.delete_examples)
    ));
    out.push_str(&format!(
        "a backfill would send {} in {} of up to {}: about {:.1} s at {} requests/s\n",
        count_of(plan.identifies, "identify", "identifies"),
        count(plan.requests, "request"),
        config.customerio.max_batch_ops,
        plan.seconds,
        config.customerio.max_requests_per_second
    ));
    out
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
        let table = TablePlan { table: "public.users".into(), rows: n, ..TablePlan::default() };
        Plan { tables: vec![table], deletes: n, identifies: n, requests: n, ..Plan::default() }
    }

    #[test]
    fn counts_of_one_are_said_in_the_singular() {
        let config = crate::config::fixture::two_tables("", "");
        let one = render(&plan(1), &config);
        assert!(one.starts_with("table public.users: 1 row\n"), "{one}");
        assert!(one.contains("deletes: 1 customer in the record has no row"), "{one}");
        assert!(one.contains("would send 1 identify in 1 request of up to"), "{one}");
        let two = render(&plan(2), &config);
        assert!(two.starts_with("table public.users: 2 rows\n"), "{two}");
        assert!(two.contains("deletes: 2 customers in the record have no row"), "{two}");
        assert!(two.contains("would send 2 identifies in 2 requests of up to"), "{two}");
    }
}
