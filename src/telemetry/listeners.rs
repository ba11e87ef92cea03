//! The `ciosync_listener_*` metrics: what the two listeners' limits did
//! (`listener::ListenerStats`), one series per listener.

use std::sync::atomic::Ordering;

use super::exporter::Families;
use super::names::*;
use super::Counters;
use crate::listener::{Cut, ListenerStats};

/// The `listener` label values, with their stats.
fn listeners(c: &Counters) -> [(&'static str, &ListenerStats); 2] {
    [("metrics", &c.metrics_listener), ("webhooks", &c.webhook_listener)]
}

/// Every listener family, in the order of the declarations in `names`.
pub(super) fn families(c: &Counters, out: &mut Families) {
    let gauge = |read: fn(&ListenerStats) -> u64| -> Vec<(&str, f64)> {
        listeners(c).iter().map(|(name, stats)| (*name, read(stats) as f64)).collect()
    };
    out.labelled(&LISTENER_CONNECTIONS, &gauge(|s| s.open.load(Ordering::Relaxed)));
    let cuts: Vec<(Vec<&str>, f64)> = listeners(c)
        .iter()
        .flat_map(|(name, stats)| {
            Cut::ALL.iter().map(|cut| (vec![*name, cut.as_str()], stats.cut_count(*cut) as f64))
        })
        .collect();
    out.series(&LISTENER_CUT, &cuts);
    out.labelled(&LISTENER_BUFFERED_BYTES, &gauge(|s| s.buffered_bytes.load(Ordering::Relaxed)));
    out.labelled(
        &LISTENER_BUFFERED_PEAK_BYTES,
        &gauge(|s| s.buffered_peak_bytes.load(Ordering::Relaxed)),
    );
    out.labelled(
        &LISTENER_BUFFER_LIMIT_BYTES,
        &gauge(|s| s.buffer_limit_bytes.load(Ordering::Relaxed)),
    );
    out.labelled(&LISTENER_BUDGET_REFUSALS, &gauge(|s| s.budget_refusals.load(Ordering::Relaxed)));
}
