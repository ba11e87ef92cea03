//! What the catalogue says about the things ciosync depends on, read into
//! plain structs: the server's settings, the connected role, a table (its
//! columns, replica identity, keys and privileges), a publication and its
//! tables, and the replication slots. One query set, read by publication
//! and slot setup (`source::setup`) and by `ciosync check`, which then
//! decide over the structs without asking the database again: what a fact
//! means (a misfit, a finding) is theirs, how it is read is here.
//!
//! Every read is of the catalogue only (no table data) and needs no
//! privilege beyond connecting, so the least-privilege role can make each.

use tokio_postgres::{Client, Error};

use super::name::TableName;

/// The server's version and the settings replication depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// `server_version_num`, e.g. 170004.
    pub version_num: i32,
    /// `server_version` as the server prints it, e.g. `17.4`.
    pub version: String,
    /// Whether this is a standby (in recovery).
    pub in_recovery: bool,
    pub wal_level: String,
    pub max_replication_slots: i32,
    /// `synchronized_standby_slots` (PostgreSQL 17+); empty when unset or
    /// the server predates it.
    pub synchronized_standby_slots: String,
}

impl Server {
    pub async fn read(sql: &Client) -> Result<Self, Error> {
        let row = sql
            .query_one(
                "SELECT current_setting('server_version_num')::int, \
                        current_setting('server_version'), pg_catalog.pg_is_in_recovery(), \
                        current_setting('wal_level'), \
                        current_setting('max_replication_slots')::int, \
                        current_setting('synchronized_standby_slots', true)",
                &[],
            )
            .await?;
        Ok(Self {
            version_num: row.get(0),
            version: row.get(1),
            in_recovery: row.get(2),
            wal_level: row.get(3),
            max_replication_slots: row.get(4),
            synchronized_standby_slots: row.get::<_, Option<String>>(5).unwrap_or_default(),
        })
    }
}

/// Whether this session is encrypted (`pg_stat_ssl`); `None` when the view
/// does not show it.
pub async fn session_uses_tls(sql: &Client) -> Result<Option<bool>, Error> {
    let row = sql
        .query_opt("SELECT ssl FROM pg_catalog.pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// The connected role and what it may do outside any one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub name: String,
    /// The `REPLICATION` attribute.
    pub replication: bool,
    pub superuser: bool,
    /// The first of the provider roles asked about that it is a member of
    /// (a managed service's stand-in for `REPLICATION`).
    pub provider_replication_role: Option<String>,
    /// CREATE on the current database (schemas, publications).
    pub can_create_in_database: bool,
}

impl Role {
    /// Reads the current role; `provider_roles` are the roles that let a
    /// member replicate on managed services.
    pub async fn read(sql: &Client, provider_roles: &[&str]) -> Result<Self, Error> {
        let row = sql
            .query_one(
                // Through pg_roles, so a provider role this server lacks is no error.
                "SELECT current_user::text, me.rolreplication, me.rolsuper, \
                        (SELECT r.rolname::text FROM pg_catalog.pg_roles r \
                         WHERE r.rolname = ANY($1) \
                           AND pg_catalog.pg_has_role(current_user, r.oid, 'MEMBER') LIMIT 1), \
                        has_database_privilege(current_database(), 'CREATE') \
                 FROM pg_catalog.pg_roles me WHERE me.rolname = current_user",
                &[&provider_roles],
            )
            .await?;
        Ok(Self {
            name: row.get(0),
            replication: row.get(1),
            superuser: row.get(2),
            provider_replication_role: row.get(3),
            can_create_in_database: row.get(4),
        })
    }
}

/// `relreplident`: which old row an UPDATE or DELETE carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityKind {
    /// The primary key's columns (none without one).
    Default,
    Nothing,
    Full,
    /// The columns of the index chosen with `USING INDEX`.
    Index,
}

/// The columns a table's replica identity carries in the old row of an
/// UPDATE or DELETE: every column, or only some.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// `REPLICA IDENTITY FULL`.
    Full,
    /// The primary key (DEFAULT), the chosen index (USING INDEX), or none
    /// (NOTHING, or DEFAULT without a primary key).
    Columns(Vec<String>),
}

