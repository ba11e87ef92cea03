//! `GET /metrics`: the [`Counters`] as Prometheus metrics, read when
//! scraped, plus the process metrics of the `prometheus` crate.
//!
//! The counters stay plain atomics that the pipeline bumps; this module is
//! the one place that knows which atomic becomes which metric and label.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Registry, TextEncoder};

use super::health::Phase;
use super::names::*;
use super::slot::{SlotCollector, SlotWatch};
use super::Counters;

/// The registry behind `/metrics`.
pub struct Exporter {
    registry: Registry,
}

impl Exporter {
    /// An exporter reading `counters`; `stall_timeout` is the readiness rule's
    /// (for [`READY`]).
    pub fn new(counters: Arc<Counters>, stall_timeout: Duration) -> Self {
        let registry = Registry::new();
        let collector = CountersCollector::new(counters, stall_timeout);
        registry.register(Box::new(collector)).expect("the counters' metric names are unique");
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .expect("the process metrics do not clash with ciosync_ names");
        Self { registry }
    }

    /// Adds the slot's metrics, read by `watch` (refresh it before rendering).
    pub fn with_slot_watch(self, watch: Arc<SlotWatch>) -> Self {
        self.registry
            .register(Box::new(SlotCollector::new(watch)))
            .expect("the slot's metric names are unique");
        self
    }

    /// Every metric in the Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut text = String::new();
        TextEncoder::new()
            .encode_utf8(&self.registry.gather(), &mut text)
            .expect("encoding into a String cannot fail");
        text
    }
}

/// The content type of [`Exporter::render`]'s output.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// The name of every metric family `/metrics` can show: the counters', the
/// slot's and (on Linux) the process collector's. Histograms appear under
/// their family name, without `_bucket`, `_sum` or `_count`. Alerts and
/// dashboards are checked against this list, so they cannot name a metric
/// that does not exist.
pub fn exported_metric_names() -> Vec<String> {
    let mut names: Vec<String> =
        ciosync_families().iter().map(|family| family.name().to_owned()).collect();
    #[cfg(target_os = "linux")]
    names.extend(
        prometheus::process_collector::ProcessCollector::for_self()
            .desc()
            .iter()
            .map(|d| d.fq_name.clone()),
    );
    names
}

/// Every `ciosync_` family the counters and slot collectors can produce,
/// each with a sample.
fn ciosync_families() -> Vec<MetricFamily> {
    let mut all = families(&Counters::default(), Duration::from_secs(1));
    all.extend(super::slot::families(Some(&super::slot::every_series())));
    all
}

/// Reads the atomics at each scrape.
struct CountersCollector {
    counters: Arc<Counters>,
    stall_timeout: Duration,
    descs: Vec<Desc>,
}

impl CountersCollector {
    fn new(counters: Arc<Counters>, stall_timeout: Duration) -> Self {
        // The descriptions come from what `families` produces, so the two
        // cannot drift apart.
        let descs = describe(&families(&Counters::default(), stall_timeout));
        Self { counters, stall_timeout, descs }
    }
}

impl Collector for CountersCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        families(&self.counters, self.stall_timeout)
    }
}

/// The registry's descriptions of `families` (name, help, label names).
pub(super) fn describe(families: &[MetricFamily]) -> Vec<Desc> {
    families
        .iter()
        .map(|family| {
            let labels = family
                .get_metric()
                .first()
                .map(|m| m.get_label().iter().map(|l| l.name().to_owned()).collect())
                .unwrap_or_default();
            Desc::new(family.name().to_owned(), family.help().to_owned(), labels, HashMap::new())
                .expect("metric names and labels are valid")
        })
        .collect()
}

