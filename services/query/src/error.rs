//! The query service's errors, and the one place they become gRPC statuses.
//!
//! Database errors are logged with their text and reach the client only as a generic message: SQL,
//! table names and values never leave the server.

use eye_service::auth::AuthError;

use crate::token::TokenError;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// A request field makes no sense; the message starts with the field's name.
    #[error("{field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    #[error("page_token: {0}")]
    PageToken(#[from] TokenError),
    #[error("{0} not found")]
    NotFound(String),
    /// The statement ran past the server's statement timeout.
    #[error("the query took too long; narrow the filter (a time range, a session, or a type)")]
    Timeout,
    #[error("the event store cannot be read right now; retry with backoff")]
    Unavailable(#[source] sqlx::Error),
    #[error("the query failed on the server")]
    Database(#[source] sqlx::Error),
    #[error("the replay could not be enqueued")]
    Outbox(#[source] flush_event::Error),
}

impl QueryError {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument { field, reason: reason.into() }
    }
}

/// Postgres `query_canceled`: what a statement timeout raises.
const QUERY_CANCELED: &str = "57014";

impl From<sqlx::Error> for QueryError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Database(db) if db.code().as_deref() == Some(QUERY_CANCELED) => {
                tracing::warn!(error = %db, "query canceled by the statement timeout");
                Self::Timeout
            }
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => Self::Unavailable(error),
            // Serialization failures and deadlocks (class 40) are worth a retry too.
            sqlx::Error::Database(db) if db.code().is_some_and(|code| code.starts_with("40")) => {
                Self::Unavailable(error)
            }
            _ => Self::Database(error),
        }
    }
}

impl From<flush_event::Error> for QueryError {
    fn from(error: flush_event::Error) -> Self {
        match error {
            flush_event::Error::Database(error) => error.into(),
            // Only consumers acking claimed rows lose leases; the query service claims nothing.
            error @ flush_event::Error::LeaseLost { .. } => Self::Outbox(error),
        }
    }
}

impl From<QueryError> for tonic::Status {
    fn from(error: QueryError) -> Self {
        use tonic::Status;
        match error {
            QueryError::Auth(error) => error.into(),
            QueryError::InvalidArgument { .. } | QueryError::PageToken(_) => {
                Status::invalid_argument(error.to_string())
            }
            QueryError::NotFound(_) => Status::not_found(error.to_string()),
            QueryError::Timeout => Status::deadline_exceeded(error.to_string()),
            QueryError::Unavailable(ref source) => {
                tracing::warn!(error = %source, "database unavailable");
                Status::unavailable(error.to_string())
            }
            QueryError::Database(ref source) => {
                // The database's text (which may quote SQL or values) stays in our logs.
                tracing::error!(error = %source, "query failed");
                Status::internal(error.to_string())
            }
            QueryError::Outbox(ref source) => {
                tracing::error!(error = %source, "replay enqueue failed");
                Status::internal(error.to_string())
            }
        }
    }
}
