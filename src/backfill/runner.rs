//! The daemon's backfill runner: takes queued backfills from
//! `ciosync.backfills` one at a time and feeds their chunks between
//! watermarks (see the module above). Runs beside the pipeline, which sends
//! the chunks; live changes keep flowing meanwhile.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::readers::select_attributes;
use super::{Chunk, ChunkId, Handed, Watermark, Windows};
use crate::change::{Row, RowChange, RowOp, Table};
use crate::config::Config;
use crate::customer::CustomerOp;
use crate::error::error_chain;
use crate::mapping::report::{report, Producer};
use crate::mapping::Mapper;
use crate::pg::connection::ConnectionSettings;
use crate::pg::PgError;
use crate::schema::guard::Strip;
use crate::sink::estimated_bytes;
use crate::source::message::{watermark_content, WATERMARK_PREFIX};
use crate::source::reader::{postgres_now, TableReader};
use crate::state::{Backfill, State};
use crate::telemetry::Counters;

/// Rows per chunk, at most.
pub const CHUNK_ROWS: usize = 4000;
/// Rows of a backfill's first chunk, read before any row's width is known.
const FIRST_CHUNK_ROWS: usize = 100;
/// A chunk's operations hold at most this share of
/// `pipeline.max_pending_bytes` (1/`CHUNK_SHARE`), besides the budget: see
/// [`ChunkSize`].
pub const CHUNK_SHARE: usize = 4;
/// How often the runner looks for queued backfills: one read of the small
/// ciosync.backfills. Once a second cost a 200,000-row backfill a sixth of
/// its time from `ciosync backfill` to done (BENCHMARKS.md, issue 24).
const POLL: Duration = Duration::from_millis(200);
/// How long the runner waits after a failure before it tries again.
const RETRY: Duration = Duration::from_secs(5);

/// Runs backfills until `stop` is cancelled. Errors are logged and retried:
/// a backfill never stops the stream.
pub async fn run(
    settings: ConnectionSettings,
    config: Config,
    windows: Arc<Windows>,
    counters: Arc<Counters>,
    stop: CancellationToken,
) {
    let mapper = Mapper::new(&config.sync)
        .with_device_tables(&config.devices)
        .with_record(config.pipeline.record_accepted);
    let mapper = Mapping { mapper, counters };
    while !stop.is_cancelled() {
        if let Err(error) = serve(&settings, &config, &mapper, &windows, &stop).await {
            tracing::warn!(error = %error_chain(&error), "backfill runner failed; retrying");
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY) => {}
            _ = stop.cancelled() => {}
        }
    }
}

async fn serve(
    settings: &ConnectionSettings,
    config: &Config,
    mapper: &Mapping,
    windows: &Windows,
    stop: &CancellationToken,
) -> Result<(), PgError> {
    let sql = settings.connect_sql().await.map_err(PgError::sql("connect"))?;
    let state = State::open(&sql, &config.postgres.slot).await?;
    while !stop.is_cancelled() {
        match state.next_backfill().await? {
            Some(backfill) => {
                run_one(&sql, &state, config, mapper, windows, stop, backfill).await?
            }
            None => {
                tokio::select! {
                    _ = tokio::time::sleep(POLL) => {}
                    _ = stop.cancelled() => {}
                }
            }
        }
    }
    Ok(())
}

/// How many times keys the stream kept changing are read again before they
/// are left to the stream.
const MAX_REREADS: u32 = 10;
/// Chunks handed to the pipeline whose delivery the runner does not wait
/// for before reading the next are bounded by their bytes, not their
/// number: at most twice `pipeline.max_pending_bytes` of operations as
/// counted while they wait. The sink's memory budget bounds what is held;
/// it counts a batch in flight at what it holds, less than that (about
/// two thirds for narrow rows), so a window of one budget bound a backfill
/// at 150 ms to 0.63 of the request budget, two of them let it reach 0.87
/// (BENCHMARKS.md, "counting a batch in flight at what it holds"). A count
/// was the wrong bound for narrow rows: 16 chunks of 1,000 rows held a
/// 150 ms round trip to 0.65 (issue 24). A kill -9 re-reads what was
/// undelivered: up to twice `max_pending_bytes` and a chunk (32 and 4 MiB
/// by default, about 15,000 rows of 6 attributes), which the record of
/// what Customer.io accepted then mostly leaves unsent (with the record
/// off, it is all sent again).
fn undelivered_bytes(config: &Config) -> usize {
    2 * config.pipeline.max_pending_bytes
}

