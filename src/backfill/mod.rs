//! Backfills: re-sending current rows while the daemon streams, without ever
//! overwriting a newer change from the stream with an older copied value.
//!
//! # How a backfill yields to the stream (watermarks, as in Netflix's DBLog)
//!
//! ```text
//!  runner:    emit L(c) ──▶ SELECT chunk c ──▶ hand rows to the pipeline ──▶ emit H(c)
//!  stream:    … L(c) … changes of keys k1, k2 … H(c) …
//!  pipeline:  at L(c) open a window; note every key the stream changes;
//!             at H(c) send the chunk's rows except the noted keys, then go on.
//! ```
//!
//! `L` and `H` are transactional logical messages
//! (`pg_logical_emit_message(true, 'ciosync.backfill', …)`), so they reach the
//! stream in commit order. A row the SELECT read can only be older than a
//! change the stream carries if that change committed after `L`; such keys
//! are noted in the window and dropped from the chunk, because the stream
//! already delivered (or will deliver, in order) the newer value. The rest of
//! the chunk is sent at `H`'s position in the stream, so every later change
//! of those rows follows it. The stream sends only the attributes that
//! changed, so a key left to it is read again in a later window, until it is
//! sent (or ten tries later, if the stream keeps changing it).
//!
//! Two details make the rule hold: after `L` the runner waits for every
//! transaction then in progress to end (a commit can be in the WAL before `L`
//! yet not visible to the read), and copied rows carry Postgres's clock as
//! their `timestamp`, the clock of the commit times around them. One chunk is in flight at a time, which bounds
//! memory to one page of rows.
//!
//! Backfills are requested with `ciosync backfill` (rows in
//! `ciosync.backfills`) and run by the daemon of the slot, which resumes an
//! unfinished one after a restart from its last delivered key.

pub mod command;
pub mod runner;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use tokio::sync::oneshot;

use crate::customer::CustomerOp;

/// The logical message prefix of backfill watermarks.
pub const WATERMARK_PREFIX: &str = "ciosync.backfill";

/// One chunk of one backfill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkId {
    pub backfill: i64,
    pub chunk: u64,
}

/// A watermark read back from the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watermark {
    /// Before the chunk's SELECT.
    Low(ChunkId),
    /// After it.
    High(ChunkId),
}

/// The message content of a watermark: `L|H <slot> <backfill> <chunk>`. The
/// slot is part of it so daemons of other slots on the same database ignore it.
pub fn watermark_content(slot: &str, watermark: Watermark) -> String {
    let (kind, id) = match watermark {
        Watermark::Low(id) => ("L", id),
        Watermark::High(id) => ("H", id),
    };
    format!("{kind} {slot} {} {}", id.backfill, id.chunk)
}

/// Parses a watermark for `slot`; `None` for anything else.
pub fn parse_watermark(slot: &str, content: &[u8]) -> Option<Watermark> {
    let text = std::str::from_utf8(content).ok()?;
    let mut parts = text.split(' ');
    let kind = parts.next()?;
    if parts.next()? != slot {
        return None;
    }
    let id = ChunkId { backfill: parts.next()?.parse().ok()?, chunk: parts.next()?.parse().ok()? };
    if parts.next().is_some() {
        return None;
    }
    match kind {
        "L" => Some(Watermark::Low(id)),
        "H" => Some(Watermark::High(id)),
        _ => None,
    }
}

/// A chunk's rows, handed from the runner to the pipeline.
#[derive(Debug)]
pub struct Chunk {
    /// `schema.table`.
    pub table: String,
    /// Each row's key and the operations that send it.
    pub rows: Vec<(String, Vec<CustomerOp>)>,
    /// Told, once the rest is accepted, which keys were left to the stream.
    pub delivered: oneshot::Sender<Vec<String>>,
}

/// What the pipeline sends at a chunk's high watermark.
#[derive(Debug)]
pub struct Closed {
    /// Operations of the rows the stream did not change meanwhile.
    pub ops: Vec<CustomerOp>,
    /// Keys left to the stream (changed inside the window); the runner
    /// reads them again so their other attributes are sent too.
    pub yielded: Vec<String>,
    /// To tell the runner once `ops` are accepted.
    pub delivered: oneshot::Sender<Vec<String>>,
}

