//! `ciosync dlq list | retry | discard`: the operator's side of the
//! dead-letter table, for the config's slot. Exit 0 on success, 1 on a
//! failure (Postgres, Customer.io, an unknown id), 2 on bad usage or config.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Subcommand};

use tokio_postgres::Client;

use super::dlq_current::{Current, Rows};
use crate::config::{Config, ConfigError};
use crate::customer::CustomerOp;
use crate::dead_letter::render::{self, Refusal, RetrySummary, Skip};
use crate::dead_letter::{DeadLetterTable, Replayable};
use crate::error::error_chain;
use crate::error::{EXIT_FAILURE, EXIT_USAGE};
use crate::pg::PgError;
use crate::sink::batch::encode;
use crate::sink::client::TrackClient;
use crate::sink::retry::{cut_error_text, describe_item_error, Backoff, Verdict};
use crate::sink::SinkError;
use crate::telemetry::Counters;
use crate::track_api::ItemError;
use crate::track_api::Route;

/// Most tries of one letter while Customer.io answers with something
/// transient (a 5xx, a 429, a timeout); then `retry` stops and keeps it.
pub const MAX_TRIES: u32 = 5;
/// Letters read per query by `list`, so memory stays flat however many there are.
const PAGE: i64 = 1000;

/// The `dlq` subcommands, as parsed.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Show this slot's dead letters: id, customer id, operation (an event
    /// with its name, a merge with both ids), attribute names, status,
    /// Customer.io's error, attempts, first and last attempt.
    List {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
        /// With --json: include each letter's payload (customer data).
        #[arg(long, requires = "json")]
        payload: bool,
    },
    /// Replay dead letters to Customer.io in id order, each by the route it
    /// was first sent on (an anonymous event to /api/v1/events, anything
    /// else as a one-item /api/v2/batch); delivered ones are deleted,
    /// refused ones kept with the new error.
    ///
    /// A replay never sets a customer back to older values: an identify
    /// sends the row's current values (read from the synced table, its
    /// filter and soft delete applied), or nothing if the row is gone or no
    /// longer syncs; a delete or suppression is sent only if the customer
    /// still has no row that syncs. Events and merges are sent as they were.
    /// The rows are read again after each send, and sent again if they
    /// changed meanwhile.
    Retry {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        #[command(flatten)]
        which: Which,
    },
    /// Delete dead letters without sending them.
    Discard {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        #[command(flatten)]
        which: Which,
    },
}

/// Which rows `dlq retry|discard` or `deletes approve|discard` act on.
#[derive(Debug, Clone, Args)]
pub struct Which {
    /// An id, as the `list` subcommand shows it; may repeat.
    #[arg(long = "id", value_name = "N", conflicts_with = "all")]
    pub ids: Vec<i64>,
    /// Every one of this slot.
    #[arg(long)]
    pub all: bool,
}

/// What `ciosync dlq` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    List { json: bool, payload: bool },
    Retry(Selection),
    Discard(Selection),
}

/// The letters chosen with `--id` or `--all`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    All,
    /// Sorted, without repeats.
    Ids(Vec<i64>),
}

impl DlqCommand {
    /// The config file, and the request or why the arguments do not make one.
    pub fn into_parts(self) -> (PathBuf, Result<Request, String>) {
        match self {
            Self::List { config, json, payload } => (config, Ok(Request::List { json, payload })),
            Self::Retry { config, which } => {
                (config, selection("retry", which).map(Request::Retry))
            }
            Self::Discard { config, which } => {
                (config, selection("discard", which).map(Request::Discard))
            }
        }
    }
}

fn selection(command: &str, which: Which) -> Result<Selection, String> {
    which.selection(&format!("dlq {command}"), "dead letters", "ciosync dlq list")
}

