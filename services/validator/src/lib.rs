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
use eye_telemetry::metrics::{Metrics, MetricsServer, OUTBOX_SAMPLE_INTERVAL};
use flush_event::{Outbox, OutboxConfig, Waker};
use tokio_util::sync::CancellationToken;

/// The outbox stage the validator consumes.
pub const VALIDATE_STAGE: &str = "validate";
/// The outbox stage the validator hands valid events to.
pub const WRITE_STAGE: &str = "write";
/// The stages whose depth, lag and dead letters the validator and the writer report, even when
/// empty.
pub const STAGES: &[&str] = &[VALIDATE_STAGE, WRITE_STAGE];

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
    metrics: Metrics,
    metrics_server: Option<MetricsServer>,
}

impl Application {
    /// Connects (lazily) to the database and binds the metrics port.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let metrics = Metrics::new();
        let server = MetricsServer::bind(&settings.metrics, metrics.clone()).await?;
        let mut app = Self::build_with_metrics(settings, metrics).await?;
        app.metrics_server = Some(server);
        Ok(app)
    }

    /// [`build`](Self::build), recording into `metrics` and serving no `/metrics` of its own:
    /// for several services in one process (`eye dev`), whose caller serves `metrics`.
    pub async fn build_with_metrics(settings: Settings, metrics: Metrics) -> anyhow::Result<Self> {
        let pool = eye_service::database::pool(&settings.database)?;
        metrics.watch_pool(&pool);
        Ok(Self { pool, settings, metrics, metrics_server: None })
    }

    /// The bound port of `/metrics`; `None` when built [with shared metrics](Self::build_with_metrics).
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_server.as_ref().map(MetricsServer::port)
    }

    /// Runs `validator.consumer.concurrency` claim loops until `shutdown`; each finishes the batch
    /// in hand before returning.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let metrics_server = self.metrics_server.map(MetricsServer::spawn);
        self.metrics.sample_outbox(
            self.pool.clone(),
            STAGES,
            OUTBOX_SAMPLE_INTERVAL,
            shutdown.clone(),
        );
        let consumer = &self.settings.validator.consumer;
        let outbox = Outbox::new(self.pool.clone(), VALIDATE_STAGE, outbox_config(consumer));
        let waker = Waker::listen(&self.pool, shutdown.clone());
        let handler =
            Arc::new(handler::Validator::new(&self.settings.validator, self.metrics.clone()));
        flush_event::run_workers(outbox, handler, waker, consumer.concurrency, shutdown).await;
        if let Some(server) = metrics_server {
            server.stop().await;
        }
        Ok(())
    }
}
