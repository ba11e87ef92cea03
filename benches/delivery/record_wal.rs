//! Which of the WAL is ciosync's own, read with `pg_walinspect` (a contrib
//! extension, PostgreSQL 15+; without it the `record` scenario prints no
//! such column): the records touching a relation of the schema `ciosync`
//! (its tables, their indexes and TOAST), and every other record of the
//! transactions that wrote those (their commits). Bytes are the records'
//! `record_length`, so without the alignment and page headers that
//! `pg_wal_lsn_diff` counts as well.

use tokio_postgres::Client;

use crate::harness::{thousands, Res};

/// The relations of the schema `ciosync`, as a pattern on `block_ref`.
pub struct Ours {
    pattern: String,
}

impl Ours {
    /// `None` when `pg_walinspect` cannot be created (not installed).
    pub async fn of(db: &Client) -> Res<Option<Self>> {
        if db.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect").await.is_err() {
            return Ok(None);
        }
        let nodes: String = db
            .query_one(
                "WITH own AS (SELECT oid, reltoastrelid FROM pg_class \
                              WHERE relnamespace = 'ciosync'::regnamespace), \
                 toast AS (SELECT reltoastrelid AS oid FROM own WHERE reltoastrelid <> 0 \
                           UNION SELECT indexrelid FROM pg_index \
                           WHERE indrelid IN (SELECT reltoastrelid FROM own)) \
                 SELECT string_agg(pg_relation_filenode(oid)::text, '|') FROM \
                 (SELECT oid FROM own UNION SELECT oid FROM toast) AS r \
                 WHERE pg_relation_filenode(oid) IS NOT NULL",
                &[],
            )
            .await?
            .get(0);
        Ok(Some(Self { pattern: format!("rel [0-9]+/[0-9]+/({nodes})[^0-9]") }))
    }

    /// Bytes of ciosync's records between two positions.
    pub async fn bytes(&self, db: &Client, from: &str, to: &str) -> Res<i64> {
        // pg_get_wal_records_info refuses an empty range.
        if from == to {
            return Ok(0);
        }
        let row = db
            .query_one(
                "WITH r AS (SELECT xid, block_ref, record_length \
                            FROM pg_get_wal_records_info($1::text::pg_lsn, $2::text::pg_lsn)), \
                 writers AS (SELECT DISTINCT xid FROM r WHERE xid <> 0 AND block_ref ~ $3) \
                 SELECT coalesce(sum(record_length), 0)::bigint FROM r \
                 WHERE block_ref ~ $3 OR xid IN (SELECT xid FROM writers)",
                &[&from, &to, &self.pattern],
            )
            .await?;
        Ok(row.get(0))
    }

    /// ciosync's records between two positions by kind: `Heap/INSERT 12 (3,400 B)`.
    pub async fn kinds(&self, db: &Client, from: &str, to: &str) -> Res<String> {
        self.kinds_of(db, from, to, true).await
    }

    /// The other records (not ciosync's) between two positions, by kind.
    pub async fn others(&self, db: &Client, from: &str, to: &str) -> Res<String> {
        self.kinds_of(db, from, to, false).await
    }

    async fn kinds_of(&self, db: &Client, from: &str, to: &str, ours: bool) -> Res<String> {
        if from == to {
            return Ok("none".to_owned());
        }
        let rows = db
            .query(
                "WITH r AS (SELECT xid, block_ref, record_length, \
                                   resource_manager || '/' || record_type AS kind \
                            FROM pg_get_wal_records_info($1::text::pg_lsn, $2::text::pg_lsn)), \
                 writers AS (SELECT DISTINCT xid FROM r WHERE xid <> 0 AND block_ref ~ $3) \
                 SELECT kind, count(*), sum(record_length)::bigint FROM r \
                 WHERE (coalesce(block_ref, '') ~ $3 OR xid IN (SELECT xid FROM writers)) = $4 \
                 GROUP BY kind ORDER BY 3 DESC",
                &[&from, &to, &self.pattern, &ours],
            )
            .await?;
        let kinds: Vec<String> = rows
            .iter()
            .map(|r| {
                let (kind, count, bytes): (String, i64, i64) = (r.get(0), r.get(1), r.get(2));
                format!("{kind} {count} ({} B)", thousands(bytes as f64))
            })
            .collect();
        Ok(if kinds.is_empty() { "none".to_owned() } else { kinds.join(", ") })
    }
}
