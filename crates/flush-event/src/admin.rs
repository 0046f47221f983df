//! Operating the outbox: per-stage depth and lag, dead-letter listing and replay.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::CHANNEL;

/// The state of one stage.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StageStats {
    pub stage: String,
    /// Rows waiting or in flight.
    pub depth: i64,
    /// Rows currently leased by a consumer.
    pub in_flight: i64,
    /// Age of the oldest row, in seconds: the stage's lag.
    pub oldest_age_seconds: f64,
    /// Rows dead-lettered from this stage.
    pub dead_letters: i64,
}

/// Depth, lag and dead letters for every stage that has rows or dead letters.
pub async fn stage_stats(pool: &PgPool) -> Result<Vec<StageStats>, sqlx::Error> {
    sqlx::query_as(
        "WITH live AS ( \
             SELECT stage, count(*) AS depth, \
                    count(*) FILTER (WHERE attempts > 0 AND visible_at > now()) AS in_flight, \
                    extract(epoch FROM now() - min(created_at))::float8 AS oldest_age_seconds \
             FROM outbox GROUP BY stage \
         ), dead AS ( \
             SELECT stage, count(*) AS dead_letters FROM outbox_dead_letters GROUP BY stage \
         ) \
         SELECT coalesce(live.stage, dead.stage) AS stage, \
                coalesce(depth, 0) AS depth, coalesce(in_flight, 0) AS in_flight, \
                coalesce(oldest_age_seconds, 0) AS oldest_age_seconds, \
                coalesce(dead_letters, 0) AS dead_letters \
         FROM live FULL JOIN dead ON live.stage = dead.stage ORDER BY 1",
    )
    .fetch_all(pool)
    .await
}

/// A dead-lettered row (its body left out: it is for the stage's consumer to read).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct DeadLetter {
    pub id: i64,
    pub stage: String,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub dead_at: DateTime<Utc>,
    pub last_error: String,
}

/// Dead letters, newest first, optionally of one stage.
pub async fn list_dead_letters(
    pool: &PgPool,
    stage: Option<&str>,
    limit: i64,
) -> Result<Vec<DeadLetter>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, stage, attempts, created_at, dead_at, last_error FROM outbox_dead_letters \
         WHERE $1::text IS NULL OR stage = $1 ORDER BY dead_at DESC, id DESC LIMIT $2",
    )
    .bind(stage)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Moves dead letters back into their stage with a fresh attempt count; `ids` empty means all
/// (of `stage`, if given). Returns how many were replayed.
pub async fn replay_dead_letters(
    pool: &PgPool,
    stage: Option<&str>,
    ids: &[i64],
) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let stages: Vec<(String,)> = sqlx::query_as(
        "WITH moved AS ( \
             DELETE FROM outbox_dead_letters \
             WHERE ($1::text IS NULL OR stage = $1) AND (cardinality($2::bigint[]) = 0 OR id = ANY($2)) \
             RETURNING stage, body, headers, created_at, last_error \
         ), inserted AS ( \
             INSERT INTO outbox (stage, body, headers, created_at, last_error) \
             SELECT stage, body, headers, created_at, last_error FROM moved RETURNING stage \
         ) \
         SELECT stage FROM inserted",
    )
    .bind(stage)
    .bind(ids)
    .fetch_all(&mut *tx)
    .await?;
    let mut distinct: Vec<&str> = stages.iter().map(|(s,)| s.as_str()).collect();
    distinct.sort_unstable();
    distinct.dedup();
    for stage in distinct {
        sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(stage).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(stages.len() as u64)
}
