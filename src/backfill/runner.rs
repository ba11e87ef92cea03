//! The daemon's backfill runner: takes queued backfills from
//! `ciosync.backfills` one at a time and feeds their chunks between
//! watermarks (see the module above). Runs beside the pipeline, which sends
//! the chunks; live changes keep flowing meanwhile.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::{watermark_content, Chunk, ChunkId, Watermark, Windows, WATERMARK_PREFIX};
use crate::change::{RowChange, RowOp};
use crate::config::Config;
use crate::customer::CustomerOp;
use crate::mapping::Mapper;
use crate::pipeline::error_chain;
use crate::source::connection::ConnectionSettings;
use crate::source::reader::TableReader;
use crate::source::SourceError;
use crate::state::{Backfill, State};

/// Rows per chunk.
pub const CHUNK_ROWS: usize = 1000;
/// How often the runner looks for queued backfills.
const POLL: Duration = Duration::from_secs(1);

/// Runs backfills until `stop` is cancelled. Errors are logged and retried:
/// a backfill never stops the stream.
pub async fn run(
    settings: ConnectionSettings,
    config: Config,
    windows: Arc<Windows>,
    stop: CancellationToken,
) {
    let mapper = Mapper::new(&config.sync);
    while !stop.is_cancelled() {
        if let Err(error) = serve(&settings, &config, &mapper, &windows, &stop).await {
            tracing::warn!(error = %error_chain(&error), "backfill runner failed; retrying");
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL * 5) => {}
            _ = stop.cancelled() => {}
        }
    }
}

async fn serve(
    settings: &ConnectionSettings,
    config: &Config,
    mapper: &Mapper,
    windows: &Windows,
    stop: &CancellationToken,
) -> Result<(), SourceError> {
    let sql = settings.connect_sql().await.map_err(SourceError::sql("connect"))?;
    let state = State::open(&sql, &config.postgres.slot).await?;
    while !stop.is_cancelled() {
        match state.next_backfill().await? {
            Some(backfill) => {
                run_one(&sql, &state, config, mapper, windows, stop, backfill).await?
            }
            None => {
                tokio::select! {
                    _ = tokio::time::sleep(POLL) => {}
                    _ = stop.cancelled() => {}
                }
            }
        }
    }
    Ok(())
}

async fn run_one(
    sql: &tokio_postgres::Client,
    state: &State<'_>,
    config: &Config,
    mapper: &Mapper,
    windows: &Windows,
    stop: &CancellationToken,
    backfill: Backfill,
) -> Result<(), SourceError> {
    let id = backfill.id;
    let Some(sync) = config.sync.iter().find(|s| {
        let (schema, name) = s.schema_and_name();
        format!("{schema}.{name}") == backfill.table
    }) else {
        state.end_backfill(id, "failed", Some("the table is not synced by this config")).await?;
        return Ok(());
    };
    let reader = TableReader::new(sql, sync, backfill.where_clause.as_deref()).await?;
    state.start_backfill(id).await?;
    tracing::info!(backfill = id, table = %backfill.table, resume = backfill.last_key.is_some(), "backfill running");
    let mut after = backfill.last_key.clone();
    let mut rows_done = backfill.rows_done;
    let slot = &config.postgres.slot;
    for chunk in 1u64.. {
        // The time of the read: later than any change the read saw.
        let timestamp = crate::change::unix_now();
        if stop.is_cancelled() {
            return Ok(());
        }
        let chunk_id = ChunkId { backfill: id, chunk };
        emit(sql, slot, Watermark::Low(chunk_id)).await?;
        let rows = reader.page(sql, after.as_deref(), CHUNK_ROWS).await?;
        let count = rows.len();
        let last = rows.last().map(|(key, _)| key.clone());
        let rows = rows
            .into_iter()
            .map(|(key, new)| {
                let change = RowChange {
                    table: reader.table().clone(),
                    op: RowOp::Update { old: None, old_is_key_only: false, new },
                    commit_time: timestamp,
                };
                let ops =
                    select_attributes(mapper.map(&change).ops, backfill.attributes.as_deref());
                (key, ops)
            })
            .collect();
        let (delivered, sent) = oneshot::channel();
        windows.put(chunk_id, Chunk { table: backfill.table.clone(), rows, delivered });
        emit(sql, slot, Watermark::High(chunk_id)).await?;
        let rows_sent = tokio::select! {
            sent = sent => sent.ok(),
            _ = stop.cancelled() => None,
        };
        let Some(rows_sent) = rows_sent else {
            // Shutdown (or the session restarted before the chunk went out):
            // the next run starts again from the last delivered key.
            windows.abandon(chunk_id);
            return Ok(());
        };
        rows_done += count as i64;
        tracing::debug!(
            backfill = id,
            chunk,
            rows_sent,
            rows_yielded = count - rows_sent,
            "backfill chunk delivered"
        );
        if let Some(key) = &last {
            if !state.backfill_progress(id, key, rows_done).await? {
                tracing::info!(backfill = id, "backfill cancelled");
                return Ok(());
            }
            after = last;
        }
        if count < CHUNK_ROWS {
            break;
        }
    }
    state.end_backfill(id, "done", None).await?;
    tracing::info!(backfill = id, rows_done, "backfill done");
    Ok(())
}

/// Keeps only the listed attributes of each identify; an identify left with
/// nothing is dropped.
fn select_attributes(ops: Vec<CustomerOp>, attributes: Option<&[String]>) -> Vec<CustomerOp> {
    let Some(wanted) = attributes else { return ops };
    ops.into_iter()
        .filter_map(|op| match op {
            CustomerOp::Identify { id, mut attributes, timestamp } => {
                attributes.retain(|name, _| wanted.iter().any(|w| w == name));
                (!attributes.is_empty()).then_some(CustomerOp::Identify {
                    id,
                    attributes,
                    timestamp,
                })
            }
            other => Some(other),
        })
        .collect()
}

async fn emit(
    sql: &tokio_postgres::Client,
    slot: &str,
    watermark: Watermark,
) -> Result<(), SourceError> {
    sql.execute(
        "SELECT pg_catalog.pg_logical_emit_message(true, $1, $2)",
        &[&WATERMARK_PREFIX, &watermark_content(slot, watermark)],
    )
    .await
    .map_err(SourceError::sql("write a backfill watermark"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_the_listed_attributes_are_kept() {
        let identify = |attrs: serde_json::Value| CustomerOp::Identify {
            id: "1".into(),
            attributes: attrs.as_object().unwrap().clone(),
            timestamp: 1,
        };
        let ops = vec![identify(json!({"plan": "pro", "email": "a@x.io"}))];
        assert_eq!(select_attributes(ops.clone(), None), ops);
        assert_eq!(
            select_attributes(ops.clone(), Some(&["plan".to_owned()])),
            vec![identify(json!({"plan": "pro"}))]
        );
        assert!(select_attributes(ops, Some(&["nickname".to_owned()])).is_empty());
    }
}
