//! The one shell every consumer stage runs in (the validator and the writer today, delivery
//! next): a lazily connecting pool, metrics (its own `/metrics` or a shared registry), the
//! outbox sampler, claim loops over the stage, and a drain on shutdown.
//!
//! A consumer service brings only a [`ConsumerService`]: its stage's name (from
//! [`pipeline::stage`](crate::pipeline::stage)), its settings section, and how to make its
//! [`Stage`] (a [`flush_event::Handler`] plus an optional start-up step). Its `Application` is
//! then this module's [`Application`]:
//!
//! ```ignore
//! pub type Application = eye_service::consumer::Application<WriterService>;
//! Application::build(settings).await?.run_until_stopped(shutdown).await?;
//! ```
//!
//! The shell records every batch in the stage metrics (`eye_stage_*`), so stages need not.

use std::{future::Future, marker::PhantomData, sync::Arc, time::Duration};

use eye_telemetry::metrics::{Metrics, OUTBOX_SAMPLE_INTERVAL};
use flush_event::{BatchReport, Claimed, Handler, Outbox, OutboxConfig, Waker};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::{
    Settings, database,
    http::MetricsEndpoint,
    pipeline,
    settings::{ConsumerSettings, SettingsError},
};

/// A consumer stage's work: its outbox handler, and what must hold before the first claim.
pub trait Stage: Handler {
    /// Runs once before the claim loops start, retried with backoff until it succeeds (a stage
    /// started during a database outage waits instead of crash-looping). The default does
    /// nothing.
    fn prepare(&self, _pool: &PgPool) -> impl Future<Output = Result<(), sqlx::Error>> + Send {
        async { Ok(()) }
    }
}

/// Outbox settings from a consumer section.
pub fn outbox_config(consumer: &ConsumerSettings) -> OutboxConfig {
    OutboxConfig {
        batch_size: consumer.batch_size,
        lease: Duration::from_millis(consumer.lease_ms),
        max_attempts: consumer.max_attempts,
        backoff_base: Duration::from_millis(consumer.backoff_base_ms),
        backoff_max: Duration::from_millis(consumer.backoff_max_ms),
        poll_interval: Duration::from_millis(consumer.poll_interval_ms),
        ordered: false,
    }
}

/// What a consumer service plugs into the shell.
pub trait ConsumerService: Send + Sync + 'static {
    /// The outbox stage it consumes.
    const STAGE: &'static str;
    /// Its work.
    type Stage: Stage;
    /// Its consumer section of the settings (`validator.consumer`, `writer.consumer`, ...).
    fn consumer_settings(settings: &Settings) -> &ConsumerSettings;
    /// Makes its stage, once per process, from the settings, the pool and the metrics registry.
    fn stage(settings: &Settings, pool: &PgPool, metrics: &Metrics) -> Self::Stage;
    /// Work beside the claim loops (the writer's store upkeep), spawned once before them; it
    /// must end when `shutdown` is cancelled. The default spawns nothing.
    fn spawn_beside(_settings: &Settings, _pool: &PgPool, _shutdown: &CancellationToken) {}
}

/// Why a consumer could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("cannot serve metrics: {0}")]
    Metrics(#[from] std::io::Error),
}

/// What every background service (a consumer stage, delivery) is built from: its settings, its
/// pool (connecting lazily) and where its metrics go.
#[derive(Debug)]
pub struct Base {
    pub pool: PgPool,
    pub settings: Settings,
    pub endpoint: MetricsEndpoint,
}

impl Base {
    /// Connects (lazily) to the database and binds the metrics port.
    pub async fn build(settings: Settings) -> Result<Self, BuildError> {
        let endpoint = MetricsEndpoint::bind(&settings.metrics).await?;
        Self::build_on(settings, endpoint)
    }

    /// [`build`](Self::build), recording into `metrics` and serving no `/metrics` of its own:
    /// for several services in one process (`eye dev`), whose caller serves `metrics`.
    pub fn build_with_metrics(settings: Settings, metrics: Metrics) -> Result<Self, BuildError> {
        Self::build_on(settings, MetricsEndpoint::shared(metrics))
    }

    fn build_on(settings: Settings, endpoint: MetricsEndpoint) -> Result<Self, BuildError> {
        let pool = database::pool(&settings.database)?;
        endpoint.metrics().watch_pool(&pool);
        Ok(Self { pool, settings, endpoint })
    }

