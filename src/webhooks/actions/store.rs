//! What an action writes, each request in one transaction with its
//! idempotency key: the key and the effect commit together, or neither
//! (and Customer.io's retry finds no key and applies it then).
//!
//! - `ciosync.webhook_action_keys (action, key, received_at)`: a key seen
//!   within the action's `dedupe_window_secs` makes the request a
//!   duplicate, answered 200 with nothing written; older keys are pruned.
//! - `segment`: the memberships table (created when missing), one row per
//!   (customer, segment) with `entered_at`, `left_at` and `changed_at`, the
//!   time of the change last applied. A change older than that is ignored,
//!   so a late retry cannot undo a newer change; an `enter` while in, or a
//!   `leave` while out, changes nothing.
//! - `update`: the statement resolved in the config (only changed values,
//!   the record forgetting what it held of them); the session carries the
//!   write-back origin, so the stream skips it.
//! - `insert`: one row, the mapped columns converted by Postgres from the
//!   body's JSON (`jsonb_populate_record`), absent ones left to their
//!   defaults, the whole body in `body_column`.

use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use super::call::{Call, KeySource, What};
use crate::config::actions::{Action, Direction, Effect};
use crate::pg::name::TableName;
use crate::pg::quote::{quote_ident, quote_literal};
use crate::pg::PgError;

/// The table of idempotency keys.
pub const KEYS_TABLE: &str = "ciosync.webhook_action_keys";

/// Longest a key that is a hash of the body counts: long enough for
/// Customer.io's retries after a timeout, short enough that the same body
/// sent again on purpose later (a person re-entering a segment, a score
/// set back) is applied.
pub const BODY_HASH_WINDOW: std::time::Duration = std::time::Duration::from_secs(600);

/// Records a key: a row back (new, or older than `$3` seconds) makes the
/// request fresh; none makes it a duplicate.
pub const KEY_SQL: &str = "INSERT INTO ciosync.webhook_action_keys AS k (action, key) \
     VALUES ($1, $2) ON CONFLICT (action, key) DO UPDATE SET received_at = now() \
     WHERE k.received_at < now() - make_interval(secs => $3)";

/// Forgets an action's keys older than `$2` seconds.
pub const PRUNE_SQL: &str = "DELETE FROM ciosync.webhook_action_keys \
     WHERE action = $1 AND received_at < now() - make_interval(secs => $2)";

/// What a request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Rows were written.
    Written,
    /// Nothing to write: already so, older than what is there, or no such row.
    Unchanged,
    /// The key was seen within the window: nothing written.
    Duplicate,
}

/// Why a request was not applied.
#[derive(Debug)]
pub enum ApplyError {
    /// Postgres refused the data (SQLSTATE class 22 or 23): no retry helps.
    Refused(String),
    /// Anything else: answered 503, Customer.io retries.
    Failed(PgError),
}

impl From<PgError> for ApplyError {
    fn from(error: PgError) -> Self {
        Self::Failed(error)
    }
}

/// `CREATE SCHEMA`/`CREATE TABLE` when missing, for the keys table and
/// every segment action's table: a role given them by an administrator
/// needs no CREATE privilege.
pub fn migration_sql(actions: &[Action]) -> String {
    let keys = TableName::parse(KEYS_TABLE).expect("valid");
    let mut sql = String::from("SET LOCAL client_min_messages = warning;\nDO $$ BEGIN\n");
    sql += &create_if_missing(
        &keys,
        "action text NOT NULL, key text NOT NULL, received_at timestamptz NOT NULL DEFAULT now(), \
         PRIMARY KEY (action, key)",
        "ciosync: idempotency keys of campaign webhook actions already applied",
    );
    let mut segment_tables: Vec<&TableName> = actions
        .iter()
        .filter_map(|a| match &a.effect {
            Effect::Segment { table, .. } => Some(table),
            _ => None,
        })
        .collect();
    segment_tables.sort();
    segment_tables.dedup();
    for table in segment_tables {
        sql += &create_if_missing(
            table,
            "customer_id text NOT NULL, segment text NOT NULL, entered_at timestamptz, \
             left_at timestamptz, changed_at timestamptz NOT NULL, \
             PRIMARY KEY (customer_id, segment)",
            "ciosync: segment memberships from Customer.io campaign webhook actions; \
             in the segment while left_at IS NULL. customer_id is customer data",
        );
    }
    sql + "END $$;"
}

