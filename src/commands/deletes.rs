//! `ciosync deletes list | approve | discard`: the operator's side of the
//! mass-delete circuit breaker, for the config's slot. Exit 0 on success, 1
//! on a failure (Postgres, Customer.io, an unknown id), 2 on bad usage or
//! config. The running daemon notices within seconds and, once nothing is
//! held any more, resets the breaker.
//!
//! `approve` sends in batches, each inside a transaction that locks its rows
//! (`FOR UPDATE`) until they are marked `sent`: a change of one of those
//! customers arriving meanwhile waits for the lock in the daemon, so it
//! reaches Customer.io after the removal, and a row it superseded first is
//! no longer `held` and is skipped.
//!
//! The record of what Customer.io accepted forgets a batch's customers
//! before the batch is sent, in a statement committed on its own (not in
//! the batch's transaction, which a stop, a Ctrl-C or a kill rolls back):
//! whenever the command ends, the record claims nothing for a customer
//! Customer.io may have removed (`approve` below says why nothing writes
//! them back before the removal lands).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Subcommand;

use crate::commands::current::{self, Current, Rows};
use crate::commands::select::{Selection, Which};
use crate::config::{Config, ConfigError};
use crate::customer::CustomerOp;
use crate::dead_letter::render::{printable, time};
use crate::delete_guard::table::{HeldRow, HeldTable};
use crate::pg::PgError;
use crate::sink::batch;
use crate::sink::client::TrackClient;
use crate::sink::send::{self, Answer, Policy, Stop};
use crate::sink::SinkError;
use crate::telemetry::Counters;
use crate::track_api::Route;
use crate::wording::{count, plural};

/// The `deletes` subcommands, as parsed.
#[derive(Debug, Subcommand)]
pub enum DeletesCommand {
    /// Show the removals held by the circuit breaker: id, customer id,
    /// action, commit LSN, when it was held.
    List {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Send held removals to Customer.io (those a later change superseded
    /// are skipped) and mark them sent.
    Approve {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        #[command(flatten)]
        which: Which,
    },
    /// Drop held removals without sending them: those customers stay in
    /// Customer.io.
    Discard {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        #[command(flatten)]
        which: Which,
    },
    /// Count the customers the record of what Customer.io accepted holds
    /// whose row is gone (deleted while no slot existed); `--send` removes
    /// them from Customer.io.
    Gone {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Send their removals (each `[[sync]]` table's `delete_action`).
        #[arg(long)]
        send: bool,
        /// Show a few of their ids (customer data: off by default).
        #[arg(long)]
        show_ids: bool,
        /// Send even more than `delete_guard.max_deletes` removals.
        #[arg(long, requires = "send")]
        force: bool,
    },
}

/// What `ciosync deletes` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    List { json: bool },
    Approve(Selection),
    Discard(Selection),
    Gone { send: bool, show_ids: bool, force: bool },
}

impl DeletesCommand {
    /// The config file, and the request or why the arguments do not make one.
    pub fn into_parts(self) -> (PathBuf, Result<Request, String>) {
        match self {
            Self::List { config, json } => (config, Ok(Request::List { json })),
            Self::Approve { config, which } => {
                (config, selection("approve", which).map(Request::Approve))
            }
            Self::Discard { config, which } => {
                (config, selection("discard", which).map(Request::Discard))
            }
            Self::Gone { config, send, show_ids, force } => {
                (config, Ok(Request::Gone { send, show_ids, force }))
            }
        }
    }
}

fn selection(command: &str, which: Which) -> Result<Selection, String> {
    which.selection(&format!("deletes {command}"), "held removals", "ciosync deletes list")
}

/// Why `ciosync deletes` failed; the message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Postgres(#[from] PgError),
    #[error("no held removal {} for slot {slot} (`ciosync deletes list` shows them); nothing was changed", super::join_ids(.ids))]
    Unknown { ids: Vec<i64>, slot: String },
    #[error(transparent)]
    Client(#[from] SinkError),
    #[error("stopped after sending {sent}; the rest are still held")]
    Stopped {
        sent: u64,
        #[source]
        reason: Stop,
    },
    #[error(
        "the held removals were sent; stopped after identifying {} again (run `ciosync \
         deletes approve --all` again for the rest)",
        count(*.identified, "customer")
    )]
    RefreshStopped {
        identified: u64,
        #[source]
        reason: Stop,
    },
    #[error(
        "{} would be removed, more than delete_guard.max_deletes ({limit}): \
         check them with `ciosync deletes gone --show-ids` and `ciosync plan` (a [[sync]] table \
         removed from the config, or a narrower filter, makes its customers look gone), then \
         add --force; nothing was sent",
        crate::wording::count(*.count, "customer")
    )]
    TooMany { count: u64, limit: u64 },
    #[error("cannot write the output")]
    Output(#[source] std::io::Error),
}

