//! `ciosync backfill --events TABLE [--since TIME] [--where SQL]`: queue an
//! event replay for the running daemon, which sends the event table's rows
//! again as events with their own timestamps and the ids the stream gave
//! them (`mapping::events::row_event_id`), so Customer.io keeps the events
//! it still has once and restores the ones it lost.

use std::process::ExitCode;

use tokio_postgres::Client;

use super::backfill::{follow, usage};
use crate::config::{Config, EventTableConfig};
use crate::error::error_chain;
use crate::source::reader::{describe_whole, primary_key, TableReader};
use crate::state::{Queued, State};
use crate::wording::{count, plural};

/// What `backfill --events` was asked to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    /// The `[[events]]` table.
    pub table: String,
    /// Only events from this time on: anything Postgres reads as a
    /// `timestamptz` (`2026-11-30`, `2026-11-30T08:00:00Z`), or an interval
    /// back from now (`72 hours`, `3d`).
    pub since: Option<String>,
    /// Only rows meeting this SQL condition.
    pub where_clause: Option<String>,
    /// Return once queued instead of following progress.
    pub detach: bool,
}

impl Replay {
    /// Checks the table can be replayed, queues the replay, and follows it
    /// unless detached. A table, `--since` or `--where` that cannot work is
    /// a usage error (exit 2) before anything is queued.
    pub async fn run(
        self,
        config: &Config,
        sql: &Client,
        state: &State<'_>,
    ) -> Result<ExitCode, String> {
        let (index, events) = match event_table(config, &self.table) {
            Ok(found) => found,
            Err(message) => return Ok(usage(&message)),
        };
        if events.timestamp_column.is_none() {
            return Ok(usage(&format!(
                "--events: events[{index}].timestamp_column is not set for {}: a replay \
                 needs each row's own time (without it every event would be dated now)",
                events.table
            )));
        }
        let (schema, name) = events.schema_and_name();
        let whole = describe_whole(sql, schema, name).await.map_err(|e| error_chain(&e))?;
        if whole.columns.is_empty() {
            return Ok(usage(&format!("--events: table {} does not exist", events.table)));
        }
        let key = primary_key(sql, schema, name).await.map_err(|e| error_chain(&e))?;
        if key.is_empty() {
            return Ok(usage(&format!(
                "--events: {} has no primary key (or one with a generated column), so its \
                 events' ids come from the WAL and a replay would send Customer.io each event a \
                 second time; add one (README, \"Recover lost events\")",
                events.table
            )));
        }
        let since = match &self.since {
            Some(text) => match since_seconds(sql, text).await? {
                Ok(seconds) => Some(seconds),
                Err(message) => return Ok(usage(&format!("--since: {message}"))),
            },
            None => None,
        };
        let (total, left_out) = match self.count(sql, config, events, &key, since).await? {
            Ok(counts) => counts,
            Err(bad_where) => return Ok(bad_where),
        };
        let table = events.table.to_string();
        let queued = Queued {
            table: &table,
            where_clause: self.where_clause.as_deref(),
            rows_total: total,
            events: true,
            since,
            ..Queued::default()
        };
        let id = state.enqueue_backfill(&queued).await.map_err(|e| error_chain(&e))?;
        let from = since.map(|s| format!(" from {}", iso_time(s))).unwrap_or_default();
        println!("event replay {id} queued: {table}{from}, {}", count(total, "row"));
        if left_out > 0 {
            println!(
                "  {} {} left out: their customers have no row that syncs (deleted, filtered \
                 out or soft-deleted), and an event would re-create them; or their \
                 timestamp_column is NULL or infinite",
                count(left_out, "more row"),
                plural(left_out, "is", "are")
            );
        }
        if self.detach {
            return Ok(ExitCode::SUCCESS);
        }
        follow(config, state, &[id]).await
    }

    /// The rows the replay will read, for progress, and those it leaves
    /// out for their customers (see `source::reader::living_customers`);
    /// reading them also proves `--where` is one read-only SQL condition on
    /// the table (`Ok(Err)`: the usage error).
    async fn count(
        &self,
        sql: &Client,
        config: &Config,
        events: &EventTableConfig,
        key: &[String],
        since: Option<i64>,
    ) -> Result<Result<(i64, i64), ExitCode>, String> {
        let filter = self.where_clause.as_deref();
        let mut counts = [0; 2];
        for (count, living) in counts.iter_mut().zip([Some(&config.sync[..]), None]) {
            let read = async {
                TableReader::of_events(sql, events, key, since, filter, living)
                    .await?
                    .count(sql)
                    .await
            };
            match read.await {
                Ok(n) => *count = n,
                Err(e) if filter.is_some() => {
                    return Ok(Err(usage(&format!("--where: {}", error_chain(&e)))))
                }
                Err(e) => return Err(error_chain(&e)),
            }
        }
        Ok(Ok((counts[0], counts[1] - counts[0])))
    }
}

/// The `[[events]]` entry of `table` (`schema.table`, or `table` in
/// `public`) and its index in the config.
fn event_table<'a>(
    config: &'a Config,
    table: &str,
) -> Result<(usize, &'a EventTableConfig), String> {
    let wanted = if table.contains('.') { table.to_owned() } else { format!("public.{table}") };
    config
        .events
        .iter()
        .enumerate()
        .find(|(_, e)| e.table.to_string() == wanted)
        .ok_or_else(|| format!("--events: `{table}` is not an [[events]] table of this config"))
}

/// `--since` as Unix seconds: a time Postgres reads (without a zone, in
/// UTC), or an interval with a unit back from now (by Postgres's clock, as
/// the rows' times are). `Ok(Err)`: why it is refused: neither, a bare
/// number (`72` would be seconds, `2026` too), or a time after now (`3
/// days ago` is an interval forward).
async fn since_seconds(sql: &Client, text: &str) -> Result<Result<i64, String>, String> {
    let has_unit = text.chars().any(|c| c.is_ascii_alphabetic());
    let queries = [
        (
            true,
            "SELECT floor(extract(epoch FROM CAST($1::text AS timestamptz)))::bigint, \
                floor(extract(epoch FROM now()))::bigint",
        ),
        (
            has_unit,
            "SELECT floor(extract(epoch FROM now() - CAST($1::text AS interval)))::bigint, \
                    floor(extract(epoch FROM now()))::bigint",
        ),
    ];
    for (_, query) in queries.iter().filter(|(tried, _)| *tried) {
        match sql.query_one(*query, &[&text]).await {
            Ok(row) => {
                let (since, now): (i64, i64) = (row.get(0), row.get(1));
                if since > now {
                    return Ok(Err(format!("{} is after now", iso_time(since))));
                }
                return Ok(Ok(since));
            }
            // Class 22 (data exception): not this kind of value.
            Err(e) if e.code().is_some_and(|c| c.code().starts_with("22")) => continue,
            Err(e) => return Err(error_chain(&e)),
        }
    }
    Ok(Err("not a time Postgres reads (2026-11-30, 2026-11-30T08:00:00Z) nor an interval \
            with a unit back from now (72 hours, 3d)"
        .to_owned()))
}

/// Unix seconds as an RFC 3339 time in UTC.
pub fn iso_time(seconds: i64) -> String {
    chrono::DateTime::from_timestamp(seconds, 0)
        .map_or_else(|| seconds.to_string(), |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
}
