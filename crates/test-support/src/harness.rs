//! Support for the benchmark and crash-suite binaries (`eye-bench`, `eye-query-bench`,
//! `eye-chaos`): unlike tests, they want a *durable* server of their own and whole databases they
//! create, migrate and drop themselves.

use sqlx::{Connection, PgConnection};

use crate::database_url;

/// `DATABASE_URL` when set; otherwise a durable private server under `target/<dir>` of the
/// working directory, started or reused.
pub fn durable_server_url(dir: &str) -> anyhow::Result<String> {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        return Ok(url);
    }
    let cwd = std::env::current_dir()?;
    let options = local_postgres::Options {
        base_dir: cwd.join("target").join(dir),
        fallback_key: format!("{}#{dir}", cwd.display()),
        durable: true,
    };
    Ok(local_postgres::LocalPostgres::ensure(&options)?.url().to_owned())
}

/// Creates the database `name` on `server` and applies the migrations; returns its URL.
pub async fn create_database(server: &str, name: &str) -> anyhow::Result<String> {
    let mut admin = PgConnection::connect(server).await?;
    sqlx::query(&format!(r#"CREATE DATABASE "{name}""#)).execute(&mut admin).await?;
    let url = database_url(server, name);
    let mut conn = PgConnection::connect(&url).await?;
    eye_service::database::MIGRATOR.run(&mut conn).await?;
    Ok(url)
}

/// Drops the database `name`, disconnecting whoever is still in it.
pub async fn drop_database(server: &str, name: &str) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect(server).await?;
    sqlx::query(&format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#))
        .execute(&mut admin)
        .await?;
    Ok(())
}

/// The machine a result was measured on: cores and CPU model.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}")
}
