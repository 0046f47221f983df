//! Checking read-path requests: protobuf fields become checked values, and every refusal names
//! its field (`filter.from: ... is after filter.to`). Pure functions, shared by every transport.

use std::time::Duration;

use chrono::{DateTime, Utc};
use event_model::{ErrorReason, envelope::to_datetime};
use eye_proto::v1 as pb;
use uuid::Uuid;

use crate::{
    error::QueryError,
    queries::Outcome,
    token::{self, Kind, Position, TokenError},
};

/// Items per page when the request leaves `page_size` at 0.
pub const DEFAULT_PAGE_SIZE: i32 = 100;
/// Most items per page.
pub const MAX_PAGE_SIZE: i32 = 1_000;
/// Largest encoded page: under the 4 MiB default decoding limit of gRPC clients, with room for
/// the rest of the response.
pub const MAX_PAGE_BYTES: usize = 4 * 1024 * 1024 - 64 * 1024;
/// Errors replayed per call when the request leaves `limit` at 0, and the most allowed.
pub const DEFAULT_REPLAY_LIMIT: i32 = 1_000;
pub const MAX_REPLAY_LIMIT: i32 = 10_000;
/// Longest `data_contains` document accepted.
pub const MAX_DATA_CONTAINS_BYTES: usize = 64 * 1024;
/// GetStats' window when the request sets none, and the longest allowed.
pub const DEFAULT_STATS_WINDOW: Duration = Duration::from_secs(3_600);
pub const MAX_STATS_WINDOW: Duration = Duration::from_secs(7 * 24 * 3_600);

/// The position an events page token continues from (`None`: the first page).
pub(crate) fn event_position(
    page_token: &str,
    kind: Kind,
    scope: token::Scope,
) -> Result<Option<(DateTime<Utc>, Uuid)>, QueryError> {
    if page_token.is_empty() {
        return Ok(None);
    }
    match token::decode(page_token, kind, scope)? {
        Position::Event { occurred_at, event_id } => Ok(Some((occurred_at, event_id))),
        Position::Error { .. } => Err(TokenError::Garbled.into()),
    }
}

pub(crate) fn page_size(value: i32) -> Result<i32, QueryError> {
    match value {
        0 => Ok(DEFAULT_PAGE_SIZE),
        1..=MAX_PAGE_SIZE => Ok(value),
        _ => Err(QueryError::invalid(
            "page_size",
            format!("{value} is out of range; use 1 to {MAX_PAGE_SIZE} (0: {DEFAULT_PAGE_SIZE})"),
        )),
    }
}

/// Longest text filter (a category, a name, an application name): what ingest accepts for a
/// category or a name. A longer one could match nothing.
pub const MAX_TEXT_FILTER_CHARS: usize = 255;

/// A text filter: empty means none. Refused: NUL (Postgres stores no NUL in text, so nothing can
/// match and the database would refuse the query) and more than [`MAX_TEXT_FILTER_CHARS`].
pub(crate) fn text(field: &'static str, value: String) -> Result<Option<String>, QueryError> {
    if value.is_empty() {
        return Ok(None);
    }
    if value.contains('\0') {
        return Err(QueryError::invalid(
            field,
            "contains a NUL character, which no stored text can",
        ));
    }
    if value.len() > MAX_TEXT_FILTER_CHARS && value.chars().count() > MAX_TEXT_FILTER_CHARS {
        return Err(QueryError::invalid(
            field,
            format!("longer than {MAX_TEXT_FILTER_CHARS} characters, which ingest does not accept"),
        ));
    }
    Ok(Some(value))
}

pub(crate) fn uuid(field: &'static str, value: &str) -> Result<Option<Uuid>, QueryError> {
    if value.is_empty() {
        return Ok(None);
    }
    Uuid::parse_str(value)
        .map(Some)
        .map_err(|_| QueryError::invalid(field, format!("{value:?} is not a UUID")))
}

/// The earliest and latest instants a filter may name: what both chrono and Postgres represent.
const MIN_SECONDS: i64 = -62_135_596_800; // 0001-01-01T00:00:00Z
const MAX_SECONDS: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z

pub(crate) fn time(
    field: &'static str,
    value: Option<&prost_types::Timestamp>,
) -> Result<Option<DateTime<Utc>>, QueryError> {
    let Some(value) = value else { return Ok(None) };
    if !(MIN_SECONDS..=MAX_SECONDS).contains(&value.seconds)
        || !(0..1_000_000_000).contains(&value.nanos)
    {
        return Err(QueryError::invalid(field, "not a valid timestamp between years 1 and 9999"));
    }
    Ok(to_datetime(value))
}

/// Half-open `[from, to)`; either end may be open.
pub(crate) type TimeRange = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

