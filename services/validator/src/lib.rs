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
pub mod suppressions;

use eye_service::{
    Settings,
    consumer::{ConsumerService, Stage},
    pipeline::stage,
    settings::ConsumerSettings,
};
use eye_telemetry::metrics::Metrics;
use sqlx::PgPool;

impl Stage for handler::Validator {}

/// The validator as a consumer of the stage `validate`.
#[derive(Debug)]
pub struct ValidatorService;

impl ConsumerService for ValidatorService {
    const STAGE: &'static str = stage::VALIDATE;
    type Stage = handler::Validator;

    fn consumer_settings(settings: &Settings) -> &ConsumerSettings {
        &settings.validator.consumer
    }

    fn stage(settings: &Settings, _pool: &PgPool, metrics: &Metrics) -> handler::Validator {
        handler::Validator::new(settings, metrics.clone())
    }
}

/// A built validator: `build(settings)` (or `build_with_metrics`), then `run_until_stopped`
/// runs `validator.consumer.concurrency` claim loops, each finishing the batch in hand.
pub type Application = eye_service::consumer::Application<ValidatorService>;
