//! The throughput scenario (issue 24 items 3 and 4): the same WAL read by
//! `pg_recvlogical`, then delivered by ciosync to an accept-only emulator
//! (items counted, no customer model: the bench measures ciosync, not the
//! stand-in) at 0 ms and at a realistic round trip with default settings,
//! and at 0 ms with the request budget at Customer.io's documented limit
//! (CPU and, where `perf` can count them, instructions per change).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::harness::{
    create_users, current_lsn, peak_rss_kb, progress, slot_status, tail, thousands, wait_for_ack,
    wal_bytes, CpuMeter, Daemon, Emulator, Pg, Res, Settings, PUBLICATION,
};
use crate::scenarios::{batch_requests, busiest, Ctx, Figure};

pub const THROUGHPUT_NAME: &str = "throughput ratio ciosync / pg_recvlogical, 0 ms, 1000 req/s";
pub const THROUGHPUT_TARGET: &str = ">= 0.9";
const TP_USERS: i64 = 200_000;
const TP_ROUNDS: i64 = 3;
const RECV_SLOT: &str = "recvlogical_bench";
/// Customer.io's documented Track API limit, requests per second.
const DOCUMENTED_LIMIT: u32 = 1000;
/// ciosync's defaults: `max_requests_per_second` and `max_batch_ops`.
const DEFAULT_BUDGET: u32 = 100;
const BATCH_OPS: u32 = 500;
/// The realistic round trip, unless `BENCH_LATENCY_MS` says otherwise.
const DEFAULT_LATENCY_MS: u64 = 150;
const WALSENDER: &str = "postgres walsender (ciosync's slot)";

