//! The SQL of the read path: plain parameterised statements, built with only the predicates a
//! request sets.
//!
//! Optional filters are not written as `($1 IS NULL OR col = $1)`: once Postgres switches a
//! prepared statement to a generic plan, such a predicate can no longer pick an index (it must
//! work for NULL too), and the query degrades to a scan. Each combination of filters is instead a
//! statement of its own (a handful of shapes, each prepared once per connection), so every plan
//! sees plain `col = $n` predicates and uses the matching index:
//! - a session: `events_session (session_id, occurred_at, event_id)`;
//! - a type over time: `events_type_time (category, name, occurred_at, event_id)`;
//! - a time range, or no filter: `events_time (occurred_at, event_id)`;
//! - payload containment: the GIN index `events_data (data jsonb_path_ops)`.
//!
//!
//! The pool plans every execution for its actual values (`plan_cache_mode = force_custom_plan`,
//! see `crate::pool`): whether `category = 'x'` or `data @> '{...}'` is selective depends on the
//! value, and only a custom plan can choose between the ordered scan of `events_time` (common
//! values: the first page is found at once) and `events_type_time` or the GIN index plus a sort
//! (rare values).
//!
//! Events are returned in keyset order `(occurred_at, event_id)`; the page after a position
//! starts with `(occurred_at, event_id) > (position)`, which the btree indexes answer directly,
//! plus `occurred_at >= position` so that partitions wholly before the position are pruned.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use event_model::{ApplicationId, Event, EventId, EventType, SessionId, batch};
use eye_service::pipeline::{header, stage};
use flush_event::Headers;
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::{
    error::QueryError,
    token::{Kind, Scope, ScopeBuilder},
};

/// Which stored events to read; `None`: no constraint.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    /// What the caller's key may read (see [`Readable`]); not part of the page-token scope.
    pub readable: Readable,
    pub session_id: Option<Uuid>,
    pub category: Option<String>,
    pub name: Option<String>,
    pub application_id: Option<Uuid>,
    /// Half-open range on `occurred_at`: `from <= occurred_at < to`.
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// A JSON object the payload must contain (`data @> ...`).
    pub data_contains: Option<serde_json::Value>,
}

impl EventFilter {
    /// The fingerprint page tokens carry.
    pub fn scope(&self, kind: Kind) -> Scope {
        let data = self.data_contains.as_ref().map(|json| json.to_string());
        ScopeBuilder::new(kind)
            .field("session_id", self.session_id.as_ref().map(|id| &id.as_bytes()[..]))
            .field("category", self.category.as_deref().map(str::as_bytes))
            .field("name", self.name.as_deref().map(str::as_bytes))
            .field("application_id", self.application_id.as_ref().map(|id| &id.as_bytes()[..]))
            .field("from", micros(self.from).as_ref().map(|m| &m[..]))
            .field("to", micros(self.to).as_ref().map(|m| &m[..]))
            .field("data_contains", data.as_deref().map(str::as_bytes))
            .finish()
    }
}

