//! The outbox in a database of your own: a producer service installs the tables into a schema of
//! its database (`eye outbox migrate --database-url URL --schema eye` does this), enqueues into
//! that schema inside its own transactions ([`flush_events_in`](crate::flush_events_in)), and a
//! relay consumes them with connections whose `search_path` is that schema.
//!
//! The tables are the ones The Eye itself uses (one migration file, shared), tracked by a sqlx
//! migration table inside the schema, so later versions of the outbox upgrade producers the same
//! way and never touch the producer's own tables or migrations.

use std::str::FromStr;

use sqlx::{
    Connection, Executor,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgConnection},
};

/// The outbox's own migrations (the same files The Eye's `migrations/` holds for its outbox).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Why the outbox could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(
        "schema name {0:?} is not a plain identifier (lower-case letters, digits, `_`; not starting with a digit)"
    )]
    InvalidSchema(String),
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("cannot create the schema: {0}")]
    Schema(#[source] sqlx::Error),
    #[error("cannot apply the outbox migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Checks that `schema` is a plain lower-case identifier, safe to put into SQL unquoted.
pub fn check_schema(schema: &str) -> Result<(), InstallError> {
    let mut chars = schema.chars();
    let plain = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && schema.len() <= 63;
    if plain { Ok(()) } else { Err(InstallError::InvalidSchema(schema.to_owned())) }
}

/// Connection options for `url` with `search_path` set to `schema`: what a relay's pool (and
/// the dead-letter commands) use, so the outbox's unqualified SQL finds the schema's tables.
pub fn options_in_schema(url: &str, schema: &str) -> Result<PgConnectOptions, InstallError> {
    check_schema(schema)?;
    let options = PgConnectOptions::from_str(url).map_err(InstallError::Connect)?;
    Ok(options.options([("search_path", schema)]))
}

/// Creates `schema` if needed and applies the outbox migrations inside it; returns how many
/// migrations were applied now (0: already up to date). Safe to run again, and concurrently.
pub async fn install(url: &str, schema: &str) -> Result<usize, InstallError> {
    let options = options_in_schema(url, schema)?;
    let mut conn = PgConnection::connect_with(&options).await.map_err(InstallError::Connect)?;
    conn.execute(format!("CREATE SCHEMA IF NOT EXISTS {schema}").as_str())
        .await
        .map_err(InstallError::Schema)?;
    let before: i64 = applied(&mut conn).await;
    MIGRATOR.run(&mut conn).await?;
    let after = applied(&mut conn).await;
    conn.close().await.ok();
    Ok((after - before).max(0) as usize)
}

/// Migrations recorded in the schema's migration table (0 before the first install).
async fn applied(conn: &mut PgConnection) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(conn)
        .await
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        for good in ["eye", "eye_outbox", "_x1"] {
            check_schema(good).unwrap();
        }
        for bad in ["", "Eye", "1eye", "eye-outbox", "eye;drop", "a b", "\"eye\""] {
            assert!(check_schema(bad).is_err(), "{bad:?}");
        }
    }
}
