//! Backfill: a subscription created with a start time (`--from T`) gets the events stored since
//! T before it goes live, without a gap and without an overlap.
//!
//! While a subscription is `backfilling` the writer enqueues nothing for it. The backfill walks
//! the store in `(stored_at, application_id, event_id)` order from T, enqueueing a page of
//! matching keys per transaction and keeping its cursor in the subscription row (so a crash
//! resumes where the last page committed; the row lock keeps two `eye-delivery` processes from
//! walking it at once). Writers commit out of `stored_at` order, so the walk never reads past a
//! *fence* ([`eye_admin::subscriptions::fence`]): a moment before which every stored event has
//! committed. When a round of pages up to the last fence was short, the backfill takes a last
//! fence, enqueues the few events stored since the previous one and turns the subscription
//! `live` in that same transaction: every event stored after it is the writer's to enqueue.
//!
//! The walk reads windows of `stored_at` (the BRIN index on it keeps each cheap), halving a
//! window that holds more than a page and doubling one that holds less.

use chrono::{DateTime, TimeDelta, Utc};
use eye_admin::subscriptions::{self, Subscription};
use eye_service::pipeline::delivery;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Why a backfill step failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Admin(#[from] eye_admin::AdminError),
}

/// Where the walk stands.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
struct Cursor {
    stored_at: DateTime<Utc>,
    application_id: Uuid,
    event_id: Uuid,
}

const FIRST_WINDOW: TimeDelta = TimeDelta::seconds(60);
const LARGEST_WINDOW: TimeDelta = TimeDelta::days(30);

/// Walks `subscription`'s backfill to the end and turns it live; returns early (`Ok`) on
/// `shutdown` or when another process holds it.
pub async fn run(
    pool: &PgPool,
    subscription: &Subscription,
    page: i64,
    shutdown: &CancellationToken,
) -> Result<(), BackfillError> {
    let mut window = FIRST_WINDOW;
    loop {
        let horizon = {
            let mut tx = pool.begin().await?;
            let horizon = subscriptions::fence(&mut tx).await?;
            tx.commit().await?;
            horizon
        };
        let mut pages = 0;
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            let mut tx = pool.begin().await?;
            let Some(cursor) = lock_cursor(&mut tx, subscription.id, false).await? else {
                return Ok(());
            };
            let (count, reached) =
                enqueue_page(&mut tx, subscription, cursor, horizon, page, &mut window).await?;
            tx.commit().await?;
            pages += 1;
            tracing::debug!(subscription = %subscription.name, count, "backfill page enqueued");
            if reached {
                break;
            }
        }
        if pages <= 2 {
            return finish(pool, subscription, page, &mut window).await;
        }
    }
}

/// The last round, inside one fence: enqueue up to now and go live.
async fn finish(
    pool: &PgPool,
    subscription: &Subscription,
    page: i64,
    window: &mut TimeDelta,
) -> Result<(), BackfillError> {
    let mut tx = pool.begin().await?;
    let horizon = subscriptions::fence(&mut tx).await?;
    let Some(cursor) = lock_cursor(&mut tx, subscription.id, true).await? else {
        return Ok(());
    };
    let mut cursor = cursor;
    loop {
        let (_, reached) =
            enqueue_page(&mut tx, subscription, cursor, horizon, page, window).await?;
        if reached {
            break;
        }
        cursor = lock_cursor(&mut tx, subscription.id, true).await?.expect("locked above");
    }
    sqlx::query("UPDATE subscriptions SET state = 'live', updated_at = now() WHERE id = $1")
        .bind(subscription.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::info!(subscription = %subscription.name, "backfill done; subscription live");
    Ok(())
}

/// Locks the subscription row if it is still backfilling and returns its cursor; `None` if it is
/// not backfilling any more or (unless `wait`) another process holds it.
async fn lock_cursor(
    conn: &mut PgConnection,
    id: Uuid,
    wait: bool,
) -> Result<Option<Cursor>, sqlx::Error> {
    let lock = if wait { "FOR UPDATE" } else { "FOR UPDATE SKIP LOCKED" };
    sqlx::query_as(&format!(
        "SELECT coalesce(backfill_stored_at, backfill_from) AS stored_at, \
                coalesce(backfill_application_id, '00000000-0000-0000-0000-000000000000') AS application_id, \
                coalesce(backfill_event_id, '00000000-0000-0000-0000-000000000000') AS event_id \
         FROM subscriptions WHERE id = $1 AND state = 'backfilling' {lock}"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Enqueues the next page of matching keys after `cursor` and before `horizon`, and moves the
/// cursor; returns how many it enqueued and whether the walk reached `horizon`.
async fn enqueue_page(
    conn: &mut PgConnection,
    subscription: &Subscription,
    cursor: Cursor,
    horizon: DateTime<Utc>,
    page: i64,
    window: &mut TimeDelta,
) -> Result<(usize, bool), sqlx::Error> {
    let end = (cursor.stored_at + *window).min(horizon);
    let keys: Vec<(Uuid, Uuid, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT e.application_id, e.event_id, e.occurred_at, e.stored_at \
         FROM events e, subscriptions s \
         WHERE s.id = $1 AND e.stored_at >= $2 AND e.stored_at < $5 \
           AND (e.stored_at, e.application_id, e.event_id) > ($2, $3, $4) \
           AND eye_subscription_matches(s, e.application_id, e.category, e.name, e.data) \
         ORDER BY e.stored_at, e.application_id, e.event_id LIMIT $6",
    )
    .bind(subscription.id)
    .bind(cursor.stored_at)
    .bind(cursor.application_id)
    .bind(cursor.event_id)
    .bind(end)
    .bind(page)
    .fetch_all(&mut *conn)
    .await?;
    let full = keys.len() as i64 >= page;
    let next = match keys.last() {
        Some(&(application_id, event_id, _, stored_at)) if full => {
            Cursor { stored_at, application_id, event_id }
        }
        // The window is exhausted: the next one starts at its end.
        _ => Cursor { stored_at: end, application_id: Uuid::nil(), event_id: Uuid::nil() },
    };
    *window = if full {
        (*window / 2).max(TimeDelta::milliseconds(1))
    } else {
        (*window * 2).min(LARGEST_WINDOW)
    };
    let count = keys.len();
    let keys = keys
        .into_iter()
        .map(|(app, event, occurred_at, _)| (app, event, occurred_at.timestamp_micros()));
    delivery::enqueue(conn, subscription.id, subscription.ordered, keys.collect()).await?;
    sqlx::query(
        "UPDATE subscriptions SET backfill_stored_at = $2, backfill_application_id = $3, \
             backfill_event_id = $4, updated_at = now() WHERE id = $1",
    )
    .bind(subscription.id)
    .bind(next.stored_at)
    .bind(next.application_id)
    .bind(next.event_id)
    .execute(conn)
    .await?;
    Ok((count, !full && end >= horizon))
}