impl Identity {
    /// The columns of `read` the identity does not carry. Postgres refuses
    /// UPDATE and DELETE on a table published with a row filter that reads
    /// one ("column used in the publication WHERE expression is not part of
    /// the replica identity"), so each one is an error to fix before.
    pub fn missing<'a>(&self, read: &'a [String]) -> Vec<&'a str> {
        match self {
            Self::Full => Vec::new(),
            Self::Columns(carried) => {
                read.iter().filter(|c| !carried.contains(c)).map(String::as_str).collect()
            }
        }
    }
}

/// A column of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// `format_type` without modifiers: `text`, `jsonb`, `timestamp with time zone`.
    pub type_name: String,
    pub not_null: bool,
}

/// A relation named in the config, whatever its kind (check says when it is
/// not a table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// A plain or partitioned table (not a view, sequence, …).
    pub is_table: bool,
    pub partitioned: bool,
    pub identity_kind: IdentityKind,
    /// The key columns the replica identity names (the primary key's for
    /// DEFAULT, the chosen index's for INDEX; INCLUDE columns are not in it).
    pub identity_columns: Vec<String>,
    pub has_primary_key: bool,
    /// Columns that alone are the key of a unique index without a predicate.
    pub unique_columns: Vec<String>,
    /// The connected role can read it: SELECT on the table and USAGE on
    /// its schema.
    pub can_select: bool,
    /// USAGE on its schema for the connected role (without it, SELECT on
    /// the table reads nothing).
    pub schema_usage: bool,
    /// The connected role owns it (or is a member of its owner).
    pub owned: bool,
    /// In column order, dropped columns left out.
    pub columns: Vec<Column>,
}

impl Table {
    /// Reads `table`; `None` when no relation has that name.
    pub async fn read(sql: &Client, table: &TableName) -> Result<Option<Self>, Error> {
        let (schema, name) = table.parts();
        let row = sql
            .query_opt(
                "SELECT c.oid, c.relkind IN ('r', 'p'), c.relkind = 'p', c.relreplident::text, \
                    ARRAY(SELECT a.attname::text FROM pg_catalog.pg_index i \
                          JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid \
                           AND a.attnum = ANY ((i.indkey::int2[])[0:i.indnkeyatts - 1]) \
                          WHERE i.indrelid = c.oid \
                            AND ((c.relreplident = 'd' AND i.indisprimary) \
                              OR (c.relreplident = 'i' AND i.indisreplident)) \
                          ORDER BY a.attnum), \
                    EXISTS (SELECT 1 FROM pg_catalog.pg_index i \
                            WHERE i.indrelid = c.oid AND i.indisprimary), \
                    ARRAY(SELECT a.attname::text FROM pg_catalog.pg_index i \
                          JOIN pg_catalog.pg_attribute a \
                            ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
                          WHERE i.indrelid = c.oid AND i.indisunique AND i.indnkeyatts = 1 \
                            AND i.indpred IS NULL), \
                    has_table_privilege(c.oid, 'SELECT') \
                      AND has_schema_privilege(n.oid, 'USAGE'), \
                    pg_catalog.pg_has_role(c.relowner, 'USAGE'), \
                    has_schema_privilege(n.oid, 'USAGE') \
                 FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2",
                &[&schema, &name],
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let oid: u32 = row.get(0);
        let columns = sql
            .query(
                "SELECT attname::text, format_type(atttypid, NULL), attnotnull \
                 FROM pg_catalog.pg_attribute \
                 WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                &[&oid],
            )
            .await?
            .iter()
            .map(|r| Column { name: r.get(0), type_name: r.get(1), not_null: r.get(2) })
            .collect();
        Ok(Some(Self {
            is_table: row.get(1),
            partitioned: row.get(2),
            identity_kind: identity_kind(row.get(3)),
            identity_columns: row.get(4),
            has_primary_key: row.get(5),
            unique_columns: row.get(6),
            can_select: row.get(7),
            owned: row.get(8),
            schema_usage: row.get(9),
            columns,
        }))
    }