fn create_if_missing(table: &TableName, columns: &str, comment: &str) -> String {
    let (schema, _) = table.parts();
    let qualified = table.quoted();
    format!(
        "    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = {schema_literal}) THEN
        BEGIN
            CREATE SCHEMA {schema_ident};
        EXCEPTION WHEN duplicate_schema OR unique_violation THEN NULL;
        END;
    END IF;
    IF to_regclass({regclass}) IS NULL THEN
        BEGIN
            CREATE TABLE {qualified} ({columns});
            COMMENT ON TABLE {qualified} IS {comment};
        EXCEPTION WHEN duplicate_table OR unique_violation THEN NULL;
        END;
    END IF;\n",
        schema_literal = quote_literal(schema),
        schema_ident = quote_ident(schema),
        regclass = quote_literal(&qualified),
        comment = quote_literal(comment),
    )
}

/// The time of a change: `$3` as sent (Unix seconds or text Postgres
/// parses), or now.
const TIME: &str = "COALESCE(CASE WHEN $3::text ~ '^[0-9]+(\\.[0-9]+)?$' \
     THEN to_timestamp($3::text::float8) ELSE $3::text::timestamptz END, now())";

/// The statement moving a person into or out of a segment: `$1` the
/// customer, `$2` the segment, `$3` the time as sent.
pub fn segment_sql(table: &TableName, direction: Direction) -> String {
    let (entered, left, set, unless) = match direction {
        Direction::Enter => (
            TIME,
            "NULL",
            "entered_at = EXCLUDED.entered_at, left_at = NULL",
            "m.left_at IS NOT NULL",
        ),
        Direction::Leave => ("NULL", TIME, "left_at = EXCLUDED.left_at", "m.left_at IS NULL"),
    };
    format!(
        "INSERT INTO {} AS m (customer_id, segment, entered_at, left_at, changed_at) \
         VALUES ($1, $2, {entered}, {left}, {TIME}) \
         ON CONFLICT (customer_id, segment) DO UPDATE SET {set}, changed_at = EXCLUDED.changed_at \
         WHERE {unless} AND m.changed_at <= EXCLUDED.changed_at",
        table.quoted()
    )
}

/// The INSERT of an `insert` action for the columns the body has.
pub fn insert_sql(table: &TableName, columns: &[&String], body_column: Option<&str>) -> String {
    let mut names: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
    let mut values: Vec<String> = columns.iter().map(|c| format!("v.{}", quote_ident(c))).collect();
    if let Some(body) = body_column {
        names.push(quote_ident(body));
        values.push("$2::jsonb".to_owned());
    }
    format!(
        "INSERT INTO {t} ({}) SELECT {} FROM jsonb_populate_record(NULL::{t}, $1::jsonb) AS v",
        names.join(", "),
        values.join(", "),
        t = table.quoted()
    )
}

/// Applies `call` for `action` in one transaction with its key.
pub async fn apply(
    client: &Client,
    action: &Action,
    call: &Call,
    body: &serde_json::Value,
) -> Result<Applied, ApplyError> {
    client.batch_execute("BEGIN").await.map_err(PgError::sql("begin"))?;
    let result = async {
        let window = match call.key_source {
            KeySource::BodyHash => action.dedupe_window.min(BODY_HASH_WINDOW),
            KeySource::Body | KeySource::Header => action.dedupe_window,
        };
        let fresh = client
            .execute(KEY_SQL, &[&action.name, &call.key, &window.as_secs_f64()])
            .await
            .map_err(PgError::sql("record a webhook action's idempotency key"))?;
        if fresh == 0 {
            return Ok(Applied::Duplicate);
        }
        let rows = effect(client, action, call, body).await?;
        client.batch_execute("COMMIT").await.map_err(PgError::sql("commit"))?;
        Ok(if rows > 0 { Applied::Written } else { Applied::Unchanged })
    }
    .await;
    if !matches!(result, Ok(Applied::Written | Applied::Unchanged)) {
        // A duplicate writes nothing; a failure leaves nothing behind.
        let _ = client.batch_execute("ROLLBACK").await;
    }
    result
}

