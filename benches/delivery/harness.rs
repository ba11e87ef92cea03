//! The processes a scenario runs: a throwaway Postgres, the emulator, the
//! daemon (both real release binaries, as child processes), and what the
//! bench reads off them (`/proc` CPU times and peak RSS, the slot's
//! acknowledged position, the emulator's request log).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ciosync_emulator::RecordedRequest;
use ciosync_testkit::throwaway::ThrowawayPostgres;
use tokio_postgres::{Client, NoTls};

pub type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Site id the emulator expects. The API key is random per run and never printed.
pub const SITE_ID: &str = "bench-site";
/// Slot and publication names.
pub const SLOT: &str = "ciosync_bench";
pub const PUBLICATION: &str = "bench";

/// Settings the bench adds to the throwaway cluster (on top of
/// `crates/testkit/src/throwaway.rs`: fsync, synchronous_commit and full_page_writes off).
/// synchronous_commit goes back on: with it off a commit reaches the WAL
/// sender only at the WAL writer's next flush (up to 200 ms later), which
/// would be measured as ciosync's latency.
pub const PG_SETTINGS: &[(&str, &str)] =
    &[("synchronous_commit", "on"), ("max_wal_size", "4GB"), ("autovacuum", "off")];

/// Progress lines go to stderr, figures to stdout.
pub fn progress(message: &str) {
    eprintln!("[{}] {message}", chrono::Local::now().format("%H:%M:%S"));
}

/// A throwaway cluster with a database `bench`.
pub struct Pg {
    cluster: Option<ThrowawayPostgres>,
    pub url: String,
    pub port: u16,
    postmaster: u32,
}

impl Pg {
    pub async fn start() -> Res<Self> {
        let cluster = tokio::task::spawn_blocking(ThrowawayPostgres::start).await??;
        let admin = connect(&cluster.url("postgres")).await?;
        for (name, value) in PG_SETTINGS {
            admin.batch_execute(&format!("ALTER SYSTEM SET {name} = '{value}'")).await?;
        }
        admin.batch_execute("SELECT pg_reload_conf()").await?;
        admin.batch_execute("CREATE DATABASE bench").await?;
        let data_dir: String = admin.query_one("SHOW data_directory", &[]).await?.get(0);
        let pid_file = std::fs::read_to_string(Path::new(&data_dir).join("postmaster.pid"))?;
        let postmaster = pid_file.lines().next().unwrap_or("").trim().parse()?;
        Ok(Self {
            url: cluster.url("bench"),
            port: cluster.port(),
            cluster: Some(cluster),
            postmaster,
        })
    }

    pub async fn connect(&self) -> Res<Client> {
        connect(&self.url).await
    }

    /// libpq connection string for `pg_recvlogical`.
    pub fn conninfo(&self) -> String {
        format!("host=127.0.0.1 port={} dbname=bench user=postgres sslmode=disable", self.port)
    }

    /// CPU ticks of every server process: the postmaster with the children
    /// it has reaped, plus the live children.
    pub fn cpu_ticks(&self) -> u64 {
        let mut total = proc_stat(self.postmaster).map_or(0, |s| s.own() + s.children());
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok())
                else {
                    continue;
                };
                if let Some(stat) = proc_stat(pid) {
                    if stat.ppid == self.postmaster {
                        total += stat.own();
                    }
                }
            }
        }
        total
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        // ThrowawayPostgres stops the server (immediate) and removes its directory.
        drop(self.cluster.take());
    }
}

