//! Delivery benchmark of issue 4: the four figures from one run.
//!
//! ```sh
//! cargo bench --bench delivery                      # all four scenarios (2-3 minutes on 2 cores)
//! cargo bench --bench delivery -- latency hot-rows  # some of them
//! ```
//!
//! Scenarios: `throughput`, `latency`, `hot-rows`, `rss`, `startup`,
//! `initial-copy` (at 0 ms and `BENCH_LATENCY_MS`; `BENCH_COPY_ROWS` rows),
//! `backfill` (a copied, streaming table re-sent by `ciosync backfill
//! --ignore-record`, at 0 ms and `BENCH_LATENCY_MS`; `BENCH_BACKFILL_ROWS`
//! rows), `instructions` (under valgrind's callgrind, `BENCH_CG_USERS` rows;
//! only when named), `record` (what the record of what Customer.io accepted
//! costs in WAL and space and saves in requests: `BENCH_RECORD_SCALE`,
//! `BENCH_RECORD_CUSTOMERS`; only when named).
//! `throughput` delivers to an accept-only emulator at 0 ms and at
//! `BENCH_LATENCY_MS` (default 150) with default settings, and at 0 ms with
//! 1000 requests/s; `BENCH_USERS` (default 200,000) shortens it. Each starts a
//! fresh throwaway PostgreSQL cluster (`ciosync_testkit::throwaway`), a fresh
//! `ciosync-emulator` and `ciosync run` (the release binaries, as child
//! processes), and prints what it measured and the CPU each process used;
//! a summary table follows. It prints figures and asserts none: the exit
//! status is non-zero only when the harness itself failed.
//!
//! Needs the PostgreSQL server binaries (as for `cargo test`) and, for
//! `throughput`, `pg_recvlogical` (Debian: `postgresql-client`). `BENCH_WRAP`
//! (a program and its arguments, e.g. `heaptrack -o /tmp/copy`) runs each
//! daemon a scenario does not wrap itself (its CPU and peak RSS are then
//! the wrapper's process's). `CIOSYNC_*`
//! variables in the environment reach the daemon (to measure a setting) and
//! are printed; those naming the database, the slot, the workspace or the
//! URL are removed.

mod backfill;
mod copy;
mod harness;
mod instructions;
mod record;
mod record_size;
mod record_wal;
mod scenarios;
mod startup;
mod throughput;

use std::future::Future;
use std::pin::Pin;
use std::process::{Command, ExitCode};

use harness::{passed_overrides, progress, random_key, Res, COMMON_SETTINGS, PG_SETTINGS};
use scenarios::{Ctx, Figure};

type Scenario = for<'a> fn(&'a Ctx) -> Pin<Box<dyn Future<Output = Res<Figure>> + 'a>>;

