//! The events of a delivery batch: read from the store by their keys, in the batch's order, and
//! their JSON form (the design brief fixes it).

use chrono::{DateTime, Utc};
use eye_proto::v1::{DeliveryBatch, StoredEventKey};
use serde::Serialize;
use serde_json::value::RawValue;
use sqlx::PgConnection;
use uuid::Uuid;

/// One event as destinations receive it: a webhook batch's element, a NATS message's body.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveredEvent {
    pub event_id: Uuid,
    pub application_id: Uuid,
    pub session_id: Uuid,
    pub category: String,
    pub name: String,
    /// The payload, as stored.
    pub data: Box<RawValue>,
    pub occurred_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    /// Ordered subscriptions only: the event's place in the subscription, 1, 2, 3, ... in
    /// storage order, without gaps (a dead-lettered event leaves its number unused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequence: Option<i64>,
    /// The application's name (NATS subjects use it).
    #[serde(skip)]
    pub application: String,
    #[serde(skip)]
    pub stored_at: DateTime<Utc>,
    /// Its key in the batch, for dead-lettering it alone.
    #[serde(skip)]
    pub key: StoredEventKey,
}

/// A webhook's body.
#[derive(Debug, Serialize)]
pub struct WebhookBody<'a> {
    pub subscription: &'a str,
    pub events: &'a [DeliveredEvent],
}

#[derive(sqlx::FromRow)]
struct Row {
    position: i64,
    application_id: Uuid,
    application: String,
    event_id: Uuid,
    session_id: Uuid,
    category: String,
    name: String,
    data: String,
    occurred_at: DateTime<Utc>,
    received_at: DateTime<Utc>,
    stored_at: DateTime<Utc>,
}

/// Why a batch's keys cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("a delivery row holds a malformed key (an id of {0} bytes)")]
    MalformedKey(usize),
}

fn uuid(bytes: &[u8]) -> Result<Uuid, LoadError> {
    Uuid::from_slice(bytes).map_err(|_| LoadError::MalformedKey(bytes.len()))
}

/// Reads the events of `batch` in its order. Events no longer stored (deleted, or dropped with an
/// expired partition) are left out: they are not delivered.
pub async fn load(
    conn: &mut PgConnection,
    batch: &DeliveryBatch,
) -> Result<Vec<DeliveredEvent>, LoadError> {
    let mut apps = Vec::with_capacity(batch.events.len());
    let mut ids = Vec::with_capacity(batch.events.len());
    let mut times = Vec::with_capacity(batch.events.len());
    for key in &batch.events {
        apps.push(uuid(&key.application_id)?);
        ids.push(uuid(&key.event_id)?);
        times.push(
            DateTime::<Utc>::from_timestamp_micros(key.occurred_at_micros).unwrap_or_default(),
        );
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT k.position, e.application_id, a.name AS application, e.event_id, e.session_id, \
                e.category, e.name, e.data::text AS data, e.occurred_at, e.received_at, e.stored_at \
         FROM UNNEST($1::uuid[], $2::uuid[], $3::timestamptz[]) WITH ORDINALITY AS k(a, e, o, position) \
         JOIN events e ON e.application_id = k.a AND e.event_id = k.e AND e.occurred_at = k.o \
         JOIN applications a ON a.id = e.application_id \
         ORDER BY k.position",
    )
    .bind(&apps)
    .bind(&ids)
    .bind(&times)
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|row| {
            let index = (row.position - 1) as usize;
            Ok(DeliveredEvent {
                event_id: row.event_id,
                application_id: row.application_id,
                session_id: row.session_id,
                category: row.category,
                name: row.name,
                data: RawValue::from_string(row.data).map_err(sqlx::Error::decode)?,
                occurred_at: row.occurred_at,
                received_at: row.received_at,
                sequence: (batch.first_sequence > 0).then(|| batch.first_sequence + index as i64),
                application: row.application,
                stored_at: row.stored_at,
                key: batch.events[index].clone(),
            })
        })
        .collect()
}
