//! The `eye.v1.QueryService` handlers: authenticate, turn the request into a checked filter (every
//! refusal names its field), run the query from [`queries`], map rows to messages.

use std::time::Duration;

use chrono::{DateTime, Utc};
use event_model::{
    ErrorReason,
    envelope::{to_datetime, to_timestamp},
};
use eye_proto::v1 as pb;
use eye_service::auth::{Authenticator, Role};
use prost::Message;
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    KNOWN_STAGES,
    error::QueryError,
    queries::{self, ErrorFilter, ErrorRow, EventFilter, EventRow, Outcome},
    token::{self, Kind, Position, TokenError},
};

/// Items per page when the request leaves `page_size` at 0.
pub const DEFAULT_PAGE_SIZE: i32 = 100;
/// Most items per page.
pub const MAX_PAGE_SIZE: i32 = 1_000;
/// Largest encoded page: under the 4 MiB default decoding limit of gRPC clients, with room for
/// the rest of the response.
const MAX_PAGE_BYTES: usize = 4 * 1024 * 1024 - 64 * 1024;
/// Errors replayed per call when the request leaves `limit` at 0, and the most allowed.
pub const DEFAULT_REPLAY_LIMIT: i32 = 1_000;
pub const MAX_REPLAY_LIMIT: i32 = 10_000;
/// Longest `data_contains` document accepted.
const MAX_DATA_CONTAINS_BYTES: usize = 64 * 1024;
/// GetStats' window when the request sets none, and the longest allowed.
const DEFAULT_STATS_WINDOW: Duration = Duration::from_secs(3_600);
const MAX_STATS_WINDOW: Duration = Duration::from_secs(7 * 24 * 3_600);

pub struct Query {
    pool: PgPool,
    auth: Authenticator,
}

impl Query {
    pub fn new(pool: PgPool, auth: Authenticator) -> Self {
        Self { pool, auth }
    }

    async fn list_events(
        &self,
        request: pb::ListEventsRequest,
    ) -> Result<pb::ListEventsResponse, QueryError> {
        let page_size = page_size(request.page_size)?;
        let filter = self.event_filter(request.filter.unwrap_or_default()).await?;
        let scope = filter.scope(Kind::Events);
        let after = event_position(&request.page_token, Kind::Events, scope)?;
        let (events, next_page_token) =
            self.events_page(&filter, Kind::Events, page_size, after).await?;
        Ok(pb::ListEventsResponse { events, next_page_token })
    }

    async fn get_session(
        &self,
        request: pb::GetSessionRequest,
    ) -> Result<pb::GetSessionResponse, QueryError> {
        let page_size = page_size(request.page_size)?;
        let session_id = uuid("session_id", &request.session_id)?
            .ok_or_else(|| QueryError::invalid("session_id", "required"))?;
        let filter = EventFilter { session_id: Some(session_id), ..EventFilter::default() };
        let after =
            event_position(&request.page_token, Kind::Session, filter.scope(Kind::Session))?;
        let session = queries::session(&self.pool, session_id)
            .await?
            .ok_or_else(|| QueryError::NotFound(format!("session {session_id}")))?;
        let (events, next_page_token) =
            self.events_page(&filter, Kind::Session, page_size, after).await?;
        Ok(pb::GetSessionResponse {
            session: Some(pb::SessionSummary {
                session_id: session.session_id.to_string(),
                first_seen_at: Some(to_timestamp(session.first_seen_at)),
                last_seen_at: Some(to_timestamp(session.last_seen_at)),
                event_count: session.event_count,
                application_ids: session.application_ids.iter().map(Uuid::to_string).collect(),
            }),
            events,
            next_page_token,
        })
    }

    async fn list_errors(
        &self,
        request: pb::ListErrorsRequest,
    ) -> Result<pb::ListErrorsResponse, QueryError> {
        let page_size = page_size(request.page_size)?;
        let filter = self.error_filter(request.filter.unwrap_or_default()).await?;
        let scope = filter.scope();
        let before = match request.page_token.as_str() {
            "" => None,
            text => match token::decode(text, Kind::Errors, scope)? {
                Position::Error { id } => Some(id),
                Position::Event { .. } => return Err(TokenError::Garbled.into()),
            },
        };
        let rows =
            queries::list_errors(&self.pool, &filter, before, i64::from(page_size) + 1).await?;
        let (errors, last) = page(rows, page_size, error_message);
        let next_page_token = last
            .map(|row| token::encode(Kind::Errors, scope, Position::Error { id: row.id }))
            .unwrap_or_default();
        let counts = queries::error_counts(&self.pool, &filter)
            .await?
            .into_iter()
            .map(|(reason, count)| pb::ReasonCount { reason, count })
            .collect();
        Ok(pb::ListErrorsResponse { errors, next_page_token, counts })
    }