pub async fn connect(url: &str) -> Res<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// `users` with `rows` rows, REPLICA IDENTITY FULL (as the README
/// recommends), and the publication; both before any slot exists.
pub async fn create_users(db: &Client, rows: i64) -> Res<()> {
    db.batch_execute(
        "CREATE TABLE users (
             id bigint PRIMARY KEY,
             email text,
             first_name text,
             plan text,
             created_at timestamptz,
             counter bigint,
             sent_ms bigint
         );
         ALTER TABLE users REPLICA IDENTITY FULL;",
    )
    .await?;
    if rows > 0 {
        insert_users(db, 1, rows).await?;
    }
    db.batch_execute("VACUUM ANALYZE users").await?;
    db.batch_execute("CHECKPOINT").await?;
    db.batch_execute(&format!("CREATE PUBLICATION {PUBLICATION} FOR TABLE users")).await?;
    Ok(())
}

/// One INSERT statement (one transaction) of users `from..=to`.
pub async fn insert_users(db: &Client, from: i64, to: i64) -> Res<()> {
    db.execute(
        "INSERT INTO users
         SELECT g, 'user' || g || '@example.com', 'First' || g,
                (ARRAY['free', 'starter', 'pro', 'enterprise'])[1 + g % 4],
                timestamptz '2020-01-01 00:00:00+00' + g * interval '1 minute'
         FROM generate_series($1::bigint, $2::bigint) AS g",
        &[&from, &to],
    )
    .await?;
    Ok(())
}

/// The WAL insert position, as text.
pub async fn current_lsn(db: &Client) -> Res<String> {
    Ok(db.query_one("SELECT pg_current_wal_insert_lsn()::text", &[]).await?.get(0))
}

/// Bytes of WAL between two positions.
pub async fn wal_bytes(db: &Client, from: &str, to: &str) -> Res<i64> {
    let row = db
        .query_one(
            "SELECT pg_wal_lsn_diff($2::text::pg_lsn, $1::text::pg_lsn)::bigint",
            &[&from, &to],
        )
        .await?;
    Ok(row.get(0))
}

/// The slot's walsender and whether `confirmed_flush_lsn` reached `lsn`.
pub async fn slot_status(db: &Client, slot: &str, lsn: &str) -> Res<(Option<u32>, bool)> {
    let row = db
        .query_opt(
            // active_pid is also set while a backend creates the slot: only
            // a walsender counts as streaming.
            "SELECT a.pid, coalesce(s.confirmed_flush_lsn >= $2::text::pg_lsn, false) \
             FROM pg_replication_slots s \
             LEFT JOIN pg_stat_activity a ON a.pid = s.active_pid AND a.backend_type = 'walsender' \
             WHERE s.slot_name = $1",
            &[&slot, &lsn],
        )
        .await?;
    Ok(match row {
        Some(row) => (row.get::<_, Option<i32>>(0).map(|p| p as u32), row.get(1)),
        None => (None, false),
    })
}

/// The fields of `/proc/<pid>/stat` the bench uses, in clock ticks.
#[derive(Debug, Clone, Copy)]
pub struct ProcStat {
    ppid: u32,
    utime: u64,
    stime: u64,
    cutime: u64,
    cstime: u64,
}

impl ProcStat {
    fn own(&self) -> u64 {
        self.utime + self.stime
    }
    fn children(&self) -> u64 {
        self.cutime + self.cstime
    }
}

pub fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count from after its ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    Some(ProcStat {
        ppid: field(4)? as u32,
        utime: field(14)?,
        stime: field(15)?,
        cutime: field(16)?,
        cstime: field(17)?,
    })
}

/// Peak resident set size (`VmHWM`) in kB.
pub fn peak_rss_kb(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Busy CPU ticks of the whole machine (all CPUs), from `/proc/stat`.
fn machine_busy_ticks() -> u64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else { return 0 };
    let values: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest is inside user).
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    total.saturating_sub(idle)
}

