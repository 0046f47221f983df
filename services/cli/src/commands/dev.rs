//! `eye dev`: the whole pipeline in one process, on a laptop, with nothing to set up; and
//! `eye dev env` / `eye dev stop`, which go with it.
//!
//! 1. The directory's `.eye/` holds the state: `dev.lock` (held while an `eye dev` runs, so a
//!    second one is told so at once), `dev.env` (mode 600: the `export` lines of the last run,
//!    printed by `eye dev env`), and `pg/` (the private Postgres when `DATABASE_URL` is unset).
//! 2. The database: `DATABASE_URL` if set, else the private Postgres under `./.eye/pg` (started,
//!    or reused if already running; it keeps running after `eye dev` exits, so the next start is
//!    instant; `eye dev stop` stops it).
//! 3. Migrations, then the example schemas of `schemas/` (unchanged ones are no-ops).
//! 4. Ingest and query, then the metrics endpoint (binding their ports first, so a busy port
//!    fails before anything is issued), the validator, the writer and delivery, all on `--host`
//!    (loopback by default).
//! 5. The key of the application `dev` (ingest + read): the one in `dev.env` while it is valid,
//!    else a new one. It is printed last, alone on its line, after the `export` block.
//! 6. Everything runs until SIGINT/SIGTERM, then drains; a service failing stops the others.

use std::{
    fs::{File, OpenOptions},
    io::{Read, Seek, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use eye_admin::{apps, schemas};
use eye_service::{
    Settings,
    auth::Role,
    http::{self, HttpListener},
};
use eye_telemetry::metrics::Metrics;
use fs2::FileExt;
use local_postgres::{LocalPostgres, Options};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::migrate;
use crate::{
    cli::{DevAction, DevArgs},
    database::{self, Source},
};

/// The application `eye dev` issues keys for.
pub const DEV_APPLICATION: &str = "dev";

/// Runs `eye dev`, `eye dev env` or `eye dev stop`.
pub async fn run(args: DevArgs, settings: Settings) -> anyhow::Result<()> {
    let dir = std::env::current_dir().context("cannot read the current directory")?;
    match args.action {
        None => serve(&dir, &args.host, settings).await,
        Some(DevAction::Env) => {
            let env = DevEnv::read(&dir)?.with_context(
                || "no `eye dev` has run in this directory yet: start one with `eye dev`",
            )?;
            print!("{}", env.exports());
            Ok(())
        }
        Some(DevAction::Stop { tests }) => stop(&dir, tests).await,
    }
}

/// The `export` lines of a run, kept in `.eye/dev.env`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DevEnv {
    database_url: String,
    endpoint: String,
    http_endpoint: String,
    query_endpoint: String,
    api_key: String,
}

impl DevEnv {
    fn path(dir: &Path) -> PathBuf {
        dir.join(".eye").join("dev.env")
    }

    fn exports(&self) -> String {
        format!(
            "export DATABASE_URL={}\nexport EYE_ENDPOINT={}\nexport EYE_HTTP_ENDPOINT={}\n\
             export EYE_QUERY_ENDPOINT={}\nexport EYE_API_KEY={}\n",
            shell_quote(&self.database_url),
            shell_quote(&self.endpoint),
            shell_quote(&self.http_endpoint),
            shell_quote(&self.query_endpoint),
            shell_quote(&self.api_key),
        )
    }

    fn read(dir: &Path) -> anyhow::Result<Option<Self>> {
        let path = Self::path(dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => {
                return Err(error).with_context(|| format!("cannot read {}", path.display()));
            }
        };
        let value = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(&format!("export {name}=")))
                .map(shell_unquote)
                .unwrap_or_default()
        };
        Ok(Some(Self {
            database_url: value("DATABASE_URL"),
            endpoint: value("EYE_ENDPOINT"),
            http_endpoint: value("EYE_HTTP_ENDPOINT"),
            query_endpoint: value("EYE_QUERY_ENDPOINT"),
            api_key: value("EYE_API_KEY"),
        }))
    }

    /// Writes the file readable by its owner only: it holds a key.
    fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let path = Self::path(dir);
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        file.write_all(self.exports().as_bytes())?;
        Ok(())
    }
}

