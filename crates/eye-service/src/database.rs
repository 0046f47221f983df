//! The connection pool and the migrations embedded from the workspace's `migrations/`.

use std::time::Duration;

use sqlx::{PgPool, migrate::Migrator, postgres::PgPoolOptions};

use crate::settings::{DatabaseSettings, SettingsError};

/// Every migration in `migrations/`, embedded at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// A pool that connects on first use, so a service can start (and report NOT_SERVING) while the
/// database is still coming up.
pub fn pool(settings: &DatabaseSettings) -> Result<PgPool, SettingsError> {
    let url = settings.url()?;
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        .connect_lazy(url)
        .map_err(|error| SettingsError::Invalid {
            field: "database.url",
            reason: error.to_string(),
        })
}

/// Applies pending migrations.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}