/// Every family built from `counters`, each with at least one sample.
fn families(c: &Counters, stall_timeout: Duration) -> Vec<MetricFamily> {
    let get = Counters::get;
    let mut out = Families::default();
    out.labelled(
        MetricType::GAUGE,
        BUILD_INFO,
        "Always 1; the version is in the label.",
        LABEL_VERSION,
        &[(env!("CARGO_PKG_VERSION"), 1.0)],
    );

    let phase = c.health.phase();
    let phases: Vec<(&str, f64)> =
        Phase::ALL.iter().map(|p| (p.as_str(), f64::from(u8::from(*p == phase)))).collect();
    out.labelled(
        MetricType::GAUGE,
        PIPELINE_PHASE,
        "1 for the pipeline's current phase, 0 for the others.",
        LABEL_PHASE,
        &phases,
    );
    let ready = c.health.readiness(stall_timeout).is_ok();
    out.gauge(READY, "1 while /readyz answers 200, else 0.", f64::from(u8::from(ready)));
    let last_delivery = c
        .health
        .last_delivery()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64());
    out.gauge(
        LAST_DELIVERY_TIMESTAMP,
        "Unix time of the last batch Customer.io accepted or that was dead-lettered (0 before the first).",
        last_delivery,
    );

    out.gauge(
        CUSTOMERIO_UNAUTHORIZED,
        "1 while Customer.io refuses the credentials (HTTP 401): nothing is delivered or acknowledged.",
        f64::from(u8::from(c.health.unauthorized())),
    );
    out.counter(
        HEARTBEATS_WRITTEN,
        "Heartbeats written to the WAL while the synced tables were quiet (postgres.heartbeat_interval_secs).",
        get(&c.heartbeats_written),
    );
    out.counter(
        HEARTBEATS_RECEIVED,
        "This slot's heartbeats that came back through the replication stream.",
        get(&c.heartbeats_received),
    );
    out.gauge(
        SLOT_RETAINED_WAL_WARN_BYTES,
        "Retained WAL at which ciosync warns: postgres.retained_wal_warn_bytes, capped at 80% of max_slot_wal_keep_size (0 until read).",
        get(&c.retained_wal_warn_bytes) as f64,
    );
    out.gauge(
        SLOT_RETAINED_WAL_WARNING,
        "1 while the slot retains at least ciosync_slot_retained_wal_warn_bytes of WAL, else 0.",
        get(&c.retained_wal_warning) as f64,
    );
    out.counter(
        SLOTS_RECREATED,
        "Times the lost replication slot was created again (postgres.on_slot_lost = recreate_and_backfill).",
        get(&c.slots_recreated),
    );

    out.counter(INITIAL_COPY_ROWS, "Rows read by the initial copy.", get(&c.rows_copied));
    let changes = c.changes_received.snapshot();
    let changes: Vec<(Vec<(&str, &str)>, f64)> = changes
        .iter()
        .map(|(table, op, n)| {
            (vec![(LABEL_TABLE, table.as_str()), (LABEL_OPERATION, op.as_str())], *n as f64)
        })
        .collect();
    out.series(
        MetricType::COUNTER,
        CHANGES_RECEIVED,
        "Row changes received from the synced tables, by table and operation (no series before the first change).",
        &changes,
    );
    out.labelled(
        MetricType::COUNTER,
        CHANGES_SKIPPED,
        "Changes that produced no Customer.io call, by reason (truncate counts TRUNCATE statements).",
        LABEL_REASON,
        &[
            ("no_change", get(&c.changes_skipped_no_change) as f64),
            ("invalid_id", get(&c.changes_skipped_invalid_id) as f64),
            ("unknown_table", get(&c.changes_skipped_unknown_table) as f64),
            ("soft_deleted", get(&c.changes_skipped_soft_deleted) as f64),
            ("invalid_event", get(&c.changes_skipped_invalid_event) as f64),
            ("write_back", get(&c.changes_skipped_write_back) as f64),
            ("truncate", get(&c.truncates_ignored) as f64),
        ],
    );
    out.counter(
        UNDECODABLE_MESSAGES,
        "Replication messages that could not be decoded and were skipped.",
        get(&c.bad_messages),
    );
    out.counter(
        ATTRIBUTES_DROPPED,
        "Attributes left out of a call (over a limit, unparseable or missing).",
        get(&c.attributes_dropped),
    );

    // `ops_rejected` is bumped with `ops_dead_lettered`, by the same amount:
    // a refused operation is always stored as a dead letter.
    out.labelled(
        MetricType::COUNTER,
        OPERATIONS_COMPLETED,
        "Operations completed: accepted by Customer.io, or refused for good and stored in ciosync.dead_letters.",
        LABEL_OUTCOME,
        &[
            ("accepted", get(&c.ops_accepted) as f64),
            ("dead_lettered", get(&c.ops_dead_lettered) as f64),
        ],
    );
    out.gauge(
        DEAD_LETTER_STORE_FAILING,
        "1 while operations Customer.io refused cannot be stored in ciosync.dead_letters: they are retried, nothing is acknowledged meanwhile.",
        f64::from(u8::from(c.health.dead_letter_store_failing())),
    );
    out.counter(
        DEAD_LETTER_STORE_FAILURES,
        "Failed attempts to store refused operations in ciosync.dead_letters (each is retried).",
        get(&c.dead_letter_store_failures),
    );
    out.counter(
        OPERATIONS_COALESCED,
        "Operations merged into a waiting one of the same customer: calls saved.",
        get(&c.ops_coalesced),
    );
    out.gauge(
        PENDING_OPERATIONS,
        "Operations read and not yet completed.",
        get(&c.pending_operations) as f64,
    );
    out.gauge(
        PENDING_BYTES,
        "Estimated memory held by operations not yet completed and by unacknowledged commits (limit: pipeline.max_pending_bytes).",
        get(&c.pending_bytes) as f64,
    );
    out.gauge(
        PENDING_PEAK_BYTES,
        "The highest ciosync_pending_bytes since start.",
        get(&c.pending_bytes_peak) as f64,
    );

    out.gauge(
        DELETE_GUARD_TRIPPED,
        "1 while the mass-delete circuit breaker holds deletes and suppressions for an operator (ciosync deletes list), else 0.",
        get(&c.delete_guard_tripped) as f64,
    );
    out.gauge(
        DELETE_GUARD_LIMIT,
        "Removals the mass-delete circuit breaker lets through per window now: the stricter of max_deletes and max_share of the estimated rows; 0 while no limit is in force.",
        get(&c.delete_guard_limit) as f64,
    );
    out.gauge(
        DELETES_HELD,
        "Removals waiting in ciosync.held_deletes for ciosync deletes approve or discard.",
        get(&c.deletes_held) as f64,
    );
    out.counter(
        DELETES_HELD_TOTAL,
        "Removals the mass-delete circuit breaker held instead of sending.",
        get(&c.deletes_held_total),
    );

    let requests: Vec<(Vec<(&str, &str)>, f64)> =
        [("batch", &c.requests), ("events", &c.requests_events)]
            .iter()
            .flat_map(|(endpoint, outcomes)| {
                outcomes.by_class().map(|(class, n)| {
                    (vec![(LABEL_ENDPOINT, *endpoint), (LABEL_STATUS_CLASS, class)], n as f64)
                })
            })
            .collect();
    out.series(
        MetricType::COUNTER,
        CUSTOMERIO_REQUESTS,
        "HTTP requests to the Customer.io Track API, by endpoint and status class (no_answer: connect error or timeout).",
        &requests,
    );
    out.0.extend(c.request_duration.collect());
    out.0.extend(c.request_items.collect());
    out.counter(
        CUSTOMERIO_RATE_LIMITED,
        "HTTP 429 answers from Customer.io.",
        get(&c.rate_limited),
    );
    out.counter(
        CUSTOMERIO_RETRIES,
        "Requests retried after a transient failure.",
        get(&c.requests_retried),
    );

    out.counter(
        TRANSACTIONS_ACKED,
        "Transactions acknowledged to Postgres.",
        get(&c.transactions_acked),
    );
    out.counter(
        POSTGRES_RECONNECTS,
        "Reconnections to Postgres after the replication stream broke.",
        get(&c.source_reconnects),
    );
    out.gauge(
        LAST_RECEIVED_LSN,
        "The highest WAL position received from Postgres, as a byte offset.",
        get(&c.last_received_lsn) as f64,
    );
    let now =
        std::time::SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    out.gauge(
        REPLICATION_LAG_SECONDS,
        "Age of the oldest transaction received and not yet acknowledged (now - its commit time); 0 when all are.",
        super::lag::lag_seconds(get(&c.oldest_unacked_commit), now),
    );
    out.gauge(
        LAST_ACKED_LSN,
        "The last WAL position acknowledged to Postgres, as a byte offset.",
        get(&c.last_acked_lsn) as f64,
    );
    webhook_families(&c.webhooks, &mut out);
    out.0
}

