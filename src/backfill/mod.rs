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
//! their `timestamp`, the clock of the commit times around them.
//!
//! One chunk is read at a time, which bounds memory to one chunk and one
//! window: only the watermarks of the chunk the runner is working on
//! open a window, so a chunk abandoned between its watermarks leaves nothing
//! that notes keys (see [`Windows`]). A chunk is held whole, outside the
//! sink's memory budget, until the stream reaches its high watermark, so
//! its size is bounded in bytes too: its operations hold at most a quarter
//! of `pipeline.max_pending_bytes` (wide rows make chunks of fewer rows, see
//! `runner::ChunkSize`). At the high watermark the pipeline hands them to
//! the sink only as the budget has room.
//!
//! Reading is one window at a time, delivery is not: once a chunk's
//! operations are in the sink ([`Handed`]), the runner reads the next chunk
//! while they are in flight, and records a chunk's last key as progress
//! only once it and every chunk before it were delivered (at most twice
//! `pipeline.max_pending_bytes` of operations, counted as they wait, and a
//! chunk are undelivered), so a resume
//! after kill -9 starts after the last delivered chunk, as before. The
//! stream does not wait for a chunk's delivery at its high watermark
//! either.
//!
//! Backfills are requested with `ciosync backfill` (rows in
//! `ciosync.backfills`) and run by the daemon of the slot, which resumes an
//! unfinished one after a restart from its last delivered key.

mod readers;
pub mod runner;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use tokio::sync::oneshot;

use crate::customer::CustomerOp;
use crate::mapping::devices::device_alias;

pub use crate::source::message::{ChunkId, Watermark};

/// A chunk's rows, handed from the runner to the pipeline.
#[derive(Debug)]
pub struct Chunk {
    /// `schema.table`.
    pub table: String,
    /// Each row's key and the operations that send it.
    pub rows: Vec<(String, Vec<CustomerOp>)>,
    /// Told, once the rest is in the sink, which keys were left to the
    /// stream, and given the receiver that hears when the rest is accepted.
    pub handed: oneshot::Sender<Handed>,
}

/// A chunk in the sink, as the runner hears of it at its high watermark:
/// the next chunk may be read now, its progress recorded once `delivered`
/// fires. A dropped sender (the session ended first) means the chunk may
/// not have gone out: the runner resumes from the last key it recorded.
#[derive(Debug)]
pub struct Handed {
    /// Keys left to the stream (changed inside the window), to read again.
    pub yielded: Vec<String>,
    /// Fires once every operation of the chunk completed.
    pub delivered: oneshot::Receiver<()>,
}

/// What the pipeline sends at a chunk's high watermark.
#[derive(Debug)]
pub struct Closed {
    /// Operations of the rows the stream did not change meanwhile.
    pub ops: Vec<CustomerOp>,
    /// Keys left to the stream (changed inside the window); the runner
    /// reads them again so their other attributes are sent too.
    pub yielded: Vec<String>,
    /// To tell the runner once `ops` are in the sink (see [`Handed`]).
    pub handed: oneshot::Sender<Handed>,
}

/// Keys a window notes before its chunk is handed over, at most (about
/// 10 MB). Until then any key of the table may be in the chunk; past this
/// many the window stops telling them apart and leaves the whole chunk to
/// the stream (its rows are read again in a later window).
pub const MAX_NOTED_KEYS: usize = 100_000;

#[derive(Debug)]
struct Window {
    id: ChunkId,
    /// `schema.table` of the chunk.
    table: String,
    /// The low watermark came by: changes are noted from now on.
    open: bool,
    /// Keys of the table the stream changed since the low watermark: any
    /// key until the chunk arrives, then only the chunk's.
    changed: HashSet<String>,
    /// More than [`MAX_NOTED_KEYS`] changed before the chunk arrived, or a
    /// change whose keys could not be told came by: every row of the chunk
    /// counts as changed.
    all_changed: bool,
    chunk: Option<Chunk>,
    /// The chunk's keys, once it arrived.
    chunk_keys: Option<HashSet<String>>,
}

/// The window of the chunk in progress, shared by the runner and the
/// pipeline.
///
/// The runner works on one chunk at a time and says so ([`Windows::begin`])
/// before writing its low watermark, so only that chunk's watermarks count.
/// A low watermark of any other chunk opens nothing: a chunk abandoned
/// between its watermarks (its SELECT failed, its session ended) whose low
/// watermark the pipeline reads only later, or a chunk of an earlier process
/// read back from the slot, would otherwise open a window no high watermark
/// ever closes, noting every changed key forever. So at most one window
/// exists, it notes at most [`MAX_NOTED_KEYS`] keys, and it is gone once the
/// runner is done with its chunk: delivered, abandoned, or replaced by the
/// next.
#[derive(Debug, Default)]
pub struct Windows {
    current: Mutex<Option<Window>>,
    /// The columns the stream notes each `[[devices]]` table's changes
    /// under (`schema.table` → its paging key when the lease began).
    device_keys: HashMap<String, Vec<String>>,
}

