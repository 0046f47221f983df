//! The envelope rules: what every event must satisfy to be accepted at ingest.
//!
//! Each rule has its own [`Rejection`] with a stable [`code`](Rejection::code), so a client can
//! tell exactly what to fix. Payload *content* (the JSON Schema of the type) is checked later, by
//! the validator; here only the shape that every event shares.

use chrono::{DateTime, Utc};
use eye_proto::v1 as pb;
use prost::Message;

use crate::{Event, EventId, EventType, SessionId, payload};

/// Bounds on a single event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest encoded event (protobuf bytes), 64 KiB by default.
    pub max_event_bytes: usize,
    /// Longest category or name, in characters.
    pub max_type_chars: usize,
    pub payload: payload::PayloadLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_event_bytes: 64 * 1024, max_type_chars: 255, payload: Default::default() }
    }
}

/// Why ingest refused an event.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejection {
    #[error("event_id {0:?} is not a UUID")]
    InvalidEventId(String),
    #[error("session_id {0:?} is not a UUID")]
    InvalidSessionId(String),
    #[error("category is empty")]
    MissingCategory,
    #[error("name is empty")]
    MissingName,
    #[error("category is longer than {limit} characters")]
    CategoryTooLong { limit: usize },
    #[error("name is longer than {limit} characters")]
    NameTooLong { limit: usize },
    #[error("timestamp is missing")]
    MissingTimestamp,
    #[error("timestamp is out of range")]
    InvalidTimestamp,
    /// A timestamp given as text (HTTP/JSON) in neither accepted form.
    #[error(
        "timestamp {0:?} is neither RFC 3339 nor `YYYY-MM-DD HH:MM:SS[.ffffff]` (taken as UTC)"
    )]
    UnreadableTimestamp(String),
    /// A field of a JSON event (HTTP) that has the wrong JSON type.
    #[error("{field} must be {expected}")]
    WrongType { field: &'static str, expected: &'static str },
    #[error("event is {size} bytes, over the limit of {limit}")]
    EventTooLarge { size: usize, limit: usize },
    #[error(transparent)]
    Payload(#[from] payload::PayloadError),
}

impl Rejection {
    /// The stable reason code returned to clients.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidEventId(_) => "invalid_event_id",
            Self::InvalidSessionId(_) => "invalid_session_id",
            Self::MissingCategory => "missing_category",
            Self::MissingName => "missing_name",
            Self::CategoryTooLong { .. } => "category_too_long",
            Self::NameTooLong { .. } => "name_too_long",
            Self::MissingTimestamp => "missing_timestamp",
            Self::InvalidTimestamp | Self::UnreadableTimestamp(_) => "invalid_timestamp",
            Self::WrongType { .. } => "invalid_field",
            Self::EventTooLarge { .. } => "event_too_large",
            Self::Payload(error) => error.code(),
        }
    }

    /// `<code>: <message>`, the form of `EventResult.reason`.
    pub fn reason(&self) -> String {
        format!("{}: {self}", self.code())
    }
}

/// Checks one event of a `SendEvents` request. An empty `event_id` gets a fresh UUIDv7.
///
/// Cheap checks run first, so an oversized or malformed event costs little.
pub fn validate(event: pb::Event, limits: &Limits) -> Result<Event, Rejection> {
    let size = event.encoded_len();
    if size > limits.max_event_bytes {
        return Err(Rejection::EventTooLarge { size, limit: limits.max_event_bytes });
    }
    let event_id = if event.event_id.is_empty() {
        EventId::new_v7()
    } else {
        event.event_id.parse().map_err(|_| Rejection::InvalidEventId(event.event_id.clone()))?
    };
    let session_id: SessionId = event
        .session_id
        .parse()
        .map_err(|_| Rejection::InvalidSessionId(event.session_id.clone()))?;
    check_event_type(&event.category, &event.name, limits)?;
    let occurred_at = to_datetime(event.timestamp.as_ref().ok_or(Rejection::MissingTimestamp)?)
        .ok_or(Rejection::InvalidTimestamp)?;
    payload::check(&event.data_json, &limits.payload)?;
    Ok(Event {
        event_id,
        session_id,
        event_type: EventType { category: event.category, name: event.name },
        data_json: event.data_json,
        occurred_at,
    })
}

/// Checks an event type's category and name (not blank, at most `limits.max_type_chars`
/// characters each): the one rule for ingest and for the schema registry, so that every
/// registered type can be sent.
pub fn check_event_type(category: &str, name: &str, limits: &Limits) -> Result<(), Rejection> {
    check_type_part(category, limits, Rejection::MissingCategory, |limit| {
        Rejection::CategoryTooLong { limit }
    })?;
    check_type_part(name, limits, Rejection::MissingName, |limit| Rejection::NameTooLong { limit })
}

fn check_type_part(
    value: &str,
    limits: &Limits,
    empty: Rejection,
    too_long: impl FnOnce(usize) -> Rejection,
) -> Result<(), Rejection> {
    if value.trim().is_empty() {
        return Err(empty);
    }
    // Byte length bounds the character count from above: count only when it could matter.
    if value.len() > limits.max_type_chars && value.chars().count() > limits.max_type_chars {
        return Err(too_long(limits.max_type_chars));
    }
    Ok(())
}

