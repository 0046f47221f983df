//! The pipeline as processes: spawning the real binaries, real signals (`kill -9`, `SIGSTOP` /
//! `SIGCONT`, `SIGTERM`), supervision, and control of the private Postgres.
//!
//! Every child is `wait()`ed after it is killed or found dead: PID 1 on some machines does not
//! reap orphans, and a zombie would hold its pid (and confuse `kill`).

use std::{
    fmt,
    fs::OpenOptions,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::Context;
use sqlx::{Connection, PgConnection};
use tokio::process::{Child, Command};

/// Lease of the validator and writer during a run: short, so that a frozen worker outlives it.
pub(crate) const LEASE_MS: u64 = 2_000;
/// Retry backoff of the consumers: small, so that poison rows reach their last attempt quickly.
const BACKOFF_BASE_MS: u64 = 50;
const BACKOFF_MAX_MS: u64 = 1_000;
/// Idle consumers poll this often (wake-ups are lost while Postgres restarts).
const POLL_INTERVAL_MS: u64 = 200;
/// Claims before a row is dead-lettered (the default, stated so the run does not depend on it).
pub(crate) const MAX_ATTEMPTS: i32 = 5;
/// How long a stopped service may take to drain after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// Which binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Ingest,
    Validator,
    Writer,
}

impl Kind {
    pub(crate) fn binary(self) -> &'static str {
        match self {
            Self::Ingest => "eye-ingest",
            Self::Validator => "eye-validator",
            Self::Writer => "eye-writer",
        }
    }
}

/// One instance of a binary; `child` is `None` only between a kill and its restart.
struct Service {
    kind: Kind,
    index: usize,
    child: Option<Child>,
    log: PathBuf,
}