/// `'text'` for a POSIX shell.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn shell_unquote(text: &str) -> String {
    let text = text.trim();
    match text.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')) {
        Some(inner) => inner.replace(r"'\''", "'"),
        None => text.to_owned(),
    }
}

/// `.eye/dev.lock`, held (flock) while an `eye dev` runs in the directory; it holds the pid.
struct DevLock {
    _file: File,
}

impl DevLock {
    fn path(dir: &Path) -> PathBuf {
        dir.join(".eye").join("dev.lock")
    }

    /// Takes the lock, or says which `eye dev` holds it.
    fn acquire(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir.join(".eye")).context("cannot create ./.eye")?;
        let path = Self::path(dir);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        if file.try_lock_exclusive().is_err() {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            bail!(
                "another `eye dev` is running in this directory (pid {}): use it (`eval \"$(eye dev \
                 env)\"` in this terminal), or stop it with Ctrl-C in its terminal",
                pid.trim()
            );
        }
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        Ok(Self { _file: file })
    }

    /// Whether an `eye dev` holds the lock now; its pid if so.
    fn holder(dir: &Path) -> Option<String> {
        let mut file = File::open(Self::path(dir)).ok()?;
        if file.try_lock_exclusive().is_ok() {
            let _ = FileExt::unlock(&file);
            return None;
        }
        let mut pid = String::new();
        let _ = file.read_to_string(&mut pid);
        Some(pid.trim().to_owned())
    }
}

async fn stop(dir: &Path, tests: bool) -> anyhow::Result<()> {
    let (options, what) = if tests {
        (
            Options::for_tests(&std::fs::canonicalize(dir)?),
            "the test suite's Postgres (target/eye-test-pg)",
        )
    } else {
        if let Some(pid) = DevLock::holder(dir) {
            bail!(
                "`eye dev` is still running in this directory (pid {pid}): stop it first with \
                 Ctrl-C in its terminal (or `kill {pid}`), then run `eye dev stop` again"
            );
        }
        (Options::for_dev(dir), "the dev Postgres (./.eye/pg)")
    };
    let stopped = tokio::task::spawn_blocking(move || LocalPostgres::stop_existing(&options))
        .await
        .context("the stop task failed")??;
    if stopped {
        println!("stopped {what}; its data stays, the next start reuses it");
    } else {
        println!("{what} is not running; nothing to stop");
    }
    Ok(())
}

