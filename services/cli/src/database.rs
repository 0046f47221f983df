//! Which database a command works on, and database errors turned into messages that say what to
//! do (never SQL, never a password).
//!
//! The configured database (`DATABASE_URL` or `database.url`) wins. Without one, commands use the
//! private server of `eye dev` for the current directory (`./.eye/pg`), starting it if needed: the
//! same directory always finds the same server, so a second terminal next to `eye dev` needs no
//! setup.

use std::{str::FromStr, time::Duration};

use anyhow::{Context, anyhow};
use eye_service::{Settings, database::DbFailure, settings::DatabaseSettings};
use local_postgres::{LocalPostgres, Options};
use sqlx::{
    Connection, PgConnection, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

/// Where the database of a command comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `DATABASE_URL` or `database.url`.
    Configured,
    /// The local dev server; its URL (trust authentication, no password).
    DevServer { url: String },
}

/// Options of the dev server for the current directory.
pub fn dev_server_options() -> anyhow::Result<Options> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    Ok(Options::for_dev(&cwd))
}

/// Starts (or finds) the dev server for the current directory.
pub async fn ensure_dev_server() -> anyhow::Result<LocalPostgres> {
    let options = dev_server_options()?;
    tokio::task::spawn_blocking(move || LocalPostgres::ensure(&options))
        .await
        .context("the local postgres start-up task failed")?
        .context("DATABASE_URL is not set and the local dev postgres (./.eye/pg) cannot start")
}

/// Points `settings.database.url` at the dev server when no database is configured.
pub async fn resolve(settings: &mut Settings) -> anyhow::Result<Source> {
    if settings.database.url.is_some() {
        return Ok(Source::Configured);
    }
    let server = ensure_dev_server().await?;
    let url = server.url().to_owned();
    settings.database.url = Some(url.clone().into());
    Ok(Source::DevServer { url })
}

/// Connects at once (rather than on first use), so an unreachable database is reported as such.
pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<PgPool> {
    let url = settings.url()?;
    let mut options = PgConnectOptions::from_str(url)
        .map_err(|error| anyhow!("DATABASE_URL is not a valid postgres URL: {error}"))?;
    if let Some(search_path) = &settings.search_path {
        options = options.options([("search_path", search_path.as_str())]);
    }
    let place = format!(
        "{}:{} (database {})",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("(default)")
    );
    // One plain connection first: a pool retries until its timeout and then reports only that.
    let probe = PgConnection::connect_with(&options)
        .await
        .map_err(|error| anyhow!("cannot connect to postgres at {place}: {error}"))?;
    let _ = probe.close().await;
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections.min(4))
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        .connect_lazy_with(options))
}

/// The pool of an admin command: the configured database, else the dev server.
pub async fn admin_pool(settings: &Settings) -> anyhow::Result<PgPool> {
    let mut settings = settings.clone();
    resolve(&mut settings).await?;
    connect(&settings.database).await
}

/// A database error as a message that says what to do.
pub fn error(error: sqlx::Error) -> anyhow::Error {
    if let Some(database) = error.as_database_error() {
        return match database.code().as_deref() {
            // undefined_table, undefined_function: the schema is older than this binary.
            Some("42P01" | "42883") => anyhow!(
                "the database has no (or outdated) Eye tables: run `eye migrate` (or `eye dev`) first"
            ),
            Some("42501") => anyhow!("the database user lacks a privilege: {}", database.message()),
            _ => anyhow!("the database refused the request: {}", database.message()),
        };
    }
    match DbFailure::of(&error) {
        DbFailure::Unreachable => anyhow!("lost the connection to the database: {error}"),
        _ => anyhow!("database error: {error}"),
    }
}

/// An administrative failure as a message: the domain's own, or the database's mapped by
/// [`error`].
pub fn admin(error: eye_admin::AdminError) -> anyhow::Error {
    match error {
        eye_admin::AdminError::Database(error) => self::error(error),
        other => anyhow!(other),
    }
}
