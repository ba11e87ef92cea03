//! `GET /metrics`: the [`Counters`] as Prometheus metrics, read when
//! scraped, plus the process metrics of the `prometheus` crate.
//!
//! The counters stay plain atomics that the pipeline bumps; this module is
//! the one place that knows which atomic becomes which metric and label.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{LabelPair, MetricFamily, MetricType};
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

/// Every family built from `counters`, each with at least one sample, in
/// the order of the declarations in `names`.
fn families(c: &Counters, stall_timeout: Duration) -> Vec<MetricFamily> {
    let mut out = Families::default();
    pipeline_state(c, stall_timeout, &mut out);
    slot_safety(c, &mut out);
    stream(c, &mut out);
    operations(c, &mut out);
    delete_guard(c, &mut out);
    requests(c, &mut out);
    acknowledgements(c, &mut out);
    webhook_families(&c.webhooks, &mut out);
    c.actions.families(&mut out);
    super::listeners::families(c, &mut out);
    out.0
}

/// The version, the phase, readiness and the last delivery.
fn pipeline_state(c: &Counters, stall_timeout: Duration, out: &mut Families) {
    out.labelled(&BUILD_INFO, &[(env!("CARGO_PKG_VERSION"), 1.0)]);
    let phase = c.health.phase();
    let phases: Vec<(&str, f64)> =
        Phase::ALL.iter().map(|p| (p.as_str(), f64::from(u8::from(*p == phase)))).collect();
    out.labelled(&PIPELINE_PHASE, &phases);
    let ready = c.health.readiness(stall_timeout).is_ok();
    out.gauge(&READY, f64::from(u8::from(ready)));
    let last_delivery = c
        .health
        .last_delivery()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64());
    out.gauge(&LAST_DELIVERY_TIMESTAMP, last_delivery);
}

/// Refused credentials, heartbeats and the retained-WAL watch.
fn slot_safety(c: &Counters, out: &mut Families) {
    let get = Counters::get;
    out.gauge(&CUSTOMERIO_UNAUTHORIZED, f64::from(u8::from(c.health.unauthorized())));
    out.counter(&HEARTBEATS_WRITTEN, get(&c.heartbeats_written));
    out.counter(&HEARTBEATS_RECEIVED, get(&c.heartbeats_received));
    out.gauge(&SLOT_RETAINED_WAL_WARN_BYTES, get(&c.retained_wal_warn_bytes) as f64);
    out.gauge(&SLOT_RETAINED_WAL_WARNING, get(&c.retained_wal_warning) as f64);
    out.counter(&SLOTS_RECREATED, get(&c.slots_recreated));
}

/// What the replication stream and the initial copy brought, and what was
/// left out.
fn stream(c: &Counters, out: &mut Families) {
    let get = Counters::get;
    out.counter(&INITIAL_COPY_ROWS, get(&c.rows_copied));
    let changes = c.changes_received.snapshot();
    let changes: Vec<(Vec<&str>, f64)> = changes
        .iter()
        .map(|(table, op, n)| (vec![table.as_str(), op.as_str()], *n as f64))
        .collect();
    out.series(&CHANGES_RECEIVED, &changes);
    out.labelled(
        &CHANGES_SKIPPED,
        &[
            ("no_change", get(&c.changes_skipped_no_change) as f64),
            ("invalid_id", get(&c.changes_skipped_invalid_id) as f64),
            ("unknown_table", get(&c.changes_skipped_unknown_table) as f64),
            ("soft_deleted", get(&c.changes_skipped_soft_deleted) as f64),
            ("filtered_out", get(&c.changes_skipped_filtered_out) as f64),
            ("invalid_event", get(&c.changes_skipped_invalid_event) as f64),
            ("relationship_unknown", get(&c.changes_skipped_relationship_unknown) as f64),
            ("invalid_platform", get(&c.changes_skipped_invalid_platform) as f64),
            ("device_key_unknown", get(&c.changes_skipped_device_key_unknown) as f64),
            ("token_too_long", get(&c.changes_skipped_token_too_long) as f64),
            ("write_back", get(&c.changes_skipped_write_back) as f64),
            ("truncate", get(&c.truncates_ignored) as f64),
        ],
    );
    let schema = c.schema.snapshot();
    let schema: Vec<(Vec<&str>, f64)> = schema
        .iter()
        .map(|(table, reason, n)| (vec![table.as_str(), *reason], *n as f64))
        .collect();
    out.series(&SCHEMA_MISMATCH, &schema);
    out.counter(&SCHEMA_LEFT_OUT, get(&c.schema_left_out));
    out.counter(&SCHEMA_PAUSES, get(&c.schema_pauses));
    out.counter(&UNDECODABLE_MESSAGES, get(&c.bad_messages));
    out.counter(&ATTRIBUTES_DROPPED, get(&c.attributes_dropped));
}