impl Which {
    /// `--all`, or the `--id`s sorted without repeats; neither is bad usage
    /// (clap already refuses both), worded with the `command` ("dlq retry"),
    /// `what` it acts on ("dead letters") and the `list` command that shows
    /// the ids. Shared with `ciosync deletes`.
    pub fn selection(self, command: &str, what: &str, list: &str) -> Result<Selection, String> {
        if self.all {
            return Ok(Selection::All);
        }
        if self.ids.is_empty() {
            return Err(format!(
                "{command}: say which {what}: --id N (may repeat) or --all; `{list}` shows the ids"
            ));
        }
        let mut ids = self.ids;
        ids.sort_unstable();
        ids.dedup();
        Ok(Selection::Ids(ids))
    }
}

/// Why `ciosync dlq` failed; the message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Postgres(#[from] PgError),
    #[error("no dead letter {} for slot {slot} (`ciosync dlq list` shows them); nothing was changed", join(.ids))]
    Unknown { ids: Vec<i64>, slot: String },
    #[error(transparent)]
    Client(#[from] SinkError),
    #[error("stopped at dead letter {id}; it and the {left} after it were kept")]
    Stopped {
        id: i64,
        left: usize,
        #[source]
        reason: Stop,
    },
    #[error("cannot write the output")]
    Output(#[source] std::io::Error),
}

impl CommandError {
    fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) => EXIT_USAGE,
            _ => EXIT_FAILURE,
        }
    }
}

fn join(ids: &[i64]) -> String {
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
}

/// Why `retry` stopped before the end: nothing more can go through until
/// the operator fixes something (or Customer.io recovers).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Stop {
    #[error(
        "Customer.io refused the credentials (HTTP 401): check customerio.api_key and \
         customerio.site_id (or CIOSYNC_CUSTOMERIO_API_KEY / CIOSYNC_CUSTOMERIO_SITE_ID)"
    )]
    Unauthorized,
    #[error(
        "Customer.io answered HTTP {status} (a redirect): the workspace is probably in the \
         other region; set customerio.region (ciosync check shows the workspace's region) or \
         customerio.track_url"
    )]
    Redirected { status: u16 },
    #[error(
        "Customer.io refused the request (HTTP {status}: {message}): check customerio.track_url \
         and the workspace"
    )]
    Refused { status: u16, message: String },
    #[error("Customer.io did not accept it after {tries} tries (last: {reason}); try again later")]
    Unavailable { tries: u32, reason: String },
}

/// Runs the request and maps the outcome to an exit status.
pub async fn run(config: &Config, request: Request) -> ExitCode {
    match execute(config, request).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ciosync: {}", error_chain(&error));
            ExitCode::from(error.exit_code())
        }
    }
}

async fn execute(config: &Config, request: Request) -> Result<(), CommandError> {
    let settings = config.postgres.connection()?;
    let sql = settings.connect_sql().await.map_err(PgError::sql("connect"))?;
    let slot = config.postgres.slot.as_str();
    let table = DeadLetterTable::open(&sql, slot).await?;
    match request {
        Request::List { json, payload } => list(&table, slot, json, payload).await,
        Request::Retry(selection) => {
            let ids = chosen(&table, slot, selection).await?;
            retry(config, &sql, &table, &ids).await
        }
        Request::Discard(selection) => {
            let ids = chosen(&table, slot, selection).await?;
            let discarded = table.delete(&ids).await?;
            let noun = if discarded == 1 { "dead letter" } else { "dead letters" };
            emit(&format!("discarded {discarded} {noun}\n"))
        }
    }
}

/// The ids of the chosen letters, in order; an unknown `--id` changes nothing.
async fn chosen(
    table: &DeadLetterTable<'_>,
    slot: &str,
    selection: Selection,
) -> Result<Vec<i64>, CommandError> {
    match selection {
        Selection::All => Ok(table.ids(None).await?),
        Selection::Ids(wanted) => {
            let found = table.ids(Some(&wanted)).await?;
            let missing: Vec<i64> = wanted.into_iter().filter(|id| !found.contains(id)).collect();
            if missing.is_empty() {
                Ok(found)
            } else {
                Err(CommandError::Unknown { ids: missing, slot: slot.to_owned() })
            }
        }
    }
}