pub fn clock_ticks_per_sec() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU seconds per process over a measured window, from `/proc` samples
/// (the last sample of a process that exited counts; what it used after
/// that sample, at most one polling interval, is missed).
pub struct CpuMeter {
    started: Instant,
    ticks_per_sec: f64,
    /// label → (pid, ticks at the window's start, latest ticks)
    procs: BTreeMap<&'static str, (u32, u64, u64)>,
    order: Vec<&'static str>,
    postgres_start: u64,
    postgres_end: u64,
    self_start: u64,
    self_end: u64,
    machine_start: u64,
    machine_end: u64,
    wall: Option<Duration>,
    /// (time into the window, CPU ticks so far per label) at every sample.
    history: Vec<(Duration, BTreeMap<&'static str, u64>)>,
}

impl CpuMeter {
    pub fn start(pg: &Pg) -> Self {
        let own = proc_stat(std::process::id()).map_or(0, |s| s.own());
        let postgres = pg.cpu_ticks();
        Self {
            started: Instant::now(),
            ticks_per_sec: clock_ticks_per_sec(),
            procs: BTreeMap::new(),
            order: Vec::new(),
            postgres_start: postgres,
            postgres_end: postgres,
            self_start: own,
            self_end: own,
            machine_start: machine_busy_ticks(),
            machine_end: 0,
            wall: None,
            history: Vec::new(),
        }
    }

    /// Follows `pid` under `label`; `from_zero` counts all of its CPU (a
    /// process started inside the window), else only what it uses from now.
    pub fn watch(&mut self, label: &'static str, pid: u32, from_zero: bool) {
        if self.procs.get(label).is_some_and(|(p, _, _)| *p == pid) {
            return;
        }
        let now = proc_stat(pid).map_or(0, |s| s.own());
        let base = if from_zero { 0 } else { now };
        if !self.order.contains(&label) {
            self.order.push(label);
        }
        self.procs.insert(label, (pid, base, now));
    }

    pub fn sample(&mut self) {
        for (pid, _, latest) in self.procs.values_mut() {
            if let Some(stat) = proc_stat(*pid) {
                *latest = stat.own();
            }
        }
        let used =
            self.procs.iter().map(|(l, (_, base, latest))| (*l, latest.saturating_sub(*base)));
        self.history.push((self.started.elapsed(), used.collect()));
    }

    /// Each process's CPU over time, in about 15 columns: shows which one
    /// was busy in which phase (e.g. the walsender decoding alone first).
    pub fn timeline(&self, indent: &str) -> String {
        let wall = self.wall.unwrap_or_else(|| self.started.elapsed()).as_secs_f64();
        let step = (wall / 15.0).ceil().max(1.0);
        let columns = (wall / step).ceil() as usize;
        let at = |label: &str, t: f64| -> u64 {
            self.history
                .iter()
                .take_while(|(when, _)| when.as_secs_f64() <= t)
                .last()
                .and_then(|(_, used)| used.get(label).copied())
                .unwrap_or(0)
        };
        let mut out = format!(
            "{indent}CPU per {step:.0} s from the start (% of one core; the last column may be partial):\n"
        );
        for label in &self.order {
            let _ = write!(out, "{indent}  {label:<42}");
            for c in 0..columns {
                let (from, to) = (c as f64 * step, ((c + 1) as f64 * step).min(wall));
                let ticks = at(label, to).saturating_sub(at(label, from));
                let pct = 100.0 * ticks as f64 / self.ticks_per_sec / (to - from).max(1e-9);
                let _ = write!(out, "{pct:>4.0}");
            }
            out.push('\n');
        }
        out
    }

    /// Ends the window.
    pub fn finish(&mut self, pg: &Pg) {
        self.sample();
        self.postgres_end = pg.cpu_ticks();
        self.self_end = proc_stat(std::process::id()).map_or(0, |s| s.own());
        self.machine_end = machine_busy_ticks();
        self.wall = Some(self.started.elapsed());
    }

