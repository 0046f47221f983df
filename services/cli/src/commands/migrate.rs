//! `eye migrate`: applies the migrations embedded from the workspace's `migrations/`.
//!
//! sqlx's migrator takes an advisory lock, so `eye migrate` and `eye dev` (which migrates at start)
//! can run at once.

use sqlx::PgPool;

use crate::database;

/// Applies pending migrations; returns (newly applied, applied in total).
pub async fn migrate(pool: &PgPool) -> anyhow::Result<(i64, i64)> {
    let before = applied(pool).await?;
    eye_service::database::migrate(pool)
        .await
        .map_err(|error| anyhow::anyhow!("migration failed: {error}"))?;
    let after = applied(pool).await?;
    Ok((after - before, after))
}

/// How many migrations the database has applied.
async fn applied(pool: &PgPool) -> anyhow::Result<i64> {
    // Two statements: a query naming a missing table fails even in an untaken branch.
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await
        .map_err(database::error)?;
    if !exists {
        return Ok(0);
    }
    sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(pool)
        .await
        .map_err(database::error)
}

/// Runs `eye migrate`.
pub async fn run(pool: &PgPool) -> anyhow::Result<()> {
    let (new, total) = migrate(pool).await?;
    if new == 0 {
        println!("nothing to apply; the database is up to date ({total} migrations)");
    } else {
        println!("applied {new} migration(s); the database is up to date ({total} migrations)");
    }
    Ok(())
}