/// Runs the request and maps the outcome to an exit status.
pub async fn run(config: &Config, request: Request) -> ExitCode {
    let outcome = execute(config, request).await;
    super::exit_status(outcome, |e| matches!(e, CommandError::Config(_)))
}

async fn execute(config: &Config, request: Request) -> Result<(), CommandError> {
    let settings = config.postgres.connection();
    let sql = settings.connect_sql().await.map_err(PgError::sql("connect"))?;
    let slot = config.postgres.slot.as_str();
    let table = HeldTable::open(&sql, slot).await?;
    match request {
        Request::List { json } => {
            let rows = table.waiting().await?;
            if json {
                emit(&rows.iter().map(|r| json_line(r) + "\n").collect::<String>())?;
                if rows.is_empty() {
                    eprintln!("no held removals for slot {slot}");
                }
                Ok(())
            } else {
                emit(&render_table(&rows, slot))
            }
        }
        Request::Approve(selection) => {
            let only = chosen(&table, slot, selection).await?;
            approve(config, &sql, &table, only.as_deref()).await
        }
        Request::Discard(selection) => {
            let only = chosen(&table, slot, selection).await?;
            let customers = table.discard(only.as_deref()).await?;
            // Kept in Customer.io as they are: the record forgets them, so
            // where the old row is not known (DEFAULT identity) a later
            // update of their row, still outside the filter or soft-deleted,
            // does not take them for held and remove them after all. Their
            // next identify goes whole.
            crate::record::store::forget(&sql, slot, &customers).await?;
            let discarded = customers.len() as u64;
            emit(&format!("discarded {}\n", count(discarded, "held removal")))?;
            refresh_when_decided(config, &sql, &table).await
        }
        Request::Gone { send, show_ids, force } => {
            emit(&super::gone::run(config, send, show_ids, force).await?)
        }
    }
}

/// `None` for all; the chosen ids, once each is known to exist.
async fn chosen(
    table: &HeldTable<'_>,
    slot: &str,
    selection: Selection,
) -> Result<Option<Vec<i64>>, CommandError> {
    match selection {
        Selection::All => Ok(None),
        Selection::Ids(wanted) => {
            let found = table.existing(&wanted).await?;
            let missing: Vec<i64> =
                wanted.iter().copied().filter(|id| !found.contains(id)).collect();
            if missing.is_empty() {
                Ok(Some(wanted))
            } else {
                Err(CommandError::Unknown { ids: missing, slot: slot.to_owned() })
            }
        }
    }
}

