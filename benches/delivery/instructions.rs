//! Instructions per change (issue 24 item 4): ciosync and `pg_recvlogical`
//! each run under `valgrind --tool=callgrind` on the same WAL, at two
//! workload sizes. Per change is the difference of the two totals over the
//! difference of the changes, so start-up, connection set-up and shutdown
//! (the same in both) drop out; they are printed separately. Instruction
//! counts, unlike CPU seconds, do not move with what else the machine runs.
//!
//! ciosync delivers to the accept-only emulator (native, 0 ms) with
//! `max_requests_per_second = 1000`, as in the throughput scenario's 1000/s
//! run, and is stopped (SIGTERM) once the slot is acknowledged past the last
//! change. `BENCH_CG_USERS` (default 20,000) is the rows updated per round;
//! the small run has one round, the large one three. The large runs'
//! profiles are kept in `target/bench-callgrind/` for `callgrind_annotate`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::harness::{
    create_users, current_lsn, progress, tail, thousands, wait_for_ack, CpuMeter, Daemon, Emulator,
    Pg, Res,
};
use crate::scenarios::{Ctx, Figure};
use crate::throughput::recvlogical_args;

pub const INSTRUCTIONS_NAME: &str = "instructions per change, ciosync / pg_recvlogical";
pub const INSTRUCTIONS_TARGET: &str = "stated";
const CG_USERS: i64 = 20_000;
/// Rounds (full-table UPDATEs, one transaction each) of the small and the large run.
const ROUNDS: [i64; 2] = [1, 3];
const CIOSYNC_SLOT: &str = "ciosync_callgrind";
const RECV_SLOT: &str = "recvlogical_callgrind";

/// `BENCH_CG_USERS` (default 20,000).
fn users() -> i64 {
    std::env::var("BENCH_CG_USERS").ok().and_then(|v| v.parse().ok()).unwrap_or(CG_USERS)
}

/// Instructions of one size's runs.
struct Counted {
    changes: i64,
    ciosync: u64,
    recvlogical: u64,
}

pub async fn instructions(ctx: &Ctx) -> Res<Figure> {
    let recvlogical = binary_of(ctx.pg_recvlogical.clone().ok_or("pg_recvlogical not found")?);
    probe_valgrind()?;
    let dir = ctx.scenario_dir("instructions")?;
    let users = users();
    println!(
        "\ninstructions: ciosync and pg_recvlogical under valgrind --tool=callgrind, \
         {} users, {} and {} full-table UPDATEs",
        thousands(users as f64),
        ROUNDS[0],
        ROUNDS[1]
    );
    progress(&format!(
        "instructions: starting postgres, loading {} users",
        thousands(users as f64)
    ));
    let pg = Pg::start().await?;
    let db = pg.connect().await?;
    create_users(&db, users).await?;
    let emulator = Emulator::start_with(&dir, &ctx.api_key, 0, true)?;
    let mut counted = Vec::new();
    let mut round = 0;
    for rounds in ROUNDS {
        for slot in [CIOSYNC_SLOT, RECV_SLOT] {
            db.execute("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", &[&slot])
                .await?;
        }
        for _ in 0..rounds {
            round += 1;
            db.batch_execute(&format!("UPDATE users SET plan = 'round{round}-' || (id % 4)"))
                .await?;
        }
        let end_lsn = current_lsn(&db).await?;
        let changes = users * rounds;
        let keep = rounds == ROUNDS[1];
        progress(&format!("instructions: pg_recvlogical, {} changes", thousands(changes as f64)));
        let recv = recvlogical_counted(&recvlogical, &pg, &dir, &end_lsn, keep)?;
        progress(&format!("instructions: ciosync, {} changes", thousands(changes as f64)));
        let ciosync = ciosync_counted(ctx, &pg, &db, &dir, &emulator, &end_lsn, keep).await?;
        let accepted = emulator.accepted().await?.items;
        println!(
            "  {:>7} changes  ciosync {:>15} instructions ({:.0}/change), pg_recvlogical {:>13} \
             ({:.0}/change); the emulator has accepted {} items in all",
            thousands(changes as f64),
            thousands(ciosync as f64),
            ciosync as f64 / changes as f64,
            thousands(recv as f64),
            recv as f64 / changes as f64,
            thousands(accepted as f64)
        );
        for slot in [CIOSYNC_SLOT, RECV_SLOT] {
            db.execute("SELECT pg_drop_replication_slot($1)", &[&slot]).await?;
        }
        counted.push(Counted { changes, ciosync, recvlogical: recv });
    }
    let [small, large] = &counted[..] else { return Err("two sizes expected".into()) };
    let per_change =
        |a: u64, b: u64| (b as f64 - a as f64) / (large.changes - small.changes) as f64;
    let ciosync = per_change(small.ciosync, large.ciosync);
    let recv = per_change(small.recvlogical, large.recvlogical);
    let fixed = |total: u64, per: f64| total as f64 - per * small.changes as f64;
    println!(
        "  => per change (the difference of the two sizes): ciosync {ciosync:.0}, pg_recvlogical \
         {recv:.0}, ratio {:.2}; fixed cost (start-up, shutdown): ciosync {}, pg_recvlogical {}",
        ciosync / recv,
        thousands(fixed(small.ciosync, ciosync)),
        thousands(fixed(small.recvlogical, recv))
    );
    println!(
        "  profiles of the large runs: {} (pg_recvlogical: {})",
        kept_dir().display(),
        recvlogical.display()
    );
    Ok(Figure {
        name: INSTRUCTIONS_NAME,
        value: format!("{ciosync:.0} / {recv:.0} = {:.2}", ciosync / recv),
        target: INSTRUCTIONS_TARGET,
        // The target is to state the figure: stated.
        met: Some(true),
        busiest: String::new(),
        requests_per_sec: None,
    })
}

