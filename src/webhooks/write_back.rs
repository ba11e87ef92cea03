//! Write-back: a reporting event (an unsubscribe, a bounce) sets one column
//! of the synced user row, without the change echoing back to Customer.io.
//!
//! # Why the write does not come back
//!
//! The write is an ordinary UPDATE of a synced table, so the replication
//! stream carries it like any other. The store's connection runs it in a
//! session with a replication origin (`pg_replication_origin_session_setup`),
//! so its transaction carries that origin; pgoutput then sends an Origin
//! message at the transaction's start (PostgreSQL 15), and the source skips
//! the changes of transactions with this slot's origin
//! ([`crate::config::Config::write_back_origin`]).
//! The application writing the same column is not affected: its
//! transactions carry no origin and are synced as usual.
//!
//! The origin functions are superuser-only unless granted; without them
//! `run` stops at start with the `GRANT`s to run, rather than write back
//! with an echo.

use tokio_postgres::Client;

use super::event::ReportingEvent;
use crate::config::webhooks::{MatchBy, WriteBack};
use crate::pg::PgError;

/// Whether `event` triggers `write_back`.
fn applies_to(write_back: &WriteBack, event: &ReportingEvent) -> bool {
    event.metric == write_back.metric
        && write_back.object_type.as_deref().is_none_or(|t| t == event.object_type)
}

/// Creates the origin if missing and binds this session to it, so every
/// transaction of `sql` carries it; when another session holds it (another
/// instance), the next name of its pool. A missing privilege is definite,
/// with the `GRANT`s that fix it.
pub async fn bind_origin(sql: &Client, origin: &str) -> Result<(), PgError> {
    let mut last = None;
    for name in crate::config::origin::pooled(origin) {
        let mut bound = bind_one(sql, &name).await;
        // 23505: another session created the same name a moment earlier.
        if bound.as_ref().is_err_and(|e| e.code().is_some_and(|c| c.code() == "23505")) {
            bound = bind_one(sql, &name).await;
        }
        match bound {
            Ok(()) => return Ok(()),
            // 55006 object_in_use: active in another session.
            Err(e) if e.code().is_some_and(|c| c.code() == "55006") => last = Some(e),
            Err(e) => return Err(refusal(e)),
        }
    }
    Err(refusal(last.expect("the pool is not empty")))
}

async fn bind_one(sql: &Client, name: &str) -> Result<(), tokio_postgres::Error> {
    sql.execute(
        "SELECT pg_catalog.pg_replication_origin_create($1) \
         WHERE pg_catalog.pg_replication_origin_oid($1) IS NULL",
        &[&name],
    )
    .await?;
    sql.execute("SELECT pg_catalog.pg_replication_origin_session_setup($1)", &[&name]).await?;
    Ok(())
}

fn refusal(e: tokio_postgres::Error) -> PgError {
    if e.code().is_some_and(|c| c.code() == "42501") {
        return PgError::Definite(
            "webhooks.write_back and webhook actions that write a streamed table need the \
             replication-origin functions, which are superuser-only by default: GRANT EXECUTE \
             ON FUNCTION pg_catalog.pg_replication_origin_create(text), \
             pg_catalog.pg_replication_origin_oid(text), \
             pg_catalog.pg_replication_origin_session_setup(text) TO <role>; (without them a \
             write would echo back to Customer.io, so none is done)"
                .to_owned(),
        );
    }
    PgError::Sql { what: "set up the write-back's replication origin", source: e }
}

/// Applies the write-backs `event` triggers, in the caller's transaction;
/// how many rows changed.
pub async fn apply(
    sql: &Client,
    write_backs: &[WriteBack],
    event: &ReportingEvent,
) -> Result<u64, PgError> {
    let mut changed = 0;
    for wb in write_backs.iter().filter(|wb| applies_to(wb, event)) {
        let key = match wb.match_by {
            MatchBy::Id => event.customer_id.as_deref(),
            MatchBy::Email => event.email.as_deref(),
        };
        let Some(key) = key.filter(|k| !k.is_empty()) else { continue };
        let time = event.occurred_at as f64;
        let params: &[&(dyn tokio_postgres::types::ToSql + Sync)] =
            if wb.uses_time { &[&key, &time] } else { &[&key] };
        changed += sql
            .execute(&wb.statement, params)
            .await
            .map_err(PgError::sql("write back a reporting event"))?;
    }
    Ok(changed)
}
