//! The pipeline's contract between its stages: the outbox stage names, the row headers, and the
//! NOTIFY channels. Every service and tool imports these; no stage name is written anywhere else.
//!
//! ```text
//! ingest --> stage VALIDATE --> validator --> stage WRITE --> writer --> events
//!                                   |                           `--> stage deliver/<id> --> delivery
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

    /// The prefix of the delivery stages: one per subscription, `deliver/<subscription id>`.
    /// The writer enqueues there the keys of stored events that match the subscription;
    /// `eye-delivery` consumes it.
    pub const DELIVER_PREFIX: &str = "deliver/";

    /// The delivery stage of `subscription`.
    pub fn deliver(subscription: uuid::Uuid) -> String {
        format!("{DELIVER_PREFIX}{subscription}")
    }
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
    /// Subscriptions were created, changed state or deleted (a trigger sends it); `eye-delivery`
    /// rereads them.
    pub const SUBSCRIPTIONS: &str = "eye_subscriptions";
}

/// The rows of the delivery stages (`stage::deliver`), written by the writer as it stores events
/// and by `eye-delivery` as it backfills: one way to enqueue them.
pub mod delivery {
    use eye_proto::v1::{DeliveryBatch, StoredEventKey};
    use sqlx::PgConnection;
    use uuid::Uuid;

    /// The header holding a delivery row's event count (what a subscription's pending count sums).
    pub const EVENTS_HEADER: &str = "events";

    /// The key of one stored event: application, event id, occurred-at microseconds (UTC).
    pub type Key = (Uuid, Uuid, i64);

    /// A delivery row of `keys`, whose first event has number `first_sequence` (0: unordered).
    pub fn batch(keys: impl IntoIterator<Item = Key>, first_sequence: i64) -> DeliveryBatch {
        DeliveryBatch {
            events: keys
                .into_iter()
                .map(|(application_id, event_id, occurred_at_micros)| StoredEventKey {
                    application_id: application_id.as_bytes().to_vec(),
                    event_id: event_id.as_bytes().to_vec(),
                    occurred_at_micros,
                })
                .collect(),
            first_sequence,
        }
    }

    /// The headers of a delivery row of `events` events.
    pub fn headers(events: usize) -> flush_event::Headers {
        flush_event::Headers::from([(EVENTS_HEADER.to_owned(), events.to_string())])
    }

    /// Enqueues `keys` for `subscription`, inside the transaction `conn` is in. For an ordered
    /// subscription it numbers them from the subscription's `sequence`, taking its row lock
    /// until commit: rows of an ordered subscription are enqueued one transaction at a time, so
    /// their order is their commit order and their numbers have no gaps. (Callers that enqueue
    /// for several subscriptions go in id order, so they never deadlock.)
    pub async fn enqueue(
        conn: &mut PgConnection,
        subscription: Uuid,
        ordered: bool,
        keys: Vec<Key>,
    ) -> Result<(), sqlx::Error> {
        if keys.is_empty() {
            return Ok(());
        }
        let count = keys.len();
        let first_sequence = if ordered {
            let last: i64 = sqlx::query_scalar(
                "UPDATE subscriptions SET sequence = sequence + $2 WHERE id = $1 RETURNING sequence",
            )
            .bind(subscription)
            .bind(count as i64)
            .fetch_one(&mut *conn)
            .await?;
            last - count as i64 + 1
        } else {
            0
        };
        let body = batch(keys, first_sequence);
        let stage = super::stage::deliver(subscription);
        flush_event::flush_event(conn, &stage, &body, &headers(count)).await
    }
}
