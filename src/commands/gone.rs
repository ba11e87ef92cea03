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
//! follows the table's `delete_action`, and every customer sent is read
//! once more afterwards: a row inserted meanwhile (whose identify the
//! daemon may have delivered before the removal landed) is identified
//! again, as `deletes approve` and `dlq retry` do.
//!
//! The record forgets a page's customers before it is sent, each statement
//! committed on its own, so a stop, a Ctrl-C or a kill while Customer.io
//! applies the removals leaves no claim about customers it may have
//! removed; those it definitely refused are put back (it still holds them,
//! and the next run finds them again). Those it removed are forgotten again
//! after the send: nothing holds the daemon back meanwhile, and a row come
//! back may have had its identify recorded before the removal landed.
//! A stop or kill mid-page leaves that page's customers out of the record
//! whether or not Customer.io removed them: `deletes gone` no longer
//! counts those it did not (forgetting is the safe side: a claim about a
//! removed customer would keep the daemon from identifying it again when
//! its row comes back with the same values).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::Client;

use super::current::{Current, Rows};
use super::deletes::{send, CommandError};
use crate::config::{Config, DeleteAction};
use crate::customer::CustomerOp;
use crate::pg::quote::quote_ident;
use crate::pg::PgError;
use crate::record;
use crate::sink::batch;
use crate::sink::client::TrackClient;
use crate::state::State;
use crate::telemetry::Counters;
use crate::wording;

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
///
/// `--send` sends at most `delete_guard.max_deletes` removals (a config
/// edit, such as a `[[sync]]` table removed or a narrower filter, can make
/// many customers "gone" at once), unless `force`; customers whose removal
/// the breaker holds are left to `ciosync deletes approve`.
pub(super) async fn run(
    config: &Config,
    send_them: bool,
    show_ids: bool,
    force: bool,
) -> Result<String, CommandError> {
    let sql = config.postgres.connection().connect_sql().await.map_err(PgError::sql("connect"))?;
    State::open(&sql, &config.postgres.slot).await?;
    let count = count(&sql, config).await?;
    let limit = config.delete_guard.max_deletes;
    if !send_them || count == 0 {
        let mut text = format!(
            "{} in the record of what Customer.io accepted {} no row that syncs (gone, \
             filtered out or soft-deleted; removals the breaker holds are not counted)",
            wording::count(count, "customer"),
            wording::plural(count, "has", "have")
        );
        if show_ids && count > 0 {
            text.push_str(&format!(
                ", e.g. {}",
                gone(&sql, config, EXAMPLES as i64).await?.join(", ")
            ));
        }
        if count > 0 {
            let them = wording::plural(count, "it", "them");
            text.push_str(&format!(
                "; `ciosync deletes gone --send` removes {them} from Customer.io"
            ));
        }
        return Ok(text + "\n");
    }
    if limit > 0 && count > limit && !force {
        return Err(CommandError::TooMany { count, limit });
    }
    let action = removal_action(config)?;
    let sent = send_all(config, &sql, action).await?;
    Ok(format!(
        "removed {}, refused {} (kept in the record), came back before their removal {}, \
         identified again after it {}\n",
        sent.removed, sent.refused, sent.came_back, sent.identified
    ))
}

/// The one `delete_action` of the synced tables: the record does not say
/// which table a customer came from, so tables that differ are refused.
fn removal_action(config: &Config) -> Result<DeleteAction, CommandError> {
    let people = config.people();
    let mut actions: Vec<DeleteAction> = people.map(|s| s.delete_action).collect();
    actions.dedup();
    match actions.as_slice() {
        [one] => Ok(*one),
        _ => Err(CommandError::Postgres(PgError::Definite(
            "the [[sync]] tables differ in delete_action, and the record does not say which \
             table a gone customer came from: give them one delete_action for this command"
                .to_owned(),
        ))),
    }
}

async fn send_all(
    config: &Config,
    sql: &Client,
    action: DeleteAction,
) -> Result<Sent, CommandError> {
    let client = TrackClient::new(&config.customerio, Arc::new(Counters::default()))?;
    let max_backoff = Duration::from_secs(config.customerio.retry_max_backoff_secs);
    let slot = config.postgres.slot.as_str();
    let mut rows = Rows::new(sql, &config.sync);
    let every = rows.every_table();
    let mut sent = Sent::default();
    // One anti-join for all (a page query per batch would read the tables
    // again each time); bounded by the limit checked above.
    let all = gone(sql, config, i64::MAX).await?;
    for page in all.chunks(config.customerio.max_batch_ops.max(1)) {
        let mut still_gone = Vec::new();
        for customer in page {
            match rows.current(customer, &every).await? {
                Current::Gone => still_gone.push(customer.clone()),
                _ => sent.came_back += 1,
            }
        }
        if still_gone.is_empty() {
            continue;
        }
        let items: Vec<_> = still_gone
            .iter()
            .filter_map(|customer| batch::encode(removal(action, customer)))
            .collect();
        // Forgotten before the send: a stop or a kill after Customer.io
        // applied some leaves no claim about them (see the module's doc).
        let forgotten = record::store::forget_keeping(sql, slot, &still_gone).await?;
        let answered = send(&client, batch::body(&items), items.len(), max_backoff).await;
        let failed: HashSet<usize> = match answered {
            Ok(failed) => failed.into_iter().collect(),
            Err(reason) => return Err(CommandError::Stopped { sent: sent.removed, reason }),
        };
        let (refused, removed): (Vec<_>, Vec<_>) =
            still_gone.into_iter().enumerate().partition(|(i, _)| failed.contains(i));
        let refused: Vec<String> = refused.into_iter().map(|(_, customer)| customer).collect();
        let removed: Vec<String> = removed.into_iter().map(|(_, customer)| customer).collect();
        sent.refused += refused.len() as u64;
        sent.removed += removed.len() as u64;
        record::store::restore(sql, slot, &forgotten, &refused).await?;
        record::store::forget(sql, slot, &removed).await?;
        for customer in &removed {
            if identify_if_back(&mut rows, &client, customer, max_backoff, (sql, slot)).await? {
                sent.identified += 1;
                record::store::blank(sql, slot, std::slice::from_ref(customer)).await?;
            }
        }
    }
    Ok(sent)
}