/// `BENCH_LATENCY_MS` (default 150): the emulator's answer delay of the
/// realistic run.
pub fn realistic_latency_ms() -> u64 {
    std::env::var("BENCH_LATENCY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_LATENCY_MS)
}

/// `BENCH_USERS` (default 200,000): rows updated per round, for a shorter run.
fn users() -> i64 {
    std::env::var("BENCH_USERS").ok().and_then(|v| v.parse().ok()).unwrap_or(TP_USERS)
}

/// One ciosync run on its own slot.
struct Run {
    slot: &'static str,
    latency_ms: u64,
    requests_per_second: u32,
    perf: bool,
    /// `pipeline.record_accepted`.
    record: bool,
    /// The target for this run, as printed.
    target: &'static str,
}

/// What one ciosync run measured.
struct Measured {
    rate: f64,
    requests_per_sec: f64,
    cpu_secs: f64,
    walsender_secs: f64,
    instructions: Result<u64, String>,
    busiest: String,
}

pub async fn throughput(ctx: &Ctx) -> Res<Figure> {
    let recvlogical = ctx.pg_recvlogical.clone().ok_or(
        "pg_recvlogical not found (Debian: apt-get install postgresql-client-15, or postgresql)",
    )?;
    let dir = ctx.scenario_dir("throughput")?;
    let users = users();
    let changes = users * TP_ROUNDS;
    let latency = realistic_latency_ms();
    let runs = [
        Run {
            slot: "ciosync_bench_0ms",
            latency_ms: 0,
            requests_per_second: DEFAULT_BUDGET,
            perf: false,
            record: true,
            target: "none at 0 ms with the default budget",
        },
        Run {
            slot: "ciosync_bench_rtt",
            latency_ms: latency,
            requests_per_second: DEFAULT_BUDGET,
            perf: false,
            record: true,
            target: ">= 0.8 of the lower at 150 ms",
        },
        Run {
            slot: "ciosync_bench_full",
            latency_ms: 0,
            requests_per_second: DOCUMENTED_LIMIT,
            perf: true,
            record: true,
            target: ">= 0.9 of pg_recvlogical",
        },
        // The same without the record's read and write per request (its
        // queries are Postgres's work on the same two cores): how much of
        // the gap is the stream itself, and how much the record.
        Run {
            slot: "ciosync_bench_norecord",
            latency_ms: 0,
            requests_per_second: DOCUMENTED_LIMIT,
            perf: false,
            record: false,
            target: "stated: the stream alone, record_accepted = false",
        },
    ];
    println!("\n1/4 throughput: the same WAL read by pg_recvlogical and delivered by ciosync");
    progress(&format!("throughput: starting postgres, loading {} users", thousands(users as f64)));
    let pg = Pg::start().await?;
    let db = pg.connect().await?;
    create_users(&db, users).await?;
    for slot in std::iter::once(RECV_SLOT).chain(runs.iter().map(|r| r.slot)) {
        db.execute("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", &[&slot]).await?;
    }
    progress("throughput: 3 full-table UPDATEs");
    let start_lsn = current_lsn(&db).await?;
    for round in 1..=TP_ROUNDS {
        db.batch_execute(&format!("UPDATE users SET plan = 'round{round}-' || (id % 4)")).await?;
    }
    let end_lsn = current_lsn(&db).await?;
    let wal = wal_bytes(&db, &start_lsn, &end_lsn).await?;
    println!(
        "  workload        {} users (REPLICA IDENTITY FULL), {TP_ROUNDS} UPDATEs of every row's plan, \
         each its own transaction: {} row changes, {:.1} MB of WAL",
        thousands(users as f64),
        thousands(changes as f64),
        wal as f64 / 1e6
    );
    println!(
        "  emulator        accept-only (auth, framing and item counts checked, no customer model) \
         for every ciosync run; the machine is shared: \
         \"anything else on the machine\" shows what other work used meanwhile"
    );
    let (recv_rate, recv_cpu, recv_walsender) =
        recvlogical_run(&recvlogical, &pg, &db, &dir, &end_lsn, changes).await?;
    let per_change = |secs: f64| format!("{:.2} µs/change", secs * 1e6 / changes as f64);
    println!(
        "                  CPU per change: pg_recvlogical {}, its walsender {}",
        per_change(recv_cpu),
        per_change(recv_walsender)
    );

    let mut measured = Vec::new();
    for run in &runs {
        let m = ciosync_run(ctx, &pg, &db, &dir, run, &end_lsn, changes).await?;
        let budget = f64::from(run.requests_per_second * BATCH_OPS);
        let bound = budget.min(recv_rate);
        println!(
            "  => {} ms, {} req/s: {} changes/s = {:.3} of the budget limit ({} x {BATCH_OPS} = {}/s), \
             {:.3} of pg_recvlogical ({}/s); {:.3} of the lower (target: {})",
            run.latency_ms,
            run.requests_per_second,
            thousands(m.rate),
            m.rate / budget,
            run.requests_per_second,
            thousands(budget),
            m.rate / recv_rate,
            thousands(recv_rate),
            m.rate / bound,
            run.target
        );
        println!(
            "                  CPU per change: ciosync {}, its walsender {}; instructions per change: {}",
            per_change(m.cpu_secs),
            per_change(m.walsender_secs),
            match &m.instructions {
                Ok(n) => format!("{:.0}", *n as f64 / changes as f64),
                Err(why) => format!("not measured ({why})"),
            }
        );
        measured.push(m);
    }
    let [zero, rtt, full, alone] = &measured[..] else { return Err("four runs expected".into()) };
    let ratio = full.rate / recv_rate;
    println!(
        "  ratio           {ratio:.3} at 0 ms with max_requests_per_second = {DOCUMENTED_LIMIT} \
         (ciosync {} vs pg_recvlogical {} changes/s); CPU per change ciosync / pg_recvlogical {:.2}",
        thousands(full.rate),
        thousands(recv_rate),
        full.cpu_secs / recv_cpu.max(1e-9)
    );
    Ok(Figure {
        name: THROUGHPUT_NAME,
        value: format!(
            "{ratio:.3} ({} vs {} changes/s; {:.3} with the record off); \
             defaults: {} changes/s at 0 ms, {} at {latency} ms",
            thousands(full.rate),
            thousands(recv_rate),
            alone.rate / recv_rate,
            thousands(zero.rate),
            thousands(rtt.rate),
        ),
        target: THROUGHPUT_TARGET,
        met: Some(ratio >= 0.9),
        busiest: full.busiest.clone(),
        requests_per_sec: Some(full.requests_per_sec),
    })
}

/// `pg_recvlogical` to /dev/null until the end position: changes/s, its
/// CPU seconds and its walsender's.
async fn recvlogical_run(
    recvlogical: &Path,
    pg: &Pg,
    db: &Client,
    dir: &Path,
    end_lsn: &str,
    changes: i64,
) -> Res<(f64, f64, f64)> {
    progress("throughput: pg_recvlogical");
    let recv_log = dir.join("pg_recvlogical.log");
    let args = recvlogical_args(pg, RECV_SLOT, end_lsn);
    let mut cpu = CpuMeter::start(pg);
    let started = Instant::now();
    let mut child = Command::new(recvlogical)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&recv_log)?)
        .spawn()?;
    cpu.watch("pg_recvlogical", child.id(), true);
    let deadline = started + Duration::from_secs(600);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if let (Some(pid), _) = slot_status(db, RECV_SLOT, end_lsn).await? {
            cpu.watch("postgres walsender (pg_recvlogical's slot)", pid, true);
        }
        cpu.sample();
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("pg_recvlogical did not reach the end position within 600 s".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let secs = started.elapsed().as_secs_f64();
    cpu.finish(pg);
    if !status.success() {
        return Err(format!("pg_recvlogical failed ({status}): {}", tail(&recv_log, 5)).into());
    }
    let rate = changes as f64 / secs;
    println!(
        "  pg_recvlogical  {secs:>6.2} s  {:>8} changes/s   (start -> exit at --endpos)",
        thousands(rate)
    );
    print!("{}", cpu.report("                  "));
    db.execute("SELECT pg_drop_replication_slot($1)", &[&RECV_SLOT]).await?;
    Ok((
        rate,
        cpu.seconds("pg_recvlogical").unwrap_or(0.0),
        cpu.seconds("postgres walsender (pg_recvlogical's slot)").unwrap_or(0.0),
    ))
}

