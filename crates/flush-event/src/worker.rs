//! The consumer loop: claim a batch, hand it to a [`Handler`] inside a transaction, ack in that
//! same transaction, commit. Failures are isolated row by row, then (for splittable messages)
//! item by item.
//!
//! Each claimed batch is processed inside a `hand_off` span (fields `stage`, `rows`) and then
//! reported to [`Handler::observe`], so that a service can record metrics without this crate
//! depending on a metrics library.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use prost::Message;
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{Claimed, Error, Outbox, RetryOutcome, Waker};

/// The work a stage does with its rows.
pub trait Handler: Send + Sync + 'static {
    type Message: Message + Default + Send + Sync + 'static;
    type Error: std::fmt::Display + Send;

    /// Does the work for `rows` inside the hand-off transaction `conn` is in (write results,
    /// [`flush_events`](crate::flush_events) into the next stage). The rows are acked in the same
    /// transaction after this returns `Ok`; on `Err` everything rolls back.
    fn handle(
        &self,
        conn: &mut PgConnection,
        rows: &[Claimed<Self::Message>],
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Splits a message that holds many items (a batch of events) into two halves, for poison
    /// isolation: when a row fails even when handed off alone, its halves replace it, so that one
    /// bad item cannot hold back its batch-mates. Splitting repeats until the bad item is alone in
    /// its row, which is then retried and finally dead-lettered. `None` (the default): the
    /// message cannot be split, and the row is retried as it is.
    fn split(&self, _body: &Self::Message) -> Option<(Self::Message, Self::Message)> {
        None
    }

    /// The `NOTIFY`s (channel, payload) to send after each committed hand-off, outside its
    /// transaction: for a handler that enqueues with
    /// [`flush_events_unannounced`](crate::flush_events_unannounced), the next stage's wake-up.
    /// The default: none.
    fn wake_ups(&self) -> &[(&'static str, &'static str)] {
        &[]
    }

    /// Called once per claimed batch after it was processed, committed or not: a hook for
    /// metrics. The default does nothing.
    fn observe(&self, _batch: &BatchReport<'_>) {}

    /// Whether `error` is the infrastructure's fault (a lost connection, a restarting database, a
    /// deadlock) rather than the rows'. Rows whose hand-off failed transiently are neither split
    /// nor charged an attempt: they are released to be claimed again shortly. The default says
    /// no; handlers whose errors wrap `sqlx::Error` should ask [`is_transient`](crate::is_transient).
    fn is_transient(&self, _error: &Self::Error) -> bool {
        false
    }

    /// How long a row that failed with `error` should wait before its next attempt, when the
    /// error says (an HTTP `Retry-After`); `None` (the default): the outbox's backoff.
    fn retry_after(&self, _error: &Self::Error) -> Option<Duration> {
        None
    }
}

/// What became of one claimed batch, for [`Handler::observe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchReport<'a> {
    pub stage: &'a str,
    /// Rows claimed and handed to the handler.
    pub rows: usize,
    /// Rows that failed even when handed off alone (then split, retried or dead-lettered).
    pub failed: usize,
    /// Rows whose lease another consumer took over before the hand-off committed.
    pub lease_lost: usize,
    /// From the start of the claim to the end of the hand-off, row-by-row isolation included.
    pub elapsed: Duration,
}

/// Rows of one batch that did not commit.
#[derive(Debug, Default, Clone, Copy)]
struct Unfinished {
    failed: usize,
    lease_lost: usize,
}

/// Why one hand-off did not commit.
enum Failure<E> {
    Handler(E),
    Outbox(Error),
}

impl<E> Failure<E> {
    fn is_transient<H: Handler<Error = E>>(&self, handler: &H) -> bool {
        match self {
            Self::Handler(error) => handler.is_transient(error),
            Self::Outbox(Error::Database(error)) => crate::is_transient(error),
            Self::Outbox(Error::LeaseLost { .. }) => false,
        }
    }
}

