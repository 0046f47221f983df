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
use eye_telemetry::metrics::{Metrics, MetricsServer, OUTBOX_SAMPLE_INTERVAL};
use flush_event::{Outbox, Waker};
use tokio_util::sync::CancellationToken;

/// The outbox stage the writer consumes.
pub const WRITE_STAGE: &str = eye_validator::WRITE_STAGE;

/// A built writer: `run_until_stopped` runs its claim loops.
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

    /// Creates the partitions of this month and the next two, then runs
    /// `writer.consumer.concurrency` claim loops until `shutdown`.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let metrics_server = self.metrics_server.map(MetricsServer::spawn);
        self.metrics.sample_outbox(
            self.pool.clone(),
            eye_validator::STAGES,
            OUTBOX_SAMPLE_INTERVAL,
            shutdown.clone(),
        );
        let consumer = &self.settings.writer.consumer;
        let partitions = store::Partitions::default();
        // Retried until it works: a writer started during a database outage waits instead of
        // crash-looping.
        let mut pause = std::time::Duration::from_millis(100);
        while let Err(error) = partitions.ensure_ahead(&self.pool, 2).await {
            tracing::warn!(%error, "cannot create partitions ahead of need; retrying");
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(pause) => pause = (pause * 2).min(std::time::Duration::from_secs(5)),
            }
        }
        let outbox =
            Outbox::new(self.pool.clone(), WRITE_STAGE, eye_validator::outbox_config(consumer));
        let waker = Waker::listen(&self.pool, shutdown.clone());
        let handler =
            Arc::new(handler::Writer::new(self.pool.clone(), partitions, self.metrics.clone()));
        flush_event::run_workers(outbox, handler, waker, consumer.concurrency, shutdown).await;
        if let Some(server) = metrics_server {
            server.stop().await;
        }
        Ok(())
    }
}