    /// `label  12.3 s (45%)` lines: share of one core over the window.
    pub fn report(&self, indent: &str) -> String {
        let wall = self.wall.unwrap_or_else(|| self.started.elapsed()).as_secs_f64();
        let secs = |ticks: u64| ticks as f64 / self.ticks_per_sec;
        let mut rows: Vec<(String, f64)> = self
            .order
            .iter()
            .map(|label| {
                let (_, base, latest) = self.procs[label];
                (label.to_string(), secs(latest.saturating_sub(base)))
            })
            .collect();
        // Ours: every watched process that is not a postgres one (those are
        // in the cluster's total), the cluster, and the bench itself.
        let outside_postgres: f64 =
            rows.iter().filter(|(label, _)| !label.starts_with("postgres")).map(|(_, s)| s).sum();
        let postgres = secs(self.postgres_end.saturating_sub(self.postgres_start));
        let bench = secs(self.self_end.saturating_sub(self.self_start));
        let machine = secs(self.machine_end.saturating_sub(self.machine_start));
        rows.push(("postgres, all processes".to_owned(), postgres));
        rows.push(("bench process (driver, polling)".to_owned(), bench));
        rows.push((
            "anything else on the machine".to_owned(),
            (machine - outside_postgres - postgres - bench).max(0.0),
        ));
        let mut out = format!("{indent}CPU over {wall:.1} s wall (user+sys; 100% = one core):\n");
        for (label, secs) in rows {
            let _ = writeln!(
                out,
                "{indent}  {label:<42} {secs:>7.2} s  {:>4.0}%",
                100.0 * secs / wall.max(1e-9)
            );
        }
        out
    }

    pub fn seconds(&self, label: &str) -> Option<f64> {
        self.procs.get(label).map(|(_, b, l)| l.saturating_sub(*b) as f64 / self.ticks_per_sec)
    }
}

/// The release `ciosync-emulator`, beside the `ciosync` cargo bench built.
/// It is another package's binary (crates/emulator), which cargo builds
/// only for that package's own tests and benches: built here, once per run
/// (cargo has released its build lock by the time the bench runs), from the
/// root like the bench, so with the same features and no rebuilt crates.
fn emulator_binary() -> Res<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--release", "--quiet", "--bin", "ciosync-emulator"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .map_err(|e| format!("cannot run cargo to build ciosync-emulator: {e}"))?;
        if !status.success() {
            return Err(format!("cargo build --release --bin ciosync-emulator: {status}"));
        }
        let path = Path::new(env!("CARGO_BIN_EXE_ciosync")).with_file_name("ciosync-emulator");
        if !path.is_file() {
            return Err(format!("ciosync-emulator is not at {}", path.display()));
        }
        Ok(path)
    });
    Ok(built.clone()?)
}

/// `ciosync-emulator` as a child process on a free port.
pub struct Emulator {
    child: Child,
    _stdout: ChildStdout,
    pub url: String,
    http: reqwest::Client,
}

impl Emulator {
    pub fn start(dir: &Path, api_key: &str) -> Res<Self> {
        Self::start_with(dir, api_key, 0, false)
    }