/// Sends the chosen held removals batch by batch and prints the summary,
/// also when it stops early.
///
/// Each batch's customers are forgotten in the record before it is sent
/// and again after. Why the first forget holds until the removal lands:
/// the daemon writes a customer's record only after Customer.io accepted
/// an operation of it. Every operation of a transaction before the held
/// removal's was accepted and written before the slot confirmed it (the
/// batch takes only confirmed rows), and any later operation of a customer
/// with a held *delete* first marks it superseded ([`HeldStore::supersede`]),
/// which waits for this batch's lock: it is not even queued before the
/// batch commits. A held *suppression* is never superseded, so the daemon
/// may identify its customer meanwhile and record that before the
/// suppression lands: the forget after the send clears that.
///
/// [`HeldStore::supersede`]: crate::delete_guard::store::HeldStore::supersede
async fn approve(
    config: &Config,
    sql: &tokio_postgres::Client,
    table: &HeldTable<'_>,
    only: Option<&[i64]>,
) -> Result<(), CommandError> {
    let client = TrackClient::new(&config.customerio, Arc::new(Counters::default()))?;
    let max_backoff = Duration::from_secs(config.customerio.retry_max_backoff_secs);
    let per_batch = config.customerio.max_batch_ops as i64;
    // `sql` carries each batch's transaction: the record's forgets go on a
    // connection of their own, each committed as it runs.
    let record =
        config.postgres.connection().connect_sql().await.map_err(PgError::sql("connect"))?;
    let slot = config.postgres.slot.as_str();
    let (mut sent, mut refused) = (0u64, 0u64);
    let mut after = 0;
    loop {
        let batch = table.lock_batch(only, after, per_batch).await?;
        let Some(&(last, _, _)) = batch.last() else {
            table.abandon().await?;
            let waiting = table.unconfirmed(only).await?;
            if waiting > 0 {
                emit(&format!(
                    "{} {} for the daemon to acknowledge their transaction (everything before \
                     them must reach Customer.io first); run approve again in a moment\n",
                    count(waiting, "held removal"),
                    plural(waiting, "waits", "wait")
                ))?;
            }
            break;
        };
        after = last;
        let items: Vec<_> = batch
            .iter()
            .filter_map(|(_, customer, action)| batch::encode(action.op(customer.clone())))
            .collect();
        let customers: Vec<String> = batch.iter().map(|(_, c, _)| c.clone()).collect();
        // Before the send (see the doc above for why nothing writes them
        // back before it lands), and again after it for held suppressions.
        crate::record::store::forget(&record, slot, &customers).await?;
        let sent_to = send(&client, batch::body(&items), items.len(), max_backoff).await;
        crate::record::store::forget(&record, slot, &customers).await?;
        match sent_to {
            Ok(failed) => {
                let delivered: Vec<i64> = batch
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !failed.contains(i))
                    .map(|(_, (id, _, _))| *id)
                    .collect();
                refused += (batch.len() - delivered.len()) as u64;
                sent += table.finish(&delivered, "sent").await?;
            }
            Err(reason) => {
                table.abandon().await?;
                emit(&summary(sent, refused))?;
                return Err(CommandError::Stopped { sent, reason });
            }
        }
    }
    emit(&summary(sent, refused))?;
    refresh_when_decided(config, sql, table).await
}

/// Once no removal waits for a decision any more (whichever command made
/// the last one): the customers noted while removals were held are
/// identified again ([`refresh_all`]). One that took the email of a person
/// whose removal was discarded is refused again (that person keeps it),
/// harmlessly; the others now go through.
async fn refresh_when_decided(
    config: &Config,
    sql: &tokio_postgres::Client,
    table: &HeldTable<'_>,
) -> Result<(), CommandError> {
    if table.any_waiting().await? {
        return Ok(());
    }
    let client = TrackClient::new(&config.customerio, Arc::new(Counters::default()))?;
    let max_backoff = Duration::from_secs(config.customerio.retry_max_backoff_secs);
    let refreshed = refresh_all(config, sql, table, &client, max_backoff).await?;
    if refreshed.identified + refreshed.refused > 0 {
        emit(&refreshed.summary())?;
    }
    Ok(())
}

/// What [`refresh_all`] did.
#[derive(Debug, Default)]
struct Refreshed {
    identified: u64,
    refused: u64,
}