fn probe_valgrind() -> Res<()> {
    let ok = Command::new("valgrind")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Ok(())
    } else {
        Err("valgrind not found (Debian: apt-get install valgrind)".into())
    }
}

/// The program itself where `path` is a script that starts it (Debian's
/// `/usr/bin/pg_recvlogical` is a Perl wrapper, which callgrind would count
/// instead): the newest `/usr/lib/postgresql/*/bin/pg_recvlogical`.
fn binary_of(path: PathBuf) -> PathBuf {
    let script = std::fs::read(&path).is_ok_and(|bytes| bytes.starts_with(b"#!"));
    if !script {
        return path;
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            let binary = e.path().join("bin").join("pg_recvlogical");
            binary.is_file().then_some((major, binary))
        })
        .collect();
    found.sort();
    found.pop().map_or(path, |(_, binary)| binary)
}

/// Where the large runs' profiles are kept.
fn kept_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("bench-callgrind")
}

/// `valgrind --tool=callgrind` writing to `out`.
fn callgrind(out: &Path) -> Vec<String> {
    vec![
        "valgrind".to_owned(),
        "--tool=callgrind".to_owned(),
        "--quiet".to_owned(),
        format!("--callgrind-out-file={}", out.display()),
    ]
}

/// The total instructions of a callgrind output file; a copy kept if `keep`.
fn total_of(out: &Path, keep: Option<&str>) -> Res<u64> {
    let text = std::fs::read_to_string(out)?;
    let total = text
        .lines()
        .find_map(|l| l.strip_prefix("totals:").or_else(|| l.strip_prefix("summary:")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no totals in {}", out.display()))?;
    if let Some(name) = keep {
        std::fs::create_dir_all(kept_dir())?;
        std::fs::copy(out, kept_dir().join(name))?;
    }
    Ok(total)
}

fn recvlogical_counted(
    recvlogical: &Path,
    pg: &Pg,
    dir: &Path,
    end_lsn: &str,
    keep: bool,
) -> Res<u64> {
    let out = dir.join(format!("callgrind.pg_recvlogical.{}", std::process::id()));
    let log = dir.join("pg_recvlogical.log");
    let wrapper = callgrind(&out);
    let status = Command::new(&wrapper[0])
        .args(&wrapper[1..])
        .arg(recvlogical)
        .args(recvlogical_args(pg, RECV_SLOT, end_lsn))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .status()?;
    if !status.success() {
        return Err(format!("pg_recvlogical failed ({status}): {}", tail(&log, 5)).into());
    }
    let total = total_of(&out, keep.then_some("pg_recvlogical.out"))?;
    std::fs::remove_file(&out)?;
    Ok(total)
}

async fn ciosync_counted(
    ctx: &Ctx,
    pg: &Pg,
    db: &Client,
    dir: &Path,
    emulator: &Emulator,
    end_lsn: &str,
    keep: bool,
) -> Res<u64> {
    let out = dir.join(format!("callgrind.ciosync.{}", std::process::id()));
    let _ = std::fs::remove_file(&out);
    let run_dir = dir.join(if keep { "large" } else { "small" });
    std::fs::create_dir_all(&run_dir)?;
    let mut daemon = Daemon::start_wrapped(
        &run_dir,
        pg,
        emulator,
        &ctx.api_key,
        CIOSYNC_SLOT,
        "status_interval_ms = 100",
        "max_requests_per_second = 1000",
        &callgrind(&out),
    )?;
    let mut cpu = CpuMeter::start(pg);
    let started = Instant::now();
    wait_for_ack(db, CIOSYNC_SLOT, end_lsn, &mut daemon, &mut cpu, Duration::from_secs(1800))
        .await?;
    let secs = started.elapsed().as_secs_f64();
    let log = daemon.log.clone();
    let status = daemon.stop_within(Duration::from_secs(300)).await;
    if !status.is_some_and(|s| s.success()) {
        return Err(format!(
            "ciosync under callgrind did not exit cleanly ({status:?}): {}",
            tail(&log, 5)
        )
        .into());
    }
    progress(&format!("instructions: ciosync acknowledged after {secs:.0} s under callgrind"));
    let total = total_of(&out, keep.then_some("ciosync.out"))?;
    std::fs::remove_file(&out)?;
    Ok(total)
}
