//! Logging setup, the daemon's counters, and how they reach Prometheus.
//!
//! ```text
//!  pipeline, source, sink ──Counters::add / set──▶ Counters (atomics) + Health
//!                                                        │ read at scrape time
//!  GET /metrics ◀── exporter (names: declarations) ◀─────┤
//!  GET /readyz  ◀── health::judge ◀──────────────────────┤     (server: the HTTP side)
//!  systemd      ◀── READY / STATUS / WATCHDOG ◀──────────┘     (systemd: sd_notify, when NOTIFY_SOCKET is set)
//! ```
//!
//! Counters are plain atomics, bumped per batch, per transaction or per
//! skipped row, never per attribute value; they never carry customer data.
//! The [`exporter`] turns them into Prometheus metrics when scraped, so the
//! hot path pays one relaxed atomic add and nothing else.

pub mod actions;
pub mod by_table;
pub mod exporter;
pub mod health;
pub mod lag;
mod listeners;
pub mod names;
pub mod schema;
pub mod server;
pub mod slot;
pub mod systemd;
pub mod webhooks;

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tracing::level_filters::LevelFilter;

pub use health::{Health, Phase};

use crate::listener::ListenerStats;

/// Every counter and gauge the daemon keeps. [`exporter`] maps each to its
/// metric (`names` declares each metric; METRICS.md the meaning).
#[derive(Debug, Default)]
pub struct Counters {
    /// Rows read by the initial copy.
    pub rows_copied: AtomicU64,
    /// Row changes received from the synced tables, by table and operation.
    pub changes_received: by_table::ChangesByTable,
    /// Changes that produced no call because no mapped attribute changed.
    pub changes_skipped_no_change: AtomicU64,
    /// Changes skipped because the customer id was NULL, empty or too long.
    pub changes_skipped_invalid_id: AtomicU64,
    /// Changes of tables that are not configured.
    pub changes_skipped_unknown_table: AtomicU64,
    /// Changes of rows that are and stay soft-deleted.
    pub changes_skipped_soft_deleted: AtomicU64,
    /// Changes of rows outside a filter ciosync evaluates, whose customer
    /// Customer.io does not hold.
    pub changes_skipped_filtered_out: AtomicU64,
    /// Inserts into event tables with no usable event name.
    pub changes_skipped_invalid_event: AtomicU64,
    /// Deletes of `[[relationships]]` rows whose old row does not name the
    /// person and the object (neither REPLICA IDENTITY FULL nor a key
    /// covering both columns).
    pub changes_skipped_relationship_unknown: AtomicU64,
    /// Rows of `[[devices]]` tables whose platform is not ios or android.
    pub changes_skipped_invalid_platform: AtomicU64,
    /// DELETEs of `[[devices]]` rows whose old row lacks the customer or
    /// the token (DEFAULT identity, a key without both).
    pub changes_skipped_device_key_unknown: AtomicU64,
    /// Rows of `[[devices]]` tables whose token is too long to send.
    pub changes_skipped_token_too_long: AtomicU64,
    /// Changes written back by the webhook receiver (not echoed).
    pub changes_skipped_write_back: AtomicU64,
    /// Replication messages that could not be decoded, skipped.
    pub bad_messages: AtomicU64,
    /// TRUNCATEs of synced tables, deliberately not turned into deletes.
    pub truncates_ignored: AtomicU64,
    /// Schema breaks of the configured tables, by table and reason.
    pub schema: schema::SchemaMismatches,
    /// Attributes and events left out because their table's schema broke
    /// (`on_schema_change = "skip"`).
    pub schema_left_out: AtomicU64,
    /// Changes not sent while paused by a schema break (each time the
    /// stream reached one; a paused daemon retries every 30 s).
    pub schema_pauses: AtomicU64,
    /// Requests that may be in flight to Customer.io now (adaptive, up to
    /// `customerio.max_in_flight`).
    pub concurrency_limit: AtomicU64,
    /// Attributes left out of a call (over a limit, unparseable, missing).
    pub attributes_dropped: AtomicU64,
    /// Operations Customer.io accepted.
    pub ops_accepted: AtomicU64,
    /// Identifies not sent: Customer.io holds every attribute's value by
    /// the record of what it accepted.
    pub record_unchanged: AtomicU64,
    /// Attributes left out of identifies sent: Customer.io holds their value.
    pub record_attributes_unchanged: AtomicU64,
    /// Identifies of customers the record knows nothing of, sent whole.
    pub record_unknown: AtomicU64,
    /// Change-derived events not sent: no earlier value of their column recorded.
    pub record_events_unknown: AtomicU64,
    /// Failed reads (the batch went whole) and writes (retried) of the record.
    pub record_failures: AtomicU64,
    /// `POST /api/v1/events` requests (anonymous events), by how they ended.
    pub requests_events: RequestOutcomes,
    /// HTTP requests sent to Customer.io, by how they ended.
    pub requests: RequestOutcomes,
    /// How long each Customer.io request took, answer read (seconds).
    pub request_duration: Histogram<RequestDuration>,
    /// Operations in each Customer.io request.
    pub request_items: Histogram<RequestItems>,
    /// Answers of HTTP 429 (each slows the sender down).
    pub rate_limited: AtomicU64,
    /// Operations merged into an earlier one of the same customer while
    /// waiting to be sent: calls saved.
    pub ops_coalesced: AtomicU64,
    /// Operations Customer.io refused for good, stored in `ciosync.dead_letters`.
    pub ops_dead_lettered: AtomicU64,
    /// Failed attempts to store refused operations in `ciosync.dead_letters`
    /// (each is retried; `health` says whether one fails now).
    pub dead_letter_store_failures: AtomicU64,
    /// Gauge: estimated bytes of operations read and not yet completed.
    pub pending_bytes: AtomicU64,
    /// Gauge: the highest `pending_bytes` seen since start.
    pub pending_bytes_peak: AtomicU64,
    /// Requests retried after a transient failure.
    pub requests_retried: AtomicU64,
    /// Transactions acknowledged to Postgres.
    pub transactions_acked: AtomicU64,
    /// Reconnections to Postgres after the stream broke.
    pub source_reconnects: AtomicU64,
    /// Gauge: operations read and not yet completed.
    pub pending_operations: AtomicU64,
    /// Gauge: the highest WAL position received from Postgres (a commit's
    /// end or a keepalive's position), as a byte offset.
    pub last_received_lsn: AtomicU64,
    /// Gauge: the last WAL position acknowledged to Postgres, as a byte offset.
    pub last_acked_lsn: AtomicU64,
    /// Gauge: commit time (Unix seconds) of the oldest transaction received
    /// and not acknowledged; 0 when there is none (see [`lag`]).
    pub oldest_unacked_commit: AtomicU64,
    /// Times the lost slot was created again (`postgres.on_slot_lost`).
    pub slots_recreated: AtomicU64,
    /// Heartbeats written to the WAL while the synced tables were idle.
    pub heartbeats_written: AtomicU64,
    /// This slot's heartbeats that came back through the stream.
    pub heartbeats_received: AtomicU64,
    /// When the stream last delivered a transaction (process clock, ms; 0
    /// never), so heartbeats are only written while it is quiet.
    pub last_commit_received_ms: AtomicU64,
    /// Gauge: the retained WAL at which a warning is given, bytes (the
    /// configured value, capped below `max_slot_wal_keep_size`); 0 until read.
    pub retained_wal_warn_bytes: AtomicU64,
    /// Gauge: 1 while the slot retains at least that much WAL, else 0.
    pub retained_wal_warning: AtomicU64,
    /// Gauge: 1 while the mass-delete circuit breaker holds removals.
    pub delete_guard_tripped: AtomicU64,
    /// Gauge: removals the breaker lets through per window now, the
    /// stricter of `max_deletes` and `max_share` of the estimated rows; 0
    /// while no limit is in force.
    pub delete_guard_limit: AtomicU64,
    /// Gauge: rows in state `held` in `ciosync.held_deletes` for this slot.
    pub deletes_held: AtomicU64,
    /// Removals held by the circuit breaker since start.
    pub deletes_held_total: AtomicU64,
    /// Where the pipeline is and whether it delivers, for `/readyz`.
    pub health: Health,
    /// The reporting-webhook receiver's counts (`[webhooks]`).
    pub webhooks: webhooks::WebhookCounters,
    /// The campaign webhook actions' counts (`[[webhooks.actions]]`).
    pub actions: actions::ActionCounters,
    /// The metrics endpoint's listener: connections, cuts.
    pub metrics_listener: Arc<ListenerStats>,
    /// The webhook receiver's listener: connections, cuts, body budget.
    pub webhook_listener: Arc<ListenerStats>,
}

