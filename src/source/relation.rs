//! The relation cache: pgoutput names tables by OID and describes each one in
//! a Relation message before its first change in a session (and again after
//! every ALTER). This keeps the latest description per OID, with each
//! column's [`ValueKind`] resolved once.

use std::collections::HashMap;
use std::sync::Arc;

use crate::change::{ReplicaIdentity, Table, TableColumn};
use crate::mapping::value::{builtin_kind, ValueKind};
use crate::pg::PgError;
use crate::source::pgoutput::RelationColumn;

/// Deepest chain of domains and array element types followed.
const MAX_TYPE_DEPTH: usize = 8;

/// Tables by OID and value kinds by type OID.
#[derive(Debug, Default)]
pub struct RelationCache {
    tables: HashMap<u32, Arc<Table>>,
    kinds: HashMap<u32, ValueKind>,
}

impl RelationCache {
    /// The table last described under `oid`.
    pub fn get(&self, oid: u32) -> Option<&Arc<Table>> {
        self.tables.get(&oid)
    }

    /// Records a Relation message, resolving unknown column types with `sql`.
    pub async fn update(
        &mut self,
        sql: &tokio_postgres::Client,
        oid: u32,
        namespace: String,
        name: String,
        replica_identity: u8,
        columns: Vec<RelationColumn>,
    ) -> Result<Arc<Table>, PgError> {
        let mut resolved = Vec::with_capacity(columns.len());
        for column in columns {
            let kind = self.kind(sql, column.type_oid).await?;
            resolved.push(TableColumn { name: column.name, type_oid: column.type_oid, kind });
        }
        let table = Arc::new(Table {
            oid,
            // pgoutput sends an empty namespace for pg_catalog.
            schema: if namespace.is_empty() { "pg_catalog".to_owned() } else { namespace },
            name,
            columns: resolved,
            replica_identity: ReplicaIdentity::from_code(replica_identity)
                .unwrap_or(ReplicaIdentity::Default),
        });
        self.tables.insert(oid, table.clone());
        Ok(table)
    }

    /// The kind of a type: built in, or looked up in `pg_type` (domains take
    /// their base type's kind, arrays their element's, enums and the rest are text).
    pub async fn kind(
        &mut self,
        sql: &tokio_postgres::Client,
        type_oid: u32,
    ) -> Result<ValueKind, PgError> {
        if let Some(kind) = builtin_kind(type_oid) {
            return Ok(kind);
        }
        if let Some(kind) = self.kinds.get(&type_oid) {
            return Ok(kind.clone());
        }
        // Follow domains and arrays down to a known type, then wrap back up.
        let mut arrays = 0;
        let mut oid = type_oid;
        let mut base = ValueKind::Text;
        for _ in 0..MAX_TYPE_DEPTH {
            if let Some(kind) = builtin_kind(oid) {
                base = kind;
                break;
            }
            let row = sql
                .query_opt(
                    "SELECT typtype::text, typcategory::text, typelem, typbasetype \
                     FROM pg_catalog.pg_type WHERE oid = $1",
                    &[&oid],
                )
                .await
                .map_err(PgError::sql("look up a column type"))?;
            let Some(row) = row else { break };
            let typtype: String = row.get(0);
            let category: String = row.get(1);
            let elem: u32 = row.get(2);
            let basetype: u32 = row.get(3);
            if typtype == "d" && basetype != 0 {
                oid = basetype;
            } else if category == "A" && elem != 0 {
                arrays += 1;
                oid = elem;
            } else {
                break;
            }
        }
        let mut kind = base;
        for _ in 0..arrays {
            kind = ValueKind::Array(Box::new(kind));
        }
        self.kinds.insert(type_oid, kind.clone());
        Ok(kind)
    }
}
