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
        ("ciosync_customerio_requests_total{endpoint=\"batch\",status_class=\"no_answer\"}", 1.0),
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
        &c.changes_skipped_filtered_out,
        &c.changes_skipped_invalid_event,
        &c.changes_skipped_relationship_unknown,
        &c.changes_skipped_invalid_platform,
        &c.changes_skipped_device_key_unknown,
        &c.changes_skipped_token_too_long,
        &c.changes_skipped_write_back,
        &c.bad_messages,
        &c.truncates_ignored,
        &c.attributes_dropped,
        &c.schema_left_out,
        &c.concurrency_limit,
        &c.schema_pauses,
        &c.ops_accepted,
        &c.rate_limited,
        &c.ops_coalesced,
        &c.record_unchanged,
        &c.record_attributes_unchanged,
        &c.record_unknown,
        &c.record_events_unknown,
        &c.record_failures,
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
    c.schema.set("public.users", ["retyped", "retyped"]);
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
    c.actions.register("segments");
    c.actions.count("segments", crate::telemetry::actions::ActionOutcome::Duplicate);
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
        published: vec![("public.users".to_owned(), true)],
    };
    all.extend(super::super::slot::families(Some(&reading)));
    let mut text = String::new();
    TextEncoder::new().encode_utf8(&all, &mut text).unwrap();
    text
}

/// Each field [`populated`] set reaches the scrape as a sample with its
/// own value, once: no counter is left unexported or read twice.
#[test]
fn every_field_reaches_one_series() {
    let text = populated_text();
    let values: Vec<&str> = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit(' ').next())
        .collect();
    for value in 100..135 {
        let found = values.iter().filter(|v| **v == value.to_string()).count();
        assert_eq!(found, 1, "{value} appears {found} times in:\n{text}");
    }
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
        let expected = expected.name;
        assert!(names.iter().any(|n| n == expected), "{expected} in {names:?}");
    }
    let text = Exporter::new(Arc::new(Counters::default()), Duration::from_secs(1)).render();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else { continue };
        let name = rest.split(' ').next().unwrap_or_default();
        assert!(names.iter().any(|n| n == name), "{name} is rendered but not listed");
    }
}

/// The `metric`, `type` and `labels` cells of each METRICS.md table row
/// naming a `ciosync_` metric; the labels cell as the label names, each
/// the first backquoted word of a `; `-separated part.
fn documented_metrics(doc: &str) -> Vec<(String, String, Vec<String>)> {
    doc.lines()
        .filter_map(|line| line.strip_prefix("| `ciosync_"))
        .map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let name = format!("ciosync_{}", cells[0].trim_end_matches('`'));
            let labels = cells[2]
                .split("; ")
                .filter_map(|part| part.trim().strip_prefix('`')?.split('`').next())
                .map(str::to_owned)
                .collect();
            (name, cells[1].to_owned(), labels)
        })
        .collect()
}

#[test]
fn metrics_md_documents_each_declared_metric_with_its_kind_and_labels() {
    let documented = documented_metrics(include_str!("../../METRICS.md"));
    for metric in METRICS {
        let Some((_, kind, labels)) = documented.iter().find(|(name, ..)| name == metric.name)
        else {
            panic!("METRICS.md has no row for {}", metric.name);
        };
        assert_eq!(kind, metric.kind.as_str(), "METRICS.md's type of {}", metric.name);
        assert_eq!(labels, metric.labels, "METRICS.md's labels of {}", metric.name);
    }
    for (name, ..) in &documented {
        assert!(
            METRICS.iter().any(|m| m.name == name),
            "METRICS.md lists {name}, which is not declared in names::METRICS"
        );
    }
    let doc = include_str!("../../METRICS.md");
    for name in exported_metric_names() {
        assert!(doc.contains(&format!("`{name}`")), "METRICS.md does not list {name}");
    }
}

#[test]
fn each_declaration_is_exported_as_declared() {
    let families = ciosync_families();
    for metric in METRICS {
        let Some(family) = families.iter().find(|f| f.name() == metric.name) else {
            panic!("{} is declared but not exported", metric.name);
        };
        assert_eq!(family.get_field_type(), metric.kind.proto(), "{}", metric.name);
        assert_eq!(family.help(), metric.help, "{}", metric.name);
        for sample in family.get_metric() {
            let labels: Vec<&str> = sample.get_label().iter().map(|l| l.name()).collect();
            let labels: Vec<&str> = labels.into_iter().filter(|l| *l != "le").collect();
            assert_eq!(labels, metric.labels, "{}", metric.name);
        }
    }
    assert_eq!(families.len(), METRICS.len(), "a family exported twice or undeclared");
}
