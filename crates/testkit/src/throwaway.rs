//! A throwaway PostgreSQL cluster for the demo and the tests: `initdb` into a
//! temporary directory, `wal_level = logical`, a free port on 127.0.0.1,
//! trust authentication, removed when dropped. As root it runs the server as
//! the `postgres` OS user, since Postgres refuses to run as root.
//!
//! [`ClusterOptions`] turn on what the TLS and password tests need: TLS with
//! a given certificate, and SCRAM-SHA-256 for every role but `postgres`
//! (which keeps trust, so the harness can still set things up).
//!
//! For failover scenarios, [`ThrowawayPostgres::start_standby`] makes a
//! streaming physical standby from a cold copy of a cluster's data directory
//! (no `pg_basebackup` is needed, so it works for every installed major),
//! and [`ThrowawayPostgres::promote`] promotes it.
//!
//! Which PostgreSQL: `CIOSYNC_PG_BIN` (a folder with `initdb`) when
//! set, else the newest major installed on PATH, in `/usr/lib/postgresql`
//! or where `scripts/fetch-postgres.sh` puts further majors
//! ([`DEFAULT_INSTALL_DIR`], or `CIOSYNC_PG_DIR`). Not `CIOSYNC_POSTGRES_*`:
//! those are the daemon's `[postgres]` overrides, and the daemons the tests
//! start inherit the environment.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Why the cluster could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ThrowawayError {
    /// `initdb` or `pg_ctl` not found.
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found on PATH, in \
         /usr/lib/postgresql/*/bin or in CIOSYNC_PG_DIR (default \
         /var/cache/ciosync/postgres), nor in CIOSYNC_PG_BIN when that is set: install \
         them (Debian: apt-get install postgresql; other majors: scripts/fetch-postgres.sh)"
    )]
    NoBinaries,
    /// A command failed; the message carries its output.
    #[error("{command} failed: {output}")]
    Command { command: String, output: String },
    /// File system trouble.
    #[error("cannot prepare the cluster directory")]
    Io(#[from] std::io::Error),
}

/// What a cluster serves beyond the defaults (no TLS, trust for everyone).
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Serve TLS with this certificate (`ssl = on`).
    pub tls: Option<ServerTls>,
    /// Roles other than `postgres` log in over TCP with a SCRAM-SHA-256
    /// password (`host … scram-sha-256`, or `hostssl` when TLS is on), for
    /// SQL and logical replication connections alike.
    pub scram: bool,
    /// With `scram`: the `pg_hba.conf` method of those roles instead of
    /// `scram-sha-256`, e.g. `password` (the server asks in clear text).
    pub password_method: Option<&'static str>,
    /// The server installation; [`default_installation`] when `None`.
    pub installation: Option<Installation>,
    /// More `postgresql.conf` lines, appended after the defaults (so they
    /// win), e.g. `"max_slot_wal_keep_size = '1GB'"`.
    pub settings: Vec<String>,
}

/// The server's certificate chain and private key, both PEM.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A running throwaway cluster.
#[derive(Debug)]
pub struct ThrowawayPostgres {
    dir: PathBuf,
    bin: PathBuf,
    installation: Installation,
    port: u16,
    run_as_postgres: bool,
}

impl ThrowawayPostgres {
    /// Creates and starts a cluster without TLS, trusting every local
    /// connection. Blocking (a second or two).
    pub fn start() -> Result<Self, ThrowawayError> {
        Self::start_with(&ClusterOptions::default())
    }

    /// Creates and starts a cluster with `options`. Blocking.
    pub fn start_with(options: &ClusterOptions) -> Result<Self, ThrowawayError> {
        let installation = match &options.installation {
            Some(installation) => installation.clone(),
            None => default_installation().ok_or(ThrowawayError::NoBinaries)?,
        };
        let bin = installation.bin.clone();
        let run_as_postgres = is_root();
        let dir = std::env::temp_dir().join(format!(
            "ciosync-pg-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir)?;
        if run_as_postgres {
            chown_to_postgres(&dir)?;
        }
        let mut pg = Self { dir, bin, installation, port: 0, run_as_postgres };
        pg.run(
            "initdb",
            &["-D", &pg.data_dir(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
        )?;
        // Each test of a binary leaves its slot until the cluster goes: room for all.
        let settings = "\nwal_level = logical\nmax_replication_slots = 200\nmax_wal_senders = 60\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
             listen_addresses = '127.0.0.1'\nmax_connections = 200\n\
             log_min_messages = warning\n";
        let conf = Path::new(&pg.data_dir()).join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf)?;
        text.push_str(settings);
        // PostgreSQL 18 counts origins active in sessions (write-backs,
        // webhook actions: one or two per test) apart from slots, 10 by default.
        if pg.installation.major >= 18 {
            text.push_str("max_active_replication_origins = 200\n");
        }
        text.push_str(&format!("unix_socket_directories = '{}'\n", pg.dir.display()));
        if let Some(tls) = &options.tls {
            let (cert, key) = pg.write_server_tls(tls)?;
            text.push_str(&format!(
                "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
                cert.display(),
                key.display()
            ));
        }
        for line in &options.settings {
            text.push_str(line);
            text.push('\n');
        }
        if options.scram {
            text.push_str("password_encryption = 'scram-sha-256'\n");
            let hba = Path::new(&pg.data_dir()).join("pg_hba.conf");
            let method = options.password_method.unwrap_or("scram-sha-256");
            std::fs::write(&hba, scram_hba(options.tls.is_some(), method))?;
        }
        std::fs::write(&conf, text)?;
        // A free port can be taken between the probe and the start: try a few.
        let mut last = None;
        for _ in 0..5 {
            pg.port = free_port()?;
            match pg.pg_ctl_start() {
                Ok(()) => return Ok(pg),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(ThrowawayError::NoBinaries))
    }

    /// Makes and starts a hot standby of this cluster that streams from it
    /// through the physical slot `slot`, which must exist here
    /// (`pg_create_physical_replication_slot`). From a cold copy: this
    /// cluster is stopped (`fast`) for the copy and started again, so its
    /// connections end. Like `pg_basebackup`, the copy leaves out the
    /// replication slots (a standby must not start with the primary's
    /// slots). On PostgreSQL 17+ the standby also runs the slot sync worker
    /// (`sync_replication_slots`), which keeps failover slots in step; it
    /// needs `hot_standby_feedback`, `primary_slot_name` and a `dbname` in
    /// `primary_conninfo`, all set here. Blocking (a few seconds).
    pub fn start_standby(&self, slot: &str) -> Result<Self, ThrowawayError> {
        let dir = std::env::temp_dir().join(format!(
            "ciosync-pg-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir)?;
        if self.run_as_postgres {
            chown_to_postgres(&dir)?;
        }
        let mut standby = Self {
            dir,
            bin: self.bin.clone(),
            installation: self.installation.clone(),
            port: 0,
            run_as_postgres: self.run_as_postgres,
        };
        self.stop("fast")?;
        let copied = Command::new("cp")
            .args(["-a", &self.data_dir(), &standby.data_dir()])
            .status()
            .map(|status| status.success());
        self.restart()?;
        if !copied? {
            return Err(ThrowawayError::Command {
                command: "cp -a".into(),
                output: "copying the data directory failed".into(),
            });
        }
        let data = PathBuf::from(standby.data_dir());
        for stale in ["postmaster.pid", "postmaster.opts"] {
            let _ = std::fs::remove_file(data.join(stale));
        }
        for entry in std::fs::read_dir(data.join("pg_replslot"))? {
            std::fs::remove_dir_all(entry?.path())?;
        }
        std::fs::write(data.join("standby.signal"), "")?;
        if standby.run_as_postgres {
            chown_to_postgres(&data.join("standby.signal"))?;
        }
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf)?;
        text.push_str(&format!(
            "\n# standby of port {port}\nunix_socket_directories = '{dir}'\n\
             primary_conninfo = 'host=127.0.0.1 port={port} user=postgres dbname=postgres \
             application_name={slot}'\nprimary_slot_name = '{slot}'\nhot_standby = on\n\
             hot_standby_feedback = on\n",
            port = self.port,
            dir = standby.dir.display(),
        ));
        if self.installation.major >= 17 {
            text.push_str("sync_replication_slots = on\n");
        }
        std::fs::write(&conf, text)?;
        let mut last = None;
        for _ in 0..5 {
            standby.port = free_port()?;
            match standby.pg_ctl_start() {
                Ok(()) => return Ok(standby),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(ThrowawayError::NoBinaries))
    }

    /// Promotes a standby to a primary (`pg_ctl promote`), waiting until it
    /// accepts writes.
    pub fn promote(&self) -> Result<(), ThrowawayError> {
        self.run("pg_ctl", &["-D", &self.data_dir(), "-w", "-t", "60", "promote"]).map(|_| ())
    }

    /// The server installation it runs.
    pub fn installation(&self) -> &Installation {
        &self.installation
    }

    /// The TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection URL for `database` as the `postgres` superuser.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}?sslmode=disable", self.port)
    }

    /// Stops the server (`fast` or `immediate`), keeping the data; gives up
    /// waiting after pg_ctl's default 60 s.
    pub fn stop(&self, mode: &str) -> Result<(), ThrowawayError> {
        self.stop_within(mode, 60)
    }

    /// Stops the server like [`stop`](Self::stop), but gives up waiting
    /// after `timeout_secs` (the server may then still be shutting down).
    pub fn stop_within(&self, mode: &str, timeout_secs: u32) -> Result<(), ThrowawayError> {
        let timeout = timeout_secs.to_string();
        self.run("pg_ctl", &["-D", &self.data_dir(), "-m", mode, "-t", &timeout, "-w", "stop"])
            .map(|_| ())
    }

    /// Starts the stopped server again on the same port.
    pub fn restart(&self) -> Result<(), ThrowawayError> {
        self.pg_ctl_start()
    }

    /// For a cluster kept in a `static` (never dropped): a small shell
    /// process stops the server and removes its directory once process `pid`
    /// has exited, however it exited.
    pub fn reap_when_process_exits(&self, pid: u32) {
        let pg_ctl = self.bin.join("pg_ctl");
        let stop = if self.run_as_postgres {
            format!("runuser -u postgres -- '{}'", pg_ctl.display())
        } else {
            format!("'{}'", pg_ctl.display())
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             {stop} -D '{data}' -m immediate stop >/dev/null 2>&1; rm -rf '{dir}'",
            data = self.data_dir(),
            dir = self.dir.display(),
        );
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }

    /// Writes the certificate and key into the cluster's directory, owned by
    /// the server's user, the key readable by it alone (Postgres refuses a
    /// key others can read).
    fn write_server_tls(&self, tls: &ServerTls) -> Result<(PathBuf, PathBuf), ThrowawayError> {
        use std::os::unix::fs::PermissionsExt;
        let cert = self.dir.join("server.crt");
        let key = self.dir.join("server.key");
        std::fs::write(&cert, &tls.cert_pem)?;
        std::fs::write(&key, &tls.key_pem)?;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
        if self.run_as_postgres {
            chown_to_postgres(&cert)?;
            chown_to_postgres(&key)?;
        }
        Ok((cert, key))
    }

    fn pg_ctl_start(&self) -> Result<(), ThrowawayError> {
        let log = self.dir.join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data_dir(),
                "-l",
                &log.display().to_string(),
                "-o",
                &format!("-p {}", self.port),
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
        .map(|_| ())
    }

    fn data_dir(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<String, ThrowawayError> {
        let path = self.bin.join(program);
        let mut command = if self.run_as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let output = command.args(args).current_dir(&self.dir).stdin(Stdio::null()).output()?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if output.status.success() {
            Ok(text)
        } else {
            Err(ThrowawayError::Command { command: program.to_owned(), output: text })
        }
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        let _ = self.stop("immediate");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// pg_hba.conf for [`ClusterOptions::scram`]: the Unix socket and the
/// `postgres` superuser keep trust; every other role needs its SCRAM
/// password over TCP, and TLS too when `tls` (`hostssl`). The `all` database
/// lines cover logical replication connections, which name a database.
fn scram_hba(tls: bool, method: &str) -> String {
    let host = if tls { "hostssl" } else { "host" };
    format!(
        "local all all trust\n\
         host all postgres 127.0.0.1/32 trust\n\
         host all postgres ::1/128 trust\n\
         {host} all all 127.0.0.1/32 {method}\n\
         {host} all all ::1/128 {method}\n"
    )
}

fn is_root() -> bool {
    // SAFETY-free check: the effective uid is in /proc/self/status.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

fn chown_to_postgres(dir: &Path) -> Result<(), ThrowawayError> {
    let status = Command::new("chown").arg("postgres:").arg(dir).status()?;
    if status.success() {
        Ok(())
    } else {
        Err(ThrowawayError::Command {
            command: "chown postgres".into(),
            output: "is there a `postgres` OS user? (Debian's postgresql package creates it)"
                .into(),
        })
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Where `scripts/fetch-postgres.sh` installs further majors, one folder
/// each (`16/bin/initdb`…), unless `CIOSYNC_PG_DIR` says otherwise.
pub const DEFAULT_INSTALL_DIR: &str = "/var/cache/ciosync/postgres";

/// One PostgreSQL server installation a cluster can be made with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installation {
    /// The major version, e.g. 17.
    pub major: u32,
    /// The full version as `postgres --version` prints it, e.g. `17.10`.
    pub version: String,
    /// The folder holding `initdb`, `pg_ctl` and `postgres`.
    pub bin: PathBuf,
}

impl Installation {
    /// The installation in `bin`, if `bin/postgres --version` answers.
    pub fn at(bin: &Path) -> Option<Self> {
        if !bin.join("initdb").exists() || !bin.join("pg_ctl").exists() {
            return None;
        }
        let output = Command::new(bin.join("postgres")).arg("--version").output().ok()?;
        let text = String::from_utf8_lossy(&output.stdout);
        // "postgres (PostgreSQL) 17.10" or "… 15.18 (Debian 15.18-0+deb12u1)"
        let version = text.split_whitespace().nth(2)?.to_owned();
        let major = version.split(['.', 'b', 'r']).next()?.parse().ok()?;
        Some(Self { major, version, bin: bin.to_path_buf() })
    }
}

/// Every installation found, one per major (the first found of each, in
/// the order: PATH, `/usr/lib/postgresql/*/bin`, the install folder),
/// sorted by major.
pub fn installations() -> Vec<Installation> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            // Debian links them from elsewhere; the real dir has pg_ctl too.
            if let Ok(real) = std::fs::canonicalize(dir.join("initdb")) {
                candidates.extend(real.parent().map(Path::to_path_buf));
            }
        }
    }
    let install_dir = std::env::var_os("CIOSYNC_PG_DIR")
        .map_or_else(|| PathBuf::from(DEFAULT_INSTALL_DIR), PathBuf::from);
    for root in [Path::new("/usr/lib/postgresql"), install_dir.as_path()] {
        let mut found: Vec<PathBuf> = std::fs::read_dir(root)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .collect();
        found.sort();
        candidates.extend(found);
    }
    let mut installations: Vec<Installation> = Vec::new();
    for bin in candidates {
        if let Some(found) = Installation::at(&bin) {
            if installations.iter().all(|i| i.major != found.major) {
                installations.push(found);
            }
        }
    }
    installations.sort_by_key(|i| i.major);
    installations
}

/// The installation a cluster uses: `CIOSYNC_PG_BIN` when set (a
/// folder with `initdb`), else the newest of [`installations`].
pub fn default_installation() -> Option<Installation> {
    match std::env::var_os("CIOSYNC_PG_BIN") {
        Some(bin) => Installation::at(Path::new(&bin)),
        None => installations().pop(),
    }
}