pub(crate) fn time_range(
    from: Option<&prost_types::Timestamp>,
    to: Option<&prost_types::Timestamp>,
) -> Result<TimeRange, QueryError> {
    let from = time("filter.from", from)?;
    let to = time("filter.to", to)?;
    if let (Some(from), Some(to)) = (from, to)
        && from > to
    {
        return Err(QueryError::invalid(
            "filter.from",
            format!("{} is after filter.to ({})", from.to_rfc3339(), to.to_rfc3339()),
        ));
    }
    Ok((from, to))
}

/// `data_contains`: a JSON object; `{}` constrains nothing, so it is dropped.
pub(crate) fn data_contains(value: &str) -> Result<Option<serde_json::Value>, QueryError> {
    const FIELD: &str = "filter.data_contains";
    if value.is_empty() {
        return Ok(None);
    }
    if value.len() > MAX_DATA_CONTAINS_BYTES {
        return Err(QueryError::invalid(
            FIELD,
            format!("longer than {MAX_DATA_CONTAINS_BYTES} bytes"),
        ));
    }
    let json: serde_json::Value = serde_json::from_str(value)
        .map_err(|error| QueryError::invalid(FIELD, format!("not JSON: {error}")))?;
    if holds_nul(&json) {
        // jsonb refuses \u0000 (and no stored payload holds one: ingest refuses them).
        return Err(QueryError::invalid(FIELD, "contains a NUL character (\\u0000)"));
    }
    match json {
        serde_json::Value::Object(map) if map.is_empty() => Ok(None),
        json @ serde_json::Value::Object(_) => Ok(Some(json)),
        _ => Err(QueryError::invalid(FIELD, "must be a JSON object, e.g. {\"path\": \"/\"}")),
    }
}

fn holds_nul(json: &serde_json::Value) -> bool {
    match json {
        serde_json::Value::String(text) => text.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(holds_nul),
        serde_json::Value::Object(map) => {
            map.iter().any(|(key, value)| key.contains('\0') || holds_nul(value))
        }
        _ => false,
    }
}

/// Every check of a `ListEvents` request that needs no database (all but the application name):
/// what the fuzz target (`services/query/fuzz`) drives with arbitrary bytes. Never panics.
pub fn check_list_events_offline(request: pb::ListEventsRequest) -> Result<(), QueryError> {
    let filter = request.filter.unwrap_or_default();
    time_range(filter.from.as_ref(), filter.to.as_ref())?;
    uuid("filter.session_id", &filter.session_id)?;
    text("filter.category", filter.category)?;
    text("filter.name", filter.name)?;
    data_contains(&filter.data_contains)?;
    page_size(request.page_size)?;
    let scope = token::ScopeBuilder::new(Kind::Events).finish();
    event_position(&request.page_token, Kind::Events, scope)?;
    Ok(())
}

/// The same for `ListErrors`.
pub fn check_list_errors_offline(request: pb::ListErrorsRequest) -> Result<(), QueryError> {
    let filter = request.filter.unwrap_or_default();
    time_range(filter.from.as_ref(), filter.to.as_ref())?;
    reason(filter.reason)?;
    replay_outcomes(&filter.replay_outcomes)?;
    text("filter.category", filter.category)?;
    text("filter.name", filter.name)?;
    page_size(request.page_size)?;
    if !request.page_token.is_empty() {
        token::decode(
            &request.page_token,
            Kind::Errors,
            token::ScopeBuilder::new(Kind::Errors).finish(),
        )?;
    }
    Ok(())
}

/// `ReplayErrors.limit`: 0 means the default.
pub(crate) fn replay_limit(value: i32) -> Result<i32, QueryError> {
    match value {
        0 => Ok(DEFAULT_REPLAY_LIMIT),
        n @ 1..=MAX_REPLAY_LIMIT => Ok(n),
        n => Err(QueryError::invalid(
            "limit",
            format!("{n} is out of range; use 1 to {MAX_REPLAY_LIMIT} (0: {DEFAULT_REPLAY_LIMIT})"),
        )),
    }
}

/// `ReplayErrors.error_ids`: at most [`MAX_REPLAY_LIMIT`], each a positive id.
pub(crate) fn error_ids(ids: &[i64]) -> Result<(), QueryError> {
    if ids.len() > MAX_REPLAY_LIMIT as usize {
        return Err(QueryError::invalid(
            "error_ids",
            format!("at most {MAX_REPLAY_LIMIT} ids per call"),
        ));
    }
    if let Some(id) = ids.iter().find(|id| **id <= 0) {
        return Err(QueryError::invalid("error_ids", format!("{id} is not an error id")));
    }
    Ok(())
}

/// `GetStats.window`: positive and at most 7 days; unset means one hour.
pub(crate) fn stats_window(value: Option<prost_types::Duration>) -> Result<Duration, QueryError> {
    match value {
        None => Ok(DEFAULT_STATS_WINDOW),
        Some(window) => Duration::try_from(window)
            .ok()
            .filter(|w| !w.is_zero() && *w <= MAX_STATS_WINDOW)
            .ok_or_else(|| QueryError::invalid("window", "must be positive and at most 7 days")),
    }
}

