//! The four scenarios of issue 4. Each starts its own throwaway cluster,
//! emulator and daemon, prints its details as it goes, and returns the
//! figure for the summary.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ciosync_emulator::RecordedRequest;
use tokio::task::JoinSet;
use tokio_postgres::Client;

use crate::harness::{
    create_users, current_lsn, insert_users, peak_rss_kb, progress, thousands, wait_for_ack,
    wal_bytes, CpuMeter, Daemon, Emulator, Pg, Res, SLOT,
};

/// One line of the summary.
pub struct Figure {
    pub name: &'static str,
    pub value: String,
    pub target: &'static str,
    /// Whether the target is met; `None` when the scenario failed.
    pub met: Option<bool>,
    /// The process that used the most CPU while it was measured.
    pub busiest: String,
    /// Track API requests per second while ciosync delivered.
    pub requests_per_sec: Option<f64>,
}

impl Figure {
    pub fn failed(name: &'static str, target: &'static str, error: &str) -> Self {
        Self {
            name,
            value: format!("FAILED: {error}"),
            target,
            met: None,
            busiest: String::new(),
            requests_per_sec: None,
        }
    }
}

/// What every scenario shares.
pub struct Ctx {
    pub dir: PathBuf,
    pub api_key: String,
    pub pg_recvlogical: Option<PathBuf>,
}

impl Ctx {
    /// A fresh directory for one scenario's config and logs.
    pub fn scenario_dir(&self, name: &str) -> Res<PathBuf> {
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }
}

/// `n` connections for a driver.
async fn connections_for_driver(pg: &Pg, n: usize) -> Res<Vec<Arc<Client>>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(Arc::new(pg.connect().await?));
    }
    Ok(out)
}

/// `POST /api/v2/batch` requests that the log still holds, and the number
/// of Track API requests since the emulator started (the last `seq`).
pub fn batch_requests(log: &[RecordedRequest]) -> (Vec<&RecordedRequest>, u64, bool) {
    let total = log.last().map_or(0, |r| r.seq);
    let truncated = log.first().is_some_and(|r| r.seq > 1);
    let batches = log.iter().filter(|r| r.method == "POST" && r.path == "/api/v2/batch").collect();
    (batches, total, truncated)
}

/// The items of an accepted batch request.
pub fn items(request: &RecordedRequest) -> impl Iterator<Item = &serde_json::Value> {
    let accepted = (200..300).contains(&request.status);
    request
        .body
        .as_ref()
        .filter(|_| accepted)
        .and_then(|b| b.get("batch"))
        .and_then(|b| b.as_array())
        .into_iter()
        .flatten()
}