impl Counters {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets a gauge, and its peak companion if given.
    pub fn set(gauge: &AtomicU64, value: u64, peak: Option<&AtomicU64>) {
        gauge.store(value, Ordering::Relaxed);
        if let Some(peak) = peak {
            peak.fetch_max(value, Ordering::Relaxed);
        }
    }

    /// Raises a gauge to `value` if that is higher (a position that never
    /// goes back, even when a new session replays older transactions).
    pub fn raise(gauge: &AtomicU64, value: u64) {
        gauge.fetch_max(value, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Customer.io requests by status class; `no_answer` when none came
/// (connect error, timeout, broken connection).
#[derive(Debug, Default)]
pub struct RequestOutcomes {
    pub status_2xx: AtomicU64,
    pub status_3xx: AtomicU64,
    pub status_4xx: AtomicU64,
    pub status_5xx: AtomicU64,
    pub no_answer: AtomicU64,
}

impl RequestOutcomes {
    /// Counts one request that got `status`, or no answer.
    pub fn record(&self, status: Option<u16>) {
        let counter = match status {
            None => &self.no_answer,
            Some(s) if s < 300 => &self.status_2xx,
            Some(s) if s < 400 => &self.status_3xx,
            Some(s) if s < 500 => &self.status_4xx,
            Some(_) => &self.status_5xx,
        };
        Counters::add(counter, 1);
    }

    /// Each class's label value (`names::LABEL_STATUS_CLASS`) and count.
    pub fn by_class(&self) -> [(&'static str, u64); 5] {
        [
            ("2xx", Counters::get(&self.status_2xx)),
            ("3xx", Counters::get(&self.status_3xx)),
            ("4xx", Counters::get(&self.status_4xx)),
            ("5xx", Counters::get(&self.status_5xx)),
            ("no_answer", Counters::get(&self.no_answer)),
        ]
    }
}

/// A Prometheus histogram whose name, help and buckets come from `S`, so
/// [`Counters`] can stay `Default`.
#[derive(Debug, Clone)]
pub struct Histogram<S> {
    inner: prometheus::Histogram,
    spec: PhantomData<S>,
}

/// What a [`Histogram`] measures.
pub trait HistogramSpec {
    /// The declaration (name and help) in `names`.
    const METRIC: names::Metric;
    const BUCKETS: &'static [f64];
}

impl<S: HistogramSpec> Default for Histogram<S> {
    fn default() -> Self {
        let opts = prometheus::HistogramOpts::new(S::METRIC.name, S::METRIC.help)
            .buckets(S::BUCKETS.to_vec());
        let inner = prometheus::Histogram::with_opts(opts).expect("a valid histogram spec");
        Self { inner, spec: PhantomData }
    }
}

impl<S> Histogram<S> {
    /// Records one observation.
    pub fn observe(&self, value: f64) {
        self.inner.observe(value);
    }

    /// The histogram as Prometheus metric families.
    pub fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        prometheus::core::Collector::collect(&self.inner)
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.inner.get_sample_count()
    }
}

/// [`Counters::request_duration`].
#[derive(Debug, Clone, Copy)]
pub struct RequestDuration;

impl HistogramSpec for RequestDuration {
    const METRIC: names::Metric = names::CUSTOMERIO_REQUEST_DURATION;
    const BUCKETS: &'static [f64] =
        &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
}

/// [`Counters::request_items`].
#[derive(Debug, Clone, Copy)]
pub struct RequestItems;

impl HistogramSpec for RequestItems {
    const METRIC: names::Metric = names::CUSTOMERIO_REQUEST_ITEMS;
    const BUCKETS: &'static [f64] = &[1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0];
}

/// Crates whose logs carry data, and the most they may log: tokio-postgres
/// logs each statement's parameters (customer values) at debug and the
/// server's notices at info (a notice a user's trigger raises on a table
/// ciosync writes can quote the row), the HTTP stack request details at
/// debug.
const DATA_LOGGING_CRATES: [(&str, LevelFilter); 6] = [
    ("tokio_postgres", LevelFilter::WARN),
    ("pgwire_replication", LevelFilter::INFO),
    ("reqwest", LevelFilter::INFO),
    ("hyper", LevelFilter::INFO),
    ("hyper_util", LevelFilter::INFO),
    ("h2", LevelFilter::INFO),
];

/// `directives` with every one of [`DATA_LOGGING_CRATES`] held at its
/// level or quieter, however the filter is written: level names in any
/// case or as numbers (`DEBUG`, `4`), a global level, a target that is a
/// prefix of a crate's name (`tokio=debug` covers `tokio_postgres`), the
/// crate itself or one of its modules (`tokio_postgres::query=trace`). A
/// directive naming a crate or its module is capped where it stands; a
/// crate whose level comes from a more general directive gets a
/// `crate=level` of its own. A quieter filter (the demo's
/// `ciosync=warn,error`) stays as it is. Directives it cannot read are left
/// for `EnvFilter` to refuse.
pub fn with_quiet_dependencies(directives: &str) -> String {
    let mut out: Vec<String> =
        directives.split(',').map(str::trim).filter(|d| !d.is_empty()).map(cap).collect();
    for (krate, most) in DATA_LOGGING_CRATES {
        if effective_level(&out, krate) > most {
            out.push(format!("{krate}={}", name_of(most)));
        }
    }
    out.join(",")
}

fn name_of(level: LevelFilter) -> &'static str {
    if level == LevelFilter::WARN {
        "warn"
    } else {
        "info"
    }
}

/// One directive with its level capped when its target is a data-logging
/// crate or one of its modules.
fn cap(directive: &str) -> String {
    match parse_directive(directive) {
        Some((Some(target), level)) => match data_cap(target) {
            Some(most) if level > most => {
                // The span and field part, if any, stays: only the level changes.
                let scope = directive.rsplit_once('=').map_or(directive, |(scope, _)| scope);
                format!("{scope}={}", name_of(most))
            }
            _ => directive.to_owned(),
        },
        _ => directive.to_owned(),
    }
}

/// The target (without a span or field part) and level of a directive, as
/// `EnvFilter` reads it: `level`, `target`, `target=level`,
/// `target[span{field}]=level`. A bare target means every level.
fn parse_directive(directive: &str) -> Option<(Option<&str>, LevelFilter)> {
    let (scope, level) = match directive.rsplit_once('=') {
        Some((scope, level)) => (scope, level.trim().parse::<LevelFilter>().ok()?),
        None => match directive.parse::<LevelFilter>() {
            Ok(level) => return Some((None, level)),
            Err(_) => (directive, LevelFilter::TRACE),
        },
    };
    let target = scope.split('[').next().unwrap_or_default().trim();
    Some(((!target.is_empty()).then_some(target), level))
}

/// The most a data-logging crate or one of its modules may log; `None`
/// for any other target.
fn data_cap(target: &str) -> Option<LevelFilter> {
    DATA_LOGGING_CRATES.iter().find_map(|(krate, most)| {
        let ours = target == *krate
            || target.strip_prefix(krate).is_some_and(|rest| rest.starts_with("::"));
        ours.then_some(*most)
    })
}

/// The level `directives` give `krate`'s events outside any module named by
/// a directive of its own, as `EnvFilter` picks it: the directive with the
/// longest target that is a prefix of the crate's name, else the most
/// verbose global level, else `error`. Directives naming one of the crate's
/// modules are capped by [`cap`] and leave its other modules to this level.
fn effective_level(directives: &[String], krate: &str) -> LevelFilter {
    let parsed: Vec<_> = directives.iter().filter_map(|d| parse_directive(d)).collect();
    let targeted = parsed
        .iter()
        .filter_map(|(target, level)| target.map(|t| (t, *level)))
        .filter(|(target, _)| krate.starts_with(target))
        .max_by_key(|(target, level)| (target.len(), *level));
    match targeted {
        Some((_, level)) => level,
        None => parsed
            .iter()
            .filter(|(target, _)| target.is_none())
            .map(|(_, level)| *level)
            .max()
            .unwrap_or(LevelFilter::ERROR),
    }
}

/// The filter for `wanted` (RUST_LOG), else `default`, with the
/// data-logging dependencies quieted; a `wanted` that does not parse falls
/// back to the default, quieted too.
fn log_filter(wanted: Option<&str>, default: &str) -> tracing_subscriber::EnvFilter {
    let directives = with_quiet_dependencies(wanted.unwrap_or(default));
    tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(with_quiet_dependencies(default)))
}

/// Installs the tracing subscriber: `RUST_LOG` or `default`, to stderr, JSON
/// lines when `json` is set.
pub fn init_logging(json: bool, default: &str) {
    let wanted = std::env::var("RUST_LOG").ok().filter(|v| !v.trim().is_empty());
    let filter = log_filter(wanted.as_deref(), default);
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}

#[cfg(test)]
mod tests {
    use super::with_quiet_dependencies;