fn micros(at: Option<DateTime<Utc>>) -> Option<[u8; 8]> {
    at.map(|at| at.timestamp_micros().to_be_bytes())
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct EventRow {
    pub application_id: Uuid,
    pub event_id: Uuid,
    pub session_id: Uuid,
    pub category: String,
    pub name: String,
    /// The payload as JSON text (as `jsonb` prints it).
    pub data: String,
    pub occurred_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub stored_at: DateTime<Utc>,
    pub schema_version: Option<i32>,
}

/// The start of every statement that reads [`EventRow`]s.
const SELECT_EVENTS: &str = "SELECT application_id, event_id, session_id, category, name, \
     data::text AS data, occurred_at, received_at, stored_at, schema_version FROM events WHERE true";

/// Up to `limit` events matching `filter`, in `(occurred_at, event_id)` order, strictly after
/// `after` if given.
pub async fn list_events(
    pool: &PgPool,
    filter: &EventFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<EventRow>, QueryError> {
    let mut query = QueryBuilder::new(SELECT_EVENTS);
    push_filter(&mut query, filter);
    if let Some((occurred_at, event_id)) = after {
        query.push(" AND occurred_at >= ").push_bind(occurred_at);
        query.push(" AND (occurred_at, event_id) > (").push_bind(occurred_at);
        query.push(", ").push_bind(event_id).push(")");
    }
    query.push(" ORDER BY occurred_at, event_id LIMIT ").push_bind(limit);
    Ok(query.build_query_as().fetch_all(pool).await?)
}

/// Up to `limit` events matching `filter` stored at or after `since`, in storage order: the
/// console's live tail. (Writers' transactions commit out of `stored_at` order, so the tail
/// reads back over a margin and drops what it has shown.)
pub async fn tail(
    pool: &PgPool,
    filter: &EventFilter,
    since: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<EventRow>, QueryError> {
    let mut query = QueryBuilder::new(SELECT_EVENTS);
    push_filter(&mut query, filter);
    query.push(" AND stored_at >= ").push_bind(since);
    query.push(" ORDER BY stored_at, event_id LIMIT ").push_bind(limit);
    Ok(query.build_query_as().fetch_all(pool).await?)
}

/// Events stored per minute since `since` (minutes without events left out).
pub async fn stored_per_minute(
    pool: &PgPool,
    readable: &Readable,
    since: DateTime<Utc>,
) -> Result<Vec<(DateTime<Utc>, i64)>, QueryError> {
    Ok(sqlx::query_as(
        "SELECT date_trunc('minute', stored_at) AS minute, count(*) FROM events \
         WHERE stored_at >= $1 AND ($2::uuid[] IS NULL OR application_id = ANY($2)) \
         GROUP BY 1 ORDER BY 1",
    )
    .bind(since)
    .bind(readable.ids())
    .fetch_all(pool)
    .await?)
}

/// What [`stored_by`] groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// The application's name.
    Application,
    Category,
}

/// Events stored since `since`, by application or by category, the ten largest.
pub async fn stored_by(
    pool: &PgPool,
    readable: &Readable,
    since: DateTime<Utc>,
    by: By,
) -> Result<Vec<(String, i64)>, QueryError> {
    let sql = match by {
        By::Application => {
            "SELECT a.name, count(*) FROM events e JOIN applications a ON a.id = e.application_id \
             WHERE e.stored_at >= $1 AND ($2::uuid[] IS NULL OR e.application_id = ANY($2)) \
             GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10"
        }
        By::Category => {
            "SELECT category, count(*) FROM events WHERE stored_at >= $1 \
             AND ($2::uuid[] IS NULL OR application_id = ANY($2)) \
             GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10"
        }
    };
    Ok(sqlx::query_as(sql).bind(since).bind(readable.ids()).fetch_all(pool).await?)
}

/// What is stored and quarantined of one event type.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct TypeStats {
    pub category: String,
    pub name: String,
    pub stored: i64,
    pub first_seen: Option<DateTime<Utc>>,
    pub last_seen: Option<DateTime<Utc>>,
    pub errors: i64,
}

/// Per event type (stored or quarantined): counts and first and last storage. A scan of the
/// store: for the console's schema page, not for hot paths.
pub async fn type_stats(pool: &PgPool, readable: &Readable) -> Result<Vec<TypeStats>, QueryError> {
    Ok(sqlx::query_as(
        "WITH stored AS (SELECT category, name, count(*) AS stored, min(stored_at) AS first_seen, \
                                max(stored_at) AS last_seen FROM events \
                         WHERE $1::uuid[] IS NULL OR application_id = ANY($1) GROUP BY 1, 2), \
              errors AS (SELECT category, name, count(*) AS errors FROM event_errors \
                         WHERE $1::uuid[] IS NULL OR application_id = ANY($1) GROUP BY 1, 2) \
         SELECT category, name, coalesce(s.stored, 0) AS stored, s.first_seen, s.last_seen, \
                coalesce(e.errors, 0) AS errors \
         FROM stored s FULL JOIN errors e USING (category, name) ORDER BY 1, 2",
    )
    .bind(readable.ids())
    .fetch_all(pool)
    .await?)
}

/// Quarantined events per type, most first.
pub async fn error_types(
    pool: &PgPool,
    readable: &Readable,
) -> Result<Vec<(String, String, i64)>, QueryError> {
    Ok(sqlx::query_as(
        "SELECT category, name, count(*) FROM event_errors \
         WHERE $1::uuid[] IS NULL OR application_id = ANY($1) GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2",
    )
    .bind(readable.ids())
    .fetch_all(pool)
    .await?)
}

/// The predicates of `filter`.
fn push_filter(query: &mut QueryBuilder<'_, Postgres>, filter: &EventFilter) {
    filter.readable.push(query);
    if let Some(session_id) = filter.session_id {
        query.push(" AND session_id = ").push_bind(session_id);
    }
    if let Some(category) = &filter.category {
        query.push(" AND category = ").push_bind(category.clone());
    }
    if let Some(name) = &filter.name {
        query.push(" AND name = ").push_bind(name.clone());
    }
    if let Some(application_id) = filter.application_id {
        query.push(" AND application_id = ").push_bind(application_id);
    }
    if let Some(from) = filter.from {
        query.push(" AND occurred_at >= ").push_bind(from);
    }
    if let Some(to) = filter.to {
        query.push(" AND occurred_at < ").push_bind(to);
    }
    if let Some(json) = &filter.data_contains {
        query.push(" AND data @> ").push_bind(json.clone()).push("::jsonb");
    }
}

/// The applications whose data a caller may read: every one (a key with the `admin` role), or
/// only these (a key's own application). Every read of events, sessions and errors is narrowed
/// by it, in SQL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readable(Option<Vec<Uuid>>);

impl Readable {
    /// Everything: admin keys, and the server's own reads.
    pub fn all() -> Self {
        Self(None)
    }

    /// What `principal` may read: with `admin`, everything; otherwise its own application.
    pub fn of(principal: &eye_service::auth::Principal) -> Self {
        if principal.roles.iter().any(|role| role == eye_service::auth::Role::Admin.as_str()) {
            Self::all()
        } else {
            Self(Some(vec![principal.application_id]))
        }
    }

    /// The applications, or `None` for all: bound as `$n::uuid[]` in `($n IS NULL OR
    /// application_id = ANY($n))`.
    pub fn ids(&self) -> Option<&[Uuid]> {
        self.0.as_deref()
    }

    pub fn may_read(&self, application: Uuid) -> bool {
        self.0.as_ref().is_none_or(|ids| ids.contains(&application))
    }

    fn push(&self, query: &mut QueryBuilder<'_, Postgres>) {
        if let Some(ids) = &self.0 {
            query.push(" AND application_id = ANY(").push_bind(ids.clone()).push(")");
        }
    }
}

/// The id of the application called `name`.
pub async fn application_id_by_name(pool: &PgPool, name: &str) -> Result<Option<Uuid>, QueryError> {
    Ok(sqlx::query_scalar("SELECT id FROM applications WHERE name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await?)
}

/// A session's summary, as the writer keeps it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct SessionRow {
    pub session_id: Uuid,
    pub first_seen_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub event_count: i64,
    pub application_ids: Vec<Uuid>,
}

/// A session's summary as `readable` may see it: the writer's row, or (for a key that reads
/// only some applications) the same figures over those applications' events alone, so that a
/// session several applications sent to shows a scoped key only its own part.
pub async fn session(
    pool: &PgPool,
    readable: &Readable,
    session_id: Uuid,
) -> Result<Option<SessionRow>, QueryError> {
    let Some(ids) = readable.ids() else {
        return Ok(sqlx::query_as(
            "SELECT session_id, first_seen_at, last_seen_at, event_count, application_ids \
             FROM sessions WHERE session_id = $1",
        )
        .bind(session_id)
        .fetch_optional(pool)
        .await?);
    };
    Ok(sqlx::query_as(
        "SELECT session_id, min(occurred_at) AS first_seen_at, max(occurred_at) AS last_seen_at, \
                count(*) AS event_count, array_agg(DISTINCT application_id) AS application_ids \
         FROM events WHERE session_id = $1 AND application_id = ANY($2) \
         GROUP BY session_id",
    )
    .bind(session_id)
    .bind(ids)
    .fetch_optional(pool)
    .await?)
}

/// The replay states of a quarantined event (`event_errors.replay_outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// `replay_outcome IS NULL`.
    NotReplayed,
    Pending,
    Stored,
    StillInvalid,
}

impl Outcome {
    /// The column's value; `None` for [`Outcome::NotReplayed`] (NULL).
    pub fn code(self) -> Option<&'static str> {
        match self {
            Self::NotReplayed => None,
            Self::Pending => Some("pending"),
            Self::Stored => Some("stored"),
            Self::StillInvalid => Some("still_invalid"),
        }
    }

    pub fn from_code(code: Option<&str>) -> Option<Self> {
        [Self::NotReplayed, Self::Pending, Self::Stored, Self::StillInvalid]
            .into_iter()
            .find(|outcome| outcome.code() == code)
    }
}

