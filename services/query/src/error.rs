//! The query service's errors, and the one place they become gRPC statuses.
//!
//! Database errors are logged with their text and reach the client only as a generic message: SQL,
//! table names and values never leave the server.

use eye_service::{auth::AuthError, database::DbFailure};

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
    /// An administrative operation refused the request; the message says why.
    #[error("{0}")]
    Refused(String),
    /// The statement ran past the server's statement timeout.
    #[error("the query took too long; narrow the filter (a time range, a session, or a type)")]
    Timeout,
    /// The server's database role may not do what the request asks (a read-only `eye_query`
    /// deployment asked to write).
    #[error(
        "this query server's database role may not do this (it is read-only); use a server whose \
         role also holds eye_admin"
    )]
    ReadOnly,
    #[error("the event store cannot be read right now; retry with backoff")]
    Unavailable(#[source] sqlx::Error),
    #[error("the query failed on the server")]
    Database(#[source] sqlx::Error),
}

impl QueryError {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument { field, reason: reason.into() }
    }
}

impl From<sqlx::Error> for QueryError {
    fn from(error: sqlx::Error) -> Self {
        match DbFailure::of(&error) {
            DbFailure::Timeout => {
                tracing::warn!(%error, "query canceled by the statement timeout");
                Self::Timeout
            }
            // A lost race (serialization failure, deadlock) is worth a retry too.
            DbFailure::Unreachable | DbFailure::Retryable => Self::Unavailable(error),
            DbFailure::Forbidden => {
                tracing::warn!(%error, "the query server's database role lacks a privilege");
                Self::ReadOnly
            }
            DbFailure::Statement => Self::Database(error),
        }
    }
}

impl From<eye_admin::AdminError> for QueryError {
    fn from(error: eye_admin::AdminError) -> Self {
        use eye_admin::AdminError;
        match error {
            AdminError::Database(source) => source.into(),
            AdminError::NoSuchApplication { name } => {
                Self::NotFound(format!("application `{name}`"))
            }
            other => Self::Refused(other.to_string()),
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
            QueryError::Refused(_) => Status::invalid_argument(error.to_string()),
            QueryError::ReadOnly => Status::permission_denied(error.to_string()),
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
        }
    }
}
