//! Ingest's errors, and the one place they become gRPC statuses.

use std::sync::Arc;

use eye_service::auth::AuthError;

/// The retry hint of back-pressure answers, also sent as `retry-after` metadata (seconds).
pub const RETRY_AFTER_SECONDS: u64 = 1;

fn retry_later(code: tonic::Code, error: &IngestError) -> tonic::Status {
    let mut metadata = tonic::metadata::MetadataMap::new();
    metadata.insert("retry-after", RETRY_AFTER_SECONDS.to_string().parse().expect("ascii digits"));
    tonic::Status::with_metadata(code, error.to_string(), metadata)
}

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
    #[error("the pipeline is {rows} batches behind; retry after {RETRY_AFTER_SECONDS} s")]
    Backlogged { rows: i64 },
    #[error("the database is unavailable; retry after {RETRY_AFTER_SECONDS} s")]
    DatabaseUnavailable,
    #[error("ingest is shutting down; retry against another instance")]
    ShuttingDown,
    /// The commit failed: nothing of the batch was stored, so a retry is safe.
    #[error("events could not be stored; nothing was accepted, retry the batch")]
    /// One failed group commit fails every request in it: they share the one error.
    Storage(#[source] Arc<sqlx::Error>),
}

impl From<IngestError> for tonic::Status {
    fn from(error: IngestError) -> Self {
        use tonic::Status;
        match error {
            IngestError::Auth(error) => error.into(),
            IngestError::EmptyBatch
            | IngestError::TooManyEvents { .. }
            | IngestError::BatchTooLarge { .. } => Status::invalid_argument(error.to_string()),
            IngestError::Overloaded | IngestError::Backlogged { .. } => {
                retry_later(tonic::Code::ResourceExhausted, &error)
            }
            IngestError::DatabaseUnavailable => retry_later(tonic::Code::Unavailable, &error),
            IngestError::ShuttingDown => Status::unavailable(error.to_string()),
            IngestError::Storage(ref source) => {
                // The database's text stays in our logs; the client learns only what to do.
                tracing::error!(error = %source, "ingest commit failed");
                Status::unavailable(error.to_string())
            }
        }
    }
}
