//! Integration tests of the outbox, each against a fresh, migrated Postgres database.
//!
//! Time never passes by itself here: a lease expiring or a backoff elapsing is simulated by moving
//! `visible_at` into the past ([`make_visible`]), and the worker tests wait on conditions with
//! `wait_for` (re-checked on NOTIFY), never on sleeps.

mod ack;
mod admin;
mod claim;
mod enqueue;
mod retry;
mod worker;

use std::time::Duration;

use chrono::{DateTime, Utc};
use flush_event::{Headers, OutboxConfig, flush_events};
use sqlx::PgPool;

/// The body type of every test row.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Job {
    #[prost(uint64, tag = "1")]
    pub n: u64,
    /// Marks a job the test handlers fail on.
    #[prost(bool, tag = "2")]
    pub poison: bool,
}

pub fn job(n: u64) -> Job {
    Job { n, poison: false }
}

pub fn jobs(ns: impl IntoIterator<Item = u64>) -> Vec<Job> {
    ns.into_iter().map(job).collect()
}

/// A configuration whose timings never fire by themselves during a test: leases and backoffs are
/// long, and so is the poll interval (tests that need polling shorten it).
pub fn config() -> OutboxConfig {
    OutboxConfig {
        batch_size: 10,
        lease: Duration::from_secs(30),
        max_attempts: 3,
        backoff_base: Duration::from_secs(10),
        backoff_max: Duration::from_secs(3600),
        poll_interval: Duration::from_secs(60),
        ordered: false,
    }
}

/// Enqueues `jobs` into `stage` in one committed transaction, without headers.
pub async fn enqueue(pool: &PgPool, stage: &str, jobs: &[Job]) -> anyhow::Result<()> {
    let headers = Headers::new();
    let mut tx = pool.begin().await?;
    flush_events(&mut tx, stage, jobs.iter().map(|job| (job, &headers))).await?;
    tx.commit().await?;
    Ok(())
}

/// Simulates the lease (or backoff) of rows running out: they become visible again.
pub async fn make_visible(pool: &PgPool, ids: &[i64]) -> anyhow::Result<()> {
    let updated = sqlx::query(
        "UPDATE outbox SET visible_at = now() - interval '1 second' WHERE id = ANY($1)",
    )
    .bind(ids)
    .execute(pool)
    .await?
    .rows_affected();
    assert_eq!(updated, ids.len() as u64, "rows to make visible: {ids:?}");
    Ok(())
}

/// The database's clock, to bracket the `now()` of a library call.
pub async fn db_now(pool: &PgPool) -> anyhow::Result<DateTime<Utc>> {
    Ok(sqlx::query_scalar("SELECT clock_timestamp()").fetch_one(pool).await?)
}

/// One `SELECT count(*) ...`-like query returning a bigint; panics on error (for `wait_for`).
pub async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// A row of `outbox`, as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub attempts: i32,
    pub fence: i64,
    pub visible_at: DateTime<Utc>,
    pub last_error: Option<String>,
}

/// The rows of `stage`, by id.
pub async fn outbox_rows(pool: &PgPool, stage: &str) -> anyhow::Result<Vec<OutboxRow>> {
    Ok(sqlx::query_as(
        "SELECT id, attempts, fence, visible_at, last_error FROM outbox WHERE stage = $1 ORDER BY id",
    )
    .bind(stage)
    .fetch_all(pool)
    .await?)
}

/// A row of `outbox_dead_letters`, as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeadRow {
    pub id: i64,
    pub stage: String,
    pub body: Vec<u8>,
    pub attempts: i32,
    pub last_error: String,
}

/// All dead letters, by id.
pub async fn dead_rows(pool: &PgPool) -> anyhow::Result<Vec<DeadRow>> {
    Ok(sqlx::query_as(
        "SELECT id, stage, body, attempts, last_error FROM outbox_dead_letters ORDER BY id",
    )
    .fetch_all(pool)
    .await?)
}
