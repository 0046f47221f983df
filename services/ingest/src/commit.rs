//! Group commit: concurrent requests share one transaction, so the cost of a durable commit
//! (one WAL flush) is paid once per group instead of once per request.
//!
//! Requests queue on a bounded channel. A few commit loops each take whatever is queued (up to
//! `commit_max_events`) and commit it as one transaction: no timer, so an idle server commits at
//! once and a busy one batches naturally while the previous commit is in flight. A full queue is
//! answered at once with RESOURCE_EXHAUSTED rather than left hanging.
//!
//! The idempotency ledger is kept in slices as long as the dedup window
//! (`store.dedup_window_days`; `idempotency_keys`, partitioned by `slice`): an id is recorded in
//! the current slice (its key conflict answers a repeat within it, racing ones included) and
//! looked up in the previous one, one more index probe whatever the window. The current and the
//! next slice are made sure of whenever this process's day changes (and at start), so no insert
//! finds its slice missing; the writers' upkeep drops the slices before the previous one.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
};

use chrono::{DateTime, Utc};
use event_model::{ApplicationId, Event, batch};
use eye_telemetry::{metrics::Metrics, propagation};
use flush_event::Headers;
use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot};
use tracing::Instrument;
use uuid::Uuid;

use eye_service::pipeline::stage;

use crate::error::IngestError;

/// Requests waiting for a commit before new ones are refused.
const QUEUE_DEPTH: usize = 1_024;

/// The accepted events of one request.
#[derive(Debug)]
pub struct Submission {
    pub application_id: ApplicationId,
    pub received_at: DateTime<Utc>,
    pub events: Vec<Event>,
    /// Propagation headers for the outbox row (e.g. `traceparent`).
    pub headers: Headers,
}

#[derive(Debug)]
struct Job {
    submission: Submission,
    reply: oneshot::Sender<Result<Vec<bool>, Arc<sqlx::Error>>>,
}

/// The handle requests commit through. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Committer {
    queue: Arc<std::sync::Mutex<Option<mpsc::Sender<Job>>>>,
    loops: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Committer {
    /// Starts `commit_concurrency` commit loops.
    pub fn start(
        pool: PgPool,
        settings: &eye_service::settings::IngestSettings,
        dedup_window_days: u32,
        metrics: Metrics,
    ) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE_DEPTH);
        let receiver = Arc::new(Mutex::new(receiver));
        let ledger = Arc::new(Ledger {
            window_days: i32::try_from(dedup_window_days).unwrap_or(i32::MAX),
            ensured_day: AtomicI64::new(i64::MIN),
        });
        let loops = (0..settings.commit_concurrency)
            .map(|_| {
                tokio::spawn(commit_loop(
                    pool.clone(),
                    receiver.clone(),
                    settings.commit_max_events,
                    ledger.clone(),
                    metrics.clone(),
                ))
            })
            .collect();
        Self {
            queue: Arc::new(std::sync::Mutex::new(Some(sender))),
            loops: Arc::new(Mutex::new(loops)),
        }
    }

    /// Makes `submission` durable. Returns, per event, `true` if it is new (ACCEPTED) or `false`
    /// if this application already sent its `event_id` (DUPLICATE, also for a repeat within the
    /// same group).
    pub async fn commit(&self, submission: Submission) -> Result<Vec<bool>, IngestError> {
        let (reply, answer) = oneshot::channel();
        let sender = self.queue.lock().expect("committer lock").clone();
        let sender = sender.ok_or(IngestError::ShuttingDown)?;
        sender.try_send(Job { submission, reply }).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => IngestError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => IngestError::ShuttingDown,
        })?;
        match answer.await {
            Ok(Ok(new)) => Ok(new),
            Ok(Err(error)) => Err(IngestError::Storage(error)),
            Err(_) => Err(IngestError::ShuttingDown),
        }
    }

    /// Stops taking requests and waits for the queued ones to be committed.
    pub async fn close(&self) {
        self.queue.lock().expect("committer lock").take();
        for handle in self.loops.lock().await.drain(..) {
            let _ = handle.await;
        }
    }
}

/// The idempotency ledger's window and the last day whose slices this process made sure of.
#[derive(Debug)]
struct Ledger {
    window_days: i32,
    /// Days since the epoch (UTC).
    ensured_day: AtomicI64,
}

impl Ledger {
    /// Makes sure the current and the next slice exist, once per day (two statements the first
    /// time a process commits each day; nothing otherwise).
    async fn ensure_slices(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let now = Utc::now();
        let day = now.timestamp().div_euclid(86_400);
        if self.ensured_day.load(Ordering::Relaxed) == day {
            return Ok(());
        }
        let window = u32::try_from(self.window_days).unwrap_or(u32::MAX);
        eye_service::database::ensure_ledger_slices(pool, window, now).await?;
        self.ensured_day.store(day, Ordering::Relaxed);
        Ok(())
    }
}