/// Which quarantined events to select; `None` or empty: no constraint.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ErrorFilter {
    /// What the caller's key may read (see [`Readable`]).
    pub readable: Readable,
    pub reason: Option<String>,
    pub category: Option<String>,
    pub name: Option<String>,
    pub application_id: Option<Uuid>,
    /// Half-open range on `failed_at`.
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Sorted and deduplicated.
    pub outcomes: Vec<Outcome>,
}

impl ErrorFilter {
    /// Whether the filter selects nothing in particular (what the key may read aside).
    pub fn is_empty(&self) -> bool {
        *self == Self { readable: self.readable.clone(), ..Self::default() }
    }

    pub fn scope(&self) -> Scope {
        let outcomes: Vec<u8> = self.outcomes.iter().map(|o| *o as u8).collect();
        ScopeBuilder::new(Kind::Errors)
            .field("reason", self.reason.as_deref().map(str::as_bytes))
            .field("category", self.category.as_deref().map(str::as_bytes))
            .field("name", self.name.as_deref().map(str::as_bytes))
            .field("application_id", self.application_id.as_ref().map(|id| &id.as_bytes()[..]))
            .field("from", micros(self.from).as_ref().map(|m| &m[..]))
            .field("to", micros(self.to).as_ref().map(|m| &m[..]))
            .field("replay_outcomes", (!outcomes.is_empty()).then_some(&outcomes[..]))
            .finish()
    }

