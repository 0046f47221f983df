//! The pipeline's contract between its stages: the outbox stage names, the row headers, and the
//! NOTIFY channels. Every service and tool imports these; no stage name is written anywhere else.
//!
//! ```text
//! ingest --> stage VALIDATE --> validator --> stage WRITE --> writer --> events
//!                                   `--> event_errors (replay: query --> stage VALIDATE)
//! ```

/// The outbox stages, in pipeline order.
pub mod stage {
    /// Ingest (and replay) enqueue here; the validator consumes it.
    pub const VALIDATE: &str = "validate";
    /// The validator hands valid events here; the writer consumes it.
    pub const WRITE: &str = "write";
    /// Every stage of the pipeline: reported (as 0) by stats and metrics even when empty.
    pub const ALL: &[&str] = &[VALIDATE, WRITE];
    /// In a producer's own database (its outbox schema, not The Eye's): the `eye.v1.Event`s a
    /// producer enqueued in its transactions; `eye-relay` consumes it.
    pub const PRODUCER: &str = "eye";
}

/// Headers of outbox rows (besides W3C trace context, `eye_telemetry::propagation::FIELDS`).
pub mod header {
    /// Set on the rows of `ReplayErrors`: the validator marks the replayed `event_errors` rows
    /// with the outcome.
    pub const REPLAY: &str = "eye-replay";
}

/// `LISTEN`/`NOTIFY` channels.
pub mod channel {
    /// Rows entered a stage (payload: the stage); consumers wake up on it.
    pub const OUTBOX: &str = flush_event::CHANNEL;
    /// Events were stored or quarantined (payload: the table); tests and tools wait on it.
    pub const STORED: &str = "eye_stored";
}
