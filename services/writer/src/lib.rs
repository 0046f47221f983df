//! `eye-writer`: the pipeline's sink. It claims validated batches from the outbox stage `write`
//! and, in the transaction that acks them, inserts their events into the partitioned `events`
//! table and upserts their `sessions`.
//!
//! Exactly once, without check-then-insert: `events` has a primary key on
//! (application_id, event_id, occurred_at) and the insert is `ON CONFLICT DO NOTHING`, so a batch
//! delivered twice (a lease that expired mid-write) stores nothing twice; the session upsert counts
//! only the rows that insert actually wrote (`RETURNING`), so counts stay exact too.
//!
//! # Layout
//! - [`store`]: the partition cache and the insert + upsert statement.
//! - [`handler`]: the outbox [`Handler`](flush_event::Handler).

pub mod handler;
pub mod store;

use std::sync::Arc;

use eye_service::Settings;
use flush_event::{Outbox, Waker};
use tokio_util::sync::CancellationToken;

/// The outbox stage the writer consumes.
pub const WRITE_STAGE: &str = eye_validator::WRITE_STAGE;

/// A built writer: `run_until_stopped` runs its claim loops.
pub struct Application {
    pool: sqlx::PgPool,
    settings: Settings,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let pool = eye_service::database::pool(&settings.database)?;
        Ok(Self { pool, settings })
    }

    /// Creates the partitions of this month and the next two, then runs
    /// `writer.consumer.concurrency` claim loops until `shutdown`.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let consumer = &self.settings.writer.consumer;
        let partitions = store::Partitions::default();
        partitions.ensure_ahead(&self.pool, 2).await?;
        let outbox =
            Outbox::new(self.pool.clone(), WRITE_STAGE, eye_validator::outbox_config(consumer));
        let waker = Waker::listen(&self.pool, shutdown.clone()).await?;
        let handler = Arc::new(handler::Writer::new(self.pool.clone(), partitions));
        let loops: Vec<_> = (0..consumer.concurrency)
            .map(|_| {
                tokio::spawn(flush_event::run_worker(
                    outbox.clone(),
                    handler.clone(),
                    waker.clone(),
                    shutdown.clone(),
                ))
            })
            .collect();
        tracing::info!(loops = loops.len(), "eye-writer running");
        for handle in loops {
            handle.await?;
        }
        tracing::info!("eye-writer drained");
        Ok(())
    }
}