/// `pg_recvlogical`'s arguments: stream `slot` to /dev/null with the
/// options ciosync uses, and exit at `end_lsn`.
pub fn recvlogical_args(pg: &Pg, slot: &str, end_lsn: &str) -> Vec<String> {
    vec![
        "-d".to_owned(),
        pg.conninfo(),
        "-S".to_owned(),
        slot.to_owned(),
        "--start".to_owned(),
        "-P".to_owned(),
        "pgoutput".to_owned(),
        "-o".to_owned(),
        "proto_version=1".to_owned(),
        "-o".to_owned(),
        format!("publication_names={PUBLICATION}"),
        // ciosync asks for logical messages too (backfill watermarks); the
        // same options make the walsender do the same work.
        "-o".to_owned(),
        "messages=true".to_owned(),
        format!("--endpos={end_lsn}"),
        "--no-loop".to_owned(),
        "-f".to_owned(),
        "/dev/null".to_owned(),
    ]
}

/// Runs ciosync on the run's slot until it is acknowledged up to `end_lsn`.
async fn ciosync_run(
    ctx: &Ctx,
    pg: &Pg,
    db: &Client,
    dir: &Path,
    run: &Run,
    end_lsn: &str,
    changes: i64,
) -> Res<Measured> {
    let settings = format!(
        "Customer.io round trip {} ms, max_requests_per_second = {}{}",
        run.latency_ms,
        run.requests_per_second,
        if run.record { "" } else { ", record_accepted = false" }
    );
    progress(&format!("throughput: ciosync ({settings})"));
    let emulator = Emulator::start_with(dir, &ctx.api_key, run.latency_ms, true)?;
    let mut cpu = CpuMeter::start(pg);
    cpu.watch("ciosync-emulator", emulator.pid(), false);
    let budget = format!("max_requests_per_second = {}", run.requests_per_second);
    let started = Instant::now();
    let extra = "status_interval_ms = 100";
    let pipeline_extra = if run.record { "" } else { "record_accepted = false" };
    let daemon_settings = Settings {
        postgres_extra: extra,
        customerio_extra: &budget,
        pipeline_extra,
        ..Settings::on(run.slot)
    };
    let mut daemon = Daemon::spawn(dir, pg, &emulator, &ctx.api_key, &daemon_settings)?;
    cpu.watch("ciosync", daemon.pid(), true);
    let perf = if run.perf { Some(PerfStat::attach(dir, daemon.pid())) } else { None };
    let done = wait_for_ack(db, run.slot, end_lsn, &mut daemon, &mut cpu, Duration::from_secs(900))
        .await?;
    let secs = done.duration_since(started).as_secs_f64();
    cpu.finish(pg);
    let instructions = match perf {
        Some(Ok(perf)) => perf.finish(),
        Some(Err(why)) => Err(why),
        None => Err("this run is not counted".to_owned()),
    };
    let rss = peak_rss_kb(daemon.pid()).unwrap_or(0);
    let accepted = emulator.accepted().await?;
    let (_, requests, _) = batch_requests(&emulator.requests().await?);
    let _ = daemon.stop().await;
    let rate = changes as f64 / secs;
    println!(
        "  ciosync         {secs:>6.2} s  {:>8} changes/s   (process start -> confirmed_flush_lsn >= end; \
         {settings}; postgres.status_interval_ms = 100)",
        thousands(rate)
    );
    println!(
        "                  {} requests ({:.0}/s) carrying {} items ({}); peak RSS {:.1} MB",
        thousands(requests as f64),
        requests as f64 / secs,
        thousands(accepted.items as f64),
        if accepted.items == changes as u64 {
            "every change arrived".to_owned()
        } else {
            format!(
                "{} changes coalesced or missing",
                thousands((changes - accepted.items as i64) as f64)
            )
        },
        rss as f64 / 1024.0
    );
    print!("{}", cpu.report("                  "));
    Ok(Measured {
        rate,
        requests_per_sec: requests as f64 / secs,
        cpu_secs: cpu.seconds("ciosync").unwrap_or(0.0),
        walsender_secs: cpu.seconds(WALSENDER).unwrap_or(0.0),
        instructions,
        busiest: busiest(&cpu, &["ciosync", "ciosync-emulator", WALSENDER], secs),
    })
}