#[derive(Debug, Default)]
struct Window {
    open: bool,
    table: Option<String>,
    changed: HashSet<String>,
    chunk: Option<Chunk>,
}

/// The chunks between their watermarks, shared by the runner and the pipeline.
#[derive(Debug, Default)]
pub struct Windows {
    inner: Mutex<HashMap<ChunkId, Window>>,
}

impl Windows {
    /// The runner hands over a chunk (before emitting its high watermark).
    pub fn put(&self, id: ChunkId, chunk: Chunk) {
        let mut inner = self.lock();
        let window = inner.entry(id).or_default();
        window.table = Some(chunk.table.clone());
        window.chunk = Some(chunk);
    }

    /// The pipeline saw the low watermark: from now on, note changed keys.
    pub fn open(&self, id: ChunkId) {
        self.lock().entry(id).or_default().open = true;
    }

    /// Whether no window is open (the common case, checked per change).
    pub fn is_idle(&self) -> bool {
        self.lock().values().all(|w| !w.open)
    }

    /// The pipeline saw a change of `table` touching `keys`.
    pub fn observe(&self, table: &str, keys: &[String]) {
        for window in self.lock().values_mut().filter(|w| w.open) {
            // Until the runner hands the chunk over, the table is unknown:
            // note every key; a key of another table cannot be in the chunk.
            if window.table.as_deref().is_none_or(|t| t == table) {
                window.changed.extend(keys.iter().cloned());
            }
        }
    }

    /// The pipeline saw the high watermark: the chunk without the keys the
    /// stream changed in between. `None` if no chunk was handed over (a
    /// watermark from before a restart).
    pub fn close(&self, id: ChunkId) -> Option<Closed> {
        let window = self.lock().remove(&id)?;
        let chunk = window.chunk?;
        let mut ops = Vec::new();
        let mut yielded = Vec::new();
        for (key, row_ops) in chunk.rows {
            if window.changed.contains(&key) {
                yielded.push(key);
            } else {
                ops.extend(row_ops);
            }
        }
        Some(Closed { ops, yielded, delivered: chunk.delivered })
    }

    /// Forgets a chunk the runner gave up on.
    pub fn abandon(&self, id: ChunkId) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ChunkId, Window>> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(id: &str) -> CustomerOp {
        CustomerOp::Delete { id: id.into() }
    }

    #[test]
    fn watermarks_round_trip_and_ignore_other_slots() {
        let id = ChunkId { backfill: 7, chunk: 3 };
        for w in [Watermark::Low(id), Watermark::High(id)] {
            assert_eq!(parse_watermark("s", watermark_content("s", w).as_bytes()), Some(w));
            assert_eq!(parse_watermark("other", watermark_content("s", w).as_bytes()), None);
        }
        assert_eq!(parse_watermark("s", b"X s 1 2"), None);
        assert_eq!(parse_watermark("s", b"L s 1"), None);
        assert_eq!(parse_watermark("s", b"L s 1 2 3"), None);
        assert_eq!(parse_watermark("s", &[0xff]), None);
    }

    #[test]
    fn keys_the_stream_changed_inside_the_window_are_left_to_the_stream() {
        let windows = Windows::default();
        let id = ChunkId { backfill: 1, chunk: 1 };
        windows.observe("public.users", &["1".into()]); // before L: not noted
        windows.open(id);
        assert!(!windows.is_idle());
        windows.observe("public.users", &["2".into()]); // before the chunk arrives
        let (tx, _rx) = oneshot::channel();
        let rows = ["1", "2", "3", "4"].iter().map(|k| (k.to_string(), vec![op(k)])).collect();
        windows.put(id, Chunk { table: "public.users".into(), rows, delivered: tx });
        windows.observe("public.other", &["3".into()]);
        windows.observe("public.users", &["4".into()]);
        let closed = windows.close(id).unwrap();
        assert_eq!(closed.ops, vec![op("1"), op("3")]);
        assert_eq!(closed.yielded, vec!["2".to_owned(), "4".to_owned()]);
        assert!(windows.is_idle());
        assert!(windows.close(id).is_none(), "closed once");
    }

    #[test]
    fn a_high_watermark_without_a_chunk_sends_nothing() {
        let windows = Windows::default();
        let id = ChunkId { backfill: 1, chunk: 9 };
        windows.open(id);
        assert!(windows.close(id).is_none());
    }
}