/// Runs the pipeline until a signal, then drains.
async fn serve(dir: &Path, host: &str, mut settings: Settings) -> anyhow::Result<()> {
    let _lock = DevLock::acquire(dir)?;
    for bind in [&mut settings.ingest.host, &mut settings.query.host, &mut settings.metrics.host] {
        host.clone_into(bind);
    }
    let shutdown = eye_service::shutdown::on_signal();
    let source = database::resolve(&mut settings).await?;
    let pool = database::connect(&settings.database).await?;
    migrate::migrate(&pool).await?;
    let registered = schemas::register_examples(&pool).await.map_err(database::admin)?;

    // One process, one `/metrics` for all the services; the gRPC ports are bound first, so that
    // a second `eye dev` (or another server on them) is reported as such.
    let metrics = Metrics::new();
    let busy = |what: &str, host: &str, port: u16, variable: &str| {
        format!(
            "cannot listen for {what} on {host}:{port}: is another `eye dev` or Eye server running? \
             ({variable}=0 picks a free port)"
        )
    };
    let ingest = eye_ingest::Application::build_with_metrics(settings.clone(), metrics.clone())
        .await
        .with_context(|| {
            format!(
                "{} (or :{} for HTTP ingest, EYE__INGEST__HTTP_PORT)",
                busy("ingest", host, settings.ingest.port, "EYE__INGEST__PORT"),
                settings.ingest.http_port
            )
        })?;
    let query = eye_query::Application::build_with_metrics(settings.clone(), metrics.clone())
        .await
        .with_context(|| {
            format!(
                "{} (or :{} for the console, EYE__QUERY__HTTP_PORT)",
                busy("queries", host, settings.query.port, "EYE__QUERY__PORT"),
                settings.query.http_port
            )
        })?;
    let metrics_server = HttpListener::bind(&settings.metrics.host, settings.metrics.port)
        .await
        .with_context(|| busy("metrics", host, settings.metrics.port, "EYE__METRICS__PORT"))?;
    let validator =
        eye_validator::Application::build_with_metrics(settings.clone(), metrics.clone()).await?;
    let writer =
        eye_writer::Application::build_with_metrics(settings.clone(), metrics.clone()).await?;
    let delivery =
        eye_delivery::Application::build_with_metrics(settings.clone(), metrics.clone()).await?;
    if shutdown.is_cancelled() {
        // Stopped while starting: issue no key nobody will see.
        return Ok(());
    }

    let shown = |port: u16| format!("http://{}:{port}", display_host(host));
    let database_url = match &source {
        Source::DevServer { url } => url.clone(),
        Source::Configured => settings.database.url()?.to_owned(),
    };
    let console = format!("{}/", shown(query.http_port()));
    let previous = DevEnv::read(dir)?;
    let (api_key, reused) = dev_key(&pool, previous.as_ref()).await?;
    pool.close().await;
    let env = DevEnv {
        database_url,
        endpoint: shown(ingest.port()),
        http_endpoint: shown(ingest.http_port()),
        query_endpoint: shown(query.port()),
        api_key,
    };
    env.write(dir)?;

    let mut services = JoinSet::new();
    services.spawn(named("ingest", ingest.run_until_stopped(shutdown.clone())));
    services.spawn(named("query", query.run_until_stopped(shutdown.clone())));
    let token = shutdown.clone();
    services
        .spawn(named("validator", async move { Ok(validator.run_until_stopped(token).await?) }));
    let token = shutdown.clone();
    services.spawn(named("writer", async move { Ok(writer.run_until_stopped(token).await?) }));
    let token = shutdown.clone();
    services.spawn(named("delivery", async move { Ok(delivery.run_until_stopped(token).await?) }));
    let stop_metrics = shutdown.clone();
    let metrics_port = metrics_server.port();
    let routes = http::metrics_routes(metrics);
    services.spawn(named("metrics", async move {
        Ok(metrics_server.serve(routes, stop_metrics, http::GRACE_PERIOD).await?)
    }));

    println!("{}", banner(&env, &source, &registered, &shown(metrics_port), &console, reused));
    let first_error = supervise(&mut services, &shutdown).await;
    match first_error {
        Some(error) => Err(error),
        None => {
            tracing::info!("eye dev stopped");
            Ok(())
        }
    }
}

/// An address as the banner shows it: the loopback for "every interface".
fn display_host(host: &str) -> &str {
    match host {
        "0.0.0.0" | "::" | "[::]" => "127.0.0.1",
        other => other,
    }
}

/// The key of the last run while it is a live key of `dev` with both roles; else a new one.
async fn dev_key(pool: &sqlx::PgPool, previous: Option<&DevEnv>) -> anyhow::Result<(String, bool)> {
    if let Some(previous) = previous.filter(|p| !p.api_key.is_empty()) {
        let holder = apps::key_holder(pool, &previous.api_key).await.map_err(database::admin)?;
        if let Some((name, roles)) = holder
            && name == DEV_APPLICATION
            && [Role::Ingest, Role::Read]
                .iter()
                .all(|role| roles.iter().any(|r| r == role.as_str()))
        {
            return Ok((previous.api_key.clone(), true));
        }
    }
    let issued = apps::ensure_and_issue_key(pool, DEV_APPLICATION, &[Role::Ingest, Role::Read])
        .await
        .map_err(database::admin)?;
    Ok((issued.key, false))
}

