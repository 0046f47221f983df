//! Back-pressure: refuse at once, with a retry hint, rather than hang or pile up work.
//!
//! Two signals: the database is unreachable (from the health probe, or from a request that just
//! failed to reach it), and the outbox stage `validate` holds more rows than
//! `ingest.max_backlog_rows` (the validator and writer are down or behind). Both clear by
//! themselves when the cause does.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use eye_service::{auth::AuthError, database::DatabaseStatus};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use eye_service::pipeline::stage;

use crate::error::IngestError;

#[derive(Debug, Clone)]
pub struct Backpressure {
    database: DatabaseStatus,
    backlog_rows: Arc<AtomicI64>,
    max_backlog_rows: i64,
}

impl Backpressure {
    pub fn new(database: DatabaseStatus, max_backlog_rows: i64) -> Self {
        Self { database, backlog_rows: Arc::default(), max_backlog_rows }
    }

    /// Whether the database answered when last seen.
    pub fn database_is_up(&self) -> bool {
        self.database.is_up()
    }

    /// `Err` when a request should be refused now.
    pub fn check(&self) -> Result<(), IngestError> {
        if !self.database.is_up() {
            return Err(IngestError::DatabaseUnavailable);
        }
        let rows = self.backlog_rows.load(Ordering::Relaxed);
        if rows > self.max_backlog_rows {
            return Err(IngestError::Backlogged { rows });
        }
        Ok(())
    }

    /// Learns from a failed request whether the database is gone.
    pub fn observe(&self, error: &IngestError) {
        match error {
            IngestError::Storage(error) => self.database.report(error),
            IngestError::Auth(AuthError::Unavailable(error)) => self.database.report(error),
            _ => {}
        }
    }

    /// Measures the backlog every `interval` until `shutdown`.
    pub async fn watch_backlog(
        self,
        pool: PgPool,
        interval: Duration,
        shutdown: CancellationToken,
    ) {
        loop {
            let rows: Result<i64, _> =
                sqlx::query_scalar("SELECT count(*) FROM outbox WHERE stage = $1")
                    .bind(stage::VALIDATE)
                    .fetch_one(&pool)
                    .await;
            match rows {
                Ok(rows) => self.backlog_rows.store(rows, Ordering::Relaxed),
                Err(error) => self.database.report(&error),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }
}
