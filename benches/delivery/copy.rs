//! The initial copy (issue 24 item 3) at 0 ms and at a realistic round
//! trip, with default settings, to the accept-only emulator: from process
//! start until `ciosync.initial_copy` says the table is done. The copy reads
//! the table by pages, not the WAL, so its limit is the request budget
//! (`max_requests_per_second` × `max_batch_ops`); `pg_recvlogical` has no
//! counterpart here.

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::harness::{create_users, progress, thousands, CpuMeter, Daemon, Emulator, Pg, Res};
use crate::scenarios::{busiest, Ctx, Figure};
use crate::throughput::realistic_latency_ms;

pub const COPY_NAME: &str = "initial copy at the realistic round trip / budget limit";
pub const COPY_TARGET: &str = ">= 0.8";
const COPY_ROWS: i64 = 200_000;
/// ciosync's default request budget × batch size.
pub const BUDGET_LIMIT: f64 = 100.0 * 500.0;

/// `BENCH_COPY_ROWS` (default 200,000): the table's rows.
fn rows() -> i64 {
    std::env::var("BENCH_COPY_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(COPY_ROWS)
}

pub async fn initial_copy(ctx: &Ctx) -> Res<Figure> {
    let dir = ctx.scenario_dir("initial-copy")?;
    let rows = rows();
    let latency = realistic_latency_ms();
    println!(
        "\n6/6 initial copy: {} users, default settings, accept-only emulator",
        thousands(rows as f64)
    );
    progress("initial copy: starting postgres, loading the users");
    let pg = Pg::start().await?;
    let db = pg.connect().await?;
    create_users(&db, rows).await?;
    let mut rates = Vec::new();
    for (slot, latency_ms) in [("copy_0ms", 0), ("copy_rtt", latency)] {
        progress(&format!("initial copy: Customer.io round trip {latency_ms} ms"));
        let emulator = Emulator::start_with(&dir, &ctx.api_key, latency_ms, true)?;
        let mut cpu = CpuMeter::start(&pg);
        cpu.watch("ciosync-emulator", emulator.pid(), false);
        let started = Instant::now();
        let mut daemon = Daemon::start_copying(&dir, &pg, &emulator, &ctx.api_key, slot, "")?;
        cpu.watch("ciosync", daemon.pid(), true);
        let deadline = started + Duration::from_secs(900);
        while !copy_done(&db, slot).await? {
            daemon.check_alive()?;
            cpu.sample();
            if Instant::now() > deadline {
                return Err("the initial copy did not finish within 900 s".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let secs = started.elapsed().as_secs_f64();
        cpu.finish(&pg);
        let accepted = emulator.accepted().await?;
        let _ = daemon.stop().await;
        let rate = rows as f64 / secs;
        println!(
            "  {latency_ms:>4} ms         {secs:>6.2} s  {:>8} rows/s = {:.3} of the budget limit \
             (100 x 500 = 50,000/s); {} requests carrying {} items; busiest: {}",
            thousands(rate),
            rate / BUDGET_LIMIT,
            thousands(accepted.requests as f64),
            thousands(accepted.items as f64),
            busiest(&cpu, &["ciosync", "ciosync-emulator"], secs)
        );
        rates.push(rate);
    }
    let ratio = rates[1] / BUDGET_LIMIT;
    Ok(Figure {
        name: COPY_NAME,
        value: format!(
            "{ratio:.3} ({} rows/s at {latency} ms; {} at 0 ms)",
            thousands(rates[1]),
            thousands(rates[0])
        ),
        target: COPY_TARGET,
        met: Some(ratio >= 0.8),
        busiest: String::new(),
        requests_per_sec: None,
    })
}

/// Whether `ciosync.initial_copy` says every table of `slot` is done.
pub async fn copy_done(db: &Client, slot: &str) -> Res<bool> {
    let exists: bool =
        db.query_one("SELECT to_regclass('ciosync.initial_copy') IS NOT NULL", &[]).await?.get(0);
    if !exists {
        return Ok(false);
    }
    let row = db
        .query_one(
            "SELECT count(*) > 0 AND bool_and(state = 'done') FROM ciosync.initial_copy WHERE slot = $1",
            &[&slot],
        )
        .await?;
    Ok(row.get::<_, Option<bool>>(0).unwrap_or(false))
}