async fn commit_loop(
    pool: PgPool,
    receiver: Arc<Mutex<mpsc::Receiver<Job>>>,
    max_events: usize,
    ledger: Arc<Ledger>,
    metrics: Metrics,
) {
    loop {
        let jobs = {
            let mut receiver = receiver.lock().await;
            let Some(first) = receiver.recv().await else { return };
            let mut events = first.submission.events.len();
            let mut jobs = vec![first];
            while events < max_events {
                match receiver.try_recv() {
                    Ok(job) => {
                        events += job.submission.events.len();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            jobs
        };
        let (submissions, replies): (Vec<_>, Vec<_>) =
            jobs.into_iter().map(|job| (job.submission, job.reply)).unzip();
        let events = submissions.iter().map(|s| s.events.len()).sum::<usize>();
        // A group serves many requests, so it has a trace of its own, linked to each request.
        let span = tracing::info_span!("group_commit", requests = submissions.len(), events);
        for submission in &submissions {
            propagation::link_to_headers(&span, &submission.headers);
        }
        let requests = submissions.len();
        match commit_group(&pool, &ledger, submissions).instrument(span).await {
            Ok(outcomes) => {
                metrics.ingest().observe_commit(requests, events);
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(error) => {
                let error = Arc::new(error);
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }
}

/// One transaction for a group of submissions: claim their ids in the idempotency ledger, then
/// enqueue the new events of each submission as one outbox row.
async fn commit_group(
    pool: &PgPool,
    ledger: &Ledger,
    submissions: Vec<Submission>,
) -> Result<Vec<Vec<bool>>, sqlx::Error> {
    ledger.ensure_slices(pool).await?;
    // Repeats within the group are duplicates of their first occurrence.
    let mut seen = HashSet::new();
    let first: Vec<Vec<bool>> = submissions
        .iter()
        .map(|s| s.events.iter().map(|e| seen.insert((s.application_id.0, e.event_id.0))).collect())
        .collect();
    // Sorted keys: concurrent groups lock ledger entries in the same order and cannot deadlock.
    let mut keys: Vec<(Uuid, Uuid)> = seen.into_iter().collect();
    keys.sort_unstable();
    let (apps, ids): (Vec<Uuid>, Vec<Uuid>) = keys.into_iter().unzip();

    let mut tx = pool.begin().await?;
    // New: not in the previous slice, and not in the current one (the key conflict says so, also
    // for a racing group's uncommitted row: this insert waits for it, then conflicts).
    let inserted: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "INSERT INTO idempotency_keys (application_id, event_id, slice) \
         SELECT c.a, c.e, eye_ledger_slice($3, now()) \
         FROM UNNEST($1::uuid[], $2::uuid[]) AS c(a, e) \
         WHERE NOT EXISTS (SELECT FROM idempotency_keys k \
                           WHERE k.application_id = c.a AND k.event_id = c.e \
                             AND k.slice = eye_ledger_slice($3, now()) - $3) \
         ON CONFLICT DO NOTHING RETURNING application_id, event_id",
    )
    .bind(&apps)
    .bind(&ids)
    .bind(ledger.window_days)
    .fetch_all(&mut *tx)
    .await?;
    let inserted: HashSet<(Uuid, Uuid)> = inserted.into_iter().collect();

    let mut outcomes = Vec::with_capacity(submissions.len());
    let mut rows = Vec::with_capacity(submissions.len());
    for (submission, first) in submissions.into_iter().zip(first) {
        let app = submission.application_id;
        let new: Vec<bool> = submission
            .events
            .iter()
            .zip(&first)
            .map(|(event, first)| *first && inserted.contains(&(app.0, event.event_id.0)))
            .collect();
        let events = submission.events.into_iter().zip(&new).filter(|(_, new)| **new);
        let body = batch::encode(app, submission.received_at, events.map(|(event, _)| (event, 0)));
        if !body.events.is_empty() {
            rows.push((body, submission.headers));
        }
        outcomes.push(new);
    }
    let rows = rows.iter().map(|(body, h)| (body, h));
    let enqueued = flush_event::flush_events_unannounced(&mut tx, stage::VALIDATE, rows).await?;
    tx.commit().await?;
    // After the commit, not in it: a NOTIFY would serialise every commit on the server (see
    // `flush_events_unannounced`).
    if enqueued > 0 {
        flush_event::notify_later(pool, flush_event::CHANNEL, stage::VALIDATE);
    }
    Ok(outcomes)
}