/// How operations ended, dead letters, and what waits in memory.
fn operations(c: &Counters, out: &mut Families) {
    let get = Counters::get;
    out.labelled(
        &OPERATIONS_COMPLETED,
        &[
            ("accepted", get(&c.ops_accepted) as f64),
            ("dead_lettered", get(&c.ops_dead_lettered) as f64),
        ],
    );
    out.gauge(
        &DEAD_LETTER_STORE_FAILING,
        f64::from(u8::from(c.health.dead_letter_store_failing())),
    );
    out.counter(&DEAD_LETTER_STORE_FAILURES, get(&c.dead_letter_store_failures));
    out.counter(&OPERATIONS_COALESCED, get(&c.ops_coalesced));
    out.counter(&IDENTIFIES_UNCHANGED, get(&c.record_unchanged));
    out.counter(&ATTRIBUTES_UNCHANGED, get(&c.record_attributes_unchanged));
    out.counter(&RECORD_UNKNOWN, get(&c.record_unknown));
    out.counter(&RECORD_EVENTS_UNKNOWN, get(&c.record_events_unknown));
    out.counter(&RECORD_FAILURES, get(&c.record_failures));
    out.gauge(&PENDING_OPERATIONS, get(&c.pending_operations) as f64);
    out.gauge(&PENDING_BYTES, get(&c.pending_bytes) as f64);
    out.gauge(&PENDING_PEAK_BYTES, get(&c.pending_bytes_peak) as f64);
}

/// The mass-delete circuit breaker.
fn delete_guard(c: &Counters, out: &mut Families) {
    let get = Counters::get;
    out.gauge(&DELETE_GUARD_TRIPPED, get(&c.delete_guard_tripped) as f64);
    out.gauge(&DELETE_GUARD_LIMIT, get(&c.delete_guard_limit) as f64);
    out.gauge(&DELETES_HELD, get(&c.deletes_held) as f64);
    out.counter(&DELETES_HELD_TOTAL, get(&c.deletes_held_total));
}

/// Requests to Customer.io: outcomes, durations, sizes, 429s and retries.
fn requests(c: &Counters, out: &mut Families) {
    let requests: Vec<(Vec<&str>, f64)> = [("batch", &c.requests), ("events", &c.requests_events)]
        .iter()
        .flat_map(|(endpoint, outcomes)| {
            outcomes.by_class().map(|(class, n)| (vec![*endpoint, class], n as f64))
        })
        .collect();
    out.series(&CUSTOMERIO_REQUESTS, &requests);
    out.0.extend(c.request_duration.collect());
    out.0.extend(c.request_items.collect());
    out.gauge(&CUSTOMERIO_CONCURRENCY, Counters::get(&c.concurrency_limit) as f64);
    out.counter(&CUSTOMERIO_RATE_LIMITED, Counters::get(&c.rate_limited));
    out.counter(&CUSTOMERIO_RETRIES, Counters::get(&c.requests_retried));
}