/// Prints every letter, a page at a time for `--json`; the table needs
/// them all to align its columns (without payloads, so they stay small).
async fn list(
    table: &DeadLetterTable<'_>,
    slot: &str,
    json: bool,
    payload: bool,
) -> Result<(), CommandError> {
    let mut after = 0;
    let mut all = Vec::new();
    loop {
        let page = table.page(after, PAGE, json && payload).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        if json {
            let lines: String = page.iter().map(|l| render::json_line(l) + "\n").collect();
            emit(&lines)?;
        } else {
            all.extend(page);
        }
    }
    if !json {
        emit(&render::table(&all, slot))?;
    } else if after == 0 {
        // Said on stderr, so stdout stays valid JSON lines.
        eprintln!("no dead letters for slot {slot}");
    }
    Ok(())
}

/// Replays each letter in id order and prints the summary, also when it
/// stops early.
async fn retry(
    config: &Config,
    sql: &Client,
    table: &DeadLetterTable<'_>,
    ids: &[i64],
) -> Result<(), CommandError> {
    let client = TrackClient::new(&config.customerio, Arc::new(Counters::default()))?;
    let max_backoff = Duration::from_secs(config.customerio.retry_max_backoff_secs);
    let mut replayer = Replayer { client, max_backoff, rows: Rows::new(sql, &config.sync) };
    let mut summary = RetrySummary::default();
    let outcome = replay_all(&mut replayer, table, ids, &mut summary).await;
    emit(&render::retry_summary(&summary))?;
    outcome
}

async fn replay_all(
    replayer: &mut Replayer<'_>,
    table: &DeadLetterTable<'_>,
    ids: &[i64],
    summary: &mut RetrySummary,
) -> Result<(), CommandError> {
    for (i, &id) in ids.iter().enumerate() {
        // Gone meanwhile: another `dlq` command delivered or discarded it.
        let Some(letter) = table.replayable(id).await? else { continue };
        let outcome = match replayer.settle(&letter).await {
            Ok(outcome) => outcome,
            Err(Halt::Postgres(error)) => return Err(error.into()),
            Err(Halt::Customerio(reason)) => {
                return Err(CommandError::Stopped { id, left: ids.len() - i - 1, reason });
            }
        };
        match outcome {
            Outcome::Delivered { note } => {
                table.delete(&[id]).await?;
                summary.delivered += 1;
                if let Some(note) = note {
                    summary.sent_as_refused.push((id, note));
                }
            }
            Outcome::Refreshed => {
                table.delete(&[id]).await?;
                summary.refreshed += 1;
            }
            Outcome::Skipped(skip) => {
                table.delete(&[id]).await?;
                summary.skipped.push((id, skip));
            }
            Outcome::RefusedAgain { status, error } => {
                table.refused_again(id, status, &error).await?;
                summary.refused.push(Refusal { id, status, error });
            }
            Outcome::Unsettled => {
                table.kept(id, UNSETTLED).await?;
                summary.kept.push((id, UNSETTLED));
            }
        }
    }
    Ok(())
}

/// Rounds of "send, read the row again" before a replay whose row keeps
/// changing is given up (see [`Replayer::converge`]).
pub const MAX_ROUNDS: u32 = 5;

/// The error a letter is kept with when its row changed after every one of
/// [`MAX_ROUNDS`] sends.
const UNSETTLED: &str = "the customer's row kept changing while `dlq retry` sent it; \
    nothing was lost: run `dlq retry` again";

/// What became of one letter.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// Sent as it was refused; `note` says why when it was an identify or
    /// a removal that could not be checked against the rows.
    Delivered {
        note: Option<&'static str>,
    },
    /// An identify, sent with the row's current values instead.
    Refreshed,
    /// Nothing sent: it would set the customer back.
    Skipped(Skip),
    RefusedAgain {
        status: u16,
        error: String,
    },
    /// The row changed after every send; kept.
    Unsettled,
}

/// Why `retry` stopped: Customer.io cannot take anything now, or Postgres failed.
enum Halt {
    Customerio(Stop),
    Postgres(PgError),
}

impl From<PgError> for Halt {
    fn from(error: PgError) -> Self {
        Halt::Postgres(error)
    }
}

impl From<Stop> for Halt {
    fn from(stop: Stop) -> Self {
        Halt::Customerio(stop)
    }
}