    /// Which of the data-logging crates' modules, as `EnvFilter` reads
    /// `filter`, let a debug event through, and whether ciosync's own do.
    fn debug_enabled(filter: &str) -> (Vec<&'static str>, bool) {
        use tracing_subscriber::layer::SubscriberExt;
        let env = tracing_subscriber::EnvFilter::try_new(filter).expect("a valid filter");
        let subscriber = tracing_subscriber::registry().with(env);
        tracing::subscriber::with_default(subscriber, || {
            // `enabled!` needs its target as a constant.
            let dependencies = [
                (
                    "tokio_postgres",
                    tracing::enabled!(target: "tokio_postgres", tracing::Level::DEBUG),
                ),
                (
                    "tokio_postgres::query",
                    tracing::enabled!(target: "tokio_postgres::query", tracing::Level::DEBUG),
                ),
                (
                    "tokio_postgres::prepare",
                    tracing::enabled!(target: "tokio_postgres::prepare", tracing::Level::DEBUG),
                ),
                (
                    "pgwire_replication",
                    tracing::enabled!(target: "pgwire_replication", tracing::Level::DEBUG),
                ),
                (
                    "hyper_util::client",
                    tracing::enabled!(target: "hyper_util::client", tracing::Level::DEBUG),
                ),
                (
                    "hyper_util::rt",
                    tracing::enabled!(target: "hyper_util::rt", tracing::Level::DEBUG),
                ),
                ("hyper::proto", tracing::enabled!(target: "hyper::proto", tracing::Level::DEBUG)),
                ("reqwest", tracing::enabled!(target: "reqwest", tracing::Level::DEBUG)),
                ("h2::codec", tracing::enabled!(target: "h2::codec", tracing::Level::DEBUG)),
            ];
            let loud = dependencies.iter().filter(|(_, on)| *on).map(|(t, _)| *t).collect();
            (loud, tracing::enabled!(target: "ciosync::sink", tracing::Level::DEBUG))
        })
    }