/// A timestamp written as text: RFC 3339 (`2021-01-01T09:15:27.243Z`, any offset), or the
/// requirements' own form without a zone, `2021-01-01 09:15:27.243860` (a `T` instead of the
/// space, and no fraction, are fine too), taken as UTC.
pub fn parse_timestamp(text: &str) -> Result<DateTime<Utc>, Rejection> {
    parse_timestamp_at(text, chrono::FixedOffset::east_opt(0).expect("UTC"))
}

/// [`parse_timestamp`], reading a time without a zone as wall-clock time at `naive_offset`.
pub fn parse_timestamp_at(
    text: &str,
    naive_offset: chrono::FixedOffset,
) -> Result<DateTime<Utc>, Rejection> {
    let text = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|format| chrono::NaiveDateTime::parse_from_str(text, format).ok())
        .and_then(|naive| naive.and_local_timezone(naive_offset).single())
        .map(|at| at.with_timezone(&Utc))
        .ok_or_else(|| Rejection::UnreadableTimestamp(text.to_owned()))
}

/// A protobuf timestamp as a `DateTime`, if it is in range and normalised.
pub fn to_datetime(timestamp: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(timestamp.nanos).ok()?;
    DateTime::from_timestamp(timestamp.seconds, nanos)
}

/// A `DateTime` as a protobuf timestamp.
pub fn to_timestamp(datetime: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: datetime.timestamp(),
        nanos: datetime.timestamp_subsec_nanos() as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_read_in_both_text_forms() {
        let at = |text| parse_timestamp(text).map(|at| at.to_rfc3339());
        assert_eq!(at("2021-01-01 09:15:27.243860").unwrap(), "2021-01-01T09:15:27.243860+00:00");
        assert_eq!(at("2021-01-01T09:15:27").unwrap(), "2021-01-01T09:15:27+00:00");
        assert_eq!(at("2021-01-01T10:15:27.5+01:00").unwrap(), "2021-01-01T09:15:27.500+00:00");
        assert_eq!(at("2021-01-01T09:15:27Z").unwrap(), "2021-01-01T09:15:27+00:00");
        for bad in ["", "yesterday", "2021-13-01 00:00:00", "1609492527"] {
            let rejection = parse_timestamp(bad).unwrap_err();
            assert_eq!(rejection.code(), "invalid_timestamp", "{bad:?}");
        }
    }

    fn event() -> pb::Event {
        pb::Event {
            event_id: "0191b3a8-7c5e-7a1b-9c3d-1e2f3a4b5c6d".into(),
            session_id: "6f1c2d3e-4a5b-4c6d-8e7f-9a0b1c2d3e4f".into(),
            category: "page interaction".into(),
            name: "pageview".into(),
            data_json: r#"{"host":"shop.example","path":"/"}"#.into(),
            timestamp: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 5 }),
        }
    }

    fn rejection(mutate: impl FnOnce(&mut pb::Event)) -> &'static str {
        let mut event = event();
        mutate(&mut event);
        validate(event, &Limits::default()).unwrap_err().code()
    }

    #[test]
    fn accepts_a_well_formed_event() {
        let accepted = validate(event(), &Limits::default()).unwrap();
        assert_eq!(accepted.event_id.to_string(), "0191b3a8-7c5e-7a1b-9c3d-1e2f3a4b5c6d");
        assert_eq!(accepted.event_type, EventType::new("page interaction", "pageview"));
        assert_eq!(accepted.occurred_at.timestamp_subsec_nanos(), 5);
    }

    #[test]
    fn assigns_a_v7_id_when_empty() {
        let mut e = event();
        e.event_id.clear();
        let accepted = validate(e, &Limits::default()).unwrap();
        assert_eq!(accepted.event_id.0.get_version_num(), 7);
    }

    #[test]
    fn each_rule_has_its_code() {
        assert_eq!(rejection(|e| e.event_id = "nope".into()), "invalid_event_id");
        assert_eq!(rejection(|e| e.session_id = "".into()), "invalid_session_id");
        assert_eq!(rejection(|e| e.session_id = "123".into()), "invalid_session_id");
        assert_eq!(rejection(|e| e.category = " ".into()), "missing_category");
        assert_eq!(rejection(|e| e.name = "".into()), "missing_name");
        assert_eq!(rejection(|e| e.category = "c".repeat(256)), "category_too_long");
        assert_eq!(rejection(|e| e.name = "n".repeat(256)), "name_too_long");
        assert_eq!(rejection(|e| e.timestamp = None), "missing_timestamp");
        assert_eq!(
            rejection(|e| e.timestamp = Some(prost_types::Timestamp { seconds: 0, nanos: -1 })),
            "invalid_timestamp"
        );
        assert_eq!(rejection(|e| e.data_json = "[1]".into()), "data_not_object");
        assert_eq!(rejection(|e| e.data_json = "{".into()), "invalid_json");
        assert_eq!(
            rejection(|e| e.data_json = format!(r#"{{"a":"{}"}}"#, "x".repeat(70_000))),
            "event_too_large"
        );
    }

    #[test]
    fn length_limits_count_characters_not_bytes() {
        let mut e = event();
        e.category = "é".repeat(255); // 510 bytes, 255 characters
        assert!(validate(e, &Limits::default()).is_ok());
    }

    #[test]
    fn reason_names_code_and_field() {
        let mut e = event();
        e.session_id = "abc".into();
        let reason = validate(e, &Limits::default()).unwrap_err().reason();
        assert_eq!(reason, r#"invalid_session_id: session_id "abc" is not a UUID"#);
    }
}
