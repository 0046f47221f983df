//! `eye-validator`: the pipeline's transform. It claims batches from the outbox stage `validate`,
//! checks every event, and in one transaction hands the valid ones to the stage `write` and
//! quarantines the rest in `event_errors` (reason code, a message naming the offending field, and
//! the whole event), then acks. Nothing is dropped silently.
//!
//! # Layout
//! - [`rules`]: timestamp rules (`timestamp_in_future`, `timestamp_too_old`), pure functions.
//! - [`registry`]: the JSON Schema registry kept in Postgres, compiled and cached per version.
//! - [`handler`]: the outbox [`Handler`](flush_event::Handler) that validates and hands off.

pub mod handler;
pub mod registry;
pub mod rules;

use std::sync::Arc;

use eye_service::{Settings, settings::ConsumerSettings};
use flush_event::{Outbox, OutboxConfig, Waker};
use tokio_util::sync::CancellationToken;

/// The outbox stage the validator consumes.
pub const VALIDATE_STAGE: &str = "validate";
/// The outbox stage the validator hands valid events to.
pub const WRITE_STAGE: &str = "write";

/// Outbox settings from a consumer section.
pub fn outbox_config(consumer: &ConsumerSettings) -> OutboxConfig {
    use std::time::Duration;
    OutboxConfig {
        batch_size: consumer.batch_size,
        lease: Duration::from_millis(consumer.lease_ms),
        max_attempts: consumer.max_attempts,
        backoff_base: Duration::from_millis(consumer.backoff_base_ms),
        backoff_max: Duration::from_millis(consumer.backoff_max_ms),
        poll_interval: Duration::from_millis(consumer.poll_interval_ms),
    }
}

/// A built validator: `run_until_stopped` runs its claim loops.
pub struct Application {
    pool: sqlx::PgPool,
    settings: Settings,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let pool = eye_service::database::pool(&settings.database)?;
        Ok(Self { pool, settings })
    }

    /// Runs `validator.consumer.concurrency` claim loops until `shutdown`; each finishes the batch
    /// in hand before returning.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let consumer = &self.settings.validator.consumer;
        let outbox = Outbox::new(self.pool.clone(), VALIDATE_STAGE, outbox_config(consumer));
        let waker = Waker::listen(&self.pool, shutdown.clone()).await?;
        let handler = Arc::new(handler::Validator::new(&self.settings.validator));
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
        tracing::info!(loops = loops.len(), "eye-validator running");
        for handle in loops {
            handle.await?;
        }
        tracing::info!("eye-validator drained");
        Ok(())
    }
}