    /// An emulator answering after `latency_ms`, in accept-only mode
    /// (items counted, not applied) if `accept_only`.
    pub fn start_with(dir: &Path, api_key: &str, latency_ms: u64, accept_only: bool) -> Res<Self> {
        let log = dir.join("emulator.log");
        let mut args = vec!["--listen", "127.0.0.1:0", "--site-id", SITE_ID];
        let latency = latency_ms.to_string();
        args.extend(["--latency-ms", latency.as_str()]);
        if accept_only {
            args.push("--accept-only");
        }
        let mut child = Command::new(emulator_binary()?)
            .args(&args)
            // The key through the environment, not argv (which `ps` shows).
            .env("CIOSYNC_EMULATOR_API_KEY", api_key)
            .env_remove("CIOSYNC_EMULATOR_SITE_ID")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let mut stdout = BufReader::new(child.stdout.take().ok_or("no emulator stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let url = line
            .trim()
            .strip_prefix("ciosync-emulator listening on ")
            .map(str::to_owned)
            .ok_or_else(|| format!("the emulator did not announce its address: {line:?}"));
        let url = match url {
            Ok(url) => url,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e.into());
            }
        };
        Ok(Self { child, _stdout: stdout.into_inner(), url, http: reqwest::Client::new() })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The request log (the emulator keeps the last 10,000 requests or 32 MiB of bodies).
    pub async fn requests(&self) -> Res<Vec<RecordedRequest>> {
        let url = format!("{}/_emulator/requests", self.url);
        Ok(self.http.get(url).send().await?.error_for_status()?.json().await?)
    }

    /// What accept-only mode counted.
    pub async fn accepted(&self) -> Res<ciosync_emulator::Accepted> {
        let url = format!("{}/_emulator/accepted", self.url);
        Ok(self.http.get(url).send().await?.error_for_status()?.json().await?)
    }

    /// Every customer's attributes, keyed by id.
    pub async fn customers(
        &self,
    ) -> Res<BTreeMap<String, serde_json::Map<String, serde_json::Value>>> {
        let url = format!("{}/_emulator/customers", self.url);
        Ok(self.http.get(url).send().await?.error_for_status()?.json().await?)
    }

    pub async fn customer(
        &self,
        id: &str,
    ) -> Res<Option<serde_json::Map<String, serde_json::Value>>> {
        let url = format!("{}/_emulator/customers/{id}", self.url);
        let response = self.http.get(url).send().await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(Some(response.error_for_status()?.json().await?))
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What every scenario's config sets beyond the minimal config, for the
/// output. `initial_sync = false`: the scenarios measure the stream, and
/// copying the table first would only add requests to the log.
pub const COMMON_SETTINGS: &str =
    "pipeline.initial_sync = false, customerio.track_url = <emulator>";

/// Environment variables that would point the daemon elsewhere: never
/// passed to it. Other `CIOSYNC_*` variables pass through (to measure a
/// setting) and are printed.
const OWNED_VARIABLES: &[&str] = &[
    "CIOSYNC_POSTGRES_URL",
    "CIOSYNC_POSTGRES_SLOT",
    "CIOSYNC_POSTGRES_PUBLICATION",
    "CIOSYNC_CUSTOMERIO_SITE_ID",
    "CIOSYNC_CUSTOMERIO_API_KEY",
    "CIOSYNC_CUSTOMERIO_REGION",
    "CIOSYNC_CUSTOMERIO_TRACK_URL",
    "CIOSYNC_PIPELINE_INITIAL_SYNC",
];

/// `CIOSYNC_*` overrides the daemon will see, as `NAME=value` (values of
/// names that look secret are hidden).
pub fn passed_overrides() -> Vec<String> {
    let mut out: Vec<String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("CIOSYNC_") && !k.starts_with("CIOSYNC_EMULATOR_"))
        .filter(|(k, _)| !OWNED_VARIABLES.contains(&k.as_str()))
        .map(|(k, v)| {
            let secret =
                ["KEY", "PASSWORD", "SECRET", "TOKEN", "URL"].iter().any(|s| k.contains(s));
            if secret {
                format!("{k}=<hidden>")
            } else {
                format!("{k}={v}")
            }
        })
        .collect();
    out.sort();
    out
}

/// The non-default parts of a daemon's config.
#[derive(Clone, Copy)]
pub struct Settings<'a> {
    pub slot: &'a str,
    pub postgres_extra: &'a str,
    pub customerio_extra: &'a str,
    pub initial_sync: bool,
    /// A program (with its arguments) that runs the daemon, e.g. valgrind.
    pub wrapper: &'a [String],
    /// Appended to the `[pipeline]` section.
    pub pipeline_extra: &'a str,
    /// The `[[sync]]` sections, in place of [`USERS_SYNC`].
    pub sync: &'a str,
    /// Variables set in the daemon's environment (over any inherited).
    pub env: &'a [(&'a str, &'a str)],
}

/// The `[[sync]]` of `public.users`, every column mapped.
pub const USERS_SYNC: &str = r#"[[sync]]
table = "public.users"
id_column = "id"

[sync.attributes]
email = "email"
first_name = "first_name"
plan = "plan"
created_at = "created_at"
counter = "counter"
sent_ms = "sent_ms"
"#;

impl<'a> Settings<'a> {
    /// The defaults of every scenario on `slot`.
    pub fn on(slot: &'a str) -> Self {
        Self {
            slot,
            postgres_extra: "",
            customerio_extra: "",
            initial_sync: false,
            wrapper: &[],
            pipeline_extra: "",
            sync: USERS_SYNC,
            env: &[],
        }
    }
}

/// `ciosync run` as a child process.
pub struct Daemon {
    child: Child,
    pub log: PathBuf,
    config: PathBuf,
    slot: String,
}

impl Daemon {
    /// Starts the daemon against `pg` and `emulator` on the default slot;
    /// `postgres_extra` is appended to the `[postgres]` section (non-default settings).
    pub fn start(
        dir: &Path,
        pg: &Pg,
        emulator: &Emulator,
        api_key: &str,
        postgres_extra: &str,
    ) -> Res<Self> {
        Self::start_on(dir, pg, emulator, api_key, SLOT, postgres_extra, "")
    }