pub fn busiest(cpu: &CpuMeter, labels: &[&str], wall: f64) -> String {
    labels
        .iter()
        .filter_map(|l| cpu.seconds(l).map(|s| (l, s)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(l, s)| format!("{l} {:.0}%", 100.0 * s / wall.max(1e-9)))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------

pub const LATENCY_NAME: &str = "latency commit -> accepted, p50 / p99";
pub const LATENCY_TARGET: &str = "p99 <= 250 ms";
const LAT_USERS: i64 = 10_000;
const LAT_PER_TICK: i64 = 10;
const LAT_TICK: Duration = Duration::from_millis(10);
const LAT_SECONDS: u64 = 60;
const DRIVER_CONNECTIONS: usize = 4;

/// 1,000 single-row UPDATEs per second for 60 s, each stamping
/// `sent_ms` with the clock at the UPDATE; latency is the emulator's
/// arrival time minus that stamp.
pub async fn latency(ctx: &Ctx) -> Res<Figure> {
    let dir = ctx.scenario_dir("latency")?;
    println!("\n2/4 latency: commit -> request at the emulator, at a steady 1,000 changes/s");
    progress("latency: starting postgres, the emulator and ciosync");
    let pg = Pg::start().await?;
    let db = pg.connect().await?;
    create_users(&db, LAT_USERS).await?;
    let emulator = Emulator::start(&dir, &ctx.api_key)?;
    let mut daemon = Daemon::start(&dir, &pg, &emulator, &ctx.api_key, "")?;
    let walsender = daemon.wait_streaming(&db).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let conns = connections_for_driver(&pg, DRIVER_CONNECTIONS).await?;
    let mut statements = Vec::new();
    for c in &conns {
        statements.push(
            c.prepare(
                "UPDATE users SET sent_ms = (extract(epoch FROM clock_timestamp()) * 1000)::bigint \
                 WHERE id = $1",
            )
            .await?,
        );
    }
    progress("latency: driving 1,000 UPDATEs/s for 60 s");
    let mut cpu = CpuMeter::start(&pg);
    cpu.watch("ciosync", daemon.pid(), false);
    cpu.watch("ciosync-emulator", emulator.pid(), false);
    cpu.watch("postgres walsender (ciosync's slot)", walsender, false);
    let ticks = (LAT_SECONDS * 1000 / LAT_TICK.as_millis() as u64) as i64;
    let mut interval = tokio::time::interval(LAT_TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks: JoinSet<Result<u64, tokio_postgres::Error>> = JoinSet::new();
    let mut max_late = Duration::ZERO;
    let mut sent = 0u64;
    let started = Instant::now();
    for tick in 0..ticks {
        let scheduled = interval.tick().await;
        max_late = max_late.max(scheduled.elapsed());
        for j in 0..LAT_PER_TICK {
            let id = (tick * LAT_PER_TICK + j) % LAT_USERS + 1;
            let k = (j as usize) % conns.len();
            let (client, statement) = (conns[k].clone(), statements[k].clone());
            tasks.spawn(async move { client.execute(&statement, &[&id]).await });
        }
        while let Some(done) = tasks.try_join_next() {
            sent += done??;
        }
        if tick % 10 == 0 {
            cpu.sample();
        }
    }
    while let Some(done) = tasks.join_next().await {
        sent += done??;
    }
    let drive_secs = started.elapsed().as_secs_f64();
    let end_lsn = current_lsn(&db).await?;
    let acked =
        wait_for_ack(&db, SLOT, &end_lsn, &mut daemon, &mut cpu, Duration::from_secs(300)).await?;
    cpu.finish(&pg);
    let drain_secs = acked.duration_since(started).as_secs_f64() - drive_secs;
    let rss = peak_rss_kb(daemon.pid()).unwrap_or(0);
    let _ = daemon.stop().await;

    let log = emulator.requests().await?;
    let (batches, total, truncated) = batch_requests(&log);
    let mut latencies: Vec<i64> = batches
        .iter()
        .flat_map(|r| {
            items(r).filter_map(move |item| {
                let identify = item.get("action").and_then(|a| a.as_str()) == Some("identify");
                let stamp = item.get("attributes")?.get("sent_ms")?.as_i64()?;
                identify.then_some(r.received_at_ms - stamp)
            })
        })
        .collect();
    latencies.sort_unstable();
    if latencies.is_empty() {
        return Err("no identify with sent_ms reached the emulator".into());
    }
    let pct = |p: f64| {
        latencies[((p * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    let (p50, p90, p99, max) = (pct(0.50), pct(0.90), pct(0.99), *latencies.last().unwrap_or(&0));
    let mean = latencies.iter().sum::<i64>() as f64 / latencies.len() as f64;
    println!(
        "  workload        {} users; {} single-row UPDATEs (autocommit) of sent_ms, {LAT_PER_TICK} every \
         {} ms over {DRIVER_CONNECTIONS} connections: {:.0}/s achieved over {drive_secs:.1} s, \
         the driver at most {} ms behind schedule",
        thousands(LAT_USERS as f64),
        thousands(sent as f64),
        LAT_TICK.as_millis(),
        sent as f64 / drive_secs,
        max_late.as_millis()
    );
    println!(
        "  latency         p50 {p50} ms, p90 {p90} ms, p99 {p99} ms, max {max} ms, mean {mean:.1} ms \
         over {} identifies ({})",
        thousands(latencies.len() as f64),
        if truncated {
            "the emulator's log had dropped its oldest requests".to_owned()
        } else {
            format!("{} requests, none dropped from the log", thousands(total as f64))
        }
    );
    println!(
        "                  measured: sent_ms = clock_timestamp() inside the UPDATE -> received_at_ms \
         of the request carrying it (same clock, 1 ms resolution)"
    );
    println!(
        "  ciosync         {} requests ({:.1}/s, {:.1} changes each); slot acknowledged {drain_secs:.2} s \
         after the last UPDATE; peak RSS {:.1} MB",
        thousands(total as f64),
        total as f64 / drive_secs,
        latencies.len() as f64 / total.max(1) as f64,
        rss as f64 / 1024.0
    );
    print!("{}", cpu.report("                  "));
    let wall = drive_secs + drain_secs;
    Ok(Figure {
        name: LATENCY_NAME,
        value: format!("{p50} / {p99} ms"),
        target: LATENCY_TARGET,
        met: Some(p99 <= 250),
        busiest: busiest(
            &cpu,
            &["ciosync", "ciosync-emulator", "postgres walsender (ciosync's slot)"],
            wall,
        ),
        requests_per_sec: Some(total as f64 / drive_secs),
    })
}

// ---------------------------------------------------------------------------

pub const HOT_NAME: &str = "requests per change, hot rows";
pub const HOT_TARGET: &str = "<= 0.01";
const HOT_USERS: i64 = 100;
const HOT_CHANGES: usize = 10_000;

/// The users of the hot-row workload: a fixed pseudo-random sequence
/// (xorshift64), so every run sends the same updates in the same order.
fn hot_ids() -> Vec<i64> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..HOT_CHANGES)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % HOT_USERS as u64) as i64 + 1
        })
        .collect()
}

/// 10,000 single-row UPDATEs over 100 users, as fast as the driver goes;
/// counts the batch requests ciosync needs for them.
pub async fn hot_rows(ctx: &Ctx) -> Res<Figure> {
    let dir = ctx.scenario_dir("hot-rows")?;
    println!("\n3/4 requests per change: 10,000 UPDATEs over 100 users, as fast as possible");
    progress("hot rows: starting postgres, the emulator and ciosync");
    let pg = Pg::start().await?;
    let db = pg.connect().await?;
    create_users(&db, HOT_USERS).await?;
    let emulator = Emulator::start(&dir, &ctx.api_key)?;
    let mut daemon = Daemon::start(&dir, &pg, &emulator, &ctx.api_key, "")?;
    let walsender = daemon.wait_streaming(&db).await?;

    progress("hot rows: 10,000 UPDATEs");
    let mut cpu = CpuMeter::start(&pg);
    cpu.watch("ciosync", daemon.pid(), false);
    cpu.watch("ciosync-emulator", emulator.pid(), false);
    cpu.watch("postgres walsender (ciosync's slot)", walsender, false);
    let ids = Arc::new(hot_ids());
    let next = Arc::new(AtomicUsize::new(0));
    let conns = connections_for_driver(&pg, DRIVER_CONNECTIONS).await?;
    let started = Instant::now();
    let mut tasks: JoinSet<Res<()>> = JoinSet::new();
    for client in conns {
        let (ids, next) = (ids.clone(), next.clone());
        tasks.spawn(async move {
            let statement = client
                .prepare("UPDATE users SET counter = coalesce(counter, 0) + 1 WHERE id = $1")
                .await?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(id) = ids.get(i) else { return Ok(()) };
                client.execute(&statement, &[id]).await?;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let drive_secs = started.elapsed().as_secs_f64();
    let end_lsn = current_lsn(&db).await?;
    let acked =
        wait_for_ack(&db, SLOT, &end_lsn, &mut daemon, &mut cpu, Duration::from_secs(600)).await?;
    cpu.finish(&pg);
    let ack_secs = acked.duration_since(started).as_secs_f64();
    let _ = daemon.stop().await;

    // Every customer must hold its row's final counter.
    let rows = db.query("SELECT id::text, counter FROM users", &[]).await?;
    let customers = emulator.customers().await?;
    let behind = rows
        .iter()
        .filter(|row| {
            let id: String = row.get(0);
            let counter: Option<i64> = row.get(1);
            customers.get(&id).and_then(|a| a.get("counter")).and_then(|c| c.as_i64()) != counter
        })
        .count();
    let log = emulator.requests().await?;
    let (batches, total, truncated) = batch_requests(&log);
    let requests = if truncated { total } else { batches.len() as u64 };
    let items: usize = batches.iter().map(|r| items(r).count()).sum();
    let per_change = requests as f64 / HOT_CHANGES as f64;
    println!(
        "  workload        {} single-row UPDATEs (autocommit) of counter, users drawn by a fixed \
         pseudo-random sequence from {HOT_USERS}, over {DRIVER_CONNECTIONS} connections: {:.1} s, \
         {} changes/s",
        thousands(HOT_CHANGES as f64),
        drive_secs,
        thousands(HOT_CHANGES as f64 / drive_secs)
    );
    println!(
        "  ciosync         {} batch requests ({:.0}/s), {} identify items ({:.2} per change); slot \
         acknowledged {ack_secs:.1} s after the first UPDATE; customers with a stale counter: {behind}",
        thousands(requests as f64),
        requests as f64 / ack_secs,
        thousands(items as f64),
        items as f64 / HOT_CHANGES as f64
    );
    println!("  requests/change {per_change:.4}");
    print!("{}", cpu.report("                  "));
    Ok(Figure {
        name: HOT_NAME,
        value: format!(
            "{per_change:.4} ({} requests / {} changes)",
            thousands(requests as f64),
            thousands(HOT_CHANGES as f64)
        ),
        target: HOT_TARGET,
        met: Some(per_change <= 0.01),
        busiest: busiest(
            &cpu,
            &["ciosync", "ciosync-emulator", "postgres walsender (ciosync's slot)"],
            ack_secs,
        ),
        requests_per_sec: Some(requests as f64 / ack_secs),
    })
}

// ---------------------------------------------------------------------------

pub const RSS_NAME: &str = "ciosync peak RSS, one 1,000,000-row transaction";
/// Issue 24's target (issue 4 asked for 64 MB).
pub const RSS_TARGET: &str = "<= 32 MB";
const RSS_ROWS: i64 = 1_000_000;

/// One INSERT of 1,000,000 users while ciosync streams; ciosync's VmHWM
/// once the slot is acknowledged past the commit.
pub async fn peak_rss(ctx: &Ctx) -> Res<Figure> {
    let dir = ctx.scenario_dir("rss")?;
    println!("\n4/4 peak RSS: one INSERT of 1,000,000 rows, streamed and acknowledged");
    progress("rss: starting postgres, the emulator and ciosync");
    let pg = Pg::start().await?;
    let db = pg.connect().await?;
    create_users(&db, 0).await?;
    let emulator = Emulator::start(&dir, &ctx.api_key)?;
    let mut daemon = Daemon::start(&dir, &pg, &emulator, &ctx.api_key, "")?;
    let walsender = daemon.wait_streaming(&db).await?;
    let idle_rss = peak_rss_kb(daemon.pid()).unwrap_or(0);

    progress("rss: INSERT of 1,000,000 rows (one transaction)");
    let mut cpu = CpuMeter::start(&pg);
    cpu.watch("ciosync", daemon.pid(), false);
    cpu.watch("ciosync-emulator", emulator.pid(), false);
    cpu.watch("postgres walsender (ciosync's slot)", walsender, false);
    let start_lsn = current_lsn(&db).await?;
    // On its own connection, so CPU is sampled while it runs (the
    // walsender decodes the transaction as it is written).
    let writer = pg.connect().await?;
    let started = Instant::now();
    let insert = tokio::spawn(async move { insert_users(&writer, 1, RSS_ROWS).await });
    while !insert.is_finished() {
        cpu.sample();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    insert.await??;
    let committed = Instant::now();
    let end_lsn = current_lsn(&db).await?;
    let wal = wal_bytes(&db, &start_lsn, &end_lsn).await?;
    progress("rss: waiting for the acknowledgement");
    let acked =
        wait_for_ack(&db, SLOT, &end_lsn, &mut daemon, &mut cpu, Duration::from_secs(900)).await?;
    cpu.finish(&pg);
    let peak = peak_rss_kb(daemon.pid()).ok_or("cannot read ciosync's VmHWM")?;
    let emulator_peak = peak_rss_kb(emulator.pid()).unwrap_or(0);
    let _ = daemon.stop().await;
    let insert_secs = committed.duration_since(started).as_secs_f64();
    let deliver_secs = acked.duration_since(committed).as_secs_f64();
    let log = emulator.requests().await?;
    let (_, requests, _) = batch_requests(&log);
    let last = emulator.customer(&RSS_ROWS.to_string()).await?.is_some();
    let mb = peak as f64 / 1024.0;
    println!(
        "  workload        INSERT ... SELECT of {} users in one transaction: {insert_secs:.1} s, \
         {:.1} MB of WAL",
        thousands(RSS_ROWS as f64),
        wal as f64 / 1e6
    );
    println!(
        "  ciosync         peak RSS (VmHWM) {mb:.1} MB ({:.1} MB before the transaction); commit -> \
         acknowledged {deliver_secs:.1} s ({} rows/s), {} requests; last row at the emulator: {}",
        idle_rss as f64 / 1024.0,
        thousands(RSS_ROWS as f64 / deliver_secs),
        thousands(requests as f64),
        if last { "yes" } else { "NO" }
    );
    println!("                  emulator peak RSS {:.0} MB", emulator_peak as f64 / 1024.0);
    print!("{}", cpu.report("                  "));
    print!("{}", cpu.timeline("                  "));
    Ok(Figure {
        name: RSS_NAME,
        value: format!("{mb:.1} MB"),
        target: RSS_TARGET,
        met: Some(mb <= 32.0),
        busiest: busiest(
            &cpu,
            &["ciosync", "ciosync-emulator", "postgres walsender (ciosync's slot)"],
            insert_secs + deliver_secs,
        ),
        requests_per_sec: Some(requests as f64 / deliver_secs),
    })
}