impl Service {
    /// `eye-writer-1`: also its `application_name` in Postgres.
    fn name(&self) -> String {
        format!("{}-{}", self.kind.binary(), self.index)
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// A service that exited without being told to.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct UnexpectedExit {
    pub service: String,
    pub status: String,
    pub at_seconds: f64,
}

/// The running services of one run.
pub(crate) struct Cluster {
    services: Vec<Service>,
    bin_dir: PathBuf,
    run_dir: PathBuf,
    database_url: String,
    port: u16,
    started: Instant,
    pub unexpected_exits: Vec<UnexpectedExit>,
}

impl Cluster {
    /// Starts one ingest and `workers` validators and writers. Their logs (stderr, JSON, warnings
    /// and up) go to `run_dir/<binary>-<n>.log`, appended across restarts.
    pub(crate) async fn start(
        bin_dir: &Path,
        run_dir: &Path,
        database_url: &str,
        workers: usize,
        started: Instant,
    ) -> anyhow::Result<Self> {
        let mut cluster = Self {
            services: Vec::new(),
            bin_dir: std::path::absolute(bin_dir)?,
            run_dir: run_dir.to_owned(),
            database_url: database_url.to_owned(),
            port: free_port()?,
            started,
            unexpected_exits: Vec::new(),
        };
        let mut layout = vec![(Kind::Ingest, 0)];
        for index in 0..workers {
            layout.push((Kind::Validator, index));
            layout.push((Kind::Writer, index));
        }
        for (kind, index) in layout {
            let log = run_dir.join(format!("{}-{index}.log", kind.binary()));
            cluster.services.push(Service { kind, index, child: None, log });
            if let Err(error) = cluster.spawn(cluster.services.len() - 1) {
                cluster.kill().await;
                return Err(error);
            }
        }
        Ok(cluster)
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The log files, one per instance.
    pub(crate) fn logs(&self) -> Vec<PathBuf> {
        self.services.iter().map(|s| s.log.clone()).collect()
    }

    /// How many instances of `kind` run.
    pub(crate) fn count(&self, kind: Kind) -> usize {
        self.services.iter().filter(|s| s.kind == kind).count()
    }

    fn find(&self, kind: Kind, index: usize) -> usize {
        self.services
            .iter()
            .position(|s| s.kind == kind && s.index == index)
            .expect("a service of that kind and index")
    }

    fn spawn(&mut self, at: usize) -> anyhow::Result<()> {
        let service = &self.services[at];
        let path = self.bin_dir.join(service.kind.binary());
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&service.log)
            .with_context(|| format!("cannot open {}", service.log.display()))?;
        let mut command = Command::new(&path);
        // Settings come from this environment only: no `eye.toml`, no `EYE__` of the caller.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("EYE") {
                command.env_remove(name);
            }
        }
        // The application name tells this instance's backends apart in pg_stat_activity.
        let database_url =
            eye_test_support::with_application_name(&self.database_url, &service.name());
        command
            .current_dir(&self.run_dir)
            .env("DATABASE_URL", database_url)
            .env("EYE__INGEST__HOST", "127.0.0.1")
            .env("EYE__INGEST__PORT", self.port.to_string())
            .env("EYE__INGEST__HTTP_PORT", "0")
            // Several services on one host: each its own free metrics port.
            .env("EYE__METRICS__HOST", "127.0.0.1")
            .env("EYE__METRICS__PORT", "0")
            .env("RUST_LOG", "warn");
        for section in ["VALIDATOR", "WRITER"] {
            let prefix = format!("EYE__{section}__CONSUMER__");
            command
                .env(format!("{prefix}LEASE_MS"), LEASE_MS.to_string())
                .env(format!("{prefix}BACKOFF_BASE_MS"), BACKOFF_BASE_MS.to_string())
                .env(format!("{prefix}BACKOFF_MAX_MS"), BACKOFF_MAX_MS.to_string())
                .env(format!("{prefix}POLL_INTERVAL_MS"), POLL_INTERVAL_MS.to_string())
                .env(format!("{prefix}MAX_ATTEMPTS"), MAX_ATTEMPTS.to_string());
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!("cannot start {} (build with `cargo build --bins`)", path.display())
            })?;
        self.services[at].child = Some(child);
        Ok(())
    }

    /// Restarts every service that exited by itself, recording why.
    pub(crate) fn supervise(&mut self) -> anyhow::Result<()> {
        for at in 0..self.services.len() {
            let Some(child) = self.services[at].child.as_mut() else { continue };
            let Some(status) = child.try_wait()? else { continue };
            let exit = UnexpectedExit {
                service: self.services[at].to_string(),
                status: status.to_string(),
                at_seconds: self.started.elapsed().as_secs_f64(),
            };
            eprintln!(
                "[{:6.1}s] {} exited by itself ({status}); restarting",
                exit.at_seconds, exit.service
            );
            self.unexpected_exits.push(exit);
            self.spawn(at)?;
        }
        Ok(())
    }

    /// Sleeps for `duration`, restarting services that die meanwhile.
    pub(crate) async fn idle(&mut self, duration: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + duration;
        loop {
            self.supervise()?;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            tokio::time::sleep(left.min(Duration::from_millis(100))).await;
        }
    }

    /// Waits (at most `patience`) until an instance is inside an explicit database transaction
    /// (a hand-off, a group commit: past its first statement), so that the next fault lands on
    /// work in flight rather than on an idle process. With `before_ack`, only before the
    /// hand-off's ack (`DELETE FROM outbox`) and `COMMIT`: a worker frozen there still holds a
    /// claim that another will take over, so its late ack must be fenced off. Returns whether it
    /// saw such a moment.
    pub(crate) async fn wait_busy(
        &mut self,
        kind: Kind,
        index: usize,
        before_ack: bool,
        patience: Duration,
    ) -> anyhow::Result<bool> {
        let name = self.services[self.find(kind, index)].name();
        let deadline = Instant::now() + patience;
        let Ok(mut conn) = connect_retry(&self.database_url, patience).await else {
            return Ok(false);
        };
        let mut busy = false;
        while !busy && Instant::now() < deadline {
            busy = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = $1 \
                 AND (state LIKE 'idle in transaction%' OR xact_start < query_start) \
                 AND NOT ($2 AND (query LIKE '%DELETE FROM outbox%' OR query ILIKE 'COMMIT%')))",
            )
            .bind(&name)
            .bind(before_ack)
            .fetch_one(&mut conn)
            .await
            .unwrap_or(false);
            if !busy {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let _ = conn.close().await;
        Ok(busy)
    }

    /// `kill -9` an instance, reap it, wait `pause`, start it again. Returns its name.
    pub(crate) async fn kill_and_restart(
        &mut self,
        kind: Kind,
        index: usize,
        pause: Duration,
    ) -> anyhow::Result<String> {
        let at = self.find(kind, index);
        let name = self.services[at].to_string();
        let mut child = self.services[at].child.take().expect("a running service");
        if let Some(pid) = child.id() {
            signal(pid, "KILL").await?;
        }
        child.wait().await?;
        self.idle(pause).await?;
        self.spawn(at)?;
        Ok(name)
    }

    /// `SIGSTOP` an instance for `duration`, then `SIGCONT`. Returns its name.
    pub(crate) async fn freeze(
        &mut self,
        kind: Kind,
        index: usize,
        duration: Duration,
    ) -> anyhow::Result<String> {
        let at = self.find(kind, index);
        let name = self.services[at].to_string();
        let pid = self.services[at].child.as_ref().and_then(Child::id);
        let Some(pid) = pid else { return Ok(name) };
        signal(pid, "STOP").await?;
        // A stopped child is not reported by try_wait (no WUNTRACED): supervision ignores it.
        let idled = self.idle(duration).await;
        signal(pid, "CONT").await?;
        idled?;
        Ok(name)
    }

    /// SIGKILL to everyone (a stopped process too), and reaps them.
    pub(crate) async fn kill(&mut self) {
        for service in &mut self.services {
            if let Some(mut child) = service.child.take() {
                let _ = child.kill().await;
            }
        }
    }

    /// SIGTERM to everyone, then waits for each to drain (killing it after a grace period).
    pub(crate) async fn stop(&mut self) {
        for service in &self.services {
            if let Some(pid) = service.child.as_ref().and_then(Child::id) {
                let _ = signal(pid, "TERM").await;
            }
        }
        for service in &mut self.services {
            let Some(mut child) = service.child.take() else { continue };
            if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_err() {
                eprintln!("{service} did not drain within {STOP_GRACE:?}; killing it");
                let _ = child.kill().await;
            }
        }
    }
}