    #[test]
    fn dependencies_that_log_data_stay_at_info_however_the_filter_is_written() {
        for filter in [
            "debug",
            "DEBUG",
            "4",
            "5",
            "Trace",
            "debug,tokio_postgres_rustls=info",
            "tokio=debug,hyper=debug,reqwest=trace,h2=debug,pgwire=debug,ciosync=debug",
            "info,tokio_postgres::query=trace,hyper_util=debug,reqwest=debug,ciosync=debug",
            "tokio_postgres,hyper_util,reqwest,ciosync=debug",
            "info,tokio_postgres[query]=debug,hyper_util=4,reqwest=5,ciosync=4",
            "debug,tokio_postgres::query=info,hyper_util::client=warn",
        ] {
            let quiet = with_quiet_dependencies(filter);
            let (loud, ciosync) = debug_enabled(&quiet);
            assert!(loud.is_empty(), "{filter:?} became {quiet:?}, debug on for {loud:?}");
            assert!(ciosync, "{filter:?} became {quiet:?}: ciosync's own debug must stay");
        }
    }

    #[test]
    fn a_quieter_filter_stays_as_it_is() {
        assert_eq!(with_quiet_dependencies("ciosync=warn,error"), "ciosync=warn,error");
        assert_eq!(with_quiet_dependencies("warn"), "warn");
        assert_eq!(
            with_quiet_dependencies("debug,tokio_postgres=error"),
            "debug,tokio_postgres=error,pgwire_replication=info,reqwest=info,hyper=info,h2=info"
        );
        assert_eq!(with_quiet_dependencies("tokio_postgres=debug"), "tokio_postgres=warn");
    }