/// Sends letters and reads the rows they are about.
struct Replayer<'a> {
    client: TrackClient,
    max_backoff: Duration,
    rows: Rows<'a>,
}

impl Replayer<'_> {
    /// Replays one letter so that it never sets its customer back:
    /// - an identify is replaced by the row's current values (a full
    ///   identify), or skipped when the row is gone or no longer syncs (its
    ///   removal went, or goes, through the stream);
    /// - a delete or suppression is sent only while the customer has no
    ///   row that syncs; a row with that id again makes it stale: skipped;
    /// - events (facts, each with its own id, which Customer.io dedupes)
    ///   are sent as they were; so are merges, after which the primary is
    ///   refreshed from its row ([`Self::merge`]).
    ///
    /// An identify whose attributes no person table maps any more, or a
    /// customer with a row in several tables, is sent as it was, noted.
    async fn settle(&mut self, letter: &Replayable) -> Result<Outcome, Halt> {
        let customer = customer_of(letter);
        match letter.operation.as_str() {
            "identify" => {
                let tables = self.rows.tables_of_identify(&letter.attributes);
                if tables.is_empty() {
                    return self.as_refused(letter, Some(UNMAPPED)).await;
                }
                match self.rows.current(&customer, &tables).await? {
                    Current::Gone => Ok(Outcome::Skipped(Skip::RowGone)),
                    Current::Several => self.as_refused(letter, Some(SEVERAL)).await,
                    live => self.converge(&customer, &tables, live, &letter.payload).await,
                }
            }
            "delete" | "suppress" => {
                let tables = self.rows.every_table();
                match self.rows.current(&customer, &tables).await? {
                    Current::Gone => {
                        self.converge(&customer, &tables, Current::Gone, &letter.payload).await
                    }
                    _ => Ok(Outcome::Skipped(Skip::RowBack)),
                }
            }
            "merge" => self.merge(letter, &customer).await,
            _ => self.as_refused(letter, None).await,
        }
    }

    /// A merge as it was, then its primary (`customer`) refreshed from its
    /// row. The id change that made the merge sent the primary's email (and
    /// its NULLs) after it, and Customer.io refuses to give the primary an
    /// email the secondary still has (an "Attribute Update Failure" on an
    /// HTTP 200): with the merge refused, that identify was lost too, and
    /// the merge alone does not bring the email over.
    async fn merge(&mut self, letter: &Replayable, customer: &str) -> Result<Outcome, Halt> {
        let merged = self.as_refused(letter, None).await?;
        if merged != (Outcome::Delivered { note: None }) {
            return Ok(merged);
        }
        let tables = self.rows.every_table();
        match self.rows.current(customer, &tables).await? {
            live @ Current::Live(_) => {
                match self.converge(customer, &tables, live, &letter.payload).await? {
                    Outcome::Refreshed => Ok(Outcome::Delivered { note: Some(MERGED) }),
                    other => Ok(other),
                }
            }
            _ => Ok(merged),
        }
    }

    async fn as_refused(
        &self,
        letter: &Replayable,
        note: Option<&'static str>,
    ) -> Result<Outcome, Halt> {
        Ok(match replay(&self.client, &letter.payload, self.max_backoff).await? {
            Answer::Delivered => Outcome::Delivered { note },
            Answer::RefusedAgain { status, error } => Outcome::RefusedAgain { status, error },
        })
    }

    /// Sends what `state` calls for (the row's values, or the removal:
    /// `removal`, the letter's own payload for a removal letter) until the
    /// rows, read again after Customer.io accepted it, still say the same.
    ///
    /// Why read again: the daemon keeps delivering while this runs. Were
    /// the row updated after it was read here, the daemon could deliver
    /// the newer values before this send lands, and this send would then
    /// set them back. A change committed before the read after the
    /// acceptance is seen by that read and sent again here; a change
    /// committed after it is delivered by the daemon after this send was
    /// accepted, so it lands last. The same holds the other way: a row
    /// deleted (or re-inserted) meanwhile gets its removal (or its values)
    /// again. At most [`MAX_ROUNDS`] sends; a row that changes after each
    /// of them leaves the letter kept, to be retried later.
    async fn converge(
        &mut self,
        customer: &str,
        tables: &[usize],
        mut state: Current,
        removal: &str,
    ) -> Result<Outcome, Halt> {
        let mut refreshed = false;
        for _ in 0..MAX_ROUNDS {
            let payload = match &state {
                Current::Live(attributes) => {
                    refreshed = true;
                    let timestamp = self.rows.now().await?;
                    let op = CustomerOp::Identify {
                        id: customer.to_owned(),
                        attributes: attributes.clone(),
                        timestamp,
                    };
                    encoded(op)
                }
                Current::Gone if removal_kind(removal).is_some() => removal.to_owned(),
                Current::Gone => encoded(self.rows.removal(tables, customer)),
                // Not told apart: what the letter says went out last.
                Current::Several => break,
            };
            if let Answer::RefusedAgain { status, error } =
                replay(&self.client, &payload, self.max_backoff).await?
            {
                return Ok(Outcome::RefusedAgain { status, error });
            }
            let now = self.rows.current(customer, tables).await?;
            if now == state || now == Current::Several {
                return Ok(if refreshed {
                    Outcome::Refreshed
                } else {
                    Outcome::Delivered { note: None }
                });
            }
            state = now;
        }
        Ok(Outcome::Unsettled)
    }
}