/// `perf stat -e instructions` attached to a running process.
struct PerfStat {
    child: Child,
    output: std::path::PathBuf,
}

impl PerfStat {
    /// Attaches, or says why it cannot count instructions here.
    fn attach(dir: &Path, pid: u32) -> Result<Self, String> {
        probe_perf()?;
        let output = dir.join(format!("perf-{pid}.csv"));
        let child = Command::new("perf")
            .args(["stat", "-e", "instructions", "-x", ",", "-o"])
            .arg(&output)
            .args(["-p", &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run perf: {e}"))?;
        Ok(Self { child, output })
    }

    /// Stops counting (SIGINT, as perf expects) and reads the count.
    fn finish(mut self) -> Result<u64, String> {
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
        let text = std::fs::read_to_string(&self.output).map_err(|e| e.to_string())?;
        instructions_of(&text)
    }
}

/// Whether `perf stat -e instructions` counts on this machine.
fn probe_perf() -> Result<(), String> {
    let output = Command::new("perf")
        .args(["stat", "-e", "instructions", "-x", ",", "--", "true"])
        .output()
        .map_err(|_| "perf is not installed".to_owned())?;
    instructions_of(&String::from_utf8_lossy(&output.stderr)).map(|_| ())
}

/// The count from `perf stat -x ,` output.
fn instructions_of(text: &str) -> Result<u64, String> {
    let line = text
        .lines()
        .find(|l| l.contains("instructions"))
        .ok_or_else(|| "perf printed no instructions count".to_owned())?;
    let value = line.split(',').next().unwrap_or("");
    value.parse().map_err(|_| {
        format!("perf: instructions {value} on this machine (no hardware counters in this VM)")
    })
}