    async fn replay_errors(
        &self,
        request: pb::ReplayErrorsRequest,
    ) -> Result<pb::ReplayErrorsResponse, QueryError> {
        let limit = match request.limit {
            0 => DEFAULT_REPLAY_LIMIT,
            n @ 1..=MAX_REPLAY_LIMIT => n,
            n => {
                return Err(QueryError::invalid(
                    "limit",
                    format!(
                        "{n} is out of range; use 1 to {MAX_REPLAY_LIMIT} (0: {DEFAULT_REPLAY_LIMIT})"
                    ),
                ));
            }
        };
        if request.error_ids.len() > MAX_REPLAY_LIMIT as usize {
            return Err(QueryError::invalid(
                "error_ids",
                format!("at most {MAX_REPLAY_LIMIT} ids per call"),
            ));
        }
        if let Some(id) = request.error_ids.iter().find(|id| **id <= 0) {
            return Err(QueryError::invalid("error_ids", format!("{id} is not an error id")));
        }
        let filter = self.error_filter(request.filter.unwrap_or_default()).await?;
        if request.error_ids.is_empty() && filter.is_empty() {
            return Err(QueryError::invalid(
                "error_ids",
                "give error ids or at least one filter field (an empty selection would replay \
                 every error)",
            ));
        }
        let replayed =
            queries::replay_errors(&self.pool, &request.error_ids, &filter, i64::from(limit))
                .await?;
        tracing::info!(events = replayed.events, batches = replayed.batches, "errors replayed");
        Ok(pb::ReplayErrorsResponse {
            replayed: replayed.events as i64,
            batches: replayed.batches as i64,
        })
    }

    async fn get_stats(
        &self,
        request: pb::GetStatsRequest,
    ) -> Result<pb::GetStatsResponse, QueryError> {
        let window = match request.window {
            None => DEFAULT_STATS_WINDOW,
            Some(window) => Duration::try_from(window)
                .ok()
                .filter(|w| !w.is_zero() && *w <= MAX_STATS_WINDOW)
                .ok_or_else(|| {
                    QueryError::invalid("window", "must be positive and at most 7 days")
                })?,
        };
        let since = Utc::now() - chrono::Duration::from_std(window).expect("at most 7 days");
        let stats = queries::stats(&self.pool, since).await?;
        let mut stages: Vec<pb::StageStats> = stats
            .stages
            .iter()
            .map(|stage| pb::StageStats {
                stage: stage.stage.clone(),
                depth: stage.depth,
                in_flight: stage.in_flight,
                lag: Some(seconds(stage.oldest_age_seconds)),
                dead_letters: stage.dead_letters,
            })
            .collect();
        for stage in KNOWN_STAGES {
            if !stages.iter().any(|s| s.stage == stage) {
                stages.push(pb::StageStats {
                    stage: stage.to_owned(),
                    lag: Some(seconds(0.0)),
                    ..pb::StageStats::default()
                });
            }
        }
        stages.sort_by(|a, b| a.stage.cmp(&b.stage));
        let dead_letters = stages.iter().map(|s| s.dead_letters).sum();
        let errors = stats.errors_by_reason.iter().map(|(_, count)| count).sum();
        Ok(pb::GetStatsResponse {
            stages,
            since: Some(to_timestamp(since)),
            events_stored: stats.events_stored,
            errors,
            errors_by_reason: stats
                .errors_by_reason
                .into_iter()
                .map(|(reason, count)| pb::ReasonCount { reason, count })
                .collect(),
            dead_letters,
        })
    }

    /// One page of events after `after`: `page_size` at most (fewer if the page would pass
    /// [`MAX_PAGE_BYTES`]), and the token of the next page if there is one.
    async fn events_page(
        &self,
        filter: &EventFilter,
        kind: Kind,
        page_size: i32,
        after: Option<(DateTime<Utc>, Uuid)>,
    ) -> Result<(Vec<pb::StoredEvent>, String), QueryError> {
        let scope = filter.scope(kind);
        let rows =
            queries::list_events(&self.pool, filter, after, i64::from(page_size) + 1).await?;
        let (events, last) = page(rows, page_size, event_message);
        let next_page_token = last
            .map(|row| {
                let position =
                    Position::Event { occurred_at: row.occurred_at, event_id: row.event_id };
                token::encode(kind, scope, position)
            })
            .unwrap_or_default();
        Ok((events, next_page_token))
    }

