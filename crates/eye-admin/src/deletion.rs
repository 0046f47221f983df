//! Deleting a data subject's events (a GDPR erasure request): `eye delete` and the QueryService's
//! `DeleteEvents` (admin keys) both call [`delete`].
//!
//! A deletion removes what matches its [`Subject`] everywhere it is kept:
//! 1. **In flight.** With `outbox` and `outbox_dead_letters` locked against writes for a moment
//!    (`SHARE ROW EXCLUSIVE`: ingest and the consumers wait, nothing fails), every batch of the
//!    `validate` and `write` stages and every dead letter is decoded and rewritten without the
//!    matching events (or removed, if nothing is left). A rewritten row's fence is bumped, so a
//!    consumer that claimed it before cannot acknowledge its old body: its hand-off rolls back
//!    and the row is processed again, without the subject. Delivery rows hold keys only; a
//!    deleted event is not delivered.
//! 2. **The store.** Matching `events` and `event_errors` rows are deleted, the sessions they
//!    belonged to recomputed (removed when left empty), and the exported hours they were in
//!    marked, so the next `eye export` (or a running `--follow`) rewrites them (an hour left
//!    empty loses its files).
//! 3. **The receipt.** `deletions` records who asked, when, the filter's kinds and digest (never
//!    the subject's values), and how many rows of which tables went.
//!
//! With `suppress`, later events that match are refused at validation (reason `suppressed`):
//! `suppressions` keeps digests of the session id and of the containment's values, not the
//! values themselves (see `event_model::subject`). Events that arrive after the request and
//! before a validator rereads its suppressions (at its next batch) are stored; run the deletion
//! again to remove them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use event_model::subject;
use eye_proto::v1::EventBatch;
use eye_service::pipeline::stage;
use prost::Message;
use serde_json::{Value, json};
use sqlx::{Acquire, PgConnection, PgPool, Postgres};
use uuid::Uuid;

use crate::{AdminError, maintenance};

/// Longest the in-flight pass waits for the outbox's lock (in-flight hand-offs finish first).
const LOCK_TIMEOUT: &str = "10s";

/// Whose events go: every given part must match (at least one is required).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Subject {
    pub session: Option<Uuid>,
    /// An application, by name (revoked ones too).
    pub application: Option<String>,
    /// A JSON object the payload must contain (`jsonb @>`), e.g. `{"user_id": "u1"}`.
    pub contains: Option<Value>,
}

/// A subject resolved for matching: the application by id.
#[derive(Debug, Clone)]
struct Filter {
    application_id: Option<Uuid>,
    session: Option<Uuid>,
    contains: Option<Value>,
}

impl Filter {
    fn kinds(&self) -> Vec<&'static str> {
        let mut kinds = Vec::new();
        if self.application_id.is_some() {
            kinds.push("application");
        }
        if self.session.is_some() {
            kinds.push("session");
        }
        if self.contains.is_some() {
            kinds.push("contains");
        }
        kinds
    }

    /// What the receipt keeps of the filter: a digest of its canonical JSON.
    fn digest(&self) -> String {
        subject::digest(&json!({
            "application": self.application_id,
            "session": self.session,
            "contains": self.contains,
        }))
    }

    fn matches(&self, application_id: Uuid, event: &eye_proto::v1::BatchEvent) -> bool {
        self.application_id.is_none_or(|id| id == application_id)
            && self.session.is_none_or(|id| id.as_bytes()[..] == event.session_id[..])
            && self.contains.as_ref().is_none_or(|pattern| {
                serde_json::from_str::<Value>(&event.data_json)
                    .is_ok_and(|data| subject::contains(&data, pattern))
            })
    }
}

/// How many rows went, by table (the receipt's `counts`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    pub events: u64,
    pub event_errors: u64,
    /// Events taken out of batches waiting in the outbox (`validate`, `write`).
    pub outbox_events: u64,
    /// Events taken out of dead letters.
    pub dead_letter_events: u64,
    pub sessions_recomputed: u64,
    pub sessions_removed: u64,
    /// Exported hours marked for rewriting.
    pub export_hours: u64,
}

/// A deletion's receipt, as `deletions` keeps it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Receipt {
    pub id: Uuid,
    pub requested_by: String,
    pub requested_at: DateTime<Utc>,
    /// `None` while it runs (or if it was interrupted: run it again).
    pub finished_at: Option<DateTime<Utc>>,
    pub filter_kinds: Vec<String>,
    pub filter_digest: String,
    pub suppressed: bool,
    pub counts: Counts,
}

