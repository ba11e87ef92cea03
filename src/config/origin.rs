//! The replication origins ciosync's own writes carry (webhook write-backs,
//! webhook actions): the source skips transactions with them, so nothing
//! ciosync writes echoes back to Customer.io. Each is a small pool of
//! names, since an origin is active in one session at a time.

/// How many sessions may write under one base name at once: an origin is
/// active in one session at a time, and a second instance (see "Two
/// instances" in the README) needs its own, as does a session reconnecting
/// while its abandoned predecessor still holds one. (The reporting store
/// and the actions have bases of their own.) `origin`, then `origin#1` …
/// `origin#3`. Small:
/// each name once used keeps a place among the server's active origins
/// (`max_active_replication_origins` on PostgreSQL 18, 10 by default;
/// `max_replication_slots` before) until it is dropped.
pub const ORIGIN_POOL: usize = 4;

/// The origin names a session may bind for `origin`, in the order tried.
pub fn pooled(origin: &str) -> impl Iterator<Item = String> + '_ {
    (0..ORIGIN_POOL).map(move |n| if n == 0 { origin.to_owned() } else { format!("{origin}#{n}") })
}

/// Whether `name` (an Origin message's) is one of [`pooled`]`(origin)`.
pub fn is_pooled(name: &str, origin: &str) -> bool {
    name.starts_with(origin) && pooled(origin).any(|n| n == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_names_only_its_own_origins() {
        let names: Vec<String> = pooled("ciosync_write_back_s").collect();
        assert_eq!(names.len(), ORIGIN_POOL);
        assert_eq!(names[0], "ciosync_write_back_s");
        assert_eq!(names[3], "ciosync_write_back_s#3");
        assert!(names.iter().all(|n| is_pooled(n, "ciosync_write_back_s")));
        for other in [
            "ciosync_write_back_s1",
            "ciosync_write_back_s_1",
            "ciosync_write_back_s#4",
            "ciosync_write_back_s#+1",
            "ciosync_write_back_s#01",
            "ciosync_write_back_s#",
            "ciosync_write_back",
            "pg_16384",
        ] {
            assert!(!is_pooled(other, "ciosync_write_back_s"), "{other}");
        }
    }
}
