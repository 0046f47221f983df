//! The store's upkeep: partitions ahead of need, retention, and the dedup window. Every writer
//! runs it every `store.maintenance_interval_ms` (and `eye maintenance` once, by hand); a
//! transaction-scoped advisory lock lets one run at a time, so replicas neither race nor wait.
//!
//! What a run does, in order:
//! 1. creates the `events` partitions of now and the next two days or months
//!    (`store.partition`) and the ledger's current and next slices;
//! 2. with a retention (`store.retention`): drops the `events` partitions that end before now
//!    minus the retention (whole partitions: never a mass `DELETE`), recomputes the sessions that
//!    had events there (removing those left empty), and deletes the quarantined events and dead
//!    letters older than the retention (small tables, deleted in slices);
//! 3. drops the ledger's slices before the previous one (slices are as long as the dedup window,
//!    `store.dedup_window_days`, so an id is remembered for at least the window).
//!
//! Dropping a partition takes a short exclusive lock on `events`; each drop waits at most
//! [`LOCK_TIMEOUT`] for it (a long query holding `events` makes the run fail and the next one
//! retry) rather than queue ingest's writers behind it.

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use eye_service::settings::{Granularity, Retention, StoreSettings};
use sqlx::PgPool;

use crate::AdminError;

/// The longest a drop waits for its lock on the parent table.
pub const LOCK_TIMEOUT: &str = "5s";
/// Rows deleted per statement from the unpartitioned tables, and sessions recomputed per call.
const SLICE: i64 = 5_000;
/// Partitions made ahead of need: the current day or month and the next two.
const AHEAD: u32 = 2;

/// The times whose `events` partitions are made ahead of need: `now` and the same time in each
/// of the next [`AHEAD`] days or months (by `granularity`). The writer's start-up uses it too.
pub fn ahead(granularity: Granularity, now: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    (0..=AHEAD).filter_map(|n| granularity.add(now, n)).collect()
}

/// What to keep, from the settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub retention: Option<Retention>,
    pub granularity: Granularity,
    pub dedup_window_days: u32,
}

impl Policy {
    pub fn from_settings(store: &StoreSettings) -> Self {
        Self {
            retention: store.retention(),
            granularity: store.partition,
            dedup_window_days: store.dedup_window_days,
        }
    }
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// `false`: another replica was running the upkeep, so this one did nothing.
    pub ran: bool,
    /// The oldest `occurred_at` kept, with a retention.
    pub cutoff: Option<DateTime<Utc>>,
    /// `events` partitions dropped, oldest first.
    pub dropped_partitions: Vec<String>,
    /// Ledger slices dropped, oldest first.
    pub dropped_ledger_slices: Vec<String>,
    pub sessions_recomputed: u64,
    pub sessions_removed: u64,
    pub errors_deleted: u64,
    pub dead_letters_deleted: u64,
}