/// Sends a signal with `kill(1)`, which needs no extra dependency.
async fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args(["-s", name, &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .context("cannot run kill")?;
    // A process that already died is not an error here: supervision deals with it.
    if !status.success() {
        eprintln!("kill -s {name} {pid} failed ({status})");
    }
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The private Postgres of the run, which the suite restarts and whose backends it terminates.
#[derive(Clone)]
pub(crate) struct Postgres {
    pub server: local_postgres::LocalPostgres,
}

impl Postgres {
    /// Starts (or reuses) the durable server under `base_dir`.
    pub(crate) fn ensure(base_dir: PathBuf) -> anyhow::Result<Self> {
        let cwd = std::env::current_dir()?;
        let options = local_postgres::Options {
            base_dir,
            fallback_key: format!("{}#chaos", cwd.display()),
            durable: true,
        };
        let server = local_postgres::LocalPostgres::ensure(&options)
            .context("cannot start the private Postgres")?;
        Ok(Self { server })
    }

    /// `pg_ctl restart -m fast`: every connection drops, in-flight transactions abort, committed
    /// ones must survive (the server is durable: fsync on).
    pub(crate) async fn restart(&self) -> anyhow::Result<()> {
        let server = self.server.clone();
        tokio::task::spawn_blocking(move || {
            server.pg_ctl(&["restart", "-m", "fast", "-w", "-t", "60"])
        })
        .await??;
        Ok(())
    }

    /// Terminates every other backend of the run's database; returns how many.
    pub(crate) async fn terminate_backends(&self, database_url: &str) -> anyhow::Result<i64> {
        let mut conn = connect_retry(database_url, Duration::from_secs(30)).await?;
        let terminated: i64 = sqlx::query_scalar(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut conn)
        .await?;
        let _ = conn.close().await;
        Ok(terminated)
    }
}

/// Connects, retrying while the server restarts, until `patience` runs out.
pub(crate) async fn connect_retry(url: &str, patience: Duration) -> anyhow::Result<PgConnection> {
    let deadline = Instant::now() + patience;
    loop {
        match PgConnection::connect(url).await {
            Ok(conn) => return Ok(conn),
            Err(error) if Instant::now() < deadline => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => return Err(error).context("cannot connect to the private Postgres"),
        }
    }
}
