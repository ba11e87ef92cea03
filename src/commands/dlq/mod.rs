//! `ciosync dlq list | retry | discard`: the operator's side of the
//! dead-letter table, for the config's slot. Exit 0 on success, 1 on a
//! failure (Postgres, Customer.io, an unknown id), 2 on bad usage or config.

mod devices;
mod refresh;
mod replay;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use crate::commands::select::{Selection, Which};
use crate::config::{Config, ConfigError};
use crate::dead_letter::render;
use crate::dead_letter::DeadLetterTable;
use crate::pg::PgError;
use crate::sink::send::Stop;
use crate::sink::SinkError;
use replay::retry;

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
    /// still has no row that syncs. Objects, relationships and devices
    /// likewise: an object_identify, add_relationship or add_device sends
    /// its row's current values (from its [[objects]], [[relationships]]
    /// or [[devices]] table), or nothing if the row is gone; their deletes
    /// are sent only while the row is still gone. A letter whose table is
    /// no longer in the config is kept. Events and merges are sent as they
    /// were. The rows are read again after each send, and sent again if
    /// they changed meanwhile.
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

/// What `ciosync dlq` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    List { json: bool, payload: bool },
    Retry(Selection),
    Discard(Selection),
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

/// Why `ciosync dlq` failed; the message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Postgres(#[from] PgError),
    #[error("no dead letter {} for slot {slot} (`ciosync dlq list` shows them); nothing was changed", super::join_ids(.ids))]
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

/// Runs the request and maps the outcome to an exit status.
pub async fn run(config: &Config, request: Request) -> ExitCode {
    let outcome = execute(config, request).await;
    super::exit_status(outcome, |e| matches!(e, CommandError::Config(_)))
}

async fn execute(config: &Config, request: Request) -> Result<(), CommandError> {
    let settings = config.postgres.connection();
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
            emit(&format!("discarded {}\n", crate::wording::count(discarded, "dead letter")))
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

fn emit(text: &str) -> Result<(), CommandError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(CommandError::Output)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};
    use crate::error::EXIT_USAGE;

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
        assert!(help.contains("Objects, relationships and devices"), "{help}");
    }
}
