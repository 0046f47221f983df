//! Writing to the event store.

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use eye_service::{pipeline::delivery, settings::Granularity};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// The spans of `events` partitions known to exist, so that `eye_ensure_partition` runs only
/// for times no known partition covers (once per new partition per process, in practice).
#[derive(Debug, Default)]
pub struct Partitions {
    granularity: Granularity,
    known: Mutex<Vec<Span>>,
}

/// A partition's `[lower, upper)`; `None`: unbounded.
type Span = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

fn holds((lower, upper): &Span, at: DateTime<Utc>) -> bool {
    lower.is_none_or(|lower| lower <= at) && upper.is_none_or(|upper| at < upper)
}

impl Partitions {
    /// New partitions span a day or a month (`store.partition`).
    pub fn new(granularity: Granularity) -> Self {
        Self { granularity, known: Mutex::default() }
    }

    /// Makes sure a partition covers every time in `times`. Runs on the pool, outside the
    /// hand-off transaction: creating a partition locks the parent table, and that lock should
    /// last milliseconds, not a whole batch.
    pub async fn ensure(&self, pool: &PgPool, times: &[DateTime<Utc>]) -> Result<(), sqlx::Error> {
        // One look at the cache per batch; then one creation per partition still missing.
        let mut missing: Vec<DateTime<Utc>> = {
            let known = self.known.lock().expect("partition cache");
            times.iter().copied().filter(|at| !known.iter().any(|span| holds(span, *at))).collect()
        };
        while let Some(at) = missing.pop() {
            let partition: String =
                sqlx::query_scalar("SELECT eye_ensure_partition('events', $1, $2)::text")
                    .bind(at)
                    .bind(self.granularity.as_str())
                    .fetch_one(pool)
                    .await?;
            // A statement of its own: one made in the same statement would not be seen yet.
            let span: Span = sqlx::query_as(
                "SELECT lower_bound, upper_bound FROM eye_partitions('events') \
                 WHERE partition = $1::regclass",
            )
            .bind(&partition)
            .fetch_one(pool)
            .await?;
            missing.retain(|at| !holds(&span, *at));
            self.known.lock().expect("partition cache").push(span);
        }
        Ok(())
    }

    /// Forgets what is known: after retention dropped a partition this process had seen.
    pub fn forget(&self) {
        self.known.lock().expect("partition cache").clear();
    }

    /// Creates the partition of now and those of the next days or months
    /// (`eye_admin::maintenance::ahead`).
    pub async fn ensure_ahead(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        self.ensure(pool, &eye_admin::maintenance::ahead(self.granularity, Utc::now())).await
    }
}

/// Whether `error` is Postgres saying a row fits no partition (a partition dropped by retention
/// after this process had seen it).
pub fn is_missing_partition(error: &sqlx::Error) -> bool {
    error.as_database_error().is_some_and(|error| {
        error.code().as_deref() == Some("23514") && error.message().starts_with("no partition")
    })
}

/// Events to store, column by column.
#[derive(Debug, Default)]
pub struct Rows {
    pub application_id: Vec<Uuid>,
    pub event_id: Vec<Uuid>,
    pub session_id: Vec<Uuid>,
    pub category: Vec<String>,
    pub name: Vec<String>,
    pub data: Vec<String>,
    pub occurred_at: Vec<DateTime<Utc>>,
    pub received_at: Vec<DateTime<Utc>>,
    /// NULL when no schema was registered for the type.
    pub schema_version: Vec<Option<i32>>,
}

impl Rows {
    pub fn len(&self) -> usize {
        self.event_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.event_id.is_empty()
    }
}

/// The stored events of one batch that match one subscription, in storage order.
#[derive(Debug, sqlx::FromRow)]
pub struct Matched {
    pub subscription: Uuid,
    pub ordered: bool,
    pub application_id: Vec<Uuid>,
    pub event_id: Vec<Uuid>,
    pub occurred_at: Vec<DateTime<Utc>>,
}

/// A row of [`insert`]'s statement: the stored count, and a matched subscription (none when
/// nothing matched).
#[derive(sqlx::FromRow)]
struct Found {
    stored: i64,
    id: Option<Uuid>,
    ordered: Option<bool>,
    apps: Option<Vec<Uuid>>,
    ids: Option<Vec<Uuid>>,
    times: Option<Vec<DateTime<Utc>>>,
}

/// What [`insert`] did.
#[derive(Debug, Default)]
pub struct Stored {
    /// Events that were new (redeliveries of stored events are not counted, nor matched).
    pub events: u64,
    /// For each `live` subscription (paused or not) that some new event matches, those events, by
    /// subscription id.
    pub matched: Vec<Matched>,
}

