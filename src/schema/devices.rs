//! What a `[[devices]]` table needs from its table (see [`Needs`]).

use super::{Needs, Use};
use crate::config::DevicesConfig;

impl Needs {
    /// The uses of a `[[devices]]` table. Its customer, token and platform
    /// columns (and the soft-delete one) are structural: without them no
    /// device call can be mapped, so a break pauses under either setting.
    /// Device attributes and `last_used` go as strings or numbers whatever
    /// the column's type, so none is typed: under `skip` a broken one is
    /// left out of the calls.
    pub fn of_devices(devices: &DevicesConfig) -> Self {
        let uses = devices
            .columns()
            .into_iter()
            .map(|(key, column)| {
                let structural = !(key == "last_used_column" || key.starts_with("attributes."));
                Use { structural, ..Use::new(key, column, false) }
            })
            .collect();
        let (schema, name) = devices.schema_and_name();
        Self { table: format!("{schema}.{name}"), uses, policy: devices.on_schema_change }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_attributes_and_last_used_may_be_skipped() {
        let devices: DevicesConfig = toml::from_str(
            "table = \"d\"\ncustomer_id_column = \"u\"\ntoken_column = \"t\"\n\
             platform_column = \"p\"\nlast_used_column = \"l\"\n[attributes]\nv = \"v\"",
        )
        .unwrap();
        let needs = Needs::of_devices(&devices);
        assert_eq!(needs.table, "public.d");
        let structural: Vec<(&str, bool)> =
            needs.uses.iter().map(|u| (u.key.as_str(), u.is_structural())).collect();
        assert_eq!(
            structural,
            [
                ("customer_id_column", true),
                ("token_column", true),
                ("platform_column", true),
                ("last_used_column", false),
                ("attributes.v", false)
            ]
        );
    }
}