    /// The bound port of `/metrics`; `None` when built [with shared metrics](Self::build_with_metrics).
    pub fn metrics_port(&self) -> Option<u16> {
        self.endpoint.port()
    }
}

/// A built, not yet running consumer service `S`: its pool (connecting lazily) and its metrics.
pub struct Application<S> {
    base: Base,
    service: PhantomData<fn() -> S>,
}

impl<S> std::fmt::Debug for Application<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application").field("metrics", &self.base.endpoint).finish_non_exhaustive()
    }
}

impl<S: ConsumerService> Application<S> {
    /// Connects (lazily) to the database and binds the metrics port.
    pub async fn build(settings: Settings) -> Result<Self, BuildError> {
        Ok(Self { base: Base::build(settings).await?, service: PhantomData })
    }

    /// [`build`](Self::build), recording into `metrics` and serving no `/metrics` of its own:
    /// for several services in one process (`eye dev`), whose caller serves `metrics`.
    pub async fn build_with_metrics(
        settings: Settings,
        metrics: Metrics,
    ) -> Result<Self, BuildError> {
        Ok(Self { base: Base::build_with_metrics(settings, metrics)?, service: PhantomData })
    }

    /// The bound port of `/metrics`; `None` when built [with shared metrics](Self::build_with_metrics).
    pub fn metrics_port(&self) -> Option<u16> {
        self.base.metrics_port()
    }

    /// Serves metrics, samples the outbox, [prepares](Stage::prepare) the stage, then runs
    /// `consumer.concurrency` claim loops until `shutdown`; each finishes the batch in hand.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let Base { pool, settings, endpoint } = self.base;
        let metrics = endpoint.metrics().clone();
        let consumer = S::consumer_settings(&settings);
        let stage =
            Observed { stage: S::stage(&settings, &pool, &metrics), metrics: metrics.clone() };
        // Serves until the end of the drain, so the drain itself can be watched.
        let server = endpoint.spawn();
        metrics.sample_outbox(
            pool.clone(),
            pipeline::stage::ALL,
            OUTBOX_SAMPLE_INTERVAL,
            shutdown.clone(),
        );
        S::spawn_beside(&settings, &pool, &shutdown);
        if prepare(&stage.stage, &pool, S::STAGE, &shutdown).await {
            let outbox = Outbox::new(pool.clone(), S::STAGE, outbox_config(consumer));
            let waker = Waker::listen(&pool, shutdown.clone());
            flush_event::run_workers(
                outbox,
                Arc::new(stage),
                waker,
                consumer.concurrency,
                shutdown,
            )
            .await;
        }
        if let Some(server) = server {
            server.stop().await;
        }
        Ok(())
    }
}

/// A stage whose batches are recorded in the stage metrics before its own `observe` sees them.
struct Observed<S> {
    stage: S,
    metrics: Metrics,
}

impl<S: Stage> Handler for Observed<S> {
    type Message = S::Message;
    type Error = S::Error;

    fn handle(
        &self,
        conn: &mut PgConnection,
        rows: &[Claimed<Self::Message>],
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.stage.handle(conn, rows)
    }

    fn split(&self, body: &Self::Message) -> Option<(Self::Message, Self::Message)> {
        self.stage.split(body)
    }

    fn wake_ups(&self) -> &[(&'static str, &'static str)] {
        self.stage.wake_ups()
    }

    fn observe(&self, batch: &BatchReport<'_>) {
        self.metrics.stage().observe_batch(batch);
        self.stage.observe(batch);
    }

    fn is_transient(&self, error: &Self::Error) -> bool {
        self.stage.is_transient(error)
    }

    fn retry_after(&self, error: &Self::Error) -> Option<Duration> {
        self.stage.retry_after(error)
    }
}

/// Retries [`Stage::prepare`] with backoff until it succeeds (`true`) or `shutdown` (`false`).
async fn prepare<S: Stage>(
    stage: &S,
    pool: &PgPool,
    name: &str,
    shutdown: &CancellationToken,
) -> bool {
    let mut pause = Duration::from_millis(100);
    loop {
        match stage.prepare(pool).await {
            Ok(()) => return true,
            Err(error) => {
                tracing::warn!(%error, stage = name, "cannot prepare the stage; retrying")
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return false,
            () = tokio::time::sleep(pause) => pause = (pause * 2).min(Duration::from_secs(5)),
        }
    }
}
