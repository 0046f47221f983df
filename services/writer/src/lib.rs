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

use eye_service::{
    Settings, consumer::ConsumerService, pipeline::stage, settings::ConsumerSettings,
};
use eye_telemetry::metrics::Metrics;
use sqlx::PgPool;

/// The writer as a consumer of the stage `write`.
#[derive(Debug)]
pub struct WriterService;

impl ConsumerService for WriterService {
    const STAGE: &'static str = stage::WRITE;
    type Stage = handler::Writer;

    fn consumer_settings(settings: &Settings) -> &ConsumerSettings {
        &settings.writer.consumer
    }

    fn stage(_settings: &Settings, pool: &PgPool, metrics: &Metrics) -> handler::Writer {
        handler::Writer::new(pool.clone(), store::Partitions::default(), metrics.clone())
    }
}

/// A built writer: `build(settings)` (or `build_with_metrics`), then `run_until_stopped`
/// creates the partitions of this month and the next two (retried until the database
/// answers) and runs `writer.consumer.concurrency` claim loops.
pub type Application = eye_service::consumer::Application<WriterService>;