/// The note of a merge whose primary was refreshed after it.
const MERGED: &str = "a merge; then its primary was refreshed from the row";
/// Why an identify was sent as it was refused.
const UNMAPPED: &str = "no person table of the config maps its attributes any more";
const SEVERAL: &str = "several person tables have a row for the customer; which values are \
    newest cannot be told";

/// The customer a letter's payload names (`identifiers.id`): an escaped
/// letter's column is escaped, its payload is not. The column otherwise.
fn customer_of(letter: &Replayable) -> String {
    serde_json::from_str::<serde_json::Value>(&letter.payload)
        .ok()
        .and_then(|v| v.get("identifiers")?.get("id")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| letter.customer_id.clone())
}

/// `delete` or `suppress` when `payload` is a removal item.
fn removal_kind(payload: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(payload).ok()?;
    let action = value.get("action")?.as_str()?;
    ["delete", "suppress"].contains(&action).then(|| action.to_owned())
}

/// An operation as the sink encodes it, as JSON text.
fn encoded(op: CustomerOp) -> String {
    let json = encode(op).map(|item| item.json).unwrap_or_default();
    String::from_utf8_lossy(&json).into_owned()
}

/// Sends one payload (as it was sent: [`DeadLetterTable::payload`] decodes
/// an escaped letter's) by its route until Customer.io gives a definite
/// answer, or stops.
async fn replay(
    client: &TrackClient,
    payload: &str,
    max_backoff: Duration,
) -> Result<Answer, Stop> {
    // A v1 anonymous event is sent as it is; anything else as a batch item.
    let route = serde_json::from_str(payload).map_or(Route::Batch, |v| Route::of_payload(&v));
    let body = match route {
        Route::Batch => batch_body(payload),
        Route::AnonymousEvent => Bytes::from(payload.to_owned()),
    };
    let mut backoff = Backoff::new(max_backoff);
    let mut tries = 0;
    loop {
        tries += 1;
        match step(client.post(route, body.clone()).await, tries) {
            Step::Done(answer) => return Ok(answer),
            Step::Wait(after) => tokio::time::sleep(backoff.next_delay(after)).await,
            Step::Stop(stop) => return Err(stop),
        }
    }
}

/// `{"batch":[payload]}`: the letter as the one item of a batch request.
fn batch_body(payload: &str) -> Bytes {
    Bytes::from(format!("{{\"batch\":[{payload}]}}"))
}

/// Customer.io's definite answer about one letter.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Delivered,
    RefusedAgain { status: u16, error: String },
}

/// What to do after an answer, the `tries`-th for this letter.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Done(Answer),
    /// Send again after the backoff (or the `Retry-After`).
    Wait(Option<Duration>),
    Stop(Stop),
}