/// Inserts `rows` (already sorted by application and event id, so concurrent writers take row
/// locks in one order), upserts their sessions and matches the new ones against the
/// subscriptions, in one statement.
///
/// `stored_at` is the clock at the insert, not the transaction's start: a statement that
/// waited for `eye_subscriptions_fence` (a backfill catching up, see `eye-delivery`) stores a
/// time after the fence, so "stored before the fence" and "enqueued live" never overlap.
pub async fn insert(conn: &mut PgConnection, rows: &Rows) -> Result<Stored, sqlx::Error> {
    let found: Vec<Found> = sqlx::query_as(
        "WITH inserted AS ( \
             INSERT INTO events (application_id, event_id, session_id, category, name, data, \
                                 occurred_at, received_at, stored_at, schema_version) \
             SELECT a, e, s, c, n, d::jsonb, o, r, clock_timestamp(), v \
             FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], \
                         $7::timestamptz[], $8::timestamptz[], $9::int[]) AS t(a, e, s, c, n, d, o, r, v) \
             ON CONFLICT DO NOTHING \
             RETURNING session_id, application_id, event_id, occurred_at, category, name, data \
         ), upserted AS ( \
             INSERT INTO sessions (session_id, first_seen_at, last_seen_at, event_count, application_ids) \
             SELECT session_id, min(occurred_at), max(occurred_at), count(*), array_agg(DISTINCT application_id) \
             FROM inserted GROUP BY session_id ORDER BY session_id \
             ON CONFLICT (session_id) DO UPDATE SET \
                 first_seen_at = least(sessions.first_seen_at, excluded.first_seen_at), \
                 last_seen_at = greatest(sessions.last_seen_at, excluded.last_seen_at), \
                 event_count = sessions.event_count + excluded.event_count, \
                 application_ids = CASE WHEN excluded.application_ids <@ sessions.application_ids \
                     THEN sessions.application_ids \
                     ELSE ARRAY(SELECT DISTINCT unnest(sessions.application_ids || excluded.application_ids)) END, \
                 updated_at = now() \
             RETURNING 1 \
         ), matched AS ( \
             SELECT s.id, s.ordered, \
                    array_agg(i.application_id ORDER BY i.application_id, i.event_id) AS apps, \
                    array_agg(i.event_id ORDER BY i.application_id, i.event_id) AS ids, \
                    array_agg(i.occurred_at ORDER BY i.application_id, i.event_id) AS times \
             FROM inserted i JOIN subscriptions s ON s.state = 'live' \
                  AND eye_subscription_matches(s, i.application_id, i.category, i.name, i.data) \
             GROUP BY s.id, s.ordered \
         ) \
         SELECT (SELECT count(*) FROM inserted) AS stored, m.id, m.ordered, m.apps, m.ids, m.times \
         FROM (SELECT 1) AS one LEFT JOIN matched m ON true ORDER BY m.id",
    )
    .bind(&rows.application_id)
    .bind(&rows.event_id)
    .bind(&rows.session_id)
    .bind(&rows.category)
    .bind(&rows.name)
    .bind(&rows.data)
    .bind(&rows.occurred_at)
    .bind(&rows.received_at)
    .bind(&rows.schema_version)
    .fetch_all(&mut *conn)
    .await?;
    let mut stored = Stored::default();
    for row in found {
        stored.events = row.stored as u64;
        if let (
            Some(subscription),
            Some(ordered),
            Some(application_id),
            Some(event_id),
            Some(occurred_at),
        ) = (row.id, row.ordered, row.apps, row.ids, row.times)
        {
            stored.matched.push(Matched {
                subscription,
                ordered,
                application_id,
                event_id,
                occurred_at,
            });
        }
    }
    Ok(stored)
}

/// Sets the GIN pending list's size for the rest of the transaction `conn` is in (see
/// `writer.gin_pending_list_kb`).
pub async fn set_gin_pending_list(conn: &mut PgConnection, kb: u32) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT set_config('gin_pending_list_limit', $1, true)")
        .bind(format!("{kb}kB"))
        .execute(conn)
        .await?;
    Ok(())
}

/// Enqueues, in the hand-off transaction `conn` is in, one delivery row per matched
/// subscription (in subscription id order, as [`insert`] returns them).
pub async fn enqueue_deliveries(
    conn: &mut PgConnection,
    matched: Vec<Matched>,
) -> Result<(), sqlx::Error> {
    for found in matched {
        let keys = (found.application_id.into_iter().zip(found.event_id))
            .zip(found.occurred_at)
            .map(|((application, event), at)| (application, event, at.timestamp_micros()))
            .collect();
        delivery::enqueue(conn, found.subscription, found.ordered, keys).await?;
    }
    Ok(())
}