impl<E: std::fmt::Display> std::fmt::Display for Failure<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Handler(error) => error.fmt(f),
            Self::Outbox(error) => write!(f, "{error}: {}", source_text(error)),
        }
    }
}

fn source_text(error: &Error) -> String {
    std::error::Error::source(error).map(ToString::to_string).unwrap_or_default()
}

/// Runs `concurrency` consumer loops ([`run_worker`]) for `outbox` and returns when all of them
/// have stopped (after `shutdown`, each with its batch in hand finished).
pub async fn run_workers<H: Handler>(
    outbox: Outbox,
    handler: Arc<H>,
    waker: Waker,
    concurrency: usize,
    shutdown: CancellationToken,
) {
    let mut loops = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        loops.spawn(run_worker(outbox.clone(), handler.clone(), waker.clone(), shutdown.clone()));
    }
    tracing::info!(stage = outbox.stage(), loops = concurrency, "consumers running");
    while let Some(stopped) = loops.join_next().await {
        if let Err(error) = stopped {
            tracing::error!(stage = outbox.stage(), %error, "consumer loop failed");
        }
    }
    tracing::info!(stage = outbox.stage(), "consumers drained");
}

/// Runs one consumer loop for `outbox` until `shutdown` is cancelled; the batch in hand is always
/// finished first. Run several for parallelism ([`run_workers`]): claims never overlap.
///
/// After a full batch it claims again at once; otherwise it waits for a wake-up from `waker`, or
/// the poll interval, whichever comes first.
pub async fn run_worker<H: Handler>(
    outbox: Outbox,
    handler: Arc<H>,
    waker: Waker,
    shutdown: CancellationToken,
) {
    let mut woken = waker.subscribe(outbox.stage());
    let mut failures = 0u32;
    while !shutdown.is_cancelled() {
        woken.borrow_and_update();
        let started = Instant::now();
        let full = match outbox.claim_batch::<H::Message>().await {
            Ok((rows, taken)) => {
                failures = 0;
                // Counted before claim's dead-lettering: a full claim means more may be waiting.
                let full = taken as i64 >= outbox.config().batch_size;
                if !rows.is_empty() {
                    let count = rows.len();
                    let span =
                        tracing::info_span!("hand_off", stage = outbox.stage(), rows = count);
                    let unfinished = process(&outbox, &*handler, rows).instrument(span).await;
                    handler.observe(&BatchReport {
                        stage: outbox.stage(),
                        rows: count,
                        failed: unfinished.failed,
                        lease_lost: unfinished.lease_lost,
                        elapsed: started.elapsed(),
                    });
                }
                full
            }
            Err(error) => {
                failures += 1;
                tracing::warn!(stage = outbox.stage(), %error, cause = source_text(&error), "claim failed");
                let pause = outbox.config().backoff_ceiling(failures.min(6) as i32);
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(pause) => {}
                }
                continue;
            }
        };
        if !full {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = woken.changed() => {}
                () = tokio::time::sleep(outbox.config().poll_interval) => {}
            }
        }
    }
}