    /// A RUST_LOG that does not parse falls back to the default, with the
    /// dependencies still quiet.
    #[test]
    fn an_unreadable_filter_falls_back_quietly() {
        use tracing_subscriber::layer::SubscriberExt;
        let filter = super::log_filter(Some("ciosync=verbose"), "debug");
        let subscriber = tracing_subscriber::registry().with(filter);
        tracing::subscriber::with_default(subscriber, || {
            assert!(tracing::enabled!(target: "ciosync::sink", tracing::Level::DEBUG));
            assert!(!tracing::enabled!(target: "tokio_postgres::query", tracing::Level::DEBUG));
            assert!(!tracing::enabled!(target: "tokio_postgres", tracing::Level::INFO));
        });
    }

    /// tokio-postgres logs the server's notices at info; a notice a user's
    /// trigger raises can quote a row, so it stays at warn.
    #[test]
    fn server_notices_stay_out_of_the_log() {
        use tracing_subscriber::layer::SubscriberExt;
        for filter in ["info", "debug", "info,tokio_postgres=info", "info,tokio=info"] {
            let quiet = with_quiet_dependencies(filter);
            let env = tracing_subscriber::EnvFilter::try_new(&quiet).unwrap();
            let subscriber = tracing_subscriber::registry().with(env);
            tracing::subscriber::with_default(subscriber, || {
                let notices =
                    tracing::enabled!(target: "tokio_postgres::connection", tracing::Level::INFO);
                assert!(!notices, "{filter:?} became {quiet:?}: notices are logged");
                let ours = tracing::enabled!(target: "ciosync::sink", tracing::Level::INFO);
                assert!(ours, "{filter:?} became {quiet:?}: ciosync's own info must stay");
            });
        }
    }
}
