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
//!
//! Beside its claim loops, every writer runs the store's upkeep (partitions ahead of need,
//! retention, the dedup window: `eye_admin::maintenance`) every `store.maintenance_interval_ms`,
//! one replica at a time.

pub mod handler;
pub mod store;

use eye_service::{
    Settings, consumer::ConsumerService, pipeline::stage, settings::ConsumerSettings,
};
use std::time::Duration;

use eye_admin::maintenance::Policy;
use eye_telemetry::metrics::Metrics;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// The writer as a consumer of the stage `write`.
#[derive(Debug)]
pub struct WriterService;

impl ConsumerService for WriterService {
    const STAGE: &'static str = stage::WRITE;
    type Stage = handler::Writer;

    fn consumer_settings(settings: &Settings) -> &ConsumerSettings {
        &settings.writer.consumer
    }

    fn spawn_beside(settings: &Settings, pool: &PgPool, shutdown: &CancellationToken) {
        tokio::spawn(maintain(
            pool.clone(),
            Policy::from_settings(&settings.store),
            Duration::from_millis(settings.store.maintenance_interval_ms),
            shutdown.clone(),
        ));
    }

    fn stage(settings: &Settings, pool: &PgPool, metrics: &Metrics) -> handler::Writer {
        let partitions = store::Partitions::new(settings.store.partition);
        let gin_pending_list_kb = settings.writer.gin_pending_list_kb;
        handler::Writer::new(pool.clone(), partitions, metrics.clone(), gin_pending_list_kb)
    }
}

/// The store's upkeep every `interval` until `shutdown` (see `eye_admin::maintenance`): one
/// replica at a time does it, the others find the lock taken and skip the round.
async fn maintain(pool: PgPool, policy: Policy, interval: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            done = eye_admin::maintenance::run(&pool, &policy, chrono::Utc::now()) => {
                if let Err(error) = done {
                    tracing::warn!(%error, source = ?std::error::Error::source(&error), "store upkeep failed; retrying next round");
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// A built writer: `build(settings)` (or `build_with_metrics`), then `run_until_stopped`
/// creates the partitions of this month and the next two (retried until the database
/// answers) and runs `writer.consumer.concurrency` claim loops.
pub type Application = eye_service::consumer::Application<WriterService>;