    /// [`Daemon::start`] on `slot`, with `customerio_extra` appended to the
    /// `[customerio]` section.
    pub fn start_on(
        dir: &Path,
        pg: &Pg,
        emulator: &Emulator,
        api_key: &str,
        slot: &str,
        postgres_extra: &str,
        customerio_extra: &str,
    ) -> Res<Self> {
        let (extra, wrapper) = (customerio_extra, &[]);
        Self::start_wrapped(dir, pg, emulator, api_key, slot, postgres_extra, extra, wrapper)
    }

    /// [`Daemon::start_on`] run by `wrapper` (a program and its arguments,
    /// e.g. `valgrind --tool=callgrind`), which must run it in its own process.
    #[allow(clippy::too_many_arguments)]
    pub fn start_wrapped(
        dir: &Path,
        pg: &Pg,
        emulator: &Emulator,
        api_key: &str,
        slot: &str,
        postgres_extra: &str,
        customerio_extra: &str,
        wrapper: &[String],
    ) -> Res<Self> {
        let settings = Settings { postgres_extra, customerio_extra, wrapper, ..Settings::on(slot) };
        Self::spawn(dir, pg, emulator, api_key, &settings)
    }

    /// The daemon on `slot` with `initial_sync = true`: it copies the table first.
    pub fn start_copying(
        dir: &Path,
        pg: &Pg,
        emulator: &Emulator,
        api_key: &str,
        slot: &str,
        customerio_extra: &str,
    ) -> Res<Self> {
        let settings = Settings { customerio_extra, initial_sync: true, ..Settings::on(slot) };
        Self::spawn(dir, pg, emulator, api_key, &settings)
    }