/// Chunk numbers: unique for the life of the process, so a retried backfill
/// never meets a window left from an earlier attempt, and counted from the
/// clock at start (microseconds since the epoch; a chunk takes far longer
/// than one), so the watermarks an earlier process left in the slot never
/// name a chunk of this one.
static NEXT_CHUNK: LazyLock<AtomicU64> = LazyLock::new(|| {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    AtomicU64::new(now.as_micros() as u64)
});

/// Which rows a chunk reads.
enum Selection<'a> {
    /// The next page after this key, of at most this many rows.
    After(Option<&'a str>, usize),
    /// These keys again (the stream touched them inside an earlier window).
    Keys(&'a [String]),
}

/// What a delivered chunk read.
struct ChunkDone {
    /// Rows of the chunk (read and kept: see [`fit`]).
    rows_read: usize,
    /// Estimated bytes of their operations.
    bytes: usize,
    /// Rows may follow: the page was full, or rows were left for the next.
    more: bool,
    last_key: Option<String>,
    /// Keys the stream changed inside the window: not sent, to read again.
    yielded: Vec<String>,
    /// Fires once the chunk's operations were delivered.
    delivered: oneshot::Receiver<()>,
}

/// Chunks handed to the pipeline and not yet delivered, oldest first, each
/// with the progress to record once it and every one before it are.
#[derive(Default)]
struct Undelivered {
    chunks: VecDeque<(oneshot::Receiver<()>, Option<Progress>, usize)>,
    /// The bytes of `chunks`' operations.
    bytes: usize,
}

impl Undelivered {
    fn push(&mut self, delivered: oneshot::Receiver<()>, progress: Option<Progress>, bytes: usize) {
        self.bytes += bytes;
        self.chunks.push_back((delivered, progress, bytes));
    }

    fn pop(&mut self) -> Option<Option<Progress>> {
        let (_, progress, bytes) = self.chunks.pop_front()?;
        self.bytes -= bytes;
        Some(progress)
    }
}

/// A chunk's last key and the rows done with it.
type Progress = (String, i64);

/// Why recording progress stopped the run.
enum Settled {
    /// Every chunk delivered so far is recorded; go on.
    Going,
    /// Shutdown, a cancelled backfill, or a chunk the session dropped (it
    /// ended before delivering it): the next run resumes from the last
    /// recorded key.
    Stop,
}

async fn run_one(
    sql: &tokio_postgres::Client,
    state: &State<'_>,
    config: &Config,
    mapper: &Mapping,
    windows: &Windows,
    stop: &CancellationToken,
    backfill: Backfill,
) -> Result<(), PgError> {
    let id = backfill.id;
    let outcome = run_chunks(sql, state, config, mapper, windows, stop, &backfill).await;
    if let Err(error) = &outcome {
        if !error.is_transient() {
            let message = error_chain(error);
            tracing::error!(backfill = id, error = %message, "backfill failed");
            state.end_backfill(id, "failed", Some(&message)).await?;
            return Ok(());
        }
    }
    outcome
}

async fn run_chunks(
    sql: &tokio_postgres::Client,
    state: &State<'_>,
    config: &Config,
    mapper: &Mapping,
    windows: &Windows,
    stop: &CancellationToken,
    backfill: &Backfill,
) -> Result<(), PgError> {
    let id = backfill.id;
    let replay;
    let (reader, retyped, mapper) = if backfill.events {
        replay = super::readers::mapping(sql, config, &mapper.counters, backfill).await?;
        (replay.1, Vec::new(), &replay.0)
    } else {
        let (reader, retyped) = super::readers::rows(sql, config, backfill).await?;
        (reader, retyped, mapper)
    };
    if super::readers::of_devices(config, backfill) {
        // Its chunks yield only to changes noted under the key they hold.
        windows
            .check_paging_key(&backfill.table, reader.key_columns())
            .map_err(PgError::Definite)?;
    }
    state.start_backfill(id).await?;
    let recorded_table = backfill.table.clone();
    // An event replay sends events, a devices backfill device calls: the
    // record keeps neither.
    let devices = super::readers::of_devices(config, backfill);
    let record = config.pipeline.record_accepted && !backfill.events && !devices;
    if record && backfill.ignore_record {
        // Its chunks forget their customers until they are sent again.
        crate::record::store::mark_complete(sql, &config.postgres.slot, &recorded_table, false)
            .await?;
    }
    tracing::info!(backfill = id, table = %backfill.table, events = backfill.events, resume = backfill.last_key.is_some(), "backfill running");
    let mut size = ChunkSize::new(config.pipeline.max_pending_bytes / CHUNK_SHARE);
    let chunk = ChunkReader {
        sql,
        reader: &reader,
        mapper,
        windows,
        backfill,
        slot: &config.postgres.slot,
        stop,
        max_bytes: size.max_bytes,
        retyped: &retyped,
    };
    let mut after = backfill.last_key.clone();
    let mut rows_done = backfill.rows_done;
    let mut undelivered = Undelivered::default();
    let window = undelivered_bytes(config);
    let mut reread: Vec<String> = Vec::new();
    let mut rereads = 0;
    // Rows left to the stream (it changed them inside their window), each
    // time: said when the backfill ends.
    let mut rows_yielded = 0;
    let mut pages_left = true;
    while pages_left || !reread.is_empty() {
        if !reread.is_empty() {
            if rereads == MAX_REREADS {
                tracing::warn!(
                    backfill = id,
                    keys = reread.len(),
                    "rows the stream keeps changing are left to it"
                );
                reread.clear();
                continue;
            }
            rereads += 1;
            let Some(done) = chunk.send(Selection::Keys(&reread)).await? else { return Ok(()) };
            rows_yielded += done.yielded.len();
            reread = done.yielded;
            undelivered.push(done.delivered, None, done.bytes);
        } else {
            let selection = Selection::After(after.as_deref(), size.rows);
            let Some(done) = chunk.send(selection).await? else { return Ok(()) };
            size.learn(done.rows_read, done.bytes);
            rows_done += done.rows_read as i64;
            rows_yielded += done.yielded.len();
            reread = done.yielded;
            rereads = 0;
            let progress = done.last_key.map(|key| (key, rows_done));
            after = progress.as_ref().map(|(key, _)| key.clone()).or(after);
            undelivered.push(done.delivered, progress, done.bytes);
            pages_left = done.more;
        }
        if let Settled::Stop = settle(state, id, &mut undelivered, window, stop).await? {
            return Ok(());
        }
    }
    if let Settled::Stop = settle(state, id, &mut undelivered, 0, stop).await? {
        return Ok(());
    }
    if record && backfill.where_clause.is_none() && backfill.attributes.is_none() {
        // Every row that syncs was identified and, once accepted, recorded.
        crate::record::store::mark_complete(sql, &config.postgres.slot, &recorded_table, true)
            .await?;
    }
    state.end_backfill(id, "done", None).await?;
    tracing::info!(backfill = id, rows_done, rows_yielded, "backfill done");
    Ok(())
}

/// Records the progress of the chunks delivered, in order, waiting for the
/// oldest while the undelivered hold more than `keep` bytes (or any, with
/// `keep` 0).
async fn settle(
    state: &State<'_>,
    id: i64,
    undelivered: &mut Undelivered,
    keep: usize,
    stop: &CancellationToken,
) -> Result<Settled, PgError> {
    loop {
        let over = undelivered.bytes > keep || (keep == 0 && !undelivered.chunks.is_empty());
        let Some((delivered, _, _)) = undelivered.chunks.front_mut() else {
            return Ok(Settled::Going);
        };
        let arrived = if over {
            tokio::select! {
                arrived = delivered => arrived.is_ok(),
                _ = stop.cancelled() => return Ok(Settled::Stop),
            }
        } else {
            match delivered.try_recv() {
                Ok(()) => true,
                Err(oneshot::error::TryRecvError::Empty) => return Ok(Settled::Going),
                Err(oneshot::error::TryRecvError::Closed) => false,
            }
        };
        if !arrived {
            return Ok(Settled::Stop);
        }
        if let Some(Some((key, rows_done))) = undelivered.pop() {
            if !state.backfill_progress(id, &key, rows_done).await? {
                tracing::info!(backfill = id, "backfill cancelled");
                return Ok(Settled::Stop);
            }
        }
    }
}

/// The mapper, with skipped rows and dropped attributes counted and logged
/// as the stream's are.
pub(super) struct Mapping {
    pub(super) mapper: Mapper,
    pub(super) counters: Arc<Counters>,
}

impl Mapping {
    fn ops(&self, change: &RowChange) -> Vec<CustomerOp> {
        let mapped = self.mapper.map(change);
        report(&mapped, &change.table, Producer::Backfill, &self.counters);
        mapped.ops
    }
}

/// Sends chunks of one backfill between watermarks.
struct ChunkReader<'a> {
    sql: &'a tokio_postgres::Client,
    reader: &'a TableReader,
    mapper: &'a Mapping,
    windows: &'a Windows,
    backfill: &'a Backfill,
    slot: &'a str,
    stop: &'a CancellationToken,
    /// What one chunk's operations may hold (see [`ChunkSize`]).
    max_bytes: usize,
    /// Attributes left out: their columns' JSON type changed.
    retyped: &'a [String],
}