    /// The column of that name.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    pub fn has_column(&self, name: &str) -> bool {
        self.column(name).is_some()
    }

    /// The columns the old row of an UPDATE or DELETE carries.
    pub fn identity(&self) -> Identity {
        match self.identity_kind {
            IdentityKind::Full => Identity::Full,
            _ => Identity::Columns(self.identity_columns.clone()),
        }
    }
}

fn identity_kind(relreplident: String) -> IdentityKind {
    match relreplident.as_str() {
        "f" => IdentityKind::Full,
        "n" => IdentityKind::Nothing,
        "i" => IdentityKind::Index,
        _ => IdentityKind::Default,
    }
}

/// A publication, without its tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    pub name: String,
    oid: u32,
    /// `FOR ALL TABLES`.
    pub all_tables: bool,
    /// It publishes every INSERT, UPDATE and DELETE.
    pub publishes_all_changes: bool,
    /// `publish_via_partition_root`.
    pub via_root: bool,
}

/// How a publication has one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The table is partitioned.
    pub partitioned: bool,
    /// In the publication's own table list (not only through `FOR ALL
    /// TABLES` or `FOR TABLES IN SCHEMA`): the only place a row filter or a
    /// column list can be.
    pub listed: bool,
    /// Listed with a column list.
    pub some_columns: bool,
    /// The row filter as `pg_get_expr` prints it.
    pub row_filter: Option<String>,
}

impl Publication {
    /// Reads the publication `name`; `None` when it does not exist.
    pub async fn read(sql: &Client, name: &str) -> Result<Option<Self>, Error> {
        let row = sql
            .query_opt(
                "SELECT oid, puballtables, pubinsert AND pubupdate AND pubdelete, pubviaroot \
                 FROM pg_catalog.pg_publication WHERE pubname = $1",
                &[&name],
            )
            .await?;
        Ok(row.map(|row| Self {
            name: name.to_owned(),
            oid: row.get(0),
            all_tables: row.get(1),
            publishes_all_changes: row.get(2),
            via_root: row.get(3),
        }))
    }

    /// Whether it publishes the changes of `table` (in any way it can:
    /// listed, by schema, for all tables).
    pub async fn includes(&self, sql: &Client, table: &TableName) -> Result<bool, Error> {
        let (schema, name) = table.parts();
        let found = sql
            .query_opt(
                "SELECT 1 FROM pg_catalog.pg_publication_tables \
                 WHERE pubname = $1 AND schemaname = $2 AND tablename = $3",
                &[&self.name, &schema, &name],
            )
            .await?;
        Ok(found.is_some())
    }

    /// How it has `table`; `None` when no relation has that name.
    pub async fn member(&self, sql: &Client, table: &TableName) -> Result<Option<Member>, Error> {
        let (schema, name) = table.parts();
        let row = sql
            .query_opt(
                "SELECT c.relkind = 'p', r.prrelid IS NOT NULL, r.prattrs IS NOT NULL, \
                        pg_catalog.pg_get_expr(r.prqual, r.prrelid) \
                 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 LEFT JOIN pg_catalog.pg_publication_rel r ON r.prpubid = $3 AND r.prrelid = c.oid \
                 WHERE n.nspname = $1 AND c.relname = $2",
                &[&schema, &name, &self.oid],
            )
            .await?;
        Ok(row.map(|row| Member {
            partitioned: row.get(0),
            listed: row.get(1),
            some_columns: row.get(2),
            row_filter: row.get(3),
        }))
    }
}

/// A replication slot as `pg_replication_slots` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// `logical` or `physical`.
    pub slot_type: String,
    pub plugin: Option<String>,
    /// The database a logical slot belongs to.
    pub database: Option<String>,
    /// The database this session is connected to, to compare with.
    pub current_database: String,
    /// A session streams from it now.
    pub active: bool,
    pub confirmed_flush_lsn: Option<String>,
    /// `reserved`, `extended`, `unreserved` or `lost` (NULL once an
    /// invalidated slot's position is cleared).
    pub wal_status: Option<String>,
    /// Whether it is a failover slot; `None` before PostgreSQL 17.
    pub failover: Option<bool>,
}

