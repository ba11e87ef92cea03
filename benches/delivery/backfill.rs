//! A backfill (issue 24 item 3) at 0 ms and at a realistic round trip, with
//! default settings, to the accept-only emulator. The daemon first copies
//! the table (`initial_sync`, timed as the comparison) and streams; then
//! `ciosync backfill --table public.users --detach` queues a backfill of
//! every row, and the rate is measured from that command's start until
//! `ciosync.backfills` says it is done (what `ciosync backfill --status`
//! prints, printed too). Like the initial copy, a backfill reads the table
//! in chunks, not the WAL: its limit is the request budget
//! (`max_requests_per_second` × `max_batch_ops`); `pg_recvlogical` has no
//! counterpart. No live writes run meanwhile: the stream is idle, so the
//! backfill has the whole budget.

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::copy::{copy_done, BUDGET_LIMIT};
use crate::harness::{create_users, progress, thousands, CpuMeter, Daemon, Emulator, Pg, Res};
use crate::scenarios::{busiest, Ctx, Figure};
use crate::throughput::realistic_latency_ms;

pub const BACKFILL_NAME: &str = "backfill at the realistic round trip / budget limit";
pub const BACKFILL_TARGET: &str = ">= 0.8";
const BACKFILL_ROWS: i64 = 200_000;
/// Requests the rate limiter lets through at once (governor's burst is
/// one second of the default budget).
const BURST_REQUESTS: f64 = 100.0;
const BATCH_OPS: f64 = 500.0;