impl ChunkReader<'_> {
    /// One chunk: low watermark, read, hand over, high watermark, wait until
    /// the pipeline delivered it. `None` on shutdown. The window is
    /// abandoned on every way out but delivery, so its low watermark, if
    /// the pipeline reads it only later, opens nothing.
    async fn send(&self, selection: Selection<'_>) -> Result<Option<ChunkDone>, PgError> {
        if self.stop.is_cancelled() {
            return Ok(None);
        }
        let id = ChunkId {
            backfill: self.backfill.id,
            chunk: NEXT_CHUNK.fetch_add(1, Ordering::Relaxed),
        };
        self.windows.begin(id, &self.backfill.table);
        let result = self.send_window(id, selection).await;
        if !matches!(result, Ok(Some(_))) {
            self.windows.abandon(id);
        }
        result
    }

    async fn send_window(
        &self,
        id: ChunkId,
        selection: Selection<'_>,
    ) -> Result<Option<ChunkDone>, PgError> {
        emit(self.sql, self.slot, Watermark::Low(id)).await?;
        // A transaction whose commit is in the WAL before L may not be
        // visible yet; let every transaction running now end before reading.
        wait_for_running_transactions(self.sql, self.stop).await?;
        let timestamp = postgres_now(self.sql).await?;
        let (rows, page_rows) = match selection {
            Selection::After(after, limit) => {
                (self.reader.page(self.sql, after, limit).await?, Some(limit))
            }
            Selection::Keys(keys) => (self.reader.rows_with_keys(self.sql, keys).await?, None),
        };
        let page_full = page_rows.is_some_and(|limit| rows.len() == limit);
        let mut rows: Vec<(String, Vec<CustomerOp>)> = rows
            .into_iter()
            .map(|(key, new)| {
                let change = if self.backfill.events {
                    super::readers::as_insert(self.reader.table(), new, timestamp)
                } else {
                    as_change(self.reader.table(), new, timestamp)
                };
                let ops = self.mapper.ops(&change);
                (key, as_sent(ops, self.retyped, self.backfill.attributes.as_deref()))
            })
            .collect();
        // A page is cut to what fits; the rest is read with the next one.
        // Keys read again were all in an earlier chunk, which fitted: they
        // are not cut (their rows may have widened since, within reason).
        let (bytes, cut) = match page_rows {
            Some(_) => fit(&mut rows, self.max_bytes),
            None => (rows.iter().flat_map(|(_, ops)| ops).map(estimated_bytes).sum(), false),
        };
        let rows_read = rows.len();
        let last_key = rows.last().map(|(key, _)| key.clone());
        let more = page_full || cut;
        if self.backfill.ignore_record {
            // Forgotten before the chunk reaches the sink: sent whole. What
            // the stream has accepted since is recorded anew, truly.
            // People only: objects, relationships and devices are not in
            // the record (a person's record stays when their devices go).
            let person = |op: &&CustomerOp| {
                !matches!(
                    op,
                    CustomerOp::Object(_)
                        | CustomerOp::Relationship(_)
                        | CustomerOp::AddDevice(_)
                        | CustomerOp::DeleteDevice { .. }
                )
            };
            let customers: Vec<String> = rows
                .iter()
                .flat_map(|(_, ops)| ops.iter().filter(person).filter_map(CustomerOp::customer_id))
                .map(str::to_owned)
                .collect();
            crate::record::store::forget(self.sql, self.slot, &customers).await?;
        }
        let (handed, in_sink) = oneshot::channel();
        self.windows.put(id, Chunk { table: self.backfill.table.clone(), rows, handed });
        emit(self.sql, self.slot, Watermark::High(id)).await?;
        let in_sink = tokio::select! {
            in_sink = in_sink => in_sink.ok(),
            _ = self.stop.cancelled() => None,
        };
        // A dropped sender: the session restarted before the chunk went out;
        // the next run starts again from the last delivered key.
        Ok(in_sink.map(|Handed { yielded, delivered }| ChunkDone {
            rows_read,
            bytes,
            more,
            last_key,
            yielded,
            delivered,
        }))
    }
}

