//! The final check, exact and in SQL: the acknowledged ids are copied into temporary tables and
//! anti-joined against the store, so "lost" counts ids, not rows.

use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::poison::{self, Planted};

/// What the database holds after the drain.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Store {
    /// Rows in `events`.
    pub stored: i64,
    /// (application, event_id) pairs stored more than once.
    pub stored_twice: i64,
    /// Acknowledged valid events missing from `events`.
    pub lost: i64,
    /// Rows in `events` that are not acknowledged valid events (quarantined or poison events, or
    /// events nobody sent).
    pub stored_unexpected: i64,
    /// Rows in `event_errors`.
    pub quarantined: i64,
    /// Acknowledged invalid events missing from `event_errors`.
    pub quarantine_lost: i64,
    /// Rows in the idempotency ledger: one per event ingest committed, which must be exactly the
    /// acknowledged ones (every batch is retried until answered).
    pub ledger: i64,
    /// `sum(sessions.event_count)`: must equal `stored` (counts stay exact under redelivery).
    pub session_event_count: i64,
    /// Rows left in the outbox, by stage.
    pub outbox_left: Vec<(String, i64)>,
    /// Rows in `outbox_dead_letters`.
    pub dead_letters: i64,
    /// Planted poison rows found among the dead letters (each exactly once).
    pub dead_letters_planted: i64,
    /// Dead letters that are not planted poison, with their last error.
    pub dead_letters_unexpected: Vec<String>,
    /// Planted markers found more than once among the dead letters.
    pub dead_letters_repeated: i64,
}

pub(crate) async fn store(
    conn: &mut PgConnection,
    acked_valid: &[Uuid],
    acked_invalid: &[Uuid],
    planted: &Planted,
) -> anyhow::Result<Store> {
    copy_ids(conn, "acked_valid", acked_valid).await?;
    copy_ids(conn, "acked_invalid", acked_invalid).await?;
    sqlx::query("CREATE TEMP TABLE planted (marker text PRIMARY KEY)").execute(&mut *conn).await?;
    sqlx::query("INSERT INTO planted SELECT * FROM UNNEST($1::text[])")
        .bind(&planted.markers)
        .execute(&mut *conn)
        .await?;

    let count = |sql: &'static str| sqlx::query_scalar::<_, i64>(sql);
    let mut store = Store {
        stored: count("SELECT count(*) FROM events").fetch_one(&mut *conn).await?,
        ..Default::default()
    };
    store.stored_twice = count(
        "SELECT count(*) FROM (SELECT 1 FROM events GROUP BY application_id, event_id \
         HAVING count(*) > 1) d",
    )
    .fetch_one(&mut *conn)
    .await?;
    store.lost = count(
        "SELECT count(*) FROM acked_valid a \
         WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.event_id = a.event_id)",
    )
    .fetch_one(&mut *conn)
    .await?;
    store.stored_unexpected = count(
        "SELECT count(*) FROM events e \
         WHERE NOT EXISTS (SELECT 1 FROM acked_valid a WHERE a.event_id = e.event_id)",
    )
    .fetch_one(&mut *conn)
    .await?;
    store.quarantined = count("SELECT count(*) FROM event_errors").fetch_one(&mut *conn).await?;
    store.quarantine_lost = count(
        "SELECT count(*) FROM acked_invalid a \
         WHERE NOT EXISTS (SELECT 1 FROM event_errors e WHERE e.event_id = a.event_id)",
    )
    .fetch_one(&mut *conn)
    .await?;
    store.ledger = count("SELECT count(*) FROM idempotency_keys").fetch_one(&mut *conn).await?;
    store.session_event_count = count("SELECT coalesce(sum(event_count), 0)::bigint FROM sessions")
        .fetch_one(&mut *conn)
        .await?;
    store.outbox_left =
        sqlx::query_as("SELECT stage, count(*) FROM outbox GROUP BY stage ORDER BY stage")
            .fetch_all(&mut *conn)
            .await?;
    store.dead_letters =
        count("SELECT count(*) FROM outbox_dead_letters").fetch_one(&mut *conn).await?;
    store.dead_letters_planted = sqlx::query_scalar(
        "SELECT count(DISTINCT p.marker) FROM outbox_dead_letters d \
         JOIN planted p ON d.headers->>$1 = p.marker",
    )
    .bind(poison::HEADER)
    .fetch_one(&mut *conn)
    .await?;
    store.dead_letters_repeated = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT 1 FROM outbox_dead_letters d \
         JOIN planted p ON d.headers->>$1 = p.marker GROUP BY p.marker HAVING count(*) > 1) r",
    )
    .bind(poison::HEADER)
    .fetch_one(&mut *conn)
    .await?;
    store.dead_letters_unexpected = sqlx::query_scalar(
        "SELECT format('row %s of stage %s after %s attempts: %s', id, stage, attempts, last_error) \
         FROM outbox_dead_letters d \
         WHERE NOT EXISTS (SELECT 1 FROM planted p WHERE d.headers->>$1 = p.marker) ORDER BY id",
    )
    .bind(poison::HEADER)
    .fetch_all(&mut *conn)
    .await?;
    Ok(store)
}

/// `COPY`s ids into a new temporary table `name (event_id uuid PRIMARY KEY)`.
async fn copy_ids(conn: &mut PgConnection, name: &str, ids: &[Uuid]) -> anyhow::Result<()> {
    sqlx::query(&format!("CREATE TEMP TABLE {name} (event_id uuid PRIMARY KEY)"))
        .execute(&mut *conn)
        .await?;
    let mut copy = conn.copy_in_raw(&format!("COPY {name} (event_id) FROM STDIN")).await?;
    let mut buffer = String::with_capacity(64 * 1024);
    for id in ids {
        buffer.push_str(&id.hyphenated().to_string());
        buffer.push('\n');
        if buffer.len() > 60_000 {
            copy.send(std::mem::take(&mut buffer).into_bytes()).await?;
        }
    }
    copy.send(buffer.into_bytes()).await?;
    copy.finish().await?;
    sqlx::query(&format!("ANALYZE {name}")).execute(&mut *conn).await?;
    Ok(())
}
