//! The consumer side of one stage: claim under a lease, ack by hand-off, retry, dead-letter.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use prost::Message;
use rand::Rng;
use sqlx::{PgConnection, PgPool};

use crate::{Error, Headers, enqueue::headers_from_json};

/// How a stage's consumer claims and retries.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxConfig {
    /// Most rows one claim takes.
    pub batch_size: i64,
    /// How long a claim holds its rows before they become visible to others again.
    pub lease: Duration,
    /// Claims before a row is dead-lettered instead of processed again.
    pub max_attempts: i32,
    /// Delay before the first retry; doubles with each further attempt.
    pub backoff_base: Duration,
    /// Longest delay between retries.
    pub backoff_max: Duration,
    /// How often an idle consumer looks for rows when no wake-up arrives (a safety net for lost
    /// notifications and for retries coming due).
    pub poll_interval: Duration,
    /// Head-of-line claims: one row at a time, the stage's oldest (lowest id), and only when it
    /// is visible, so rows are handled strictly in enqueue order and a row waiting for its retry
    /// holds back the ones behind it. `batch_size` is ignored.
    pub ordered: bool,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            batch_size: 64,
            lease: Duration::from_secs(30),
            max_attempts: 5,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            poll_interval: Duration::from_secs(1),
            ordered: false,
        }
    }
}

impl OutboxConfig {
    /// The retry delay after the `attempts`-th claim failed: `base * 2^(attempts-1)`, capped at
    /// `backoff_max`, with "equal jitter" (uniform in the upper half) so that rows failed together
    /// do not come back together.
    pub fn backoff(&self, attempts: i32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.backoff_ceiling(attempts);
        let half = ceiling / 2;
        half + rng.random_range(Duration::ZERO..=ceiling - half)
    }

    /// The un-jittered backoff: the upper bound of [`backoff`](Self::backoff).
    pub fn backoff_ceiling(&self, attempts: i32) -> Duration {
        let exponent = attempts.saturating_sub(1).clamp(0, 30) as u32;
        self.backoff_base.saturating_mul(1 << exponent).min(self.backoff_max)
    }
}

/// The longest wait a handler's [`retry_after`](crate::Handler::retry_after) gets (unless
/// `backoff_max` is longer).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// A claimed row: the decoded body plus what its ack or retry must present.
#[derive(Debug, Clone)]
pub struct Claimed<M> {
    pub id: i64,
    /// The fencing token of this claim.
    pub fence: i64,
    /// Claims so far, this one included.
    pub attempts: i32,
    pub headers: Headers,
    pub created_at: DateTime<Utc>,
    pub body: M,
}

/// What [`Outbox::retry`] did with a failed row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOutcome {
    /// Visible again after this delay.
    Retried(Duration),
    /// Out of attempts: moved to `outbox_dead_letters`.
    DeadLettered,
    /// The lease was lost before the retry: another consumer owns the row.
    LeaseLost,
}

/// One stage of the outbox, seen from its consumers. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Outbox {
    pool: PgPool,
    stage: Arc<str>,
    config: Arc<OutboxConfig>,
}

#[derive(sqlx::FromRow)]
struct ClaimedRow {
    id: i64,
    fence: i64,
    attempts: i32,
    headers: serde_json::Value,
    created_at: DateTime<Utc>,
    body: Vec<u8>,
    last_error: Option<String>,
}

impl Outbox {
    pub fn new(pool: PgPool, stage: impl Into<Arc<str>>, config: OutboxConfig) -> Self {
        Self { pool, stage: stage.into(), config: Arc::new(config) }
    }

    pub fn stage(&self) -> &str {
        &self.stage
    }