impl Slot {
    /// Reads the slot `name`; `None` when there is none.
    pub async fn read(sql: &Client, name: &str) -> Result<Option<Self>, Error> {
        let row = sql
            .query_opt(
                // `failover` exists from PostgreSQL 17; read through jsonb so
                // one query serves every major (NULL before 17).
                "SELECT slot_type, plugin, database, active, confirmed_flush_lsn::text, \
                        current_database(), wal_status, (to_jsonb(s) ->> 'failover')::bool \
                 FROM pg_catalog.pg_replication_slots s WHERE slot_name = $1",
                &[&name],
            )
            .await?;
        Ok(row.map(|row| Self {
            slot_type: row.get(0),
            plugin: row.get(1),
            database: row.get(2),
            active: row.get(3),
            confirmed_flush_lsn: row.get(4),
            current_database: row.get(5),
            wal_status: row.get(6),
            failover: row.get(7),
        }))
    }
}

/// A physical slot: what a standby streams through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhysicalSlot {
    pub name: String,
    /// A standby streams through it now.
    pub active: bool,
    /// It holds an `xmin`: its standby sends `hot_standby_feedback`, which
    /// slot synchronisation needs.
    pub feedback: bool,
}

/// Every physical slot, by name.
pub async fn physical_slots(sql: &Client) -> Result<Vec<PhysicalSlot>, Error> {
    let rows = sql
        .query(
            "SELECT slot_name::text, active, xmin IS NOT NULL OR catalog_xmin IS NOT NULL \
             FROM pg_catalog.pg_replication_slots WHERE slot_type = 'physical' ORDER BY 1",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| PhysicalSlot { name: r.get(0), active: r.get(1), feedback: r.get(2) })
        .collect())
}

/// How many replication slots exist (of `max_replication_slots`).
pub async fn slots_in_use(sql: &Client) -> Result<i32, Error> {
    Ok(sql
        .query_one("SELECT count(*)::int FROM pg_catalog.pg_replication_slots", &[])
        .await?
        .get(0))
}

/// A schema and whether the connected role may use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schema {
    pub exists: bool,
    /// USAGE and CREATE on it (false when it does not exist).
    pub writable: bool,
}

impl Schema {
    pub async fn read(sql: &Client, name: &str) -> Result<Self, Error> {
        let row = sql
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1), \
                    COALESCE((SELECT has_schema_privilege(oid, 'CREATE') \
                                 AND has_schema_privilege(oid, 'USAGE') \
                              FROM pg_catalog.pg_namespace WHERE nspname = $1), false)",
                &[&name],
            )
            .await?;
        Ok(Self { exists: row.get(0), writable: row.get(1) })
    }
}

/// EXECUTE on `function` (a signature such as `pg_catalog.f(text)`).
pub async fn may_execute(sql: &Client, function: &str) -> Result<bool, Error> {
    Ok(sql.query_one("SELECT has_function_privilege($1, 'EXECUTE')", &[&function]).await?.get(0))
}

/// UPDATE on one column of `table`; an error when either does not exist.
pub async fn may_update_column(
    sql: &Client,
    table: &TableName,
    column: &str,
) -> Result<bool, Error> {
    let row = sql
        .query_one(
            "SELECT has_column_privilege($1::text::regclass, $2::text, 'UPDATE')",
            &[&table.quoted(), &column],
        )
        .await?;
    Ok(row.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn full_identity_carries_every_column() {
        assert!(Identity::Full.missing(&names(&["email_verified", "is_staff"])).is_empty());
    }

    #[test]
    fn a_key_identity_carries_only_its_columns() {
        let identity = Identity::Columns(names(&["id"]));
        let read = names(&["id", "is_staff"]);
        assert_eq!(identity.missing(&read), vec!["is_staff"]);
        assert_eq!(Identity::Columns(Vec::new()).missing(&read), vec!["id", "is_staff"]);
    }
}