/// How many rows the next page reads, so that a chunk's operations hold
/// about `max_bytes` at most.
///
/// A chunk is held whole from its read until the pipeline reaches its high
/// watermark, beside the memory budget (the sink takes its operations
/// only as the budget has room, see `pipeline::session`), so its size is
/// bounded in bytes, not only in rows: 1,000 rows of a few KB each would
/// hold several times a small budget. The first page reads
/// [`FIRST_CHUNK_ROWS`]; each next one as many rows as fit `max_bytes` at
/// the previous chunk's bytes per row, between 1 and [`CHUNK_ROWS`]. A page
/// that still holds more (its rows are wider) is cut by [`fit`], so the
/// bound holds whatever the guess.
struct ChunkSize {
    max_bytes: usize,
    rows: usize,
}

impl ChunkSize {
    fn new(max_bytes: usize) -> Self {
        Self { max_bytes, rows: FIRST_CHUNK_ROWS }
    }

    /// A chunk of `rows` rows held `bytes`: size the next page after it.
    fn learn(&mut self, rows: usize, bytes: usize) {
        if rows == 0 {
            return;
        }
        let per_row = bytes.div_ceil(rows).max(1);
        self.rows = (self.max_bytes / per_row).clamp(1, CHUNK_ROWS);
    }
}