/// The reporting-webhook receiver's counters.
fn webhook_families(w: &crate::telemetry::webhooks::WebhookCounters, out: &mut Families) {
    let received: Vec<(Vec<(&str, &str)>, f64)> = w
        .received_snapshot()
        .into_iter()
        .map(|(object_type, metric, n)| {
            (vec![(LABEL_OBJECT_TYPE, object_type), (LABEL_METRIC, metric)], n as f64)
        })
        .collect();
    out.series(
        MetricType::COUNTER,
        WEBHOOKS_RECEIVED,
        "Verified reporting-webhook events, by object_type and metric (other: not in the spec; no series before the first).",
        &received,
    );
    out.counter(
        WEBHOOKS_STORED,
        "Reporting-webhook events written to the events table.",
        Counters::get(&w.stored),
    );
    out.counter(
        WEBHOOKS_DUPLICATES,
        "Reporting-webhook events already in the table (Customer.io retried or repeated them); answered 200, not stored again.",
        Counters::get(&w.duplicates),
    );
    out.counter(
        WEBHOOKS_WRITE_BACKS,
        "Rows of synced tables changed by [[webhooks.write_back]] (never echoed to Customer.io).",
        Counters::get(&w.write_backs),
    );
    let rejected: Vec<(&str, f64)> = crate::telemetry::webhooks::Rejection::ALL
        .iter()
        .map(|r| (r.as_str(), w.rejected_count(*r) as f64))
        .collect();
    out.labelled(
        MetricType::COUNTER,
        WEBHOOKS_REJECTED,
        "Webhook requests refused, by reason (database: answered 503, Customer.io retries).",
        LABEL_REASON,
        &rejected,
    );
}

