//! Ingest's errors. Each transport maps them in one place (`crate::grpc` for gRPC statuses,
//! `crate::http` for HTTP answers); what they share (the retry hint, the stable code) is here.

use std::{sync::Arc, time::Duration};

use eye_service::auth::AuthError;

/// The retry hint of back-pressure answers, also sent as `retry-after` metadata (seconds).
pub const RETRY_AFTER_SECONDS: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("events: the batch is empty")]
    EmptyBatch,
    #[error("events: the batch has {count} events; the limit is {limit}")]
    TooManyEvents { count: usize, limit: usize },
    #[error("events: the batch is {size} bytes (protobuf-encoded); the limit is {limit}")]
    BatchTooLarge { size: usize, limit: usize },
    /// A publishable key sent more events from one address than its rate allows.
    #[error(
        "this publishable key sent too many events from this address; retry after {} s",
        retry_after_seconds(*retry_after)
    )]
    RateLimited { retry_after: Duration },
    /// The application sent more events than its quota allows (`eye apps quota`,
    /// `ingest.quota_rate`).
    #[error(
        "this application is over its ingest quota; retry after {} s",
        retry_after_seconds(*retry_after)
    )]
    QuotaExceeded { retry_after: Duration },
    /// Ingest is saturated; the client should retry after a pause.
    #[error("ingest is overloaded; retry with backoff")]
    Overloaded,
    /// The pipeline behind ingest is behind by more than the configured backlog.
    #[error(
        "the pipeline is behind: {rows} accepted requests wait for validation; retry after {RETRY_AFTER_SECONDS} s"
    )]
    Backlogged { rows: i64 },
    #[error("the database is unavailable; retry after {RETRY_AFTER_SECONDS} s")]
    DatabaseUnavailable,
    #[error("ingest is shutting down; retry against another instance")]
    ShuttingDown,
    /// The commit failed: nothing of the batch was stored, so a retry is safe.
    /// One failed group commit fails every request in it: they share the one error.
    #[error("events could not be stored; nothing was accepted, retry the batch")]
    Storage(#[source] Arc<sqlx::Error>),
}

/// Whole seconds, rounded up, at least 1: what a `retry-after` says.
fn retry_after_seconds(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

impl IngestError {
    /// A stable name of the refusal: the HTTP error body's `code`, and the `reason` label of
    /// `eye_ingest_refusals`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Auth(error) => error.code(),
            Self::EmptyBatch => "empty_batch",
            Self::TooManyEvents { .. } => "too_many_events",
            Self::BatchTooLarge { .. } => "batch_too_large",
            Self::RateLimited { .. } => "rate_limited",
            Self::QuotaExceeded { .. } => "quota_exceeded",
            Self::Overloaded => "overloaded",
            Self::Backlogged { .. } => "backlogged",
            Self::DatabaseUnavailable => "database_unavailable",
            Self::ShuttingDown => "shutting_down",
            Self::Storage(_) => "storage_failed",
        }
    }

    /// How long the client should wait before retrying, in seconds (`retry-after`), for the
    /// refusals that say "later": rate limits and back-pressure.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after } | Self::QuotaExceeded { retry_after } => {
                Some(retry_after_seconds(*retry_after))
            }
            Self::Overloaded | Self::Backlogged { .. } | Self::DatabaseUnavailable => {
                Some(RETRY_AFTER_SECONDS)
            }
            _ => None,
        }
    }
}