const SCENARIOS: &[(&str, &str, &str, Scenario)] = &[
    ("throughput", throughput::THROUGHPUT_NAME, throughput::THROUGHPUT_TARGET, |c| {
        Box::pin(throughput::throughput(c))
    }),
    ("latency", scenarios::LATENCY_NAME, scenarios::LATENCY_TARGET, |c| {
        Box::pin(scenarios::latency(c))
    }),
    ("hot-rows", scenarios::HOT_NAME, scenarios::HOT_TARGET, |c| Box::pin(scenarios::hot_rows(c))),
    ("rss", scenarios::RSS_NAME, scenarios::RSS_TARGET, |c| Box::pin(scenarios::peak_rss(c))),
    ("initial-copy", copy::COPY_NAME, copy::COPY_TARGET, |c| Box::pin(copy::initial_copy(c))),
    ("startup", startup::STARTUP_NAME, startup::STARTUP_TARGET, |c| Box::pin(startup::startup(c))),
    ("backfill", backfill::BACKFILL_NAME, backfill::BACKFILL_TARGET, |c| {
        Box::pin(backfill::backfill(c))
    }),
    ("instructions", instructions::INSTRUCTIONS_NAME, instructions::INSTRUCTIONS_TARGET, |c| {
        Box::pin(instructions::instructions(c))
    }),
    ("record", record::RECORD_NAME, record::RECORD_TARGET, |c| Box::pin(record::record(c))),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes --bench; `cargo test --benches` does not, and
    // must not start a five-minute run.
    if !args.iter().any(|a| a == "--bench") {
        eprintln!("delivery benchmark: run it with `cargo bench --bench delivery`");
        return ExitCode::SUCCESS;
    }
    let mut selected = Vec::new();
    for arg in args.iter().filter(|a| *a != "--bench") {
        if arg == "-h" || arg == "--help" {
            println!(
                "cargo bench --bench delivery [-- SCENARIO...]\nscenarios: {}",
                SCENARIOS.iter().map(|s| s.0).collect::<Vec<_>>().join(", ")
            );
            return ExitCode::SUCCESS;
        }
        match SCENARIOS.iter().position(|s| s.0 == arg) {
            Some(i) => selected.push(i),
            None if arg.starts_with('-') => {} // libtest-style flags from cargo: ignored
            None => {
                eprintln!(
                    "unknown scenario {arg:?}; choose from {}",
                    SCENARIOS.iter().map(|s| s.0).collect::<Vec<_>>().join(", ")
                );
                return ExitCode::from(2);
            }
        }
    }
    if selected.is_empty() {
        // `instructions` (valgrind, a few minutes) and `record` run only when named.
        selected = (0..SCENARIOS.len())
            .filter(|&i| !matches!(SCENARIOS[i].0, "instructions" | "record"))
            .collect();
    }
    selected.sort_unstable();
    selected.dedup();

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        tokio::select! {
            outcome = run(&selected) => outcome,
            _ = tokio::signal::ctrl_c() => Err("interrupted".into()),
        }
    });
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("delivery benchmark: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the scenarios; `Ok(false)` if one of them failed.
async fn run(selected: &[usize]) -> Res<bool> {
    let started = std::time::Instant::now();
    let dir = tempfile::Builder::new().prefix("ciosync-bench-").tempdir()?;
    let server_version = server_version().await?;
    let ctx = Ctx {
        dir: dir.path().to_owned(),
        api_key: random_key(),
        pg_recvlogical: harness::find_pg_recvlogical(server_version.1),
    };
    println!("ciosync delivery benchmark (issue 4)");
    print_machine(&server_version.0, &ctx);
    println!(
        "  settings        ciosync defaults except {COMMON_SETTINGS} (and what a scenario prints)"
    );
    let overrides = passed_overrides();
    if !overrides.is_empty() {
        println!("  overrides       from the environment: {}", overrides.join(", "));
    }
    println!(
        "  cluster         throwaway per scenario (crates/testkit/src/throwaway.rs: fsync, full_page_writes \
         off) with {}",
        PG_SETTINGS.iter().map(|(k, v)| format!("{k} = {v}")).collect::<Vec<_>>().join(", ")
    );

    let mut figures = Vec::new();
    for &i in selected {
        let (key, name, target, scenario) = SCENARIOS[i];
        match scenario(&ctx).await {
            Ok(figure) => figures.push(figure),
            Err(e) => {
                let message = e.to_string();
                eprintln!("scenario {key} failed: {message}");
                for log in ["ciosync.log", "emulator.log", "pg_recvlogical.log"] {
                    let path = ctx.dir.join(key).join(log);
                    if path.exists() {
                        eprintln!("--- last lines of {log} ---\n{}", harness::tail(&path, 10));
                    }
                }
                figures.push(Figure::failed(name, target, message.lines().next().unwrap_or("")));
            }
        }
    }

    println!("\nsummary ({:.0} s in all)", started.elapsed().as_secs_f64());
    let width = figures.iter().map(|f| f.name.len()).max().unwrap_or(0);
    let value_width = figures.iter().map(|f| f.value.len()).max().unwrap_or(0);
    println!("  {:<width$}  {:<value_width$}  {:<14}  result", "figure", "value", "target");
    for f in &figures {
        let result = match f.met {
            Some(true) => "met",
            Some(false) => "missed",
            None => "-",
        };
        println!("  {:<width$}  {:<value_width$}  {:<14}  {result}", f.name, f.value, f.target);
    }
    println!(
        "  while measured: the busiest process (% of one core) and ciosync's Track API requests/s"
    );
    for f in figures.iter().filter(|f| !f.busiest.is_empty()) {
        let rate =
            f.requests_per_sec.map_or(String::new(), |r| format!("; ciosync {r:.0} requests/s"));
        println!("    {:<width$}  {}{rate}", f.name, f.busiest);
    }
    progress("done");
    Ok(figures.iter().all(|f| f.met.is_some()))
}

/// `version()` and `server_version_num` of a throwaway cluster.
async fn server_version() -> Res<(String, i32)> {
    let pg = harness::Pg::start().await?;
    let db = pg.connect().await?;
    let row =
        db.query_one("SELECT version(), current_setting('server_version_num')::int", &[]).await?;
    Ok((row.get(0), row.get(1)))
}

fn print_machine(postgres: &str, ctx: &Ctx) {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let ram_gb = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cargo_dir = std::env::var_os("CARGO")
        .and_then(|c| std::path::Path::new(&c).parent().map(|p| p.join("rustc")));
    let rustc = cargo_dir.filter(|p| p.exists()).unwrap_or_else(|| "rustc".into());
    let recvlogical = ctx.pg_recvlogical.as_ref().map_or("not found".to_owned(), |p| {
        format!("{} ({})", output_of(p.as_os_str(), &["--version"]), p.display())
    });
    let repo = env!("CARGO_MANIFEST_DIR");
    let commit = output_of("git".as_ref(), &["-C", repo, "rev-parse", "--short=12", "HEAD"]);
    let dirty =
        !output_of("git".as_ref(), &["-C", repo, "status", "--porcelain", "--untracked-files=no"])
            .is_empty();
    println!("  date            {}", chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"));
    let src_commit = output_of(
        "git".as_ref(),
        &["-C", repo, "log", "-1", "--format=%h", "--", "src", "crates", "Cargo.lock"],
    );
    println!(
        "  commit          {commit}{} (src/, crates/ last changed in {src_commit})",
        if dirty { " with uncommitted changes" } else { "" }
    );
    println!("  machine         {nproc} CPUs ({cpu}), {ram_gb:.1} GB RAM, Linux {}", kernel.trim());
    println!("  postgres        {postgres}");
    println!("  pg_recvlogical  {recvlogical}");
    println!("  rustc           {}", output_of(rustc.as_os_str(), &["--version"]));
}

fn output_of(program: &std::ffi::OsStr, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