impl Refreshed {
    fn summary(&self) -> String {
        let mut text = format!(
            "identified again from their rows: {} given an email while removals were held",
            count(self.identified, "customer")
        );
        if self.refused > 0 {
            text.push_str(&format!("; Customer.io refused {}", self.refused));
        }
        text + "\n"
    }
}

/// Once no removal is held any more: identifies again, from its rows, every
/// customer the daemon identified with an email while removals were held.
/// Customer.io refuses (with an HTTP 200) to give a person an email that
/// another person still has, and a held person still had theirs; now that
/// they are deleted, the identify goes through. A customer whose rows are
/// gone, or in several tables, is left to the stream.
///
/// Each is sent until its row, read again after Customer.io accepted the
/// identify, still says the same (at most [`current::MAX_ROUNDS`] sends):
/// the daemon keeps delivering meanwhile, and a change it sent before this
/// identify landed would otherwise be set back. A page of customers is
/// forgotten once each is settled; a stop keeps the rest for the next run.
///
/// The record forgets each customer before each send (committed: no
/// transaction is open here), so an interrupted run leaves no claim
/// Customer.io may no longer match, and again after it: the daemon may
/// have recorded a newer value meanwhile that this send set back.
async fn refresh_all(
    config: &Config,
    sql: &tokio_postgres::Client,
    table: &HeldTable<'_>,
    client: &TrackClient,
    max_backoff: Duration,
) -> Result<Refreshed, CommandError> {
    let mut rows = Rows::new(sql, &config.sync);
    let tables = rows.every_table();
    let mut done = Refreshed::default();
    let mut after = String::new();
    loop {
        let page = table.refreshes(&after, REFRESH_PAGE).await?;
        let Some(last) = page.last() else { return Ok(done) };
        after = last.clone();
        for customer in &page {
            let mut state = rows.current(customer, &tables).await?;
            for _ in 0..current::MAX_ROUNDS {
                let Current::Live(attributes) = &state else { break };
                let op = CustomerOp::Identify {
                    id: customer.clone(),
                    attributes: attributes.clone(),
                    timestamp: rows.now().await?,
                };
                let items: Vec<_> = batch::encode(op).into_iter().collect();
                // Held by Customer.io, values unknown to the record (see
                // `record::store::blank`), before the send and after it.
                let held = std::slice::from_ref(customer);
                crate::record::store::blank(sql, &config.postgres.slot, held).await?;
                let sent = send(client, batch::body(&items), items.len(), max_backoff).await;
                crate::record::store::blank(sql, &config.postgres.slot, held).await?;
                match sent {
                    Ok(failed) if failed.is_empty() => {}
                    Ok(_) => {
                        done.refused += 1;
                        break;
                    }
                    Err(reason) => {
                        return Err(CommandError::RefreshStopped {
                            identified: done.identified,
                            reason,
                        })
                    }
                }
                let now = rows.current(customer, &tables).await?;
                if now == state {
                    done.identified += 1;
                    break;
                }
                state = now;
            }
        }
        table.forget_refreshes(&page).await?;
    }
}

/// Customers read and identified again per page of [`refresh_all`].
const REFRESH_PAGE: i64 = 500;

fn summary(sent: u64, refused: u64) -> String {
    let mut text = format!("approved: sent {}", count(sent, "removal"));
    if refused > 0 {
        text.push_str(&format!(
            "; Customer.io refused {refused}, still held (`ciosync deletes list`)"
        ));
    }
    text + "\n"
}

/// Posts one batch until Customer.io gives a definite answer: the indexes
/// of the items it refused (kept held), or why nothing more can be sent.
pub(super) async fn send(
    client: &TrackClient,
    body: Vec<u8>,
    items: usize,
    max_backoff: Duration,
) -> Result<Vec<usize>, Stop> {
    let body = bytes::Bytes::from(body);
    Ok(
        match send::until_answered(client, Route::Batch, body, items, Policy::command(max_backoff))
            .await?
        {
            Answer::Accepted => Vec::new(),
            Answer::PartlyRejected(errors) => errors.iter().filter_map(|e| e.batch_index).collect(),
            Answer::Rejected { .. } => (0..items).collect(),
        },
    )
}