    /// Appends ` AND ...` for every constraint set.
    fn push_predicates(&self, query: &mut QueryBuilder<'_, Postgres>) {
        if let Some(reason) = &self.reason {
            query.push(" AND reason = ").push_bind(reason.clone());
        }
        if let Some(category) = &self.category {
            query.push(" AND category = ").push_bind(category.clone());
        }
        if let Some(name) = &self.name {
            query.push(" AND name = ").push_bind(name.clone());
        }
        self.readable.push(query);
        if let Some(application_id) = self.application_id {
            query.push(" AND application_id = ").push_bind(application_id);
        }
        if let Some(from) = self.from {
            query.push(" AND failed_at >= ").push_bind(from);
        }
        if let Some(to) = self.to {
            query.push(" AND failed_at < ").push_bind(to);
        }
        if !self.outcomes.is_empty() {
            let codes: Vec<String> =
                self.outcomes.iter().filter_map(|o| o.code()).map(str::to_owned).collect();
            let null = self.outcomes.contains(&Outcome::NotReplayed);
            query.push(" AND (");
            if null {
                query.push("replay_outcome IS NULL");
            }
            if !codes.is_empty() {
                if null {
                    query.push(" OR ");
                }
                query.push("replay_outcome = ANY(").push_bind(codes).push(")");
            }
            query.push(")");
        }
    }
}

/// A quarantined event.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ErrorRow {
    pub id: i64,
    pub application_id: Uuid,
    pub event_id: Uuid,
    pub session_id: Uuid,
    pub category: String,
    pub name: String,
    pub data: String,
    pub occurred_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub reason: String,
    pub message: String,
    pub failed_at: DateTime<Utc>,
    pub failures: i32,
    pub replayed_at: Option<DateTime<Utc>>,
    pub replay_outcome: Option<String>,
}

/// Up to `limit` errors matching `filter`, newest (highest id) first, with ids below `before` if
/// given.
pub async fn list_errors(
    pool: &PgPool,
    filter: &ErrorFilter,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<ErrorRow>, QueryError> {
    let mut query = QueryBuilder::new(
        "SELECT id, application_id, event_id, session_id, category, name, data::text AS data, occurred_at, \
                received_at, reason, message, failed_at, failures, replayed_at, replay_outcome \
         FROM event_errors WHERE true",
    );
    filter.push_predicates(&mut query);
    if let Some(before) = before {
        query.push(" AND id < ").push_bind(before);
    }
    query.push(" ORDER BY id DESC LIMIT ").push_bind(limit);
    Ok(query.build_query_as().fetch_all(pool).await?)
}

/// Errors per reason over the whole filter, most frequent first.
pub async fn error_counts(
    pool: &PgPool,
    filter: &ErrorFilter,
) -> Result<Vec<(String, i64)>, QueryError> {
    let mut query = QueryBuilder::new("SELECT reason, count(*) FROM event_errors WHERE true");
    filter.push_predicates(&mut query);
    query.push(" GROUP BY reason ORDER BY 2 DESC, 1");
    Ok(query.build_query_as().fetch_all(pool).await?)
}

/// What [`replay_errors`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    pub events: u64,
    pub batches: u64,
}