    pub fn config(&self) -> &OutboxConfig {
        &self.config
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Claims up to `batch_size` visible rows in one short transaction and decodes them.
    ///
    /// Rows that cannot be decoded, and rows already claimed `max_attempts` times whose consumer
    /// never acked (it crashed on them), are dead-lettered here instead of being returned.
    pub async fn claim<M: Message + Default>(&self) -> Result<Vec<Claimed<M>>, Error> {
        Ok(self.claim_batch().await?.0)
    }

    /// [`claim`](Self::claim), also returning how many rows the claim took, dead-lettered ones
    /// included: when that is `batch_size`, more rows may be waiting.
    pub(crate) async fn claim_batch<M: Message + Default>(
        &self,
    ) -> Result<(Vec<Claimed<M>>, usize), Error> {
        // The CTE with LIMIT locks exactly the rows it returns (a subquery in FROM may lock more),
        // and SKIP LOCKED lets concurrent consumers take disjoint batches without waiting.
        //
        // An ordered claim locks the head of the stage whether visible or not, and waits for
        // (instead of skipping) a concurrent claimer: after the wait it sees the head's new
        // `visible_at` and claims nothing.
        let next = if self.config.ordered {
            "WITH head AS ( \
                 SELECT id, visible_at FROM outbox WHERE stage = $1 ORDER BY id LIMIT 1 FOR UPDATE \
             ), next AS (SELECT id FROM head WHERE visible_at <= now() AND $2 > 0) "
        } else {
            "WITH next AS ( \
                 SELECT id FROM outbox \
                 WHERE stage = $1 AND visible_at <= now() \
                 ORDER BY visible_at, id \
                 LIMIT $2 \
                 FOR UPDATE SKIP LOCKED \
             ) "
        };
        let rows: Vec<ClaimedRow> = sqlx::query_as(&format!(
            "{next}\
             UPDATE outbox o \
             SET attempts = o.attempts + 1, fence = o.fence + 1, \
                 visible_at = now() + $3 * interval '1 millisecond' \
             FROM next WHERE o.id = next.id \
             RETURNING o.id, o.fence, o.attempts, o.headers, o.created_at, o.body, o.last_error"
        ))
        .bind(&*self.stage)
        .bind(self.config.batch_size)
        .bind(self.config.lease.as_millis() as f64)
        .fetch_all(&self.pool)
        .await?;

        let taken = rows.len();
        let mut claimed = Vec::with_capacity(taken);
        for row in rows {
            if row.attempts > self.config.max_attempts {
                let error = format!(
                    "abandoned by its consumer {} times (lease expired without ack); last error: {}",
                    self.config.max_attempts,
                    row.last_error.as_deref().unwrap_or("none")
                );
                self.dead_letter(row.id, row.fence, &error).await?;
                continue;
            }
            match M::decode(row.body.as_slice()) {
                Ok(body) => claimed.push(Claimed {
                    id: row.id,
                    fence: row.fence,
                    attempts: row.attempts,
                    headers: headers_from_json(row.headers),
                    created_at: row.created_at,
                    body,
                }),
                Err(error) => {
                    tracing::error!(stage = %self.stage, row = row.id, %error, "undecodable outbox row");
                    self.dead_letter(row.id, row.fence, &format!("undecodable body: {error}"))
                        .await?;
                }
            }
        }
        Ok((claimed, taken))
    }

    /// Acks claimed rows inside the hand-off transaction `conn` is in: deletes them if, and only
    /// if, every one still carries this claim's fence. Otherwise returns
    /// [`Error::LeaseLost`], and the caller must roll back.
    pub async fn ack<M>(&self, conn: &mut PgConnection, rows: &[Claimed<M>]) -> Result<(), Error> {
        let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
        let fences: Vec<i64> = rows.iter().map(|row| row.fence).collect();
        let matched = sqlx::query(
            "DELETE FROM outbox o USING UNNEST($1::bigint[], $2::bigint[]) AS a(id, fence) \
             WHERE o.id = a.id AND o.fence = a.fence",
        )
        .bind(&ids)
        .bind(&fences)
        .execute(conn)
        .await?
        .rows_affected();
        if matched != rows.len() as u64 {
            return Err(Error::LeaseLost { expected: rows.len(), matched });
        }
        Ok(())
    }

    /// Gives a failed row back: visible again after the backoff for its attempt count, or
    /// dead-lettered when it has had `max_attempts` claims.
    pub async fn retry<M>(&self, row: &Claimed<M>, error: &str) -> Result<RetryOutcome, Error> {
        self.retry_after(row, error, None).await
    }

    /// [`retry`](Self::retry) after `after` instead of the backoff, when given (what an HTTP
    /// `Retry-After` asked for, capped at [`MAX_RETRY_AFTER`] or `backoff_max`, whichever is
    /// longer).
    pub async fn retry_after<M>(
        &self,
        row: &Claimed<M>,
        error: &str,
        after: Option<Duration>,
    ) -> Result<RetryOutcome, Error> {
        if row.attempts >= self.config.max_attempts {
            return Ok(if self.dead_letter(row.id, row.fence, error).await? {
                RetryOutcome::DeadLettered
            } else {
                RetryOutcome::LeaseLost
            });
        }
        let delay = match after {
            Some(after) => after.min(self.config.backoff_max.max(MAX_RETRY_AFTER)),
            None => self.config.backoff(row.attempts, &mut rand::rng()),
        };
        let updated = sqlx::query(
            "UPDATE outbox SET visible_at = now() + $3 * interval '1 millisecond', last_error = $4 \
             WHERE id = $1 AND fence = $2",
        )
        .bind(row.id)
        .bind(row.fence)
        .bind(delay.as_millis() as f64)
        .bind(error)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(if updated == 1 { RetryOutcome::Retried(delay) } else { RetryOutcome::LeaseLost })
    }

    /// Replaces a claimed row by `parts` (new rows of the same stage, with its headers and fresh
    /// attempt counts) in one transaction; false if the lease was lost.
    pub async fn replace<M: Message>(
        &self,
        row: &Claimed<M>,
        parts: [M; 2],
    ) -> Result<bool, Error> {
        let mut tx = self.pool.begin().await?;
        match self.ack(&mut tx, std::slice::from_ref(row)).await {
            Ok(()) => {}
            Err(Error::LeaseLost { .. }) => return Ok(false),
            Err(error) => return Err(error),
        }
        crate::flush_events(&mut tx, &self.stage, parts.iter().map(|part| (part, &row.headers)))
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Gives claimed rows back after a transient failure without charging them the attempt:
    /// visible again after the first backoff step, attempt count restored. Rows whose lease was
    /// lost are left alone.
    pub async fn release<M>(&self, rows: &[Claimed<M>]) -> Result<(), Error> {
        let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
        let fences: Vec<i64> = rows.iter().map(|row| row.fence).collect();
        let delay = self.config.backoff(1, &mut rand::rng());
        sqlx::query(
            "UPDATE outbox o SET attempts = greatest(o.attempts - 1, 0), \
                 visible_at = now() + $3 * interval '1 millisecond' \
             FROM UNNEST($1::bigint[], $2::bigint[]) AS r(id, fence) \
             WHERE o.id = r.id AND o.fence = r.fence",
        )
        .bind(&ids)
        .bind(&fences)
        .bind(delay.as_millis() as f64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Moves a claimed row to `outbox_dead_letters` with `error`; false if the lease was lost.
    pub async fn dead_letter(&self, id: i64, fence: i64, error: &str) -> Result<bool, Error> {
        let moved = sqlx::query(
            "WITH dead AS ( \
                 DELETE FROM outbox WHERE id = $1 AND fence = $2 \
                 RETURNING id, stage, body, headers, attempts, created_at \
             ) \
             INSERT INTO outbox_dead_letters (id, stage, body, headers, attempts, created_at, last_error) \
             SELECT id, stage, body, headers, attempts, created_at, $3 FROM dead",
        )
        .bind(id)
        .bind(fence)
        .bind(error)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if moved == 1 {
            tracing::warn!(stage = %self.stage, row = id, "outbox row dead-lettered");
        }
        Ok(moved == 1)
    }
}

/// Copies the claimed row `id` into `outbox_dead_letters` with `error`, inside the hand-off
/// transaction `conn` is in: the hand-off's ack then deletes it from `outbox` as it does the
/// others, so the row ends dead-lettered exactly when the hand-off commits. For a handler that
/// learns that one row can never succeed (an event the receiver refused for good).
pub async fn dead_letter_in_hand_off(
    conn: &mut PgConnection,
    id: i64,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO outbox_dead_letters (id, stage, body, headers, attempts, created_at, last_error) \
         SELECT id, stage, body, headers, attempts, created_at, $2 FROM outbox WHERE id = $1",
    )
    .bind(id)
    .bind(error)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records a claimed row's partial progress: replaces its body by `remaining` (what is left to
/// do) and its headers, keeping its id (its place in an ordered stage), its claim and its attempt
/// count; false if the lease was lost. For a handler whose work has effects outside the
/// database that cannot be undone (a delivery): when it fails midway it records what is left in
/// a transaction of its own, then returns its error, and the row is retried with only the rest.
pub async fn record_progress<M: Message>(
    conn: &mut PgConnection,
    id: i64,
    fence: i64,
    remaining: &M,
    headers: &Headers,
) -> Result<bool, sqlx::Error> {
    let updated =
        sqlx::query("UPDATE outbox SET body = $3, headers = $4 WHERE id = $1 AND fence = $2")
            .bind(id)
            .bind(fence)
            .bind(remaining.encode_to_vec())
            .bind(crate::enqueue::headers_json(headers))
            .execute(conn)
            .await?
            .rows_affected();
    Ok(updated == 1)
}

/// Dead-letters `body` as a new row of `stage`, inside the hand-off transaction `conn` is in: for
/// a handler that learns that one item of a claimed row can never succeed, and acks the row
/// after handing the rest on. The dead letter takes a fresh id of `outbox`'s sequence;
/// replaying it puts it back into `stage`.
pub async fn dead_letter_new_in_hand_off<M: Message>(
    conn: &mut PgConnection,
    stage: &str,
    body: &M,
    headers: &Headers,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO outbox_dead_letters (id, stage, body, headers, attempts, created_at, last_error) \
         VALUES (nextval(pg_get_serial_sequence('outbox', 'id')), $1, $2, $3, 1, now(), $4)",
    )
    .bind(stage)
    .bind(body.encode_to_vec())
    .bind(crate::enqueue::headers_json(headers))
    .bind(error)
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_bounded_jitter() {
        let config = OutboxConfig {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            ..Default::default()
        };
        let ceilings: Vec<u128> = (1..=6).map(|a| config.backoff_ceiling(a).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
        let mut rng = rand::rng();
        for attempts in 1..=6 {
            for _ in 0..100 {
                let delay = config.backoff(attempts, &mut rng);
                let ceiling = config.backoff_ceiling(attempts);
                assert!(delay >= ceiling / 2 && delay <= ceiling, "{delay:?} vs {ceiling:?}");
            }
        }
        // Absurd attempt counts neither overflow nor exceed the cap.
        assert_eq!(config.backoff_ceiling(i32::MAX), Duration::from_secs(1));
    }
}
