//! One reading of database errors, shared by the outbox (retry or blame the rows?), the services'
//! health and back-pressure (is the database gone?) and the read path's error mapping (what to
//! tell a client). It lives here because this is the lowest crate that speaks `sqlx`, and the
//! outbox must stay usable on its own.

/// What a database error says about the database, as opposed to about the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbFailure {
    /// No database: the connection or the server failed (I/O, TLS, pool timeout or closed, the
    /// connection's worker gone, SQLSTATE classes 08 and 57P: shutdown, crash, cannot connect now).
    Unreachable,
    /// The transaction lost a race (serialization failure 40001, deadlock 40P01, statement
    /// completion unknown 40003): the same work can succeed when retried.
    Retryable,
    /// The statement was cancelled, usually by `statement_timeout` (57014).
    Timeout,
    /// The connection's role lacks a privilege (42501): a deployment error (a service connected
    /// with a role not granted what it does, see the roles in the migrations), not the rows'
    /// fault; it holds until the grants are fixed.
    Forbidden,
    /// The statement itself failed (a constraint, bad data, a missing table, ...): retrying the
    /// same work fails the same way.
    Statement,
}

impl DbFailure {
    /// Classifies `error`.
    pub fn of(error: &sqlx::Error) -> Self {
        match error {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => Self::Unreachable,
            sqlx::Error::Database(error) => match error.code().as_deref() {
                Some(code) if code.starts_with("08") || code.starts_with("57P") => {
                    Self::Unreachable
                }
                Some("40001" | "40P01" | "40003") => Self::Retryable,
                Some("57014") => Self::Timeout,
                Some("42501") => Self::Forbidden,
                _ => Self::Statement,
            },
            _ => Self::Statement,
        }
    }

    /// Whether retrying the same work later can succeed: the rows are not to blame (a missing
    /// grant included: rows are retried, not dead-lettered, until it is fixed).
    pub fn is_transient(self) -> bool {
        matches!(self, Self::Unreachable | Self::Retryable | Self::Forbidden)
    }
}

/// Whether `error` is transient ([`DbFailure::is_transient`]).
pub fn is_transient(error: &sqlx::Error) -> bool {
    DbFailure::of(error).is_transient()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_failures_are_unreachable_and_transient() {
        for error in
            [sqlx::Error::PoolTimedOut, sqlx::Error::PoolClosed, sqlx::Error::WorkerCrashed]
        {
            assert_eq!(DbFailure::of(&error), DbFailure::Unreachable);
            assert!(is_transient(&error));
        }
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(DbFailure::of(&io), DbFailure::Unreachable);
    }

    #[test]
    fn other_errors_are_the_statement_s() {
        let error = sqlx::Error::RowNotFound;
        assert_eq!(DbFailure::of(&error), DbFailure::Statement);
        assert!(!is_transient(&error));
    }
}