/// A quarantined event on its way back to validation.
#[derive(sqlx::FromRow)]
struct ReplayRow {
    application_id: Uuid,
    event_id: Uuid,
    session_id: Uuid,
    category: String,
    name: String,
    data: String,
    occurred_at: DateTime<Utc>,
    received_at: DateTime<Utc>,
}

/// Sends up to `limit` quarantined events back through validation, in one transaction: marks them
/// `pending` and enqueues them into the `validate` stage, one `EventBatch` per (application,
/// received_at), so each keeps the receipt time its timestamp rules were judged against.
///
/// Selected: errors with an id in `ids` (when not empty) that match `filter`, lowest ids first,
/// skipping those already `pending` (their replay is in flight). The rows are locked while
/// selected; a concurrent replay waits, then re-checks them and skips them.
pub async fn replay_errors(
    pool: &PgPool,
    ids: &[i64],
    filter: &ErrorFilter,
    limit: i64,
) -> Result<Replayed, QueryError> {
    let mut tx = pool.begin().await?;
    let mut query = QueryBuilder::new(
        "WITH picked AS ( \
             SELECT id FROM event_errors \
             WHERE replay_outcome IS DISTINCT FROM 'pending'",
    );
    if !ids.is_empty() {
        query.push(" AND id = ANY(").push_bind(ids.to_vec()).push(")");
    }
    filter.push_predicates(&mut query);
    query.push(" ORDER BY id LIMIT ").push_bind(limit);
    query.push(
        " FOR UPDATE \
         ) \
         UPDATE event_errors e SET replayed_at = now(), replay_outcome = 'pending' \
         FROM picked WHERE e.id = picked.id \
         RETURNING e.application_id, e.event_id, e.session_id, e.category, e.name, e.data::text, \
                   e.occurred_at, e.received_at",
    );
    let rows: Vec<ReplayRow> = query.build_query_as().fetch_all(&mut *tx).await?;

    // One EventBatch per (application, received_at), as ingest made them.
    let mut groups: BTreeMap<(Uuid, DateTime<Utc>), Vec<_>> = BTreeMap::new();
    let events = rows.len() as u64;
    for row in rows {
        let event = Event {
            event_id: EventId(row.event_id),
            session_id: SessionId(row.session_id),
            event_type: EventType::new(row.category, row.name),
            data_json: row.data,
            occurred_at: row.occurred_at,
        };
        // The validator sets the schema version; what the body carries is ignored.
        groups.entry((row.application_id, row.received_at)).or_default().push((event, 0));
    }
    let bodies: Vec<_> = groups
        .into_iter()
        .map(|((app, received_at), events)| batch::encode(ApplicationId(app), received_at, events))
        .collect();
    // The validator marks each replayed event's outcome when it sees this header.
    let headers = Headers::from([(header::REPLAY.to_owned(), "1".to_owned())]);
    let batches =
        flush_event::flush_events(&mut tx, stage::VALIDATE, bodies.iter().map(|b| (b, &headers)))
            .await?;
    tx.commit().await?;
    Ok(Replayed { events, batches })
}

/// Recent activity, for [`stats`].
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    pub stages: Vec<flush_event::admin::StageStats>,
    pub events_stored: i64,
    pub errors_by_reason: Vec<(String, i64)>,
}

/// Outbox stages, and what was stored and quarantined since `since`.
pub async fn stats(
    pool: &PgPool,
    readable: &Readable,
    since: DateTime<Utc>,
) -> Result<Stats, QueryError> {
    let stages = flush_event::admin::stage_stats(pool).await?;
    let events_stored = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE stored_at >= $1 \
         AND ($2::uuid[] IS NULL OR application_id = ANY($2))",
    )
    .bind(since)
    .bind(readable.ids())
    .fetch_one(pool)
    .await?;
    let errors_by_reason = sqlx::query_as(
        "SELECT reason, count(*) FROM event_errors WHERE failed_at >= $1 \
         AND ($2::uuid[] IS NULL OR application_id = ANY($2)) \
         GROUP BY reason ORDER BY 2 DESC, 1",
    )
    .bind(since)
    .bind(readable.ids())
    .fetch_all(pool)
    .await?;
    Ok(Stats { stages, events_stored, errors_by_reason })
}