/// Runs the upkeep once, as of `now`.
pub async fn run(pool: &PgPool, policy: &Policy, now: DateTime<Utc>) -> Result<Report, AdminError> {
    // Held (with its transaction) for the whole run; released by the rollback at the end, also
    // if this future is dropped halfway.
    let mut guard = pool.begin().await?;
    let ours: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtext('eye_maintenance'))")
            .fetch_one(&mut *guard)
            .await?;
    if !ours {
        return Ok(Report::default());
    }
    let mut report = Report { ran: true, ..Report::default() };

    for at in ahead(policy.granularity, now) {
        sqlx::query("SELECT eye_ensure_partition('events', $1, $2)")
            .bind(at)
            .bind(policy.granularity.as_str())
            .execute(pool)
            .await?;
    }
    eye_service::database::ensure_ledger_slices(pool, policy.dedup_window_days, now).await?;
    let window = i32::try_from(policy.dedup_window_days).unwrap_or(i32::MAX);

    if let Some(retention) = policy.retention {
        let cutoff = retention.cutoff(now);
        report.cutoff = Some(cutoff);
        // Where the dropped partitions end: the sessions that began before it are recomputed.
        let boundary: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT max(upper_bound) FROM eye_partitions('events') WHERE upper_bound <= $1",
        )
        .bind(cutoff)
        .fetch_one(pool)
        .await?;
        report.dropped_partitions = drop_before(pool, "events", cutoff).await?;
        if let Some(boundary) = boundary.filter(|_| !report.dropped_partitions.is_empty()) {
            let (recomputed, removed) = recompute_sessions_before(pool, boundary).await?;
            report.sessions_recomputed = recomputed;
            report.sessions_removed = removed;
        }
        report.errors_deleted = delete_in_slices(
            pool,
            "DELETE FROM event_errors WHERE id IN \
             (SELECT id FROM event_errors WHERE failed_at < $1 LIMIT $2)",
            cutoff,
        )
        .await?;
        report.dead_letters_deleted = delete_in_slices(
            pool,
            "DELETE FROM outbox_dead_letters WHERE id IN \
             (SELECT id FROM outbox_dead_letters WHERE dead_at < $1 LIMIT $2)",
            cutoff,
        )
        .await?;
    }

    // The previous slice is kept, the ones before it dropped: ids are remembered for at least
    // the window.
    let previous: NaiveDate = sqlx::query_scalar("SELECT eye_ledger_slice($1, $2) - $1")
        .bind(window)
        .bind(now)
        .fetch_one(pool)
        .await?;
    let previous = previous.and_time(NaiveTime::MIN).and_utc();
    report.dropped_ledger_slices = drop_before(pool, "idempotency_keys", previous).await?;
    guard.rollback().await?;
    if !report.dropped_partitions.is_empty() || !report.dropped_ledger_slices.is_empty() {
        tracing::info!(
            partitions = ?report.dropped_partitions,
            ledger_slices = ?report.dropped_ledger_slices,
            sessions_removed = report.sessions_removed,
            errors_deleted = report.errors_deleted,
            dead_letters_deleted = report.dead_letters_deleted,
            "upkeep dropped what is past its time"
        );
    }
    Ok(report)
}

/// Drops the partitions of `parent` that end at or before `before`, waiting at most
/// [`LOCK_TIMEOUT`] for the lock.
async fn drop_before(
    pool: &PgPool,
    parent: &str,
    before: DateTime<Utc>,
) -> Result<Vec<String>, AdminError> {
    let mut tx = pool.begin().await?;
    sqlx::query(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")).execute(&mut *tx).await?;
    let dropped: Vec<String> =
        sqlx::query_scalar("SELECT eye_drop_partitions_before($1::regclass, $2)")
            .bind(parent)
            .bind(before)
            .fetch_all(&mut *tx)
            .await?;
    tx.commit().await?;
    Ok(dropped)
}

/// Recomputes, in slices, the sessions first seen before `boundary`; returns how many were
/// recomputed and how many of those were removed (no events left).
async fn recompute_sessions_before(
    pool: &PgPool,
    boundary: DateTime<Utc>,
) -> Result<(u64, u64), AdminError> {
    let (mut recomputed, mut removed) = (0u64, 0u64);
    let mut after = uuid::Uuid::nil();
    loop {
        let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
            "SELECT session_id FROM sessions WHERE first_seen_at < $1 AND session_id > $2 \
             ORDER BY session_id LIMIT $3",
        )
        .bind(boundary)
        .bind(after)
        .bind(SLICE)
        .fetch_all(pool)
        .await?;
        let Some(&last) = ids.last() else { break };
        removed += recompute_sessions(pool, &ids).await?;
        recomputed += ids.len() as u64;
        after = last;
    }
    Ok((recomputed, removed))
}

/// Makes the sessions `ids` agree with the events left (see `eye_recompute_sessions`); returns
/// how many were removed for having none.
pub(crate) async fn recompute_sessions<'c>(
    conn: impl sqlx::PgExecutor<'c>,
    ids: &[uuid::Uuid],
) -> Result<u64, AdminError> {
    let removed: i64 =
        sqlx::query_scalar("SELECT eye_recompute_sessions($1)").bind(ids).fetch_one(conn).await?;
    Ok(removed as u64)
}

/// Runs `statement` (`$1`: the cutoff, `$2`: the slice) until it deletes nothing.
async fn delete_in_slices(
    pool: &PgPool,
    statement: &str,
    cutoff: DateTime<Utc>,
) -> Result<u64, AdminError> {
    let mut deleted = 0;
    loop {
        let done = sqlx::query(statement).bind(cutoff).bind(SLICE).execute(pool).await?;
        deleted += done.rows_affected();
        if done.rows_affected() < SLICE as u64 {
            return Ok(deleted);
        }
    }
}