/// Keeps the leading rows whose operations' estimated bytes fit in
/// `max_bytes` (the first row always, however wide: a chunk makes
/// progress), drops the rest; the bytes kept and whether any row was
/// dropped.
fn fit(rows: &mut Vec<(String, Vec<CustomerOp>)>, max_bytes: usize) -> (usize, bool) {
    let mut total = 0;
    for (index, (_, ops)) in rows.iter().enumerate() {
        let bytes: usize = ops.iter().map(estimated_bytes).sum();
        if index > 0 && total + bytes > max_bytes {
            rows.truncate(index);
            return (total, true);
        }
        total += bytes;
    }
    (total, false)
}

/// Waits until every transaction in progress now has ended.
async fn wait_for_running_transactions(
    sql: &tokio_postgres::Client,
    stop: &CancellationToken,
) -> Result<(), PgError> {
    let horizon: String = sql
        .query_one("SELECT pg_snapshot_xmax(pg_current_snapshot())::text", &[])
        .await
        .map_err(PgError::sql("read the transaction horizon"))?
        .get(0);
    loop {
        let passed: bool = sql
            .query_one(
                "SELECT pg_snapshot_xmin(pg_current_snapshot()) >= $1::text::xid8",
                &[&horizon],
            )
            .await
            .map_err(PgError::sql("read the transaction horizon"))?
            .get(0);
        if passed || stop.is_cancelled() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A row read now as a backfill maps it: an UPDATE with no old row, so
/// every mapped attribute goes (the record then leaves out what Customer.io
/// holds).
pub fn as_change(table: &Arc<Table>, row: Row, timestamp: i64) -> RowChange {
    RowChange {
        table: table.clone(),
        op: RowOp::Update { old: None, old_is_key_only: false, new: row },
        commit_time: timestamp,
        position: Default::default(),
    }
}

/// What a backfill sends of a row's operations: without the `retyped`
/// attributes (their column holds another JSON type than Customer.io has),
/// and only the `wanted` attributes when listed. `ciosync plan` counts the
/// same.
pub fn as_sent(
    mut ops: Vec<CustomerOp>,
    retyped: &[String],
    wanted: Option<&[String]>,
) -> Vec<CustomerOp> {
    if !retyped.is_empty() {
        let strip = Strip { attributes: retyped.to_vec(), ..Strip::default() };
        strip.apply(&mut ops);
    }
    select_attributes(ops, wanted)
}

async fn emit(
    sql: &tokio_postgres::Client,
    slot: &str,
    watermark: Watermark,
) -> Result<(), PgError> {
    sql.execute(
        "SELECT pg_catalog.pg_logical_emit_message(true, $1, $2)",
        &[&WATERMARK_PREFIX, &watermark_content(slot, watermark)],
    )
    .await
    .map_err(PgError::sql("write a backfill watermark"))?;
    Ok(())
}

#[cfg(test)]
#[path = "runner_tests.rs"]
mod tests;
