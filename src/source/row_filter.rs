//! A synced table's row filter (`[[sync]] filter`) as Postgres itself reads
//! it. Two questions cannot be answered from the config's text alone:
//!
//! - **Is a publication's filter the configured one?** Postgres keeps a row
//!   filter as a node tree (`pg_publication_rel.prqual`) and prints it back
//!   with `pg_get_expr` in its own form: `email_verified AND NOT is_staff`
//!   comes back as `(email_verified AND (NOT is_staff))`, `plan IN ('a')` as
//!   `(plan = ANY (ARRAY['a'::text]))`. To print the configured expression
//!   the same way, [`read`] makes it the CHECK constraint of a temporary copy
//!   of the table (`CREATE TEMP TABLE … (LIKE t)`): Postgres analyses a CHECK
//!   expression as it analyses a publication's WHERE (transformed, coerced to
//!   boolean, collations assigned) and `pg_get_expr` prints both with the
//!   same code, in this session, so under the same `search_path`. Equal text
//!   then means the same columns, operators, functions and constants.
//! - **Which columns does it read?** The constraint's `pg_depend` rows name
//!   them exactly, so the replica identity check is not a guess from the text.
//!
//! The probe runs in a transaction that is always rolled back, so nothing is
//! left behind, and needs only what the least-privilege role has: TEMP on
//! the database (PUBLIC's by default) and SELECT on the table (for `LIKE`).
//!
//! Limits: the comparison is of analysed trees, not of meaning. `a AND b`
//! and `b AND a`, or `x > 1` and `1 < x`, differ, so such a publication is
//! reported as a misfit although it selects the same rows; the SQL printed
//! with it rewrites the filter to the configured text, after which they match.

use tokio_postgres::Client;

use crate::pg::quote::quoted_table;

/// Name of the temporary table and of its constraint.
const PROBE: &str = "ciosync_filter_probe";

/// The configured filter as Postgres reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadFilter {
    /// `pg_get_expr`'s form, comparable with a publication's `prqual`.
    pub canonical: String,
    /// The table's columns it reads, in the table's column order.
    pub columns: Vec<String>,
}

/// Reads `filter` for table `schema.name` (see the module doc). An error is
/// Postgres refusing the expression (a missing column, not boolean, a
/// subquery) or the probe (no TEMP privilege). Must not be called inside a
/// transaction: it begins and rolls back its own.
pub async fn read(
    sql: &Client,
    schema: &str,
    name: &str,
    filter: &str,
) -> Result<ReadFilter, tokio_postgres::Error> {
    sql.batch_execute("BEGIN").await?;
    let read = probe(sql, schema, name, filter).await;
    let rolled_back = sql.batch_execute("ROLLBACK").await;
    let read = read?;
    rolled_back?;
    Ok(read)
}

async fn probe(
    sql: &Client,
    schema: &str,
    name: &str,
    filter: &str,
) -> Result<ReadFilter, tokio_postgres::Error> {
    sql.batch_execute(&format!(
        "CREATE TEMP TABLE {PROBE} (LIKE {}); \
         ALTER TABLE pg_temp.{PROBE} ADD CONSTRAINT {PROBE} CHECK ({filter}) NOT VALID",
        quoted_table(schema, name)
    ))
    .await?;
    // The probe's attribute numbers differ from the table's (LIKE skips
    // dropped columns), so columns are named, never numbered.
    let row = sql
        .query_one(
            "SELECT pg_catalog.pg_get_expr(c.conbin, c.conrelid), \
                    ARRAY(SELECT a.attname::text FROM pg_catalog.pg_depend d \
                          JOIN pg_catalog.pg_attribute a \
                            ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid \
                          WHERE d.classid = 'pg_catalog.pg_constraint'::regclass \
                            AND d.objid = c.oid AND d.refobjid = c.conrelid \
                            AND d.refobjsubid > 0 \
                          GROUP BY a.attnum, a.attname ORDER BY a.attnum) \
             FROM pg_catalog.pg_constraint c \
             WHERE c.conrelid = $1::text::regclass AND c.conname = $2",
            &[&format!("pg_temp.{PROBE}"), &PROBE],
        )
        .await?;
    Ok(ReadFilter { canonical: row.get(0), columns: row.get(1) })
}

/// What is wrong when the replica identity lacks filter columns, and the
/// SQL that fixes it.
pub fn identity_problem(
    field: &str,
    table: &str,
    quoted: &str,
    missing: &[&str],
) -> (String, String) {
    (
        format!(
            "{field} reads {} of {table}, which its replica identity does not carry: once a \
             publication filters on it, Postgres refuses every UPDATE and DELETE of the table \
             (\"column used in the publication WHERE expression is not part of the replica \
             identity\")",
            missing.join(", ")
        ),
        format!(
            "ALTER TABLE {quoted} REPLICA IDENTITY FULL (or REPLICA IDENTITY USING INDEX, a \
             unique index on columns that include them)"
        ),
    )
}
