//! Conversions between domain events and the `EventBatch` protobuf bodies of outbox rows.

use chrono::{DateTime, Utc};
use eye_proto::v1 as pb;

use crate::{
    ApplicationId, Event, EventId, EventType, SessionId,
    envelope::{to_datetime, to_timestamp},
};

/// A batch body that does not decode into domain values (a bug or a foreign writer: never retried).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{0} is not a 16-byte uuid")]
    InvalidId(&'static str),
    #[error("{0} is missing or out of range")]
    InvalidTimestamp(&'static str),
}

/// The accepted events of one request, ready to be enqueued.
pub fn encode(
    application_id: ApplicationId,
    received_at: DateTime<Utc>,
    events: impl IntoIterator<Item = (Event, i32)>,
) -> pb::EventBatch {
    pb::EventBatch {
        application_id: application_id.as_bytes().to_vec(),
        received_at: Some(to_timestamp(received_at)),
        events: events.into_iter().map(|(event, version)| encode_event(event, version)).collect(),
    }
}

/// One event as a protobuf body, with the schema version it was validated against (0: none).
pub fn encode_event(event: Event, schema_version: i32) -> pb::BatchEvent {
    pb::BatchEvent {
        event_id: event.event_id.as_bytes().to_vec(),
        session_id: event.session_id.as_bytes().to_vec(),
        category: event.event_type.category,
        name: event.event_type.name,
        data_json: event.data_json,
        occurred_at: Some(to_timestamp(event.occurred_at)),
        schema_version,
    }
}

/// Splits a batch of two or more events into two halves with the same batch-wide fields (for
/// poison isolation); `None` for a batch of one.
pub fn split(batch: &pb::EventBatch) -> Option<(pb::EventBatch, pb::EventBatch)> {
    if batch.events.len() < 2 {
        return None;
    }
    let (first, second) = batch.events.split_at(batch.events.len() / 2);
    let half = |events: &[pb::BatchEvent]| pb::EventBatch {
        application_id: batch.application_id.clone(),
        received_at: batch.received_at,
        events: events.to_vec(),
    };
    Some((half(first), half(second)))
}

/// The batch-wide fields.
pub fn decode_header(
    batch: &pb::EventBatch,
) -> Result<(ApplicationId, DateTime<Utc>), DecodeError> {
    let application_id = ApplicationId::from_slice(&batch.application_id)
        .ok_or(DecodeError::InvalidId("application_id"))?;
    let received_at = batch
        .received_at
        .as_ref()
        .and_then(to_datetime)
        .ok_or(DecodeError::InvalidTimestamp("received_at"))?;
    Ok((application_id, received_at))
}

/// One event and its schema version.
pub fn decode_event(event: pb::BatchEvent) -> Result<(Event, i32), DecodeError> {
    let event_id =
        EventId::from_slice(&event.event_id).ok_or(DecodeError::InvalidId("event_id"))?;
    let session_id =
        SessionId::from_slice(&event.session_id).ok_or(DecodeError::InvalidId("session_id"))?;
    let occurred_at = event
        .occurred_at
        .as_ref()
        .and_then(to_datetime)
        .ok_or(DecodeError::InvalidTimestamp("occurred_at"))?;
    Ok((
        Event {
            event_id,
            session_id,
            event_type: EventType { category: event.category, name: event.name },
            data_json: event.data_json,
            occurred_at,
        },
        event.schema_version,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use prost::Message;

    prop_compose! {
        fn any_event()(
            id in any::<u128>(), session in any::<u128>(),
            category in ".{1,40}", name in ".{1,40}", text in ".{0,40}",
            seconds in 0i64..4_102_444_800, nanos in 0u32..1_000_000_000,
        ) -> Event {
            Event {
                event_id: EventId(uuid::Uuid::from_u128(id)),
                session_id: SessionId(uuid::Uuid::from_u128(session)),
                event_type: EventType::new(category, name),
                data_json: serde_json::json!({ "text": text }).to_string(),
                occurred_at: DateTime::from_timestamp(seconds, nanos).unwrap(),
            }
        }
    }

    proptest! {
        #[test]
        fn batches_round_trip_through_protobuf(
            events in proptest::collection::vec((any_event(), 0i32..100), 0..8),
            app in any::<u128>(),
            received in 0i64..4_102_444_800,
        ) {
            let app = ApplicationId(uuid::Uuid::from_u128(app));
            let received_at = DateTime::from_timestamp(received, 0).unwrap();
            let bytes = encode(app, received_at, events.clone()).encode_to_vec();
            let decoded = pb::EventBatch::decode(bytes.as_slice()).unwrap();
            prop_assert_eq!(decode_header(&decoded).unwrap(), (app, received_at));
            let back: Vec<_> = decoded.events.into_iter().map(|e| decode_event(e).unwrap()).collect();
            prop_assert_eq!(back, events);
        }
    }

    #[test]
    fn split_halves_keep_the_header_and_every_event() {
        let event = |n: i64| Event {
            event_id: EventId::new_v7(),
            session_id: SessionId(uuid::Uuid::nil()),
            event_type: EventType::new("c", "n"),
            data_json: format!("{{\"n\":{n}}}"),
            occurred_at: DateTime::from_timestamp(n, 0).unwrap(),
        };
        let app = ApplicationId(uuid::Uuid::new_v4());
        let whole = encode(app, Utc::now(), (0..5).map(|n| (event(n), 0)));
        let (a, b) = split(&whole).unwrap();
        assert_eq!((a.events.len(), b.events.len()), (2, 3));
        assert_eq!(decode_header(&a), decode_header(&whole));
        assert_eq!(decode_header(&b), decode_header(&whole));
        assert_eq!([a.events, b.events].concat(), whole.events);
        let single = encode(app, Utc::now(), [(event(9), 0)]);
        assert!(split(&single).is_none());
    }

    #[test]
    fn refuses_bad_ids() {
        let mut event = encode_event(
            Event {
                event_id: EventId::new_v7(),
                session_id: SessionId(uuid::Uuid::nil()),
                event_type: EventType::new("c", "n"),
                data_json: "{}".into(),
                occurred_at: Utc::now(),
            },
            0,
        );
        event.session_id.truncate(3);
        assert_eq!(decode_event(event), Err(DecodeError::InvalidId("session_id")));
    }
}