/// Acknowledgements to Postgres, positions and lag.
fn acknowledgements(c: &Counters, out: &mut Families) {
    let get = Counters::get;
    out.counter(&TRANSACTIONS_ACKED, get(&c.transactions_acked));
    out.counter(&POSTGRES_RECONNECTS, get(&c.source_reconnects));
    out.gauge(&LAST_RECEIVED_LSN, get(&c.last_received_lsn) as f64);
    let now =
        std::time::SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    out.gauge(
        &REPLICATION_LAG_SECONDS,
        super::lag::lag_seconds(get(&c.oldest_unacked_commit), now),
    );
    out.gauge(&LAST_ACKED_LSN, get(&c.last_acked_lsn) as f64);
}

/// The reporting-webhook receiver's counters.
fn webhook_families(w: &crate::telemetry::webhooks::WebhookCounters, out: &mut Families) {
    let received: Vec<(Vec<&str>, f64)> = w
        .received_snapshot()
        .into_iter()
        .map(|(object_type, metric, n)| (vec![object_type, metric], n as f64))
        .collect();
    out.series(&WEBHOOKS_RECEIVED, &received);
    out.counter(&WEBHOOKS_STORED, Counters::get(&w.stored));
    out.counter(&WEBHOOKS_DUPLICATES, Counters::get(&w.duplicates));
    out.counter(&WEBHOOKS_WRITE_BACKS, Counters::get(&w.write_backs));
    let rejected: Vec<(&str, f64)> = crate::telemetry::webhooks::Rejection::ALL
        .iter()
        .map(|r| (r.as_str(), w.rejected_count(*r) as f64))
        .collect();
    out.labelled(&WEBHOOKS_REJECTED, &rejected);
}

/// Builds metric families from their declarations in `names` and the
/// values read now (nothing is accumulated here).
#[derive(Default)]
pub(super) struct Families(pub(super) Vec<MetricFamily>);

impl Families {
    /// An unlabelled counter.
    pub(super) fn counter(&mut self, metric: &Metric, value: u64) {
        self.series(metric, &[(Vec::new(), value as f64)]);
    }

    /// An unlabelled gauge.
    pub(super) fn gauge(&mut self, metric: &Metric, value: f64) {
        self.series(metric, &[(Vec::new(), value)]);
    }

    /// A gauge left out of the exposition when `value` is unknown.
    pub(super) fn optional_gauge(&mut self, metric: &Metric, value: Option<f64>) {
        let values: Vec<(Vec<&str>, f64)> = value.map(|v| (Vec::new(), v)).into_iter().collect();
        self.series(metric, &values);
    }

    /// A metric with one label: each label value and its sample.
    pub(super) fn labelled(&mut self, metric: &Metric, values: &[(&str, f64)]) {
        let values: Vec<(Vec<&str>, f64)> = values.iter().map(|(v, x)| (vec![*v], *x)).collect();
        self.series(metric, &values);
    }

    /// Each series' label values, in the order of `metric.labels`, and its
    /// sample.
    pub(super) fn series(&mut self, metric: &Metric, values: &[(Vec<&str>, f64)]) {
        let kind = metric.kind.proto();
        let samples = values
            .iter()
            .map(|(label_values, x)| {
                debug_assert_eq!(label_values.len(), metric.labels.len(), "{}", metric.name);
                let labels: Vec<(&str, &str)> =
                    metric.labels.iter().copied().zip(label_values.iter().copied()).collect();
                sample(kind, &labels, *x)
            })
            .collect();
        let mut family = MetricFamily::default();
        family.set_name(metric.name.to_owned());
        family.set_help(metric.help.to_owned());
        family.set_field_type(kind);
        family.set_metric(samples);
        self.0.push(family);
    }
}

fn sample(kind: MetricType, labels: &[(&str, &str)], value: f64) -> prometheus::proto::Metric {
    let mut metric = prometheus::proto::Metric::default();
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
#[path = "exporter_tests.rs"]
mod tests;