fn banner(
    env: &DevEnv,
    source: &Source,
    registered: &[(&str, &str, schemas::Registration)],
    metrics: &str,
    console: &str,
    reused: bool,
) -> String {
    let mut banner = String::from(
        "eye dev: ingest, validator, writer, delivery and query are running; Ctrl-C stops them\n",
    );
    for (category, name, registration) in registered {
        banner
            .push_str(&format!("  schema: {}\n", schemas::describe(category, name, *registration)));
    }
    let database = match source {
        Source::DevServer { .. } => {
            "the private Postgres in ./.eye/pg; it keeps running after Ctrl-C: `eye dev stop`"
        }
        Source::Configured => "DATABASE_URL, as configured",
    };
    banner.push_str(&format!(
        "  ingest endpoint: {}\n  http endpoint:   {} (POST /v1/events, /openapi.json, /v1/eye.js)\n  \
         query endpoint:  {}\n  console:         {console}  (sign in with the key below)\n  \
         metrics:         {metrics}/metrics\n  database:        {database}\n",
        env.endpoint, env.http_endpoint, env.query_endpoint,
    ));
    banner.push_str("\nIn another terminal, in this directory:\n");
    if let Some(bin) = eye_dir_if_not_on_path() {
        banner.push_str(&format!(
            "  export PATH=\"{}:$PATH\"   # or: cargo install --path services/cli --locked\n",
            bin.display()
        ));
    }
    banner.push_str(
        "  eval \"$(eye dev env)\"      # DATABASE_URL, EYE_ENDPOINT, EYE_HTTP_ENDPOINT, EYE_QUERY_ENDPOINT, EYE_API_KEY\n  \
         eye send --category 'page interaction' --name pageview --data '{\"host\": \"example.com\", \"path\": \"/\"}'\n  \
         eye events --from 15m\n  \
         psql \"$DATABASE_URL\" -c 'SELECT count(*) FROM events'\n\n",
    );
    banner.push_str(&env.exports());
    banner.push_str(&format!(
        "api key of application `{DEV_APPLICATION}` (roles ingest, read), {}:\n{}",
        if reused {
            "the same as last run (./.eye/dev.env)"
        } else {
            "new, kept in ./.eye/dev.env"
        },
        env.api_key
    ));
    banner
}

/// The directory of this `eye` binary, unless `eye` on PATH is this binary already.
fn eye_dir_if_not_on_path() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?.canonicalize().ok()?;
    let dir = exe.parent()?.to_owned();
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .filter_map(|entry| entry.join("eye").canonicalize().ok())
            .any(|found| found == exe)
    });
    (!on_path).then_some(dir)
}

async fn named(
    name: &'static str,
    service: impl Future<Output = anyhow::Result<()>>,
) -> (&'static str, anyhow::Result<()>) {
    (name, service.await)
}

/// Waits for every service. The first to stop on its own (an error, or returning before
/// shutdown) stops the others. Returns the first error.
async fn supervise(
    services: &mut JoinSet<(&'static str, anyhow::Result<()>)>,
    shutdown: &CancellationToken,
) -> Option<anyhow::Error> {
    let mut first_error = None;
    while let Some(joined) = services.join_next().await {
        let error = match joined {
            Ok((_, Ok(()))) if shutdown.is_cancelled() => None,
            Ok((name, Ok(()))) => Some(anyhow::anyhow!("{name} stopped unexpectedly")),
            Ok((name, Err(error))) => Some(error.context(format!("{name} failed"))),
            Err(error) => Some(anyhow::anyhow!("a service task failed: {error}")),
        };
        if let Some(error) = error {
            tracing::error!(error = format!("{error:#}"), "stopping eye dev");
            shutdown.cancel();
            first_error.get_or_insert(error);
        }
    }
    first_error
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_round_trip_through_the_shell_quoting() {
        let env = DevEnv {
            database_url: "postgres://u@h:1/db?x='y'".into(),
            endpoint: "http://127.0.0.1:1".into(),
            http_endpoint: "http://127.0.0.1:3".into(),
            query_endpoint: "http://127.0.0.1:2".into(),
            api_key: "eye_abc".into(),
        };
        let dir = std::env::temp_dir().join(format!("eye-dev-env-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join(".eye")).unwrap();
        env.write(&dir).unwrap();
        assert_eq!(DevEnv::read(&dir).unwrap(), Some(env));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