/// The rows as an aligned table, or a line saying there are none.
fn render_table(rows: &[HeldRow], slot: &str) -> String {
    if rows.is_empty() {
        return format!("no held removals for slot {slot}\n");
    }
    let header = ["ID", "CUSTOMER", "ACTION", "COMMIT LSN", "HELD AT"];
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            [
                r.id.to_string(),
                printable(&r.customer_id),
                r.action.clone(),
                r.commit_lsn.clone(),
                time(r.held_at, ' '),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 5]| {
        let padded: Vec<String> =
            cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        padded.join("  ").trim_end().to_owned() + "\n"
    };
    let mut text = line(header);
    for row in &cells {
        text.push_str(&line(row.each_ref().map(String::as_str)));
    }
    text.push_str(&format!(
        "{} held for slot {slot}: `ciosync deletes approve --all` sends them, \
         `ciosync deletes discard --all` drops them\n",
        rows.len()
    ));
    text
}

/// One row as a JSON object.
fn json_line(row: &HeldRow) -> String {
    serde_json::json!({
        "id": row.id,
        "customer_id": row.customer_id,
        "action": row.action,
        "commit_lsn": row.commit_lsn,
        "held_at": row.held_at,
        "state": row.state,
    })
    .to_string()
}

fn emit(text: &str) -> Result<(), CommandError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(CommandError::Output)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn request(args: &[&str]) -> Result<Request, String> {
        let cli = Cli::try_parse_from([&["ciosync", "deletes"], args].concat()).expect("parses");
        match cli.command {
            Command::Deletes { command } => command.into_parts().1,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_each_subcommand() {
        assert_eq!(request(&["list", "-c", "c.toml"]), Ok(Request::List { json: false }));
        assert_eq!(request(&["list", "--json", "-c", "c.toml"]), Ok(Request::List { json: true }));
        assert_eq!(
            request(&["approve", "--id", "9", "--id", "2", "-c", "c.toml"]),
            Ok(Request::Approve(Selection::Ids(vec![2, 9])))
        );
        assert_eq!(
            request(&["discard", "--all", "-c", "c.toml"]),
            Ok(Request::Discard(Selection::All))
        );
        let message = request(&["approve", "-c", "c.toml"]).unwrap_err();
        assert!(message.contains("deletes approve") && message.contains("--all"), "{message}");
    }

    #[test]
    fn the_table_names_the_commands_and_the_summary_the_refusals() {
        let row = HeldRow {
            id: 3,
            customer_id: "42".into(),
            action: "delete".into(),
            commit_lsn: "0/16B3748".into(),
            held_at: 0,
            state: "held".into(),
        };
        let text = render_table(std::slice::from_ref(&row), "s");
        assert!(text.starts_with("ID  CUSTOMER  ACTION  COMMIT LSN"), "{text}");
        assert!(text.contains("deletes approve --all"), "{text}");
        assert_eq!(render_table(&[], "s"), "no held removals for slot s\n");
        let json: serde_json::Value = serde_json::from_str(&json_line(&row)).unwrap();
        assert_eq!(json["customer_id"], "42");
        assert_eq!(summary(2, 0), "approved: sent 2 removals\n");
        assert_eq!(summary(1, 0), "approved: sent 1 removal\n");
        for (count, said) in [(1, "1 customer would be"), (2, "2 customers would be")] {
            let refused = CommandError::TooMany { count, limit: 0 }.to_string();
            assert!(refused.starts_with(said), "{refused}");
        }
        assert!(summary(1, 1).contains("refused 1, still held"));
    }
}
