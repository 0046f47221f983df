//! The domain of The Eye: what an event is, which events are well-formed, and how they travel.
//!
//! An [`Event`] belongs to an application, happened in a session at a time, and has a type
//! ([`EventType`]: category + name) whose JSON Schema decides what its payload may hold.
//!
//! # Layout
//! - [`ids`]: the UUID newtypes ([`EventId`], [`SessionId`], [`ApplicationId`]).
//! - [`envelope`]: the rules every event must pass at ingest, with a specific [`Rejection`] each.
//! - [`payload`]: a one-pass strict check of the JSON payload (object, depth, duplicate keys, NUL).
//! - [`batch`]: conversions to and from the protobuf messages of `eye-proto`.
//! - [`ErrorReason`]: why the validator quarantined an event (the `event_errors.reason` codes).

pub mod batch;
pub mod envelope;
pub mod ids;
pub mod payload;
pub mod pii;
pub mod subject;

use chrono::{DateTime, Utc};

pub use envelope::{Limits, Rejection};
pub use ids::{ApplicationId, EventId, SessionId};
pub use payload::{PayloadError, PayloadLimits};

/// The type of an event: the pair a JSON Schema is registered for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventType {
    pub category: String,
    pub name: String,
}

impl EventType {
    pub fn new(category: impl Into<String>, name: impl Into<String>) -> Self {
        Self { category: category.into(), name: name.into() }
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.category, self.name)
    }
}

/// A well-formed event, as accepted by ingest.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub event_id: EventId,
    pub session_id: SessionId,
    pub event_type: EventType,
    /// The payload as the client sent it: a JSON object, kept as text so that no stage re-encodes
    /// what it does not need to look into.
    pub data_json: String,
    pub occurred_at: DateTime<Utc>,
}

/// Why the validator sent an event to `event_errors` instead of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorReason {
    /// The payload breaks the JSON Schema registered for its type.
    SchemaViolation,
    /// The event happened too far after it was received (clock skew allowance exceeded).
    TimestampInFuture,
    /// The event happened before 2000-01-01 or before the configured age window.
    TimestampTooOld,
    /// No schema is registered for the type and the policy is to reject such events.
    UnknownEventType,
    /// The payload cannot be stored (for example a string `jsonb` refuses).
    InvalidPayload,
}

impl ErrorReason {
    pub const ALL: [ErrorReason; 5] = [
        Self::SchemaViolation,
        Self::TimestampInFuture,
        Self::TimestampTooOld,
        Self::UnknownEventType,
        Self::InvalidPayload,
    ];

    /// The stable code stored in `event_errors.reason` and shown to operators.
    pub fn code(self) -> &'static str {
        match self {
            Self::SchemaViolation => "schema_violation",
            Self::TimestampInFuture => "timestamp_in_future",
            Self::TimestampTooOld => "timestamp_too_old",
            Self::UnknownEventType => "unknown_event_type",
            Self::InvalidPayload => "invalid_payload",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|reason| reason.code() == code)
    }
}

impl std::fmt::Display for ErrorReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}
