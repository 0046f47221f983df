//! The transport-free query core: each read-path call takes a protobuf request, checks it
//! ([`request`](crate::request)), runs the SQL ([`queries`]) and builds the protobuf answer
//! ([`response`](crate::response)). The gRPC adapter ([`crate::grpc`]) authenticates and calls
//! it; an HTTP handler or a console page calls the same functions, so no rule is written twice.

use chrono::{DateTime, Utc};
use eye_proto::v1 as pb;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    error::QueryError,
    queries::{self, ErrorFilter, EventFilter, Readable},
    request::{
        data_contains, error_ids, event_position, page_size, reason, replay_limit, replay_outcomes,
        stats_window, text, time_range, uuid,
    },
    response::{error_message, event_message, page, session_message, stats_message},
    token::{self, Kind, Position, TokenError},
};

/// The read path over its pools: reads on `pool` (a replica's, or the primary's), writes and
/// what must see the latest state on `primary`. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct Query {
    pool: PgPool,
    primary: PgPool,
    /// Whether `pool` is a replica's (`GetStats` then reports its lag).
    replica: bool,
}

impl Query {
    /// Reads and writes on the primary's `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { primary: pool.clone(), pool, replica: false }
    }

    /// Reads on a streaming replica's `reads`, writes on the `primary`.
    pub fn with_replica(reads: PgPool, primary: PgPool) -> Self {
        Self { pool: reads, primary, replica: true }
    }

    pub async fn list_events(
        &self,
        readable: &Readable,
        request: pb::ListEventsRequest,
    ) -> Result<pb::ListEventsResponse, QueryError> {
        let page_size = page_size(request.page_size)?;
        let filter = self.event_filter(readable, request.filter.unwrap_or_default()).await?;
        let scope = filter.scope(Kind::Events);
        let after = event_position(&request.page_token, Kind::Events, scope)?;
        let (events, next_page_token) =
            self.events_page(&filter, Kind::Events, page_size, after).await?;
        Ok(pb::ListEventsResponse { events, next_page_token })
    }

    pub async fn get_session(
        &self,
        readable: &Readable,
        request: pb::GetSessionRequest,
    ) -> Result<pb::GetSessionResponse, QueryError> {
        let page_size = page_size(request.page_size)?;
        let session_id = uuid("session_id", &request.session_id)?
            .ok_or_else(|| QueryError::invalid("session_id", "required"))?;
        let filter = EventFilter {
            readable: readable.clone(),
            session_id: Some(session_id),
            ..EventFilter::default()
        };
        let after =
            event_position(&request.page_token, Kind::Session, filter.scope(Kind::Session))?;
        let session = queries::session(&self.pool, readable, session_id)
            .await?
            .ok_or_else(|| QueryError::NotFound(format!("session {session_id}")))?;
        let (events, next_page_token) =
            self.events_page(&filter, Kind::Session, page_size, after).await?;
        Ok(pb::GetSessionResponse {
            session: Some(session_message(&session)),
            events,
            next_page_token,
        })
    }

    pub async fn list_errors(
        &self,
        readable: &Readable,
        request: pb::ListErrorsRequest,
    ) -> Result<pb::ListErrorsResponse, QueryError> {
        let page_size = page_size(request.page_size)?;
        let filter = self.error_filter(readable, request.filter.unwrap_or_default()).await?;
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

    pub async fn replay_errors(
        &self,
        readable: &Readable,
        request: pb::ReplayErrorsRequest,
    ) -> Result<pb::ReplayErrorsResponse, QueryError> {
        let limit = replay_limit(request.limit)?;
        error_ids(&request.error_ids)?;
        let filter = self.error_filter(readable, request.filter.unwrap_or_default()).await?;
        if request.error_ids.is_empty() && filter.is_empty() {
            return Err(QueryError::invalid(
                "error_ids",
                "give error ids or at least one filter field (an empty selection would replay \
                 every error)",
            ));
        }
        let replayed =
            queries::replay_errors(&self.primary, &request.error_ids, &filter, i64::from(limit))
                .await?;
        tracing::info!(events = replayed.events, batches = replayed.batches, "errors replayed");
        Ok(pb::ReplayErrorsResponse {
            replayed: replayed.events as i64,
            batches: replayed.batches as i64,
        })
    }

    /// The outbox's stages (depth and lag concern the whole pipeline), and what was stored and
    /// quarantined in the window, of what `readable` may read.
    /// Deletes a data subject's events (`eye_admin::deletion`, as `eye delete` does), on behalf
    /// of the admin key `principal`, and answers the receipt.
    pub async fn delete_events(
        &self,
        principal: &eye_service::auth::Principal,
        request: pb::DeleteEventsRequest,
    ) -> Result<pb::DeleteEventsResponse, QueryError> {
        use event_model::envelope::to_timestamp;
        use eye_admin::deletion::{self, Subject};
        let session = match request.session_id.trim() {
            "" => None,
            text => Some(Uuid::parse_str(text).map_err(|_| {
                QueryError::invalid("session_id", format!("{text:?} is not a UUID"))
            })?),
        };
        let contains = match request.contains_json.trim() {
            "" => None,
            text => Some(serde_json::from_str(text).map_err(|error| {
                QueryError::invalid("contains_json", format!("not JSON: {error}"))
            })?),
        };
        let application = Some(request.application.trim().to_owned()).filter(|a| !a.is_empty());
        let subject = Subject { session, application, contains };
        let requested_by = format!("key:{}", principal.key_id);
        let receipt =
            deletion::delete(&self.primary, &subject, &requested_by, request.suppress).await?;
        let counts = &receipt.counts;
        Ok(pb::DeleteEventsResponse {
            deletion_id: receipt.id.to_string(),
            requested_at: Some(to_timestamp(receipt.requested_at)),
            finished_at: receipt.finished_at.map(to_timestamp),
            filter_digest: receipt.filter_digest.clone(),
            suppressed: receipt.suppressed,
            events: counts.events as i64,
            event_errors: counts.event_errors as i64,
            outbox_events: counts.outbox_events as i64,
            dead_letter_events: counts.dead_letter_events as i64,
            sessions_recomputed: counts.sessions_recomputed as i64,
            sessions_removed: counts.sessions_removed as i64,
            export_hours: counts.export_hours as i64,
        })
    }

    pub async fn get_stats(
        &self,
        readable: &Readable,
        request: pb::GetStatsRequest,
    ) -> Result<pb::GetStatsResponse, QueryError> {
        let window = stats_window(request.window)?;
        let since = Utc::now() - chrono::Duration::from_std(window).expect("at most 7 days");
        let stats = queries::stats(&self.pool, readable, since).await?;
        let mut message = stats_message(stats, since);
        if self.replica {
            let lag = eye_telemetry::metrics::replica_lag(&self.pool).await?;
            message.replica_lag = lag.map(crate::response::seconds);
        }
        Ok(message)
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

    /// The read pool, for the console's own reads (the live tail, its charts) beside the RPCs'.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The primary's pool, for the console's writes (keys) and its change notifications (a
    /// replica relays no `NOTIFY`).
    pub fn primary(&self) -> &PgPool {
        &self.primary
    }

    /// Checks an event filter as `ListEvents` does (the console's tail takes the same filters).
    pub async fn event_filter(
        &self,
        readable: &Readable,
        filter: pb::EventFilter,
    ) -> Result<EventFilter, QueryError> {
        let (from, to) = time_range(filter.from.as_ref(), filter.to.as_ref())?;
        Ok(EventFilter {
            readable: readable.clone(),
            session_id: uuid("filter.session_id", &filter.session_id)?,
            category: text("filter.category", filter.category)?,
            name: text("filter.name", filter.name)?,
            application_id: self
                .application(readable, "filter.application", &filter.application)
                .await?,
            from,
            to,
            data_contains: data_contains(&filter.data_contains)?,
        })
    }

    async fn error_filter(
        &self,
        readable: &Readable,
        filter: pb::ErrorFilter,
    ) -> Result<ErrorFilter, QueryError> {
        let (from, to) = time_range(filter.from.as_ref(), filter.to.as_ref())?;
        let reason = reason(filter.reason)?;
        let outcomes = replay_outcomes(&filter.replay_outcomes)?;
        Ok(ErrorFilter {
            readable: readable.clone(),
            reason,
            category: text("filter.category", filter.category)?,
            name: text("filter.name", filter.name)?,
            application_id: self
                .application(readable, "filter.application", &filter.application)
                .await?,
            from,
            to,
            outcomes,
        })
    }

    /// An application given by id or by name; one `readable` does not cover is refused with
    /// PERMISSION_DENIED (a key reads its own application's data unless it has `admin`).
    async fn application(
        &self,
        readable: &Readable,
        field: &'static str,
        value: &str,
    ) -> Result<Option<Uuid>, QueryError> {
        let id = self.application_id(field, value).await?;
        match id {
            Some(id) if !readable.may_read(id) => Err(eye_service::auth::AuthError::Forbidden(
                eye_service::auth::Role::Admin.as_str(),
            )
            .into()),
            id => Ok(id),
        }
    }

    async fn application_id(
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
        let Some(value) = text(field, value.to_owned())? else { return Ok(None) };
        let value = value.as_str();
        match queries::application_id_by_name(&self.pool, value).await? {
            Some(id) => Ok(Some(id)),
            None => Err(QueryError::invalid(
                field,
                format!("{value:?} is neither an application id (UUID) nor an application's name"),
            )),
        }
    }
}