    /// The daemon with `settings` (another table, mapping or pipeline setting).
    pub fn spawn(
        dir: &Path,
        pg: &Pg,
        emulator: &Emulator,
        api_key: &str,
        settings: &Settings,
    ) -> Res<Self> {
        let Settings {
            slot,
            postgres_extra,
            customerio_extra,
            initial_sync,
            wrapper,
            pipeline_extra,
            sync,
            env,
        } = *settings;
        let config = dir.join(format!("ciosync-{slot}.toml"));
        let text = format!(
            r#"[postgres]
url = "{url}"
slot = "{slot}"
publication = "{PUBLICATION}"
{postgres_extra}

[customerio]
site_id = "{SITE_ID}"
api_key = "{api_key}"
track_url = "{track_url}"
{customerio_extra}

[pipeline]
initial_sync = {initial_sync}
{pipeline_extra}

{sync}"#,
            url = pg.url,
            track_url = emulator.url,
        );
        write_private(&config, &text)?;
        let log = dir.join(format!("ciosync-{slot}.log"));
        let binary = env!("CARGO_BIN_EXE_ciosync");
        // `BENCH_WRAP` (e.g. `heaptrack -o /tmp/copy`) runs every daemon a
        // scenario does not wrap itself.
        let from_env: Vec<String> = std::env::var("BENCH_WRAP")
            .map(|w| w.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        let wrapper = if wrapper.is_empty() { &from_env[..] } else { wrapper };
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        command
            .args(["run", "--log-format", "json", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        for name in OWNED_VARIABLES {
            command.env_remove(name);
        }
        command.envs(env.iter().copied());
        let child = command.spawn()?;
        Ok(Self { child, log, config, slot: slot.to_owned() })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs `ciosync <args> --config <this daemon's config>` to the end;
    /// its stdout, or `Err` with its stderr if it failed.
    pub fn cli(&self, args: &[&str]) -> Res<String> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ciosync"));
        command.args(args).arg("--config").arg(&self.config).stdin(Stdio::null());
        for name in OWNED_VARIABLES {
            command.env_remove(name);
        }
        let output = command.output()?;
        if !output.status.success() {
            return Err(format!(
                "ciosync {} failed ({}): {}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )
            .into());
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// `Err` with the log's tail if the daemon has exited.
    pub fn check_alive(&mut self) -> Res<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => Err(format!(
                "ciosync exited early ({status}); last lines of its log:\n{}",
                tail(&self.log, 15)
            )
            .into()),
        }
    }

    /// Waits until the daemon streams from the slot (its walsender is up).
    pub async fn wait_streaming(&mut self, monitor: &Client) -> Res<u32> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.check_alive()?;
            if let (Some(pid), _) = slot_status(monitor, &self.slot, "0/0").await? {
                return Ok(pid);
            }
            if Instant::now() > deadline {
                return Err("ciosync did not start streaming within 60 s".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then up to 30 s for a clean exit, then SIGKILL.
    pub async fn stop(self) -> Option<ExitStatus> {
        self.stop_within(Duration::from_secs(30)).await
    }

    /// SIGTERM, then up to `grace` for a clean exit, then SIGKILL.
    pub async fn stop_within(mut self, grace: Duration) -> Option<ExitStatus> {
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls until the slot's `confirmed_flush_lsn` reaches `lsn`, sampling CPU
/// (and following the slot's walsender under `walsender`) meanwhile.
/// Returns when it got there, or `Err` at `timeout` or if the daemon died.
pub async fn wait_for_ack(
    monitor: &Client,
    slot: &str,
    lsn: &str,
    daemon: &mut Daemon,
    cpu: &mut CpuMeter,
    timeout: Duration,
) -> Res<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        let (walsender, reached) = slot_status(monitor, slot, lsn).await?;
        if let Some(pid) = walsender {
            cpu.watch("postgres walsender (ciosync's slot)", pid, true);
        }
        cpu.sample();
        if reached {
            return Ok(Instant::now());
        }
        daemon.check_alive()?;
        if Instant::now() > deadline {
            return Err(format!(
                "the slot was not acknowledged up to {lsn} within {} s",
                timeout.as_secs()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn write_private(path: &Path, text: &str) -> Res<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// A random API key for this run's emulator.
pub fn random_key() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// `pg_recvlogical` of the server's major version if there, else on PATH.
pub fn find_pg_recvlogical(server_version_num: i32) -> Option<PathBuf> {
    let major = server_version_num / 10000;
    let beside = PathBuf::from(format!("/usr/lib/postgresql/{major}/bin/pg_recvlogical"));
    if beside.exists() {
        return Some(beside);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).map(|d| d.join("pg_recvlogical")).find(|p| p.exists())
    })
}

/// Thousands separators, for counts and rates.
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if value < 0.0 {
        format!("-{out}")
    } else {
        out
    }
}