impl Windows {
    /// Windows of a stream that notes the changes of each `[[devices]]`
    /// table (`schema.table`) under these columns.
    pub fn noting(device_keys: HashMap<String, Vec<String>>) -> Self {
        Self { current: Mutex::default(), device_keys }
    }

    /// A devices backfill pages `table` by `columns`: an error, unless the
    /// stream notes the table's changes under them too. The stream's key
    /// was read when the lease began; a primary key changed since (no
    /// Relation message tells) would leave every chunk blind to the
    /// stream's changes, and send back older values.
    pub fn check_paging_key(&self, table: &str, columns: &[String]) -> Result<(), String> {
        match self.device_keys.get(table) {
            Some(noted) if noted[..] != *columns => Err(format!(
                "{table} is paged by ({}) now, but the stream notes its changes under ({}), \
                 its key when ciosync started: restart ciosync (it reads the keys again when \
                 it takes the lease), then run the backfill again",
                columns.join(", "),
                noted.join(", ")
            )),
            _ => Ok(()),
        }
    }

    /// The runner starts chunk `id` of `table` (before writing its low
    /// watermark); any earlier window is forgotten.
    pub fn begin(&self, id: ChunkId, table: &str) {
        *self.lock() = Some(Window {
            id,
            table: table.to_owned(),
            open: false,
            changed: HashSet::new(),
            all_changed: false,
            chunk: None,
            chunk_keys: None,
        });
    }

    /// The runner hands over a chunk (before emitting its high watermark).
    /// Dropped, with its `delivered` sender, if the runner no longer works
    /// on that chunk.
    pub fn put(&self, id: ChunkId, chunk: Chunk) {
        // Built before the lock, which the stream takes on every change.
        let keys: HashSet<String> = chunk
            .rows
            .iter()
            .flat_map(|(key, ops)| std::iter::once(key.clone()).chain(aliases(ops)))
            .collect();
        let mut current = self.lock();
        let Some(window) = current.as_mut().filter(|w| w.id == id) else { return };
        // From now on only the chunk's keys matter.
        window.changed.retain(|key| keys.contains(key));
        window.changed.shrink_to_fit();
        window.chunk_keys = Some(keys);
        window.chunk = Some(chunk);
    }

    /// The pipeline saw the low watermark of `id`: from now on, note changed
    /// keys, if that is the chunk in progress (see above).
    pub fn open(&self, id: ChunkId) {
        if let Some(window) = self.lock().as_mut().filter(|w| w.id == id) {
            window.open = true;
        }
    }

    /// Whether no window is open (the common case, checked per change).
    pub fn is_idle(&self) -> bool {
        self.lock().as_ref().is_none_or(|w| !w.open)
    }

    /// The pipeline saw a change of `table` touching `keys`.
    pub fn observe(&self, table: &str, keys: &[String]) {
        let mut current = self.lock();
        let Some(window) = current.as_mut().filter(|w| w.open && w.table == table) else {
            return;
        };
        match &window.chunk_keys {
            Some(chunk_keys) => {
                let in_chunk = keys.iter().filter(|key| chunk_keys.contains(*key));
                window.changed.extend(in_chunk.cloned());
            }
            None if window.all_changed => {}
            None => {
                window.changed.extend(keys.iter().cloned());
                if window.changed.len() > MAX_NOTED_KEYS {
                    window.all_changed = true;
                    window.changed = HashSet::new();
                }
            }
        }
    }

    /// The pipeline saw a change of `table` whose keys it cannot tell
    /// (`mapping::Mapper::customer_ids`: neither the key the table is paged
    /// by nor the device): any row of the chunk may be it, so the whole
    /// chunk is left to the stream and read again (a row deleted meanwhile
    /// is then not found, so not sent back).
    pub fn observe_unknown(&self, table: &str) {
        let mut current = self.lock();
        if let Some(window) = current.as_mut().filter(|w| w.open && w.table == table) {
            window.all_changed = true;
            window.changed = HashSet::new();
        }
    }

