//! `ciosync backfill`: queue a backfill for the running daemon and follow
//! it, show every backfill (`--status`), or cancel one (`--cancel ID`).

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::config::{Config, CopiedTable};
use crate::error::error_chain;
use crate::error::{EXIT_FAILURE, EXIT_USAGE};
use crate::source::reader::TableReader;
use crate::state::{Backfill, Queued, State};

/// What `ciosync backfill` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Queue a backfill of `table` (every synced table when `None`).
    Queue {
        table: Option<String>,
        where_clause: Option<String>,
        attributes: Option<Vec<String>>,
        /// Send rows whole, whatever the record of what Customer.io accepted says.
        ignore_record: bool,
        /// Return once queued instead of following progress.
        detach: bool,
    },
    /// Queue an event replay (`--events`).
    Events(super::event_replay::Replay),
    /// List every backfill.
    Status,
    /// Cancel one.
    Cancel(i64),
}

/// Runs the request; exit 0 on success, 2 for a bad argument, 1 otherwise.
pub async fn run(config: &Config, request: Request) -> ExitCode {
    match execute(config, request).await {
        Ok(code) => code,
        Err(message) => {
            eprintln!("ciosync: {message}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

async fn execute(config: &Config, request: Request) -> Result<ExitCode, String> {
    let settings = config.postgres.connection();
    let sql = settings.connect_sql().await.map_err(|e| error_chain(&e))?;
    let state = State::open(&sql, &config.postgres.slot).await.map_err(|e| error_chain(&e))?;
    match request {
        Request::Status => {
            let backfills = state.backfills().await.map_err(|e| error_chain(&e))?;
            if backfills.is_empty() {
                println!("no backfills");
            }
            for backfill in backfills {
                println!("{}", status_line(&backfill, config));
            }
            Ok(ExitCode::SUCCESS)
        }
        Request::Cancel(id) => {
            if state.end_backfill(id, "cancelled", None).await.map_err(|e| error_chain(&e))? {
                println!("backfill {id} cancelled");
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("ciosync: no queued or running backfill {id} (see backfill --status)");
                Ok(ExitCode::from(EXIT_FAILURE))
            }
        }
        Request::Events(replay) => replay.run(config, &sql, &state).await,
        Request::Queue { table, where_clause, attributes, ignore_record, detach } => {
            let queue = Queue { table, where_clause, attributes, ignore_record, detach };
            queue.run(config, &sql, &state).await
        }
    }
}

/// `ciosync backfill [--table T] [--where …] [--attributes …] [--detach]`.
struct Queue {
    table: Option<String>,
    where_clause: Option<String>,
    attributes: Option<Vec<String>>,
    ignore_record: bool,
    detach: bool,
}

impl Queue {
    /// Queues one backfill per chosen table, then follows them unless detached.
    async fn run(
        self,
        config: &Config,
        sql: &tokio_postgres::Client,
        state: &State<'_>,
    ) -> Result<ExitCode, String> {
        let tables =
            match select_tables(config, self.table.as_deref(), self.where_clause.as_deref()) {
                Ok(s) => s,
                Err(message) => return Ok(usage(&message)),
            };
        if let Err(message) = check_attributes(&tables, self.attributes.as_deref()) {
            return Ok(usage(&message));
        }
        self.say_what_devices_get(config, &tables);
        let mut ids = Vec::new();
        for table in tables {
            let (total, left_out) = match self.count(sql, config, table).await? {
                Ok(counts) => counts,
                Err(bad_where) => return Ok(bad_where),
            };
            let table = table.name();
            let queued = Queued {
                table: &table,
                where_clause: self.where_clause.as_deref(),
                attributes: self.attributes.as_deref(),
                rows_total: total,
                ignore_record: self.ignore_record,
                ..Queued::default()
            };
            let id = state.enqueue_backfill(&queued).await.map_err(|e| error_chain(&e))?;
            println!("backfill {id} queued: {table}, {}", crate::wording::count(total, "row"));
            if left_out > 0 {
                println!(
                    "  {} {} left out: their customers have no row that syncs (deleted, filtered \
                     out or soft-deleted, or never synced), and an add_device would re-create them",
                    crate::wording::count(left_out, "more row"),
                    crate::wording::plural(left_out, "is", "are")
                );
            }
            ids.push(id);
        }
        if self.detach {
            return Ok(ExitCode::SUCCESS);
        }
        follow(config, state, &ids).await
    }

    /// Notes on stderr what this backfill means for devices: a devices
    /// table's rows all go, with or without `--ignore-record` (devices are
    /// never in the record); a backfill of every table leaves them out.
    fn say_what_devices_get(&self, config: &Config, tables: &[CopiedTable<'_>]) {
        let devices = tables.iter().filter(|t| matches!(t, CopiedTable::Devices(_)));
        for table in devices.filter(|_| self.ignore_record) {
            eprintln!(
                "ciosync: note: --ignore-record makes no difference for {}: devices are never \
                 in the record of what Customer.io accepted, so every row is sent",
                table.name()
            );
        }
        if self.table.is_none() {
            for devices in &config.devices {
                eprintln!(
                    "ciosync: note: {0} is a [[devices]] table, not in a backfill of every \
                     table; `ciosync backfill --table {0}` sends its devices again",
                    devices.table
                );
            }
        }
    }

    /// The rows the backfill of `table` will read (a synced table's own
    /// filter too), counted by the reader the daemon will page with, and
    /// the rows of a devices table it leaves out for their customers (see
    /// `source::living::living_devices`); reading them also proves
    /// `--where` is one read-only SQL condition on the table (`Ok(Err)`:
    /// the usage error to exit with).
    async fn count(
        &self,
        sql: &tokio_postgres::Client,
        config: &Config,
        table: CopiedTable<'_>,
    ) -> Result<Result<(i64, i64), ExitCode>, String> {
        let filter = self.where_clause.as_deref();
        let mut counts = [0; 2];
        let devices = matches!(table, CopiedTable::Devices(_));
        let readers = [Some(&config.sync[..]), None].into_iter().take(if devices { 2 } else { 1 });
        for (count, living) in counts.iter_mut().zip(readers) {
            let counted = async {
                TableReader::of_copied(sql, table, filter, living).await?.count(sql).await
            };
            match counted.await {
                Ok(n) => *count = n,
                Err(e) if filter.is_some() => {
                    return Ok(Err(usage(&format!("--where: {}", error_chain(&e)))))
                }
                Err(e) => return Err(error_chain(&e)),
            }
        }
        let left_out = if devices { counts[1] - counts[0] } else { 0 };
        Ok(Ok((counts[0], left_out)))
    }
}

/// `--attributes` names mapped attributes of the chosen `[[sync]]` tables;
/// a devices table's rows go whole (each an `add_device`), not by attribute.
pub(super) fn check_attributes(
    tables: &[CopiedTable<'_>],
    attributes: Option<&[String]>,
) -> Result<(), String> {
    let Some(attributes) = attributes else { return Ok(()) };
    if let Some(CopiedTable::Devices(devices)) =
        tables.iter().find(|t| matches!(t, CopiedTable::Devices(_)))
    {
        return Err(format!(
            "--attributes: {} is a [[devices]] table, whose rows are sent whole (an add_device \
             each), not by attribute",
            devices.table
        ));
    }
    let mapped = |a: &String| {
        tables.iter().any(|t| matches!(t, CopiedTable::Sync(s) if s.attributes.contains_key(a)))
    };
    match attributes.iter().find(|a| !mapped(a)) {
        Some(unknown) => {
            Err(format!("--attributes: `{unknown}` is not a mapped attribute of the table"))
        }
        None => Ok(()),
    }
}

/// The tables a backfill covers: the one `--table` names (a `[[sync]]` or
/// a `[[devices]]` table), else every `[[sync]]` table (people, objects,
/// relationships; devices tables only by name). `--where` needs exactly one.
pub(super) fn select_tables<'a>(
    config: &'a Config,
    table: Option<&str>,
    where_clause: Option<&str>,
) -> Result<Vec<CopiedTable<'a>>, String> {
    let tables: Vec<CopiedTable> = match table {
        Some(t) => {
            let wanted = if t.contains('.') { t.to_owned() } else { format!("public.{t}") };
            match CopiedTable::find(config, &wanted) {
                Some(found) => vec![found],
                None => {
                    return Err(format!(
                        "--table: `{t}` is not a [[sync]] or [[devices]] table of this config"
                    ))
                }
            }
        }
        None => config.sync.iter().map(CopiedTable::Sync).collect(),
    };
    if where_clause.is_some() && tables.len() > 1 {
        return Err("--where needs --table when the config syncs several tables".to_owned());
    }
    Ok(tables)
}

pub(super) fn usage(message: &str) -> ExitCode {
    eprintln!("ciosync: {message}");
    ExitCode::from(EXIT_USAGE)
}

/// Follows queued backfills until each ends: a progress line redrawn in
/// place on a terminal, a log line every few seconds otherwise.
pub(super) async fn follow(
    config: &Config,
    state: &State<'_>,
    ids: &[i64],
) -> Result<ExitCode, String> {
    let terminal = std::io::stdout().is_terminal();
    let started = Instant::now();
    let mut last_line = Instant::now();
    let mut warned = false;
    loop {
        let mut all_ended = true;
        let mut failed = false;
        let mut lines = Vec::new();
        for id in ids {
            let Some(backfill) = state.backfill(*id).await.map_err(|e| error_chain(&e))? else {
                continue;
            };
            all_ended &= !matches!(backfill.state.as_str(), "queued" | "running");
            failed |= matches!(backfill.state.as_str(), "failed" | "cancelled");
            if backfill.state == "queued" && started.elapsed() > Duration::from_secs(10) && !warned
            {
                eprintln!("backfill {id} is still queued: is `ciosync run` running for this slot?");
                warned = true;
            }
            lines.push(status_line(&backfill, config));
        }
        let text = lines.join(" | ");
        if all_ended {
            if terminal {
                print!("\r\x1b[2K");
            }
            println!("{text}");
            return Ok(if failed { ExitCode::from(EXIT_FAILURE) } else { ExitCode::SUCCESS });
        }
        if terminal {
            print!("\r\x1b[2K{text}");
            let _ = std::io::stdout().flush();
        } else if last_line.elapsed() >= Duration::from_secs(5) {
            println!("{text}");
            last_line = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `#id table state done/total (pct) rate ETA`; `events` after the table
/// for an event replay, `devices` for a `[[devices]]` table of `config`.
pub fn status_line(b: &Backfill, config: &Config) -> String {
    let total = b.rows_total.unwrap_or(0).max(b.rows_done);
    let pct = if total > 0 { b.rows_done as f64 * 100.0 / total as f64 } else { 100.0 };
    let devices = config.devices.iter().any(|d| d.table.to_string() == b.table);
    let kind = match (b.events, devices) {
        (true, _) => " events",
        (false, true) => " devices",
        (false, false) => "",
    };
    let mut line = format!(
        "#{} {}{kind} {} {}/{} rows ({pct:.0}%)",
        b.id, b.table, b.state, b.rows_done, total
    );
    if let Some(secs) = b.running_secs.filter(|s| *s > 0.0) {
        let rate = b.rows_done as f64 / secs;
        line.push_str(&format!(", {rate:.0} rows/s"));
        if b.state == "running" && rate > 0.0 {
            let eta = (total - b.rows_done).max(0) as f64 / rate;
            line.push_str(&format!(", ETA {eta:.0} s"));
        }
    }
    if let Some(since) = b.since {
        line.push_str(&format!(", since {}", super::event_replay::iso_time(since)));
    }
    if let Some(filter) = &b.where_clause {
        line.push_str(&format!(", where {filter}"));
    }
    if let Some(attributes) = &b.attributes {
        line.push_str(&format!(", attributes {}", attributes.join(",")));
    }
    if b.ignore_record {
        line.push_str(", ignoring the record");
    }
    if let Some(error) = &b.error {
        line.push_str(&format!(", error: {error}"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_devices_table_is_chosen_by_name_only() {
        let config = crate::config::fixture::users_and_devices();
        let names = |tables: Vec<CopiedTable>| tables.into_iter().map(|t| t.name()).collect();
        let chosen: Vec<String> = names(select_tables(&config, Some("push_tokens"), None).unwrap());
        assert_eq!(chosen, ["public.push_tokens"]);
        let chosen = select_tables(&config, Some("public.push_tokens"), Some("true")).unwrap();
        assert!(matches!(chosen[..], [CopiedTable::Devices(_)]));
        // A backfill of every table is the [[sync]] tables', as before.
        let every: Vec<String> = names(select_tables(&config, None, None).unwrap());
        assert_eq!(every, ["public.users"]);
        let error = select_tables(&config, Some("nothing"), None).unwrap_err();
        assert!(error.contains("not a [[sync]] or [[devices]] table"), "{error}");
    }

    #[test]
    fn attributes_name_mapped_attributes_and_never_a_devices_table() {
        let config = crate::config::fixture::users_and_devices();
        let users = select_tables(&config, Some("users"), None).unwrap();
        let devices = select_tables(&config, Some("push_tokens"), None).unwrap();
        let list = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(check_attributes(&users, None), Ok(()));
        assert_eq!(check_attributes(&users, Some(&list(&["email"]))), Ok(()));
        let error = check_attributes(&users, Some(&list(&["email", "nope"]))).unwrap_err();
        assert!(error.contains("`nope` is not a mapped attribute"), "{error}");
        assert_eq!(check_attributes(&devices, None), Ok(()));
        let error = check_attributes(&devices, Some(&list(&["email"]))).unwrap_err();
        assert!(error.contains("public.push_tokens is a [[devices]] table"), "{error}");
    }
}