impl Subject {
    /// Checks the subject and resolves its application.
    async fn resolve(&self, conn: &mut PgConnection) -> Result<Filter, AdminError> {
        if self.session.is_none() && self.application.is_none() && self.contains.is_none() {
            return Err(AdminError::Invalid(
                "name whose events to delete: a session, an application or a containment".into(),
            ));
        }
        if let Some(contains) = &self.contains
            && !contains.is_object()
        {
            return Err(AdminError::Invalid(format!(
                "contains: must be a JSON object such as {{\"user_id\": \"u1\"}}, not {contains}"
            )));
        }
        let application_id = match &self.application {
            None => None,
            Some(name) => Some(
                sqlx::query_scalar("SELECT id FROM applications WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&mut *conn)
                    .await?
                    .ok_or_else(|| AdminError::NoSuchApplication { name: name.clone() })?,
            ),
        };
        Ok(Filter { application_id, session: self.session, contains: self.contains.clone() })
    }
}

/// Deletes `subject`'s events everywhere (see the module), records the receipt, and with
/// `suppress` refuses later matching events. `requested_by` says who asked (a user, a key).
pub async fn delete(
    pool: &PgPool,
    subject: &Subject,
    requested_by: &str,
    suppress: bool,
) -> Result<Receipt, AdminError> {
    let mut conn = pool.acquire().await?;
    let filter = subject.resolve(&mut conn).await?;
    let leaves = match (&filter.contains, suppress) {
        (Some(pattern), true) => subject::leaf_digests(pattern).map_err(AdminError::Invalid)?,
        _ => Vec::new(),
    };
    let id = Uuid::now_v7();
    let mut tx = conn.begin().await?;
    sqlx::query(
        "INSERT INTO deletions (id, requested_by, filter_kinds, filter_digest, suppressed) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(requested_by)
    .bind(filter.kinds())
    .bind(filter.digest())
    .bind(suppress)
    .execute(&mut *tx)
    .await?;
    if suppress {
        let data_digests: BTreeMap<String, String> = leaves.into_iter().collect();
        sqlx::query(
            "INSERT INTO suppressions (id, deletion_id, application_id, session_digest, data_digests) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(Uuid::now_v7())
        .bind(id)
        .bind(filter.application_id)
        .bind(filter.session.map(subject::session_digest))
        .bind(sqlx::types::Json(data_digests))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;

    let mut counts = Counts::default();
    remove_in_flight(&mut conn, &filter, &mut counts).await?;
    remove_stored(&mut conn, &filter, &mut counts).await?;
    sqlx::query("UPDATE deletions SET finished_at = now(), counts = $2 WHERE id = $1")
        .bind(id)
        .bind(sqlx::types::Json(&counts))
        .execute(&mut *conn)
        .await?;
    tracing::info!(deletion = %id, kinds = ?filter.kinds(), ?counts, "subject deleted");
    Ok(receipt(&mut conn, id).await?.expect("the receipt was just written"))
}

/// Rewrites the outbox's waiting batches and the dead letters without the subject's events.
async fn remove_in_flight(
    conn: &mut PgConnection,
    filter: &Filter,
    counts: &mut Counts,
) -> Result<(), AdminError> {
    let mut tx = conn.begin().await?;
    sqlx::query(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")).execute(&mut *tx).await?;
    sqlx::query("LOCK TABLE outbox, outbox_dead_letters IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    for table in ["outbox", "outbox_dead_letters"] {
        let rows: Vec<(i64, Vec<u8>)> =
            sqlx::query_as(&format!("SELECT id, body FROM {table} WHERE stage = ANY ($1)"))
                .bind(stage::ALL)
                .fetch_all(&mut *tx)
                .await?;
        for (row, body) in rows {
            let Ok(mut batch) = EventBatch::decode(&body[..]) else { continue };
            let Some(app) = Uuid::from_slice(&batch.application_id).ok() else { continue };
            let before = batch.events.len();
            batch.events.retain(|event| !filter.matches(app, event));
            let removed = (before - batch.events.len()) as u64;
            if removed == 0 {
                continue;
            }
            if table == "outbox" {
                counts.outbox_events += removed;
            } else {
                counts.dead_letter_events += removed;
            }
            if batch.events.is_empty() {
                sqlx::query(&format!("DELETE FROM {table} WHERE id = $1"))
                    .bind(row)
                    .execute(&mut *tx)
                    .await?;
            } else {
                // A claimed row's consumer holds the old body: the new fence refuses its ack.
                let fence = if table == "outbox" { ", fence = fence + 1" } else { "" };
                sqlx::query(&format!("UPDATE {table} SET body = $2{fence} WHERE id = $1"))
                    .bind(row)
                    .bind(batch.encode_to_vec())
                    .execute(&mut *tx)
                    .await?;
            }
        }
    }
    tx.commit().await?;
    Ok(())
}

/// The condition of `events` and `event_errors` rows that match (`$1` application, `$2` session,
/// `$3` containment; an unset part matches everything).
const MATCHES: &str = "($1::uuid IS NULL OR application_id = $1) \
                       AND ($2::uuid IS NULL OR session_id = $2) \
                       AND ($3::jsonb IS NULL OR data @> $3)";

/// Deletes the stored and quarantined events, recomputes their sessions, marks their exports.
async fn remove_stored(
    conn: &mut PgConnection,
    filter: &Filter,
    counts: &mut Counts,
) -> Result<(), AdminError> {
    let mut tx = conn.begin().await?;
    let contains = filter.contains.as_ref().map(sqlx::types::Json);
    let (events, sessions, hours): (i64, Vec<Uuid>, Vec<DateTime<Utc>>) = sqlx::query_as(&format!(
        "WITH gone AS (DELETE FROM events WHERE {MATCHES} RETURNING session_id, occurred_at) \
         SELECT count(*), coalesce(array_agg(DISTINCT session_id), '{{}}'), \
                coalesce(array_agg(DISTINCT date_trunc('hour', occurred_at)), '{{}}') FROM gone"
    ))
    .bind(filter.application_id)
    .bind(filter.session)
    .bind(contains)
    .fetch_one(&mut *tx)
    .await?;
    let (errors, error_hours): (i64, Vec<DateTime<Utc>>) = sqlx::query_as(&format!(
        "WITH gone AS (DELETE FROM event_errors WHERE {MATCHES} RETURNING occurred_at) \
         SELECT count(*), coalesce(array_agg(DISTINCT date_trunc('hour', occurred_at)), '{{}}') \
         FROM gone"
    ))
    .bind(filter.application_id)
    .bind(filter.session)
    .bind(contains)
    .fetch_one(&mut *tx)
    .await?;
    counts.events = events as u64;
    counts.event_errors = errors as u64;
    counts.sessions_recomputed = sessions.len() as u64;
    counts.sessions_removed = maintenance::recompute_sessions(&mut *tx, &sessions).await?;
    for (kind, hours) in [("events", &hours), ("errors", &error_hours)] {
        let marked: i64 = sqlx::query_scalar("SELECT eye_exports_mark_deleted($1, $2)")
            .bind(kind)
            .bind(hours)
            .fetch_one(&mut *tx)
            .await?;
        counts.export_hours += marked as u64;
    }
    tx.commit().await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct ReceiptRow {
    id: Uuid,
    requested_by: String,
    requested_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    filter_kinds: Vec<String>,
    filter_digest: String,
    suppressed: bool,
    counts: sqlx::types::Json<Counts>,
}

impl From<ReceiptRow> for Receipt {
    fn from(row: ReceiptRow) -> Self {
        Self {
            id: row.id,
            requested_by: row.requested_by,
            requested_at: row.requested_at,
            finished_at: row.finished_at,
            filter_kinds: row.filter_kinds,
            filter_digest: row.filter_digest,
            suppressed: row.suppressed,
            counts: row.counts.0,
        }
    }
}

const RECEIPT_COLUMNS: &str = "id, requested_by, requested_at, finished_at, filter_kinds, \
                               filter_digest, suppressed, counts";

async fn receipt(conn: &mut PgConnection, id: Uuid) -> Result<Option<Receipt>, AdminError> {
    let row: Option<ReceiptRow> =
        sqlx::query_as(&format!("SELECT {RECEIPT_COLUMNS} FROM deletions WHERE id = $1"))
            .bind(id)
            .fetch_optional(conn)
            .await?;
    Ok(row.map(Receipt::from))
}

/// The latest `limit` receipts, newest first.
pub async fn receipts<'c>(
    db: impl Acquire<'c, Database = Postgres>,
    limit: i64,
) -> Result<Vec<Receipt>, AdminError> {
    let mut conn = db.acquire().await?;
    let rows: Vec<ReceiptRow> = sqlx::query_as(&format!(
        "SELECT {RECEIPT_COLUMNS} FROM deletions ORDER BY requested_at DESC, id DESC LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(Receipt::from).collect())
}

/// Whether a receipt's digest is that of `subject`: how to check, later, that a request was
/// carried out, without the receipt holding the subject.
pub async fn digest_of<'c>(
    db: impl Acquire<'c, Database = Postgres>,
    subject: &Subject,
) -> Result<String, AdminError> {
    let mut conn = db.acquire().await?;
    Ok(subject.resolve(&mut conn).await?.digest())
}
