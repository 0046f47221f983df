//! Ingest's errors. Each transport maps them in one place (`crate::grpc` for gRPC statuses).

use std::sync::Arc;

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
    #[error("the batch is {size} bytes; the limit is {limit}")]
    BatchTooLarge { size: usize, limit: usize },
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
