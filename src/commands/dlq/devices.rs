//! `dlq retry` of a device letter (`add_device`, `delete_device`): what
//! the `[[devices]]` tables say of the device now, so a replay never brings
//! back a device deleted since, nor deletes one added back, nor sends
//! values older than the row's.

use std::sync::Arc;

use tokio_postgres::Client;

use crate::change::{RowChange, RowOp};
use crate::config::DevicesConfig;
use crate::customer::CustomerOp;
use crate::pg::quote::{quote_ident, quote_literal};
use crate::pg::PgError;
use crate::source::reader::TableReader;

/// The token of a device item's JSON (`device.token`).
pub(super) fn token_of(payload: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(payload).ok()?;
    value.get("device")?.get("token")?.as_str().map(str::to_owned)
}

/// The `[[devices]]` tables, each described once (on its first letter)
/// however many letters and rounds read it.
pub(super) struct Devices<'a> {
    configs: &'a [DevicesConfig],
    readers: Vec<Option<TableReader>>,
}

impl<'a> Devices<'a> {
    pub(super) fn new(configs: &'a [DevicesConfig]) -> Self {
        Self { configs, readers: configs.iter().map(|_| None).collect() }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.configs.is_empty()
    }

    /// The `add_device` the first devices table with a live row of
    /// `customer` holding `token` maps that row to, as the initial copy
    /// would; `None` when no table has one (deleted, or soft-deleted), or
    /// when either holds a NUL (no Postgres text can: no row has it).
    pub(super) async fn current(
        &mut self,
        sql: &Client,
        customer: &str,
        token: &str,
    ) -> Result<Option<CustomerOp>, PgError> {
        if customer.contains('\0') || token.contains('\0') {
            return Ok(None);
        }
        for (table, reader) in self.configs.iter().zip(&mut self.readers) {
            let reader = match reader {
                Some(reader) => reader,
                empty => empty.insert(TableReader::of_devices(sql, table).await?),
            };
            let condition = format!(
                "{}::text = {} AND {}::text = {}",
                quote_ident(&table.customer_id_column),
                quote_literal(customer),
                quote_ident(&table.token_column),
                quote_literal(token),
            );
            for (_, new) in reader.rows_where(sql, &condition, 10).await? {
                let change = RowChange {
                    table: Arc::clone(reader.table()),
                    op: RowOp::Insert { new },
                    commit_time: 0,
                    position: Default::default(),
                };
                let mapped = crate::mapping::devices::map(table, &change);
                if let Some(op @ CustomerOp::AddDevice(_)) = mapped.ops.into_iter().next() {
                    return Ok(Some(op));
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_read_from_either_device_item() {
        let add = r#"{"type":"person","action":"add_device","identifiers":{"id":"1"},"device":{"token":"t","platform":"ios"}}"#;
        assert_eq!(token_of(add).as_deref(), Some("t"));
        assert_eq!(token_of(r#"{"action":"identify"}"#), None);
        assert_eq!(token_of("not json"), None);
    }
}