    /// The pipeline saw the high watermark: the chunk without the keys the
    /// stream changed in between. `None` if it is not the chunk in progress
    /// or no chunk was handed over.
    pub fn close(&self, id: ChunkId) -> Option<Closed> {
        let window = {
            let mut current = self.lock();
            if current.as_ref().is_none_or(|w| w.id != id) {
                return None;
            }
            current.take()?
        };
        let chunk = window.chunk?;
        let mut ops = Vec::new();
        let mut yielded = Vec::new();
        // Usually nothing changed inside the window: no key to look up.
        let none_changed = window.changed.is_empty();
        for (key, row_ops) in chunk.rows {
            let changed = |key: &String| window.changed.contains(key);
            let moved = || changed(&key) || aliases(&row_ops).any(|a| changed(&a));
            if window.all_changed || (!none_changed && moved()) {
                yielded.push(key);
            } else {
                ops.extend(row_ops);
            }
        }
        Some(Closed { ops, yielded, handed: chunk.handed })
    }

    /// Forgets a chunk the runner gave up on; its watermarks, should they
    /// come by later, open nothing.
    pub fn abandon(&self, id: ChunkId) {
        let mut current = self.lock();
        if current.as_ref().is_some_and(|w| w.id == id) {
            *current = None;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Window>> {
        self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The devices a chunk's row sends, as the stream notes a device whose
/// change lacks the row's key (`mapping::devices::device_alias`).
fn aliases(ops: &[CustomerOp]) -> impl Iterator<Item = String> + '_ {
    ops.iter().filter_map(|op| match op {
        CustomerOp::AddDevice(device) => Some(device_alias(&device.customer, &device.token)),
        CustomerOp::DeleteDevice { customer, token } => Some(device_alias(customer, token)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(id: &str) -> CustomerOp {
        CustomerOp::Delete { id: id.into() }
    }

    fn chunk(keys: &[&str]) -> Chunk {
        let (tx, _rx) = oneshot::channel();
        let rows = keys.iter().map(|k| (k.to_string(), vec![op(k)])).collect();
        Chunk { table: "public.users".into(), rows, handed: tx }
    }

    fn keys(range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|k| k.to_string()).collect()
    }

    fn noted(windows: &Windows) -> usize {
        windows.lock().as_ref().map_or(0, |w| w.changed.len())
    }

    #[test]
    fn keys_the_stream_changed_inside_the_window_are_left_to_the_stream() {
        let windows = Windows::default();
        let id = ChunkId { backfill: 1, chunk: 1 };
        windows.begin(id, "public.users");
        windows.observe("public.users", &["1".into()]); // before L: not noted
        assert!(windows.is_idle());
        windows.open(id);
        assert!(!windows.is_idle());
        windows.observe("public.users", &["2".into()]); // before the chunk arrives
        windows.observe("public.other", &["3".into()]); // another table
        windows.put(id, chunk(&["1", "2", "3", "4"]));
        windows.observe("public.other", &["4".into()]);
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
        windows.begin(id, "public.users");
        windows.open(id);
        assert!(windows.close(id).is_none());
        assert!(windows.is_idle());
    }

    #[test]
    fn the_low_watermark_of_an_abandoned_chunk_opens_nothing() {
        let windows = Windows::default();
        let abandoned = ChunkId { backfill: 1, chunk: 1 };
        windows.begin(abandoned, "public.users");
        windows.abandon(abandoned);
        // The pipeline reaches the watermark only now.
        windows.open(abandoned);
        assert!(windows.is_idle());
        windows.observe("public.users", &keys(0..1000));
        assert_eq!(noted(&windows), 0);
        // Nor once the next chunk is in progress.
        let next = ChunkId { backfill: 1, chunk: 2 };
        windows.begin(next, "public.users");
        windows.open(abandoned);
        assert!(windows.is_idle());
        windows.open(next);
        assert!(!windows.is_idle());
    }

    #[test]
    fn the_next_chunk_ends_the_window_of_the_one_before() {
        let windows = Windows::default();
        let first = ChunkId { backfill: 1, chunk: 1 };
        windows.begin(first, "public.users");
        windows.open(first);
        windows.observe("public.users", &keys(0..500));
        assert_eq!(noted(&windows), 500);
        let second = ChunkId { backfill: 2, chunk: 2 };
        windows.begin(second, "public.users");
        assert_eq!(noted(&windows), 0, "the first window's keys are freed");
        assert!(windows.is_idle());
        assert!(windows.close(first).is_none());
        windows.abandon(first);
        windows.open(second);
        assert!(!windows.is_idle(), "abandoning another chunk leaves this one");
    }

    #[test]
    fn once_the_chunk_arrived_only_its_keys_are_noted() {
        let windows = Windows::default();
        let id = ChunkId { backfill: 1, chunk: 1 };
        windows.begin(id, "public.users");
        windows.open(id);
        windows.observe("public.users", &keys(0..2000));
        windows.put(id, chunk(&["5", "1999", "5000"]));
        assert_eq!(noted(&windows), 2, "the keys outside the chunk are dropped");
        windows.observe("public.users", &keys(2000..10_000));
        assert_eq!(noted(&windows), 3);
        let closed = windows.close(id).unwrap();
        assert!(closed.ops.is_empty());
        assert_eq!(closed.yielded, ["5", "1999", "5000"]);
    }

    #[test]
    fn a_devices_table_is_paged_by_the_key_the_stream_notes_under_or_not_at_all() {
        let names = |columns: &[&str]| columns.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        let keys = HashMap::from([("public.push_tokens".to_owned(), names(&["id"]))]);
        let windows = Windows::noting(keys);
        assert_eq!(windows.check_paging_key("public.push_tokens", &names(&["id"])), Ok(()));
        assert_eq!(windows.check_paging_key("public.users", &names(&["id"])), Ok(()));
        let error = windows
            .check_paging_key("public.push_tokens", &names(&["user_id", "token"]))
            .unwrap_err();
        assert!(error.contains("paged by (user_id, token) now"), "{error}");
        assert!(error.contains("notes its changes under (id)"), "{error}");
        assert!(error.contains("restart ciosync"), "{error}");
    }

    #[test]
    fn a_device_noted_without_its_key_leaves_the_rows_sending_it_to_the_stream() {
        let device = |customer: &str, token: &str| CustomerOp::DeleteDevice {
            customer: customer.into(),
            token: token.into(),
        };
        let (tx, _rx) = oneshot::channel();
        let rows = vec![("1".into(), vec![device("7", "a")]), ("2".into(), vec![device("7", "b")])];
        let windows = Windows::default();
        let id = ChunkId { backfill: 1, chunk: 1 };
        windows.begin(id, "public.users");
        windows.open(id);
        windows.observe("public.users", &[device_alias("7", "b")]);
        windows.put(id, Chunk { table: "public.users".into(), rows, handed: tx });
        let closed = windows.close(id).unwrap();
        assert_eq!(closed.ops, vec![device("7", "a")]);
        assert_eq!(closed.yielded, ["2"]);
    }

    #[test]
    fn a_change_whose_keys_are_unknown_leaves_the_whole_chunk_to_the_stream() {
        let windows = Windows::default();
        let id = ChunkId { backfill: 1, chunk: 1 };
        windows.begin(id, "public.users");
        windows.observe_unknown("public.users"); // before L: nothing
        windows.open(id);
        windows.observe_unknown("public.other");
        windows.put(id, chunk(&["a", "b"]));
        let closed = windows.close(id).unwrap();
        assert_eq!(closed.ops, vec![op("a"), op("b")], "another table's change is not this one");
        for before_the_chunk in [true, false] {
            let id = ChunkId { backfill: 1, chunk: 2 };
            windows.begin(id, "public.users");
            windows.open(id);
            if before_the_chunk {
                windows.observe_unknown("public.users");
            }
            windows.put(id, chunk(&["a", "b"]));
            if !before_the_chunk {
                windows.observe_unknown("public.users");
            }
            windows.observe("public.users", &["a".into()]);
            let closed = windows.close(id).unwrap();
            assert!(closed.ops.is_empty(), "any row of it may be the changed one");
            assert_eq!(closed.yielded, ["a", "b"]);
        }
    }

    #[test]
    fn a_window_that_noted_too_many_keys_leaves_the_whole_chunk_to_the_stream() {
        let windows = Windows::default();
        let id = ChunkId { backfill: 1, chunk: 1 };
        windows.begin(id, "public.users");
        windows.open(id);
        windows.observe("public.users", &keys(0..MAX_NOTED_KEYS));
        assert_eq!(noted(&windows), MAX_NOTED_KEYS);
        windows.observe("public.users", &keys(MAX_NOTED_KEYS..MAX_NOTED_KEYS + 1));
        assert_eq!(noted(&windows), 0, "past the limit nothing is kept");
        windows.observe("public.users", &keys(0..10));
        assert_eq!(noted(&windows), 0);
        windows.put(id, chunk(&["a", "b"]));
        let closed = windows.close(id).unwrap();
        assert!(closed.ops.is_empty(), "no row of it is known to be unchanged");
        assert_eq!(closed.yielded, ["a", "b"]);
    }
}
