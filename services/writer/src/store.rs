//! Writing to the event store.

use std::{collections::HashSet, sync::Mutex};

use chrono::{DateTime, Datelike, Months, TimeZone, Utc};
use eye_service::pipeline::channel;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// The month partitions known to exist, so that `eye_ensure_event_partition` runs only for months
/// not seen before (once per month per process, in practice).
#[derive(Debug, Default)]
pub struct Partitions {
    known: Mutex<HashSet<(i32, u32)>>,
}

impl Partitions {
    /// Makes sure a partition exists for every month in `times`. Runs on the pool, outside the
    /// hand-off transaction: creating a partition locks the parent table, and that lock should
    /// last milliseconds, not a whole batch.
    pub async fn ensure(
        &self,
        pool: &PgPool,
        times: impl IntoIterator<Item = DateTime<Utc>>,
    ) -> Result<(), sqlx::Error> {
        let missing: Vec<DateTime<Utc>> = {
            let known = self.known.lock().expect("partition cache");
            let mut months: Vec<_> = times
                .into_iter()
                .map(month_start)
                .filter(|month| !known.contains(&(month.year(), month.month())))
                .collect();
            months.sort_unstable();
            months.dedup();
            months
        };
        for month in missing {
            sqlx::query("SELECT eye_ensure_event_partition($1)").bind(month).execute(pool).await?;
            self.known.lock().expect("partition cache").insert((month.year(), month.month()));
        }
        Ok(())
    }

    /// Creates this month's partition and the next `months` ones ahead of need.
    pub async fn ensure_ahead(&self, pool: &PgPool, months: u32) -> Result<(), sqlx::Error> {
        let now = month_start(Utc::now());
        self.ensure(pool, (0..=months).filter_map(|m| now.checked_add_months(Months::new(m)))).await
    }
}

fn month_start(at: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(at.year(), at.month(), 1, 0, 0, 0).single().expect("first of month")
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

/// Inserts `rows` (already sorted by application and event id, so concurrent writers take row
/// locks in one order) and upserts their sessions, in one statement. Returns how many events were
/// new.
pub async fn insert(conn: &mut PgConnection, rows: &Rows) -> Result<u64, sqlx::Error> {
    let stored: i64 = sqlx::query_scalar(
        "WITH inserted AS ( \
             INSERT INTO events (application_id, event_id, session_id, category, name, data, \
                                 occurred_at, received_at, schema_version) \
             SELECT a, e, s, c, n, d::jsonb, o, r, v \
             FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], \
                         $7::timestamptz[], $8::timestamptz[], $9::int[]) AS t(a, e, s, c, n, d, o, r, v) \
             ON CONFLICT DO NOTHING \
             RETURNING session_id, application_id, occurred_at \
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
         ) \
         SELECT count(*) FROM inserted",
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
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query("SELECT pg_notify($1, 'events')").bind(channel::STORED).execute(conn).await?;
    Ok(stored as u64)
}
