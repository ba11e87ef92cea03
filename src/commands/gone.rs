//! `ciosync deletes gone [--send] [--show-ids]`: the customers the record
//! of what Customer.io accepted holds whose row is gone (no synced table
//! has a row for them that syncs), and, with `--send`, their removal.
//!
//! Such customers are left behind when rows are deleted while no slot
//! existed (a slot lost at a failover on PostgreSQL 16 and older, then
//! created again): the stream never carried those deletes, and a backfill
//! only identifies. The recovery is `ciosync plan` (which counts them),
//! then this command.
//!
//! With `--send`, each page of them is checked again just before it goes
//! (a customer whose row came back since is left alone), each removal
//! follows the table's `delete_action`, what Customer.io accepted is
//! forgotten in the record, and every customer sent is read once more
//! afterwards: a row inserted meanwhile (whose identify the daemon may have
//! delivered before the removal landed) is identified again, as `deletes
//! approve` and `dlq retry` do.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::Client;

use super::current::{Current, Rows};
use super::deletes::{send, CommandError};
use super::plan::gone_condition;
use crate::config::Config;
use crate::customer::CustomerOp;
use crate::pg::PgError;
use crate::record;
use crate::sink::batch;
use crate::sink::client::TrackClient;
use crate::state::State;
use crate::telemetry::Counters;

/// Customer ids shown with `--show-ids`.
const EXAMPLES: usize = 10;

/// What `deletes gone --send` did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Sent {
    removed: u64,
    refused: u64,
    /// Found with a row again just before their removal: left alone.
    came_back: u64,
    /// Found with a row again after their removal: identified again.
    identified: u64,
}

/// Runs `ciosync deletes gone`; the text it prints.
pub(super) async fn run(
    config: &Config,
    send_them: bool,
    show_ids: bool,
) -> Result<String, CommandError> {
    let sql = config.postgres.connection().connect_sql().await.map_err(PgError::sql("connect"))?;
    State::open(&sql, &config.postgres.slot).await?;
    if !send_them {
        let gone = page(&sql, config, "", i64::MAX).await?;
        let mut text = format!(
            "{} customers in the record of what Customer.io accepted have no row that syncs \
             (gone, filtered out or soft-deleted)",
            gone.len()
        );
        if show_ids && !gone.is_empty() {
            let shown: Vec<&str> = gone.iter().take(EXAMPLES).map(String::as_str).collect();
            text.push_str(&format!(", e.g. {}", shown.join(", ")));
        }
        if !gone.is_empty() {
            text.push_str("; `ciosync deletes gone --send` removes them from Customer.io");
        }
        return Ok(text + "\n");
    }
    let sent = send_all(config, &sql).await?;
    Ok(format!(
        "removed {}, refused {} (kept in the record), came back before their removal {}, \
         identified again after it {}\n",
        sent.removed, sent.refused, sent.came_back, sent.identified
    ))
}

async fn send_all(config: &Config, sql: &Client) -> Result<Sent, CommandError> {
    let client = TrackClient::new(&config.customerio, Arc::new(Counters::default()))?;
    let max_backoff = Duration::from_secs(config.customerio.retry_max_backoff_secs);
    let slot = config.postgres.slot.as_str();
    let mut rows = Rows::new(sql, &config.sync);
    let every = rows.every_table();
    let mut sent = Sent::default();
    let mut after = String::new();
    loop {
        let page = page(sql, config, &after, config.customerio.max_batch_ops as i64).await?;
        let Some(last) = page.last() else { return Ok(sent) };
        after = last.clone();
        let mut still_gone = Vec::new();
        for customer in page {
            match rows.current(&customer, &every).await? {
                Current::Gone => still_gone.push(customer),
                _ => sent.came_back += 1,
            }
        }
        if still_gone.is_empty() {
            continue;
        }
        let items: Vec<_> = still_gone
            .iter()
            .filter_map(|customer| batch::encode(rows.removal(&every, customer)))
            .collect();
        let failed = send(&client, batch::body(&items), items.len(), max_backoff)
            .await
            .map_err(|reason| CommandError::Stopped { sent: sent.removed, reason })?;
        let failed: HashSet<usize> = failed.into_iter().collect();
        let removed: Vec<String> = still_gone
            .into_iter()
            .enumerate()
            .filter_map(|(i, customer)| (!failed.contains(&i)).then_some(customer))
            .collect();
        sent.refused += failed.len() as u64;
        sent.removed += removed.len() as u64;
        record::store::forget(sql, slot, &removed).await?;
        for customer in &removed {
            if identify_if_back(&mut rows, &client, customer, max_backoff).await? {
                sent.identified += 1;
                record::store::forget(sql, slot, std::slice::from_ref(customer)).await?;
            }
        }
    }
}

/// After its removal: a customer whose row came back meanwhile is
/// identified with the row's values. Whether it was.
async fn identify_if_back(
    rows: &mut Rows<'_>,
    client: &TrackClient,
    customer: &str,
    max_backoff: Duration,
) -> Result<bool, CommandError> {
    let every = rows.every_table();
    let Current::Live(attributes) = rows.current(customer, &every).await? else {
        return Ok(false);
    };
    let op =
        CustomerOp::Identify { id: customer.to_owned(), attributes, timestamp: rows.now().await? };
    let items: Vec<_> = batch::encode(op).into_iter().collect();
    send(client, batch::body(&items), items.len(), max_backoff)
        .await
        .map_err(|reason| CommandError::Stopped { sent: 0, reason })?;
    Ok(true)
}

/// Up to `limit` customers after `after` (in id order) the record holds
/// and no synced table has a row for that syncs.
async fn page(
    sql: &Client,
    config: &Config,
    after: &str,
    limit: i64,
) -> Result<Vec<String>, PgError> {
    let query = format!(
        "SELECT customer_id FROM ciosync.accepted a \
         WHERE slot = $1 AND customer_id > $2 AND {} ORDER BY customer_id LIMIT $3",
        gone_condition(config)
    );
    let rows = sql
        .query(&query, &[&config.postgres.slot, &after, &limit])
        .await
        .map_err(PgError::sql("look for customers whose row is gone"))?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}