/// Builds metric families by hand: the values are read, not accumulated.
#[derive(Default)]
pub(super) struct Families(pub(super) Vec<MetricFamily>);

impl Families {
    pub(super) fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.push(
            MetricType::COUNTER,
            name,
            help,
            vec![sample(MetricType::COUNTER, &[], value as f64)],
        );
    }

    pub(super) fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.push(MetricType::GAUGE, name, help, vec![sample(MetricType::GAUGE, &[], value)]);
    }

    /// A gauge left out of the exposition when `value` is unknown.
    pub(super) fn optional_gauge(&mut self, name: &str, help: &str, value: Option<f64>) {
        let samples = value.map(|v| sample(MetricType::GAUGE, &[], v)).into_iter().collect();
        self.push(MetricType::GAUGE, name, help, samples);
    }

    pub(super) fn labelled(
        &mut self,
        kind: MetricType,
        name: &str,
        help: &str,
        label: &str,
        values: &[(&str, f64)],
    ) {
        let samples = values.iter().map(|(v, x)| sample(kind, &[(label, v)], *x)).collect();
        self.push(kind, name, help, samples);
    }

    pub(super) fn series(
        &mut self,
        kind: MetricType,
        name: &str,
        help: &str,
        values: &[(Vec<(&str, &str)>, f64)],
    ) {
        let samples = values.iter().map(|(labels, x)| sample(kind, labels, *x)).collect();
        self.push(kind, name, help, samples);
    }

    fn push(&mut self, kind: MetricType, name: &str, help: &str, samples: Vec<Metric>) {
        let mut family = MetricFamily::default();
        family.set_name(name.to_owned());
        family.set_help(help.to_owned());
        family.set_field_type(kind);
        family.set_metric(samples);
        self.0.push(family);
    }
}

