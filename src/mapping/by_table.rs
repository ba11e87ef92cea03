//! Per-table entries of the mapper.

/// Entries by schema, then table name: looked up with the change's `&str`s,
/// so mapping a change allocates no key, and hashed with foldhash (the
/// names come from the config and the catalogue; issue 24).
#[derive(Debug, Clone)]
pub(super) struct ByTable<T>(foldhash::HashMap<String, foldhash::HashMap<String, T>>);

impl<T> Default for ByTable<T> {
    fn default() -> Self {
        Self(foldhash::HashMap::default())
    }
}

impl<T> ByTable<T> {
    pub(super) fn of<'a>(entries: impl Iterator<Item = ((&'a str, &'a str), T)>) -> Self {
        let mut map = Self::default();
        for ((schema, name), entry) in entries {
            map.0.entry(schema.to_owned()).or_default().insert(name.to_owned(), entry);
        }
        map
    }

    pub(super) fn get(&self, schema: &str, name: &str) -> Option<&T> {
        self.0.get(schema)?.get(name)
    }

    pub(super) fn get_mut(&mut self, schema: &str, name: &str) -> Option<&mut T> {
        self.0.get_mut(schema)?.get_mut(name)
    }
}