fn step(verdict: Verdict, tries: u32) -> Step {
    match verdict {
        Verdict::Accepted => Step::Done(Answer::Delivered),
        Verdict::PartlyRejected(errors) => {
            Step::Done(Answer::RefusedAgain { status: 207, error: item_errors_text(&errors) })
        }
        Verdict::Rejected { status, message } => {
            Step::Done(Answer::RefusedAgain { status, error: message })
        }
        Verdict::Retry { after, .. } if tries < MAX_TRIES => Step::Wait(after),
        Verdict::Retry { reason, .. } => Step::Stop(Stop::Unavailable { tries, reason }),
        Verdict::Unauthorized => Step::Stop(Stop::Unauthorized),
        Verdict::Redirected { status } => Step::Stop(Stop::Redirected { status }),
        Verdict::Refused { status, message } => Step::Stop(Stop::Refused { status, message }),
    }
}

/// A per-item refusal in the words the daemon stores it with (`reason
/// (field): message`, as `sink::deliver` writes it), so a letter's error
/// reads the same whoever wrote it; cut to 300 bytes.
fn item_errors_text(errors: &[ItemError]) -> String {
    let texts: Vec<String> = errors.iter().map(describe_item_error).collect();
    cut_error_text(texts.join("; "))
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

    fn parse(args: &[&str]) -> Result<(PathBuf, Result<Request, String>), clap::Error> {
        let cli = Cli::try_parse_from([&["ciosync", "dlq"], args].concat())?;
        match cli.command {
            Command::Dlq { command } => Ok(command.into_parts()),
            other => panic!("{other:?}"),
        }
    }

    fn request(args: &[&str]) -> Result<Request, String> {
        parse(args).expect("parses").1
    }

    #[test]
    fn parses_each_subcommand_with_its_config() {
        let (config, list) = parse(&["list", "--config", "c.toml"]).unwrap();
        assert_eq!(config, PathBuf::from("c.toml"));
        assert_eq!(list, Ok(Request::List { json: false, payload: false }));
        assert_eq!(
            request(&["list", "--json", "--payload", "-c", "c.toml"]),
            Ok(Request::List { json: true, payload: true })
        );
        assert_eq!(
            request(&["retry", "--id", "7", "--id", "3", "--id", "7", "-c", "c.toml"]),
            Ok(Request::Retry(Selection::Ids(vec![3, 7])))
        );
        assert_eq!(
            request(&["discard", "--all", "--config", "c.toml"]),
            Ok(Request::Discard(Selection::All))
        );
    }

    #[test]
    fn neither_id_nor_all_says_what_to_add() {
        for command in ["retry", "discard"] {
            let message = request(&[command, "--config", "c.toml"]).unwrap_err();
            assert!(message.contains(&format!("dlq {command}")), "{message}");
            assert!(message.contains("--id N") && message.contains("--all"), "{message}");
        }
    }

    #[test]
    fn bad_combinations_are_usage_errors() {
        for args in [
            &["retry", "--id", "1", "--all", "-c", "c.toml"][..],
            &["discard", "--id", "x", "-c", "c.toml"],
            &["list", "--payload", "-c", "c.toml"],
            &["list"],
            &["purge", "-c", "c.toml"],
        ] {
            let error = parse(args).map(|_| ()).unwrap_err();
            assert_eq!(error.exit_code(), i32::from(EXIT_USAGE), "{args:?}");
        }
    }

    #[test]
    fn the_retry_help_says_a_replay_sends_the_current_row() {
        let error = Cli::try_parse_from(["ciosync", "dlq", "retry", "--help"]).unwrap_err();
        let help = error.to_string();
        assert!(help.contains("never sets a customer back"), "{help}");
        assert!(help.contains("row's current values"), "{help}");
        assert!(!help.contains("ciosync backfill --where"), "{help}");
    }

    fn replayable(operation: &str, customer: &str, payload: &str) -> Replayable {
        Replayable {
            operation: operation.into(),
            customer_id: customer.into(),
            attributes: Vec::new(),
            payload: payload.into(),
        }
    }

    #[test]
    fn the_customer_is_read_from_the_payload_when_it_names_one() {
        let escaped = replayable("delete", "jos\\u{e9}", r#"{"identifiers":{"id":"jos\u00e9"}}"#);
        assert_eq!(customer_of(&escaped), "jos\u{e9}");
        let anonymous = replayable("event", "cookie-1", r#"{"anonymous_id":"cookie-1"}"#);
        assert_eq!(customer_of(&anonymous), "cookie-1");
    }

    #[test]
    fn only_removal_payloads_are_sent_as_removals() {
        assert_eq!(removal_kind(r#"{"action":"suppress"}"#).as_deref(), Some("suppress"));
        assert_eq!(removal_kind(r#"{"action":"delete"}"#).as_deref(), Some("delete"));
        assert_eq!(removal_kind(r#"{"action":"identify"}"#), None);
        assert_eq!(removal_kind("not json"), None);
    }

    #[test]
    fn each_verdict_has_its_step() {
        assert_eq!(step(Verdict::Accepted, 1), Step::Done(Answer::Delivered));
        let errors = vec![ItemError {
            batch_index: Some(0),
            reason: Some("too_large".into()),
            field: Some("attributes.x".into()),
            message: Some("attribute name cannot be longer than 150 bytes".into()),
        }];
        assert_eq!(
            step(Verdict::PartlyRejected(errors), 1),
            Step::Done(Answer::RefusedAgain {
                status: 207,
                error: "too_large (attributes.x): attribute name cannot be longer than 150 bytes"
                    .into()
            })
        );
        assert_eq!(
            step(Verdict::Rejected { status: 400, message: "bad".into() }, 1),
            Step::Done(Answer::RefusedAgain { status: 400, error: "bad".into() })
        );
        let retry = |tries| {
            step(
                Verdict::Retry { after: Some(Duration::from_secs(2)), reason: "HTTP 503".into() },
                tries,
            )
        };
        assert_eq!(retry(1), Step::Wait(Some(Duration::from_secs(2))));
        assert_eq!(retry(MAX_TRIES - 1), Step::Wait(Some(Duration::from_secs(2))));
        assert_eq!(
            retry(MAX_TRIES),
            Step::Stop(Stop::Unavailable { tries: MAX_TRIES, reason: "HTTP 503".into() })
        );
        assert_eq!(step(Verdict::Unauthorized, 1), Step::Stop(Stop::Unauthorized));
        assert_eq!(
            step(Verdict::Redirected { status: 301 }, 1),
            Step::Stop(Stop::Redirected { status: 301 })
        );
        assert!(matches!(
            step(Verdict::Refused { status: 403, message: "no".into() }, 1),
            Step::Stop(Stop::Refused { status: 403, .. })
        ));
    }

    #[test]
    fn every_stop_names_the_config_key_to_fix() {
        assert!(Stop::Unauthorized.to_string().contains("customerio.api_key"));
        assert!(Stop::Redirected { status: 301 }.to_string().contains("customerio.region"));
        let refused = Stop::Refused { status: 403, message: "x".into() };
        assert!(refused.to_string().contains("customerio.track_url"));
    }

    #[test]
    fn item_errors_read_like_the_daemons_and_are_cut() {
        let error = |field: Option<&str>, message: Option<&str>| ItemError {
            batch_index: Some(0),
            reason: Some("invalid".into()),
            field: field.map(str::to_owned),
            message: message.map(str::to_owned),
        };
        assert_eq!(item_errors_text(&[error(Some(""), Some("bad"))]), "invalid: bad");
        assert_eq!(item_errors_text(&[error(None, None)]), "invalid");
        assert_eq!(item_errors_text(&[ItemError::default()]), "refused");
        let long = item_errors_text(&[error(Some("f"), Some(&"é".repeat(400)))]);
        assert!(
            long.len() <= crate::sink::retry::MAX_ERROR_TEXT_BYTES
                && long.len() >= crate::sink::retry::MAX_ERROR_TEXT_BYTES - 1,
            "{long}"
        );
    }

    #[test]
    fn the_body_is_a_batch_of_the_payload() {
        let body = batch_body(r#"{"type": "person", "action": "delete"}"#);
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value, serde_json::json!({"batch": [{"type": "person", "action": "delete"}]}));
    }
}