/// `filter.reason`: empty (any), or a known reason code.
pub(crate) fn reason(value: String) -> Result<Option<String>, QueryError> {
    let reason = text("filter.reason", value)?;
    if let Some(reason) = &reason
        && ErrorReason::from_code(reason).is_none()
    {
        let known: Vec<_> = ErrorReason::ALL.iter().map(|r| r.code()).collect();
        return Err(QueryError::invalid(
            "filter.reason",
            format!("unknown reason {reason:?}; one of {}", known.join(", ")),
        ));
    }
    Ok(reason)
}

/// `filter.replay_outcomes`: known outcomes, sorted and deduplicated.
pub(crate) fn replay_outcomes(values: &[i32]) -> Result<Vec<Outcome>, QueryError> {
    let mut outcomes = Vec::with_capacity(values.len());
    for &value in values {
        let outcome = match pb::ReplayOutcome::try_from(value) {
            Ok(pb::ReplayOutcome::NotReplayed) => Outcome::NotReplayed,
            Ok(pb::ReplayOutcome::Pending) => Outcome::Pending,
            Ok(pb::ReplayOutcome::Stored) => Outcome::Stored,
            Ok(pb::ReplayOutcome::StillInvalid) => Outcome::StillInvalid,
            Ok(pb::ReplayOutcome::Unspecified) | Err(_) => {
                return Err(QueryError::invalid(
                    "filter.replay_outcomes",
                    format!("{value} is not a replay outcome"),
                ));
            }
        };
        outcomes.push(outcome);
    }
    outcomes.sort_unstable();
    outcomes.dedup();
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(error: QueryError) -> &'static str {
        match error {
            QueryError::InvalidArgument { field, .. } => field,
            other => panic!("not an invalid argument: {other}"),
        }
    }

    #[test]
    fn page_sizes() {
        assert_eq!(page_size(0).unwrap(), 100);
        assert_eq!(page_size(1_000).unwrap(), 1_000);
        assert_eq!(field(page_size(1_001).unwrap_err()), "page_size");
        assert_eq!(field(page_size(-1).unwrap_err()), "page_size");
    }

    #[test]
    fn data_contains_must_be_an_object() {
        assert_eq!(data_contains("").unwrap(), None);
        assert_eq!(data_contains("{}").unwrap(), None);
        assert_eq!(data_contains(r#"{"a":1}"#).unwrap(), Some(serde_json::json!({"a": 1})));
        for bad in ["[1]", "1", "{", "\"x\""] {
            assert_eq!(field(data_contains(bad).unwrap_err()), "filter.data_contains", "{bad}");
        }
    }

    #[test]
    fn time_ranges() {
        let at = |seconds| prost_types::Timestamp { seconds, nanos: 0 };
        assert!(time_range(Some(&at(1)), Some(&at(1))).is_ok());
        assert_eq!(field(time_range(Some(&at(2)), Some(&at(1))).unwrap_err()), "filter.from");
        let bad = prost_types::Timestamp { seconds: 0, nanos: -1 };
        assert_eq!(field(time_range(None, Some(&bad)).unwrap_err()), "filter.to");
        assert_eq!(field(time_range(Some(&at(i64::MAX)), None).unwrap_err()), "filter.from");
    }

    proptest::proptest! {
        /// What the fuzz target does, on every test run: arbitrary bytes decoded as requests
        /// never panic the checks, and every refusal is INVALID_ARGUMENT.
        #[test]
        fn arbitrary_requests_are_refused_cleanly(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            use prost::Message;
            if let Ok(request) = pb::ListEventsRequest::decode(bytes.as_slice())
                && let Err(error) = check_list_events_offline(request) {
                    proptest::prop_assert_eq!(tonic::Status::from(error).code(), tonic::Code::InvalidArgument);
                }
            if let Ok(request) = pb::ListErrorsRequest::decode(bytes.as_slice())
                && let Err(error) = check_list_errors_offline(request) {
                    proptest::prop_assert_eq!(tonic::Status::from(error).code(), tonic::Code::InvalidArgument);
                }
        }

        #[test]
        fn arbitrary_text_filters_never_reach_the_database_unchecked(text in ".{0,300}") {
            let request = pb::ListEventsRequest {
                filter: Some(pb::EventFilter { category: text.clone(), data_contains: format!("{{\"k\": {}}}", serde_json::Value::String(text.clone())), ..Default::default() }),
                ..Default::default()
            };
            let verdict = check_list_events_offline(request);
            let acceptable = !text.contains('\0') && text.chars().count() <= MAX_TEXT_FILTER_CHARS;
            proptest::prop_assert_eq!(verdict.is_ok(), acceptable, "{:?}", text);
        }
    }
}