fn removal(action: DeleteAction, customer: &str) -> CustomerOp {
    let id = customer.to_owned();
    match action {
        DeleteAction::Delete => CustomerOp::Delete { id },
        DeleteAction::Suppress => CustomerOp::Suppress { id },
    }
}

/// After its removal: a customer whose row came back meanwhile is
/// identified with the row's values, forgotten in the record (of `slot`,
/// on `sql`) just before the send, as the daemon may have recorded it
/// since. Whether it was.
async fn identify_if_back(
    rows: &mut Rows<'_>,
    client: &TrackClient,
    customer: &str,
    max_backoff: Duration,
    (sql, slot): (&Client, &str),
) -> Result<bool, CommandError> {
    let every = rows.every_table();
    let Current::Live(attributes) = rows.current(customer, &every).await? else {
        return Ok(false);
    };
    let op =
        CustomerOp::Identify { id: customer.to_owned(), attributes, timestamp: rows.now().await? };
    let items: Vec<_> = batch::encode(op).into_iter().collect();
    // Held by Customer.io once sent, with values the record does not know.
    record::store::blank(sql, slot, &[customer.to_owned()]).await?;
    send(client, batch::body(&items), items.len(), max_backoff)
        .await
        .map_err(|reason| CommandError::Stopped { sent: 0, reason })?;
    Ok(true)
}

/// How many customers the record holds that no synced table has a row for
/// that syncs, whose removal the breaker does not hold.
pub(super) async fn count(sql: &Client, config: &Config) -> Result<u64, PgError> {
    let query = format!("SELECT count(*) FROM ciosync.accepted a WHERE {}", condition(config));
    let row = sql
        .query_one(&query, &[&config.postgres.slot])
        .await
        .map_err(PgError::sql("count the customers whose row is gone"))?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// Up to `limit` of them, in id order.
pub(super) async fn gone(
    sql: &Client,
    config: &Config,
    limit: i64,
) -> Result<Vec<String>, PgError> {
    let query = format!(
        "SELECT customer_id FROM ciosync.accepted a WHERE {} ORDER BY customer_id LIMIT $2",
        condition(config)
    );
    let rows = sql
        .query(&query, &[&config.postgres.slot, &limit])
        .await
        .map_err(PgError::sql("look for customers whose row is gone"))?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

fn condition(config: &Config) -> String {
    format!(
        "a.slot = $1 AND a.customer_id <> '' AND {} AND NOT EXISTS (SELECT 1 FROM ciosync.held_deletes h \
         WHERE h.slot = a.slot COLLATE pg_catalog.\"default\" \
         AND h.customer_id = a.customer_id COLLATE pg_catalog.\"default\" \
         AND h.state IN ('held', 'pending'))",
        gone_condition(config)
    )
}

/// The condition on `ciosync.accepted a` that its customer has no row
/// that syncs in any `[[sync]]` table: none with its id, or only rows
/// outside the table's filter or soft-deleted.
fn gone_condition(config: &Config) -> String {
    let gone: Vec<String> = config
        .people()
        .map(|sync| {
            // The filter inside a subquery of its own, as backfills read it
            // (`TableReader`), so it reads the table's columns only.
            let rows = match &sync.filter {
                Some(filter) => format!("(SELECT * FROM {} WHERE ({filter}))", sync.table.quoted()),
                None => sync.table.quoted(),
            };
            let mut condition = format!(
                "t.{}::text = a.customer_id COLLATE pg_catalog.\"default\"",
                quote_ident(&sync.id_column)
            );
            if let Some(column) = &sync.soft_delete_column {
                condition.push_str(&format!(" AND t.{} IS NULL", quote_ident(column)));
            }
            format!("NOT EXISTS (SELECT 1 FROM {rows} AS t WHERE {condition})")
        })
        .collect();
    if gone.is_empty() {
        "false".to_owned()
    } else {
        format!("({})", gone.join(" AND "))
    }
}
