//! `dlq retry` of a device letter (`add_device`, `delete_device`): whether
//! the device is still a row of a `[[devices]]` table, so a replay never
//! brings back a device deleted since, nor deletes one added back.

use tokio_postgres::Client;

use crate::config::DevicesConfig;
use crate::pg::quote::quote_ident;
use crate::pg::PgError;

/// The token of a device item's JSON (`device.token`).
pub(super) fn token_of(payload: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(payload).ok()?;
    value.get("device")?.get("token")?.as_str().map(str::to_owned)
}

/// Whether some `[[devices]]` table holds a row of `customer` with `token`
/// that is not soft-deleted.
pub(super) async fn is_live(
    sql: &Client,
    devices: &[DevicesConfig],
    customer: &str,
    token: &str,
) -> Result<bool, PgError> {
    for table in devices {
        let revoked = match &table.soft_delete_column {
            Some(column) => format!(" AND {} IS NULL", quote_ident(column)),
            None => String::new(),
        };
        let statement = format!(
            "SELECT EXISTS (SELECT 1 FROM {} WHERE {}::text = $1 AND {}::text = $2{revoked})",
            table.table.quoted(),
            quote_ident(&table.customer_id_column),
            quote_ident(&table.token_column),
        );
        let row = sql
            .query_one(&statement, &[&customer, &token])
            .await
            .map_err(PgError::sql("read a devices table"))?;
        if row.get::<_, bool>(0) {
            return Ok(true);
        }
    }
    Ok(false)
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