/// `BENCH_BACKFILL_ROWS` (default 200,000): the table's rows.
fn rows() -> i64 {
    std::env::var("BENCH_BACKFILL_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(BACKFILL_ROWS)
}

/// The rate the budget allows for `rows` rows at most, its burst counted:
/// the first 100 requests go at once, the rest at 100 per second.
fn burst_bound(rows: i64) -> f64 {
    let requests = (rows as f64 / BATCH_OPS).ceil();
    let secs = (requests - BURST_REQUESTS).max(1.0) / (BUDGET_LIMIT / BATCH_OPS);
    rows as f64 / secs
}

/// What one latency's run measured: the copy's and the backfill's rows/s.
struct Rates {
    copy: f64,
    backfill: f64,
}

pub async fn backfill(ctx: &Ctx) -> Res<Figure> {
    let dir = ctx.scenario_dir("backfill")?;
    let rows = rows();
    let latency = realistic_latency_ms();
    println!(
        "\n7/7 backfill: {} users copied and streaming, then `ciosync backfill` of every row; \
         default settings, accept-only emulator, no live writes meanwhile",
        thousands(rows as f64)
    );
    progress("backfill: starting postgres, loading the users");
    let pg = Pg::start().await?;
    let db = pg.connect().await?;
    create_users(&db, rows).await?;
    let mut measured = Vec::new();
    for (slot, latency_ms) in [("backfill_0ms", 0), ("backfill_rtt", latency)] {
        measured.push(run(ctx, &dir, &pg, &db, slot, latency_ms, rows).await?);
        // The slot would keep the WAL of the next run for nothing.
        db.execute("SELECT pg_drop_replication_slot($1)", &[&slot]).await?;
    }
    println!(
        "  the budget allows at most {} rows/s for {} rows (the limiter's first 100 requests \
         go at once): above 1.0 of 50,000/s is that burst; pg_recvlogical has no counterpart \
         (a backfill reads the table, not the WAL)",
        thousands(burst_bound(rows)),
        thousands(rows as f64)
    );
    let ratio = measured[1].backfill / BUDGET_LIMIT;
    Ok(Figure {
        name: BACKFILL_NAME,
        value: format!(
            "{ratio:.3} ({} rows/s at {latency} ms, {} at 0 ms; the copy {} and {})",
            thousands(measured[1].backfill),
            thousands(measured[0].backfill),
            thousands(measured[1].copy),
            thousands(measured[0].copy)
        ),
        target: BACKFILL_TARGET,
        met: Some(ratio >= 0.8),
        busiest: String::new(),
        requests_per_sec: None,
    })
}

/// The copy, then the backfill, at one round trip, on its own slot.
async fn run(
    ctx: &Ctx,
    dir: &std::path::Path,
    pg: &Pg,
    db: &Client,
    slot: &str,
    latency_ms: u64,
    rows: i64,
) -> Res<Rates> {
    progress(&format!("backfill: Customer.io round trip {latency_ms} ms, the initial copy first"));
    let emulator = Emulator::start_with(dir, &ctx.api_key, latency_ms, true)?;
    let started = Instant::now();
    let mut daemon = Daemon::start_copying(dir, pg, &emulator, &ctx.api_key, slot, "")?;
    let deadline = started + Duration::from_secs(900);
    while !copy_done(db, slot).await? {
        daemon.check_alive()?;
        if Instant::now() > deadline {
            return Err("the initial copy did not finish within 900 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let copy = rows as f64 / started.elapsed().as_secs_f64();
    daemon.wait_streaming(db).await?;
    let before = emulator.accepted().await?;

    progress(&format!("backfill: Customer.io round trip {latency_ms} ms, the backfill"));
    let mut cpu = CpuMeter::start(pg);
    cpu.watch("ciosync", daemon.pid(), false);
    cpu.watch("ciosync-emulator", emulator.pid(), false);
    let started = Instant::now();
    let queued =
        daemon.cli(&["backfill", "--table", "public.users", "--ignore-record", "--detach"])?;
    let id: i64 = queued
        .split_whitespace()
        .nth(1)
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| format!("ciosync backfill printed no id: {queued:?}"))?;
    let deadline = started + Duration::from_secs(900);
    let db_secs = loop {
        daemon.check_alive()?;
        cpu.sample();
        if let Some(secs) = backfill_done(db, id).await? {
            break secs;
        }
        if Instant::now() > deadline {
            return Err("the backfill did not finish within 900 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let secs = started.elapsed().as_secs_f64();
    cpu.finish(pg);
    let after = emulator.accepted().await?;
    let status = daemon.cli(&["backfill", "--status"])?;
    let _ = daemon.stop().await;
    let rate = rows as f64 / secs;
    println!(
        "  {latency_ms:>4} ms  copy     {:>8} rows/s (process start -> ciosync.initial_copy done)",
        thousands(copy)
    );
    println!(
        "          backfill {:>8} rows/s = {:.3} of the budget limit (100 x 500 = 50,000/s), \
         {:.3} of this copy: {secs:.2} s from `ciosync backfill` to done \
         ({db_secs:.2} s from started_at to finished_at); {} requests carrying {} items; \
         busiest: {}",
        thousands(rate),
        rate / BUDGET_LIMIT,
        rate / copy,
        thousands((after.requests - before.requests) as f64),
        thousands((after.items - before.items) as f64),
        busiest(&cpu, &["ciosync", "ciosync-emulator"], secs)
    );
    println!("          ciosync backfill --status: {}", status.trim());
    print!("{}", cpu.report("          "));
    Ok(Rates { copy, backfill: rate })
}

/// Seconds from start to finish once the backfill is done; `Err` if it
/// ended otherwise.
async fn backfill_done(db: &Client, id: i64) -> Res<Option<f64>> {
    let row = db
        .query_one(
            "SELECT state, error, extract(epoch FROM (finished_at - started_at))::float8 \
             FROM ciosync.backfills WHERE id = $1",
            &[&id],
        )
        .await?;
    let state: String = row.get(0);
    match state.as_str() {
        "done" => Ok(Some(row.get::<_, Option<f64>>(2).unwrap_or(0.0))),
        "queued" | "running" => Ok(None),
        other => {
            let error: Option<String> = row.get(1);
            Err(format!("the backfill ended {other}: {}", error.unwrap_or_default()).into())
        }
    }
}
