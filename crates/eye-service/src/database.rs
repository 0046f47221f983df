//! The connection pool and the migrations embedded from the workspace's `migrations/`.

use std::str::FromStr;
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

pub use flush_event::DbFailure;
use sqlx::{PgPool, migrate::Migrator, postgres::PgPoolOptions};

use crate::settings::{DatabaseSettings, SettingsError};

/// Every migration in `migrations/`, embedded at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// A pool that connects on first use, so a service can start (and report NOT_SERVING) while the
/// database is still coming up.
pub fn pool(settings: &DatabaseSettings) -> Result<PgPool, SettingsError> {
    let invalid = |error: sqlx::Error| SettingsError::Invalid {
        field: "database.url",
        reason: error.to_string(),
    };
    let mut options =
        sqlx::postgres::PgConnectOptions::from_str(settings.url()?).map_err(invalid)?;
    if let Some(search_path) = &settings.search_path {
        options = options.options([("search_path", search_path.as_str())]);
    }
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        .connect_lazy_with(options))
}

/// Applies pending migrations.
/// Makes sure the idempotency ledger's slice holding `now` and the next one exist (slices of
/// `window_days`, `eye_ledger_slice`): what ingest does before its first commit of a day and the
/// upkeep each round, so that no insert finds its slice missing.
pub async fn ensure_ledger_slices(
    pool: &PgPool,
    window_days: u32,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), sqlx::Error> {
    let span = format!("{window_days} days");
    for at in [now, now + chrono::Duration::days(i64::from(window_days))] {
        sqlx::query("SELECT eye_ensure_partition('idempotency_keys', $1, $2)")
            .bind(at)
            .bind(&span)
            .execute(pool)
            .await?;
    }
    Ok(())
}

pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// Whether the database answers, as last seen by the health probe or by a failed request. Lets a
/// server refuse at once (UNAVAILABLE) while the database is down, instead of making every request
/// wait for a connection timeout. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DatabaseStatus {
    up: Arc<AtomicBool>,
    changed: Arc<tokio::sync::Notify>,
}

impl Default for DatabaseStatus {
    /// Optimistic until something says otherwise: the first probe runs at once.
    fn default() -> Self {
        Self { up: Arc::new(AtomicBool::new(true)), changed: Default::default() }
    }
}

impl DatabaseStatus {
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Records the probe's answer.
    pub fn set(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
    }

    /// Records a failure that shows the database is unreachable (not one that is the request's
    /// own fault) and wakes the probe so that recovery is noticed quickly.
    pub fn report(&self, error: &sqlx::Error) {
        if is_unreachable(error) {
            self.set(false);
            self.changed.notify_one();
        }
    }

    /// Resolves when a failure was reported.
    pub async fn failure_reported(&self) {
        self.changed.notified().await;
    }
}

/// Errors that mean "no database", as opposed to errors of one statement
/// ([`DbFailure::Unreachable`]).
pub fn is_unreachable(error: &sqlx::Error) -> bool {
    DbFailure::of(error) == DbFailure::Unreachable
}
