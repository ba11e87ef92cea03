//! Start-up time (issue 24 item 5): from `ciosync run` being started to its
//! walsender streaming from a slot that already exists (a restart), as
//! `pg_replication_slots`/`pg_stat_activity` show it, polled every 20 ms.

use std::time::{Duration, Instant};

use crate::harness::{create_users, progress, slot_status, Daemon, Emulator, Pg, Res, SLOT};
use crate::scenarios::{Ctx, Figure};

pub const STARTUP_NAME: &str = "start-up to streaming, existing slot (median of 5)";
pub const STARTUP_TARGET: &str = "<= 0.5 s";
const RESTARTS: usize = 5;

pub async fn startup(ctx: &Ctx) -> Res<Figure> {
    let dir = ctx.scenario_dir("startup")?;
    println!("\n5/6 start-up: process start -> streaming on an existing slot, {RESTARTS} restarts");
    progress("startup: starting postgres, the emulator and ciosync (first start creates the slot)");
    let pg = Pg::start().await?;
    let db = pg.connect().await?;
    create_users(&db, 1_000).await?;
    let emulator = Emulator::start(&dir, &ctx.api_key)?;
    let mut first = Daemon::start(&dir, &pg, &emulator, &ctx.api_key, "")?;
    first.wait_streaming(&db).await?;
    first.stop().await.ok_or("the first ciosync did not stop")?;
    let mut times = Vec::new();
    for restart in 0..RESTARTS {
        // Each start writes its config afresh (create_new): its own directory.
        let dir = dir.join(format!("restart-{restart}"));
        std::fs::create_dir_all(&dir)?;
        // The old walsender must be gone, or it would be measured.
        let deadline = Instant::now() + Duration::from_secs(30);
        while slot_status(&db, SLOT, "0/0").await?.0.is_some() {
            if Instant::now() > deadline {
                return Err("the previous walsender did not end within 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let started = Instant::now();
        let mut daemon = Daemon::start(&dir, &pg, &emulator, &ctx.api_key, "")?;
        daemon.wait_streaming(&db).await?;
        times.push(started.elapsed().as_secs_f64());
        daemon.stop().await.ok_or("ciosync did not stop")?;
    }
    let shown: Vec<String> = times.iter().map(|t| format!("{:.0} ms", t * 1000.0)).collect();
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "  start-up        {} (median {:.0} ms; polled every 20 ms; a 1,000-row table, \
         initial_sync off, the emulator local)",
        shown.join(", "),
        median * 1000.0
    );
    Ok(Figure {
        name: STARTUP_NAME,
        value: format!("{:.0} ms", median * 1000.0),
        target: STARTUP_TARGET,
        met: Some(median <= 0.5),
        busiest: String::new(),
        requests_per_sec: None,
    })
}