/// Hands `rows` off; if the batch fails, isolates the failure by handing each row off alone and
/// retrying (or dead-lettering) only the ones that fail by themselves.
async fn process<H: Handler>(
    outbox: &Outbox,
    handler: &H,
    rows: Vec<Claimed<H::Message>>,
) -> Unfinished {
    let error = match hand_off(outbox, handler, &rows).await {
        Ok(()) => return Unfinished::default(),
        Err(Failure::Outbox(Error::LeaseLost { expected, matched })) => {
            tracing::warn!(
                stage = outbox.stage(),
                expected,
                matched,
                "lease lost; hand-off rolled back"
            );
            return Unfinished { failed: 0, lease_lost: rows.len() };
        }
        Err(error) if error.is_transient(handler) => {
            tracing::warn!(stage = outbox.stage(), batch = rows.len(), %error, "transient failure; rows released");
            if let Err(release_error) = outbox.release(&rows).await {
                // Their lease will expire and bring them back.
                tracing::warn!(stage = outbox.stage(), error = %release_error, "could not release rows");
            }
            return Unfinished { failed: rows.len(), lease_lost: 0 };
        }
        Err(error) => error,
    };
    if rows.len() == 1 {
        let after = failure_retry_after(handler, &error);
        isolate(outbox, handler, &rows[0], error.to_string(), after).await;
        return Unfinished { failed: 1, lease_lost: 0 };
    }
    tracing::warn!(stage = outbox.stage(), batch = rows.len(), %error, "batch failed; isolating rows");
    let mut unfinished = Unfinished::default();
    for row in rows {
        let single = std::slice::from_ref(&row);
        match hand_off(outbox, handler, single).await {
            Ok(()) => {}
            Err(Failure::Outbox(Error::LeaseLost { .. })) => unfinished.lease_lost += 1,
            Err(error) => {
                unfinished.failed += 1;
                let after = failure_retry_after(handler, &error);
                isolate(outbox, handler, &row, error.to_string(), after).await;
            }
        }
    }
    unfinished
}

/// A row failed alone: split it if its message can be split, else retry it.
async fn isolate<H: Handler>(
    outbox: &Outbox,
    handler: &H,
    row: &Claimed<H::Message>,
    error: String,
    after: Option<Duration>,
) {
    let Some(halves) = handler.split(&row.body) else {
        return retry(outbox, row, error, after).await;
    };
    match outbox.replace(row, [halves.0, halves.1]).await {
        Ok(true) => tracing::warn!(
            stage = outbox.stage(), row = row.id, %error, "row failed; split in two to isolate the cause"
        ),
        Ok(false) => {}
        Err(split_error) => {
            tracing::warn!(stage = outbox.stage(), row = row.id, error = %split_error, "could not split row");
            retry(outbox, row, error, after).await;
        }
    }
}

async fn hand_off<H: Handler>(
    outbox: &Outbox,
    handler: &H,
    rows: &[Claimed<H::Message>],
) -> Result<(), Failure<H::Error>> {
    let mut tx = outbox.pool().begin().await.map_err(|e| Failure::Outbox(e.into()))?;
    handler.handle(&mut tx, rows).await.map_err(Failure::Handler)?;
    outbox.ack(&mut tx, rows).await.map_err(Failure::Outbox)?;
    tx.commit().await.map_err(|e| Failure::Outbox(e.into()))?;
    for &(channel, payload) in handler.wake_ups() {
        crate::notify_later(outbox.pool(), channel, payload);
    }
    Ok(())
}

fn failure_retry_after<H: Handler>(handler: &H, failure: &Failure<H::Error>) -> Option<Duration> {
    match failure {
        Failure::Handler(error) => handler.retry_after(error),
        Failure::Outbox(_) => None,
    }
}

// Takes the message, not the `Failure`: a reference held across the await would make the worker's
// future `Send` only for `Sync` handler errors.
async fn retry<M>(outbox: &Outbox, row: &Claimed<M>, message: String, after: Option<Duration>) {
    match outbox.retry_after(row, &message, after).await {
        Ok(RetryOutcome::Retried(delay)) => tracing::warn!(
            stage = outbox.stage(), row = row.id, attempts = row.attempts,
            retry_in_ms = delay.as_millis() as u64, error = %message, "row failed; will retry"
        ),
        Ok(RetryOutcome::DeadLettered) => tracing::error!(
            stage = outbox.stage(), row = row.id, attempts = row.attempts, error = %message,
            "row failed for the last time; dead-lettered"
        ),
        Ok(RetryOutcome::LeaseLost) => {}
        // The lease will expire and the row come back by itself.
        Err(error) => {
            tracing::warn!(stage = outbox.stage(), row = row.id, %error, "could not record retry")
        }
    }
}
