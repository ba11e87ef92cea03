//! The command line: `run`, `check`, `backfill`, `dlq`, `deletes` and `demo`. Exit
//! status 0 on success, 1 on a runtime failure, 2 on bad usage or a bad
//! config, 3 when `run` finds its replication slot lost.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use crate::commands::backfill::Request;
use crate::commands::event_replay::Replay;
use crate::config::Config;
use crate::pg::PgError;
use crate::pipeline::RunError;
use crate::telemetry::{self, Counters};

use crate::error::{EXIT_FAILURE, EXIT_SLOT_LOST, EXIT_USAGE};

/// Keeps Customer.io in step with a Postgres users table through logical replication.
#[derive(Debug, Parser)]
#[command(name = "ciosync", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon until SIGTERM or SIGINT.
    Run {
        /// The TOML config file (see config/example.toml).
        #[arg(long, short)]
        config: PathBuf,
        /// Log line format; json by default when stderr is not a terminal.
        #[arg(long, value_enum)]
        log_format: Option<LogFormat>,
    },
    /// Verify everything `run` needs, change nothing, and say what to fix.
    Check {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Re-send current rows to Customer.io while `run` keeps streaming (the
    /// running daemon does the work; this queues it and follows its progress).
    Backfill {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Only this `[[sync]]` table, or this `[[devices]]` table (its rows
        /// sent as add_device, soft-deleted ones as delete_device). Default:
        /// every `[[sync]]` table (people, objects, relationships); devices
        /// tables only by name.
        #[arg(long)]
        table: Option<String>,
        /// Only rows matching this SQL condition, e.g. "plan = 'pro'".
        #[arg(long = "where", value_name = "SQL")]
        where_clause: Option<String>,
        /// Only these Customer.io attributes, comma-separated (e.g. a newly
        /// mapped one); not for a devices table, whose rows go whole.
        #[arg(long, value_delimiter = ',', value_name = "A,B")]
        attributes: Option<Vec<String>>,
        /// Send every row whole, whatever the record of what Customer.io
        /// accepted says (after Customer.io lost or damaged data). Makes no
        /// difference for objects, relationships and devices: not in the
        /// record, every row of theirs is sent anyway.
        #[arg(long)]
        ignore_record: bool,
        /// Return once queued instead of following progress.
        #[arg(long)]
        detach: bool,
        /// Send this `[[events]]` table's rows again as events, with their
        /// own timestamps and the ids the stream gave them (Customer.io
        /// drops the ones it has): after Customer.io lost events.
        #[arg(long, value_name = "TABLE", conflicts_with_all = ["table", "attributes", "ignore_record"])]
        events: Option<String>,
        /// With --events: only events from this time on (2026-11-30,
        /// 2026-11-30T08:00:00Z) or this far back from now (72 hours, 3d).
        #[arg(long, value_name = "TIME", requires = "events")]
        since: Option<String>,
        /// Show every backfill with its progress, rate and ETA.
        #[arg(long, conflicts_with_all = ["table", "where_clause", "attributes", "ignore_record", "detach", "events", "cancel"])]
        status: bool,
        /// Cancel a queued or running backfill.
        #[arg(long, value_name = "ID", conflicts_with_all = ["table", "where_clause", "attributes", "ignore_record", "detach", "events"])]
        cancel: Option<i64>,
    },
    /// Show what a backfill would send now (customers the record of what
    /// Customer.io accepted lacks, attributes whose value differs; the
    /// operations of objects, relationships and devices by kind, all sent as
    /// they are not in the record) and the customers whose row is gone,
    /// without sending anything. Exit 0: nothing to send; 4: something would
    /// be sent.
    Plan {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Only this `[[sync]]` or `[[devices]]` table (default: every
        /// `[[sync]]` table, as `backfill`).
        #[arg(long)]
        table: Option<String>,
        /// Only these Customer.io attributes, comma-separated, as `backfill --attributes`.
        #[arg(long, value_delimiter = ',', value_name = "A,B")]
        attributes: Option<Vec<String>>,
        /// Show a few customer ids of each kind (customer data: off by default).
        #[arg(long)]
        show_ids: bool,
        /// Print JSON, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// List, replay or discard the operations Customer.io refused for good
    /// (the dead letters in ciosync.dead_letters).
    Dlq {
        #[command(subcommand)]
        command: crate::commands::dlq::DlqCommand,
    },
    /// List, approve or discard the deletes and suppressions the mass-delete
    /// circuit breaker held (ciosync.held_deletes, see [delete_guard]).
    Deletes {
        #[command(subcommand)]
        command: crate::commands::deletes::DeletesCommand,
    },
    /// Start a throwaway Postgres and the Customer.io emulator, sync a sample
    /// users table, and show each Customer.io call.
    Demo {
        /// Keep everything running after the scripted changes, for psql.
        #[arg(long)]
        keep: bool,
    },
}

/// Log line formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Runs the parsed command line and maps the outcome to an exit status.
pub fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Run { config: path, log_format } => start(&path, log_format),
        Command::Check { config: path } => {
            let config = match load(&path) {
                Ok(c) => c,
                Err(code) => return code,
            };
            telemetry::init_logging(false, "warn");
            let exposure = crate::config::exposure::warning(&path);
            runtime().block_on(crate::check::run_and_print(&config, exposure))
        }
        Command::Backfill {
            config,
            table,
            where_clause,
            attributes,
            ignore_record,
            detach,
            events,
            since,
            status,
            cancel,
        } => {
            let config = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            telemetry::init_logging(false, "warn");
            let request = if status {
                Request::Status
            } else if let Some(id) = cancel {
                Request::Cancel(id)
            } else if let Some(table) = events {
                let replay = Replay { table, since, where_clause, detach };
                Request::Events(replay)
            } else {
                Request::Queue { table, where_clause, attributes, ignore_record, detach }
            };
            runtime().block_on(crate::commands::backfill::run(&config, request))
        }
        Command::Plan { config, table, attributes, show_ids, json } => {
            let config = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            telemetry::init_logging(false, "warn");
            let request = crate::commands::plan::Request { table, attributes, show_ids, json };
            runtime().block_on(crate::commands::plan::run(&config, request))
        }
        Command::Dlq { command } => {
            let (path, request) = command.into_parts();
            let request = match request {
                Ok(r) => r,
                Err(message) => {
                    eprintln!("ciosync: {message}");
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            let config = match load(&path) {
                Ok(c) => c,
                Err(code) => return code,
            };
            telemetry::init_logging(false, "warn");
            runtime().block_on(crate::commands::dlq::run(&config, request))
        }
        Command::Deletes { command } => {
            let (path, request) = command.into_parts();
            let request = match request {
                Ok(r) => r,
                Err(message) => {
                    eprintln!("ciosync: {message}");
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            let config = match load(&path) {
                Ok(c) => c,
                Err(code) => return code,
            };
            telemetry::init_logging(false, "warn");
            runtime().block_on(crate::commands::deletes::run(&config, request))
        }
        Command::Demo { keep } => {
            // The demo prints its own story; only problems are logged.
            telemetry::init_logging(false, "ciosync=warn,error");
            runtime().block_on(crate::demo::run(keep))
        }
    }
}

/// `ciosync run`: loads the config, sets up logging, runs the daemon.
fn start(path: &std::path::Path, log_format: Option<LogFormat>) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let json = match log_format {
        Some(f) => f == LogFormat::Json,
        None => !std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    // RUST_LOG, when set, wins over log.level.
    telemetry::init_logging(json, &config.log.level);
    if let Some((problem, fix)) = crate::config::exposure::warning(path) {
        tracing::warn!(%problem, %fix, "the config file's secrets are readable by every local user");
    }
    runtime().block_on(run(config))
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|error| {
        eprintln!("ciosync: {}", crate::error::error_chain(&error));
        ExitCode::from(EXIT_USAGE)
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
}

async fn run(config: Config) -> ExitCode {
    // First, so a taken port stops the daemon before anything is created or sent.
    let endpoint = match telemetry::server::bind(&config.metrics).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(error = %crate::error::error_chain(&error), "ciosync cannot start");
            eprintln!("ciosync: {}", crate::error::error_chain(&error));
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    // Likewise the webhook receiver's, when [webhooks] is on.
    let webhooks = match &config.webhooks {
        Some(hooks) => match crate::webhooks::server::bind(hooks).await {
            Ok(listener) => Some(listener),
            Err(error) => {
                tracing::error!(error = %crate::error::error_chain(&error), "ciosync cannot start");
                eprintln!("ciosync: {}", crate::error::error_chain(&error));
                return ExitCode::from(EXIT_FAILURE);
            }
        },
        None => None,
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(crate::daemon::cancel_on_signal(shutdown.clone()));
    let counters = Arc::new(Counters::default());
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "ciosync starting");
    match crate::daemon::run_with_webhooks(config, endpoint, webhooks, shutdown, counters).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %crate::error::error_chain(&error), "ciosync stopped");
            eprintln!("ciosync: {}", crate::error::error_chain(&error));
            match error {
                RunError::Config(_) => ExitCode::from(EXIT_USAGE),
                RunError::Source(PgError::SlotLost { .. }) => ExitCode::from(EXIT_SLOT_LOST),
                _ => ExitCode::from(EXIT_FAILURE),
            }
        }
    }
}