fn sample(kind: MetricType, labels: &[(&str, &str)], value: f64) -> Metric {
    let mut metric = Metric::default();
    metric.set_label(
        labels
            .iter()
            .map(|(name, value)| {
                let mut pair = LabelPair::default();
                pair.set_name((*name).to_owned());
                pair.set_value((*value).to_owned());
                pair
            })
            .collect(),
    );
    match kind {
        MetricType::COUNTER => {
            let mut counter = prometheus::proto::Counter::default();
            counter.set_value(value);
            metric.set_counter(counter);
        }
        _ => {
            let mut gauge = prometheus::proto::Gauge::default();
            gauge.set_value(value);
            metric.set_gauge(gauge);
        }
    }
    metric
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value_of(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn every_counter_is_exported_with_its_value() {
        let counters = Arc::new(Counters::default());
        let users = crate::change::Table {
            oid: 1,
            schema: "public".to_owned(),
            name: "users".to_owned(),
            columns: Vec::new(),
            replica_identity: crate::change::ReplicaIdentity::Full,
        };
        for _ in 0..7 {
            counters.changes_received.add(&users, crate::telemetry::by_table::Operation::Insert);
        }
        Counters::add(&counters.changes_skipped_no_change, 2);
        Counters::add(&counters.truncates_ignored, 1);
        Counters::add(&counters.ops_accepted, 5);
        Counters::add(&counters.ops_dead_lettered, 1);
        counters.requests.record(Some(200));
        counters.requests.record(Some(207));
        counters.requests.record(Some(503));
        counters.requests.record(None);
        counters.request_duration.observe(0.03);
        counters.request_items.observe(500.0);
        Counters::set(&counters.pending_bytes, 4096, Some(&counters.pending_bytes_peak));
        Counters::raise(&counters.last_received_lsn, 0x1_0000_0010);
        Counters::raise(&counters.last_received_lsn, 0x10);
        Counters::set(&counters.last_acked_lsn, 0x1_0000_0000, None);
        let text = Exporter::new(counters, Duration::from_secs(60)).render();
        let cases = [
            ("ciosync_changes_received_total{table=\"public.users\",operation=\"insert\"}", 7.0),
            ("ciosync_changes_received_total{table=\"public.users\",operation=\"delete\"}", 0.0),
            ("ciosync_changes_skipped_total{reason=\"no_change\"}", 2.0),
            ("ciosync_changes_skipped_total{reason=\"truncate\"}", 1.0),
            ("ciosync_changes_skipped_total{reason=\"invalid_id\"}", 0.0),
            ("ciosync_operations_completed_total{outcome=\"accepted\"}", 5.0),
            ("ciosync_operations_completed_total{outcome=\"dead_lettered\"}", 1.0),
            ("ciosync_customerio_requests_total{endpoint=\"batch\",status_class=\"2xx\"}", 2.0),
            ("ciosync_customerio_requests_total{endpoint=\"batch\",status_class=\"5xx\"}", 1.0),
            ("ciosync_customerio_requests_total{endpoint=\"batch\",status_class=\"4xx\"}", 0.0),
            (
                "ciosync_customerio_requests_total{endpoint=\"batch\",status_class=\"no_answer\"}",
                1.0,
            ),
            ("ciosync_customerio_request_duration_seconds_count", 1.0),
            ("ciosync_customerio_request_duration_seconds_bucket{le=\"0.05\"}", 1.0),
            ("ciosync_customerio_request_duration_seconds_bucket{le=\"0.025\"}", 0.0),
            ("ciosync_customerio_request_items_bucket{le=\"250\"}", 0.0),
            ("ciosync_customerio_request_items_bucket{le=\"500\"}", 1.0),
            ("ciosync_customerio_request_items_sum", 500.0),
            ("ciosync_pending_bytes", 4096.0),
            ("ciosync_pending_peak_bytes", 4096.0),
            ("ciosync_last_received_lsn_bytes", 4_294_967_312.0),
            ("ciosync_last_acked_lsn_bytes", 4_294_967_296.0),
            ("ciosync_pipeline_phase{phase=\"starting\"}", 1.0),
            ("ciosync_pipeline_phase{phase=\"streaming\"}", 0.0),
            ("ciosync_ready", 0.0),
            ("ciosync_last_delivery_timestamp_seconds", 0.0),
        ];
        for (series, expected) in cases {
            assert_eq!(value_of(&text, series), Some(expected), "{series} in:\n{text}");
        }
        assert!(text.contains("# TYPE ciosync_changes_received_total counter"), "{text}");
        assert!(text.contains("# TYPE ciosync_pending_bytes gauge"), "{text}");
        #[cfg(target_os = "linux")]
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
    }

    /// Counters with every atomic set to its own value, so each metric's
    /// value shows which field it reads.
    fn populated() -> Counters {
        let c = Counters::default();
        let fields = [
            &c.rows_copied,
            &c.changes_skipped_no_change,
            &c.changes_skipped_invalid_id,
            &c.changes_skipped_unknown_table,
            &c.changes_skipped_soft_deleted,
            &c.changes_skipped_invalid_event,
            &c.changes_skipped_write_back,
            &c.bad_messages,
            &c.truncates_ignored,
            &c.attributes_dropped,
            &c.ops_accepted,
            &c.ops_rejected,
            &c.rate_limited,
            &c.ops_coalesced,
            &c.ops_dead_lettered,
            &c.dead_letter_store_failures,
            &c.pending_bytes,
            &c.pending_bytes_peak,
            &c.requests_retried,
            &c.transactions_acked,
            &c.source_reconnects,
            &c.pending_operations,
            &c.last_received_lsn,
            &c.last_acked_lsn,
            &c.slots_recreated,
            &c.heartbeats_written,
            &c.heartbeats_received,
            &c.retained_wal_warn_bytes,
            &c.retained_wal_warning,
            &c.delete_guard_tripped,
            &c.delete_guard_limit,
            &c.deletes_held,
            &c.deletes_held_total,
            &c.webhooks.stored,
            &c.webhooks.duplicates,
            &c.webhooks.write_backs,
        ];
        for (i, field) in fields.into_iter().enumerate() {
            Counters::add(field, 100 + i as u64);
        }
        let users = crate::change::Table {
            oid: 1,
            schema: "public".to_owned(),
            name: "users".to_owned(),
            columns: Vec::new(),
            replica_identity: crate::change::ReplicaIdentity::Full,
        };
        c.changes_received.add(&users, crate::telemetry::by_table::Operation::Update);
        for status in [Some(200), Some(302), Some(404), Some(503), None] {
            c.requests.record(status);
        }
        c.requests_events.record(Some(200));
        c.request_duration.observe(0.07);
        c.request_items.observe(42.0);
        c.health.set_phase(Phase::Streaming);
        c.health.set_unauthorized(true);
        c.webhooks.received("email", "opened");
        c.webhooks.received("nope", "nope");
        c.webhooks.rejected(crate::telemetry::webhooks::Rejection::Signature);
        c
    }

    /// The `ciosync_` part of a scrape of [`populated`] counters and a
    /// slot reading (the process metrics change from one scrape to the next).
    fn populated_text() -> String {
        let mut all = families(&populated(), Duration::from_secs(60));
        let reading = super::super::slot::Reading {
            server_lsn: 9000,
            slot: Some(super::super::slot::SlotRow {
                confirmed_flush_lsn: Some(8000),
                restart_lsn: Some(7000),
                wal_status: Some("extended".to_owned()),
                safe_wal_size: Some(6000),
            }),
            backfill_rows: (30, 40),
            dead_letters: Some(5),
        };
        all.extend(super::super::slot::families(Some(&reading)));
        let mut text = String::new();
        TextEncoder::new().encode_utf8(&all, &mut text).unwrap();
        text
    }

    #[test]
    #[ignore = "writes the scrape to $CIOSYNC_METRICS_DUMP for the before/after comparison"]
    fn dump_populated_text() {
        let path = std::env::var("CIOSYNC_METRICS_DUMP").unwrap();
        std::fs::write(path, populated_text()).unwrap();
    }

    #[test]
    fn names_follow_the_conventions() {
        for family in ciosync_families() {
            let name = family.name();
            assert!(name.starts_with("ciosync_"), "{name}");
            let is_counter = family.get_field_type() == MetricType::COUNTER;
            assert_eq!(name.ends_with("_total"), is_counter, "{name}: _total iff a counter");
            assert!(!family.help().is_empty(), "{name} has help");
        }
    }

    #[test]
    fn exported_metric_names_covers_what_a_scrape_shows() {
        let names = exported_metric_names();
        for expected in
            [CUSTOMERIO_REQUEST_DURATION, SLOT_RETAINED_WAL_BYTES, DEAD_LETTERS_STORED, READY]
        {
            assert!(names.iter().any(|n| n == expected), "{expected} in {names:?}");
        }
        let text = Exporter::new(Arc::new(Counters::default()), Duration::from_secs(1)).render();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("# TYPE ") else { continue };
            let name = rest.split(' ').next().unwrap_or_default();
            assert!(names.iter().any(|n| n == name), "{name} is rendered but not listed");
        }
    }

    #[test]
    fn metrics_md_lists_every_metric() {
        let doc = include_str!("../../METRICS.md");
        for name in exported_metric_names() {
            assert!(doc.contains(&format!("`{name}`")), "METRICS.md does not list {name}");
        }
    }
}