    async fn event_filter(&self, filter: pb::EventFilter) -> Result<EventFilter, QueryError> {
        let (from, to) = time_range(filter.from.as_ref(), filter.to.as_ref())?;
        Ok(EventFilter {
            session_id: uuid("filter.session_id", &filter.session_id)?,
            category: text(filter.category),
            name: text(filter.name),
            application_id: self.application("filter.application", &filter.application).await?,
            from,
            to,
            data_contains: data_contains(&filter.data_contains)?,
        })
    }

    async fn error_filter(&self, filter: pb::ErrorFilter) -> Result<ErrorFilter, QueryError> {
        let (from, to) = time_range(filter.from.as_ref(), filter.to.as_ref())?;
        let reason = text(filter.reason);
        if let Some(reason) = &reason
            && ErrorReason::from_code(reason).is_none()
        {
            let known: Vec<_> = ErrorReason::ALL.iter().map(|r| r.code()).collect();
            return Err(QueryError::invalid(
                "filter.reason",
                format!("unknown reason {reason:?}; one of {}", known.join(", ")),
            ));
        }
        let mut outcomes = Vec::with_capacity(filter.replay_outcomes.len());
        for value in filter.replay_outcomes {
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
        Ok(ErrorFilter {
            reason,
            category: text(filter.category),
            name: text(filter.name),
            application_id: self.application("filter.application", &filter.application).await?,
            from,
            to,
            outcomes,
        })
    }

    /// An application given by id or by name.
    async fn application(
        &self,
        field: &'static str,
        value: &str,
    ) -> Result<Option<Uuid>, QueryError> {
        if value.is_empty() {
            return Ok(None);
        }
        if let Ok(id) = Uuid::parse_str(value) {
            return Ok(Some(id));
        }
        match queries::application_id_by_name(&self.pool, value).await? {
            Some(id) => Ok(Some(id)),
            None => Err(QueryError::invalid(
                field,
                format!("{value:?} is neither an application id (UUID) nor an application's name"),
            )),
        }
    }
}

/// The position an events page token continues from (`None`: the first page).
fn event_position(
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

/// The first `page_size` rows as messages, cut short before [`MAX_PAGE_BYTES`]; with the last row
/// taken when more rows follow (`rows` holds one more than a page when there is a next page).
fn page<R, M: Message>(
    rows: Vec<R>,
    page_size: i32,
    to_message: impl Fn(&R) -> M,
) -> (Vec<M>, Option<R>) {
    let total = rows.len();
    let mut messages = Vec::with_capacity(total.min(page_size as usize));
    let mut bytes = 0usize;
    let mut last = None;
    for row in rows {
        if messages.len() == page_size as usize {
            break;
        }
        let message = to_message(&row);
        // Field tag, length prefix and the message itself.
        let size = 1 + prost::length_delimiter_len(message.encoded_len()) + message.encoded_len();
        if !messages.is_empty() && bytes + size > MAX_PAGE_BYTES {
            break;
        }
        bytes += size;
        messages.push(message);
        last = Some(row);
    }
    let more = messages.len() < total;
    (messages, if more { last } else { None })
}

fn event_message(row: &EventRow) -> pb::StoredEvent {
    pb::StoredEvent {
        event_id: row.event_id.to_string(),
        session_id: row.session_id.to_string(),
        application_id: row.application_id.to_string(),
        category: row.category.clone(),
        name: row.name.clone(),
        data_json: row.data.clone(),
        timestamp: Some(to_timestamp(row.occurred_at)),
        received_at: Some(to_timestamp(row.received_at)),
        stored_at: Some(to_timestamp(row.stored_at)),
        schema_version: row.schema_version.unwrap_or(0),
    }
}

fn error_message(row: &ErrorRow) -> pb::EventError {
    let outcome = match Outcome::from_code(row.replay_outcome.as_deref()) {
        Some(Outcome::NotReplayed) => pb::ReplayOutcome::NotReplayed,
        Some(Outcome::Pending) => pb::ReplayOutcome::Pending,
        Some(Outcome::Stored) => pb::ReplayOutcome::Stored,
        Some(Outcome::StillInvalid) => pb::ReplayOutcome::StillInvalid,
        None => pb::ReplayOutcome::Unspecified,
    };
    pb::EventError {
        id: row.id,
        application_id: row.application_id.to_string(),
        event_id: row.event_id.to_string(),
        session_id: row.session_id.to_string(),
        category: row.category.clone(),
        name: row.name.clone(),
        data_json: row.data.clone(),
        timestamp: Some(to_timestamp(row.occurred_at)),
        received_at: Some(to_timestamp(row.received_at)),
        reason: row.reason.clone(),
        message: row.message.clone(),
        failed_at: Some(to_timestamp(row.failed_at)),
        failures: row.failures,
        replayed_at: row.replayed_at.map(to_timestamp),
        replay_outcome: outcome.into(),
    }
}

fn seconds(value: f64) -> prost_types::Duration {
    let duration = Duration::try_from_secs_f64(value.max(0.0)).unwrap_or_default();
    prost_types::Duration {
        seconds: duration.as_secs() as i64,
        nanos: duration.subsec_nanos() as i32,
    }
}

fn page_size(value: i32) -> Result<i32, QueryError> {
    match value {
        0 => Ok(DEFAULT_PAGE_SIZE),
        1..=MAX_PAGE_SIZE => Ok(value),
        _ => Err(QueryError::invalid(
            "page_size",
            format!("{value} is out of range; use 1 to {MAX_PAGE_SIZE} (0: {DEFAULT_PAGE_SIZE})"),
        )),
    }
}

fn text(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}

fn uuid(field: &'static str, value: &str) -> Result<Option<Uuid>, QueryError> {
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

fn time(
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
type TimeRange = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

fn time_range(
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
fn data_contains(value: &str) -> Result<Option<serde_json::Value>, QueryError> {
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
    match json {
        serde_json::Value::Object(map) if map.is_empty() => Ok(None),
        json @ serde_json::Value::Object(_) => Ok(Some(json)),
        _ => Err(QueryError::invalid(FIELD, "must be a JSON object, e.g. {\"path\": \"/\"}")),
    }
}

#[tonic::async_trait]
impl pb::query_service_server::QueryService for Query {
    #[tracing::instrument(name = "ListEvents", skip_all)]
    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        self.auth.authenticate(request.metadata(), Role::Read).await.map_err(QueryError::from)?;
        Ok(Response::new(Query::list_events(self, request.into_inner()).await?))
    }

    #[tracing::instrument(name = "GetSession", skip_all)]
    async fn get_session(
        &self,
        request: Request<pb::GetSessionRequest>,
    ) -> Result<Response<pb::GetSessionResponse>, Status> {
        self.auth.authenticate(request.metadata(), Role::Read).await.map_err(QueryError::from)?;
        Ok(Response::new(Query::get_session(self, request.into_inner()).await?))
    }

    #[tracing::instrument(name = "ListErrors", skip_all)]
    async fn list_errors(
        &self,
        request: Request<pb::ListErrorsRequest>,
    ) -> Result<Response<pb::ListErrorsResponse>, Status> {
        self.auth.authenticate(request.metadata(), Role::Read).await.map_err(QueryError::from)?;
        Ok(Response::new(Query::list_errors(self, request.into_inner()).await?))
    }

    #[tracing::instrument(name = "ReplayErrors", skip_all, fields(application))]
    async fn replay_errors(
        &self,
        request: Request<pb::ReplayErrorsRequest>,
    ) -> Result<Response<pb::ReplayErrorsResponse>, Status> {
        let principal = self
            .auth
            .authenticate(request.metadata(), Role::Read)
            .await
            .map_err(QueryError::from)?;
        // Replay changes state: record who asked.
        tracing::Span::current().record("application", principal.application_id.to_string());
        Ok(Response::new(Query::replay_errors(self, request.into_inner()).await?))
    }

    #[tracing::instrument(name = "GetStats", skip_all)]
    async fn get_stats(
        &self,
        request: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::GetStatsResponse>, Status> {
        self.auth.authenticate(request.metadata(), Role::Read).await.map_err(QueryError::from)?;
        Ok(Response::new(Query::get_stats(self, request.into_inner()).await?))
    }
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

    #[test]
    fn pages_stop_at_the_size_and_report_the_last_row() {
        let message = |n: &u32| pb::ReasonCount { reason: n.to_string(), count: 0 };
        let (messages, last) = page(vec![1u32, 2, 3], 2, message);
        assert_eq!((messages.len(), last), (2, Some(2)));
        let (messages, last) = page(vec![1u32, 2], 2, message);
        assert_eq!((messages.len(), last), (2, None));
        let (messages, last) = page(Vec::<u32>::new(), 2, message);
        assert_eq!((messages.len(), last), (0, None));
    }

    #[test]
    fn pages_stop_before_the_byte_limit() {
        let big = |_: &u32| pb::ReasonCount { reason: "x".repeat(1024 * 1024), count: 0 };
        let (messages, last) = page(vec![1u32, 2, 3, 4, 5], 5, big);
        assert_eq!((messages.len(), last), (3, Some(3)));
    }
}