async fn effect(
    client: &Client,
    action: &Action,
    call: &Call,
    body: &serde_json::Value,
) -> Result<u64, ApplyError> {
    let refused = |error: tokio_postgres::Error| match crate::pg::error::data_refusal(&error) {
        Some(code) => ApplyError::Refused(format!("Postgres refused the values (SQLSTATE {code})")),
        None => ApplyError::Failed(PgError::sql("apply a webhook action")(error)),
    };
    let customer = call.customer.as_deref().unwrap_or_default();
    match (&action.effect, &call.what) {
        (Effect::Segment { table, .. }, What::Segment { segment, direction }) => {
            let params: [&(dyn ToSql + Sync); 3] = [&customer, segment, &call.occurred_at];
            client.execute(&segment_sql(table, *direction), &params).await.map_err(refused)
        }
        (Effect::Update { statement, .. }, What::Values(values)) => {
            let values = serde_json::Value::Object(values.clone());
            client.execute(statement, &[&customer, &values]).await.map_err(refused)
        }
        (Effect::Insert { table, body_column, .. }, What::Values(values)) => {
            let columns: Vec<&String> = values.keys().collect();
            let sql = insert_sql(table, &columns, body_column.as_deref());
            let values = serde_json::Value::Object(values.clone());
            client.execute(&sql, &[&values, body]).await.map_err(refused)
        }
        _ => unreachable!("call::read gives each effect its own inputs"),
    }
}

/// Forgets keys older than each action's window.
pub async fn prune(client: &Client, actions: &[Action]) -> Result<u64, PgError> {
    let mut pruned = 0;
    for action in actions {
        pruned += client
            .execute(PRUNE_SQL, &[&action.name, &action.dedupe_window.as_secs_f64()])
            .await
            .map_err(PgError::sql("prune webhook action keys"))?;
    }
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_statements_only_move_forward_in_time() {
        let table = TableName::parse("crm.segments").unwrap();
        let enter = segment_sql(&table, Direction::Enter);
        assert!(enter.starts_with("INSERT INTO \"crm\".\"segments\" AS m"), "{enter}");
        assert!(
            enter.contains("WHERE m.left_at IS NOT NULL AND m.changed_at <= EXCLUDED.changed_at")
        );
        let leave = segment_sql(&table, Direction::Leave);
        assert!(leave.contains("WHERE m.left_at IS NULL AND m.changed_at <= EXCLUDED.changed_at"));
    }

    #[test]
    fn inserts_name_only_the_columns_the_body_has() {
        let table = TableName::parse("public.journey_log").unwrap();
        let (a, b) = ("stage".to_owned(), "score".to_owned());
        assert_eq!(
            insert_sql(&table, &[&a, &b], Some("payload")),
            "INSERT INTO \"public\".\"journey_log\" (\"stage\", \"score\", \"payload\") SELECT \
             v.\"stage\", v.\"score\", $2::jsonb FROM jsonb_populate_record(NULL::\"public\".\
             \"journey_log\", $1::jsonb) AS v"
        );
        assert!(insert_sql(&table, &[], Some("payload")).contains("(\"payload\") SELECT $2::jsonb"));
    }

    #[test]
    fn the_migration_creates_each_segment_table_once() {
        let sql = migration_sql(&[]);
        assert!(sql.contains("CREATE TABLE \"ciosync\".\"webhook_action_keys\""), "{sql}");
        assert_eq!(sql.matches("CREATE TABLE").count(), 1);
    }
}
