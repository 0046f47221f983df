//! The consumer loop: claim a batch, hand it to a [`Handler`] inside a transaction, ack in that
//! same transaction, commit. Failures are isolated row by row, then (for splittable messages)
//! item by item.

use std::{future::Future, sync::Arc};

use prost::Message;
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;

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
}

/// Why one hand-off did not commit.
enum Failure<E> {
    Handler(E),
    Outbox(Error),
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

/// Runs one consumer loop for `outbox` until `shutdown` is cancelled; the batch in hand is always
/// finished first. Run several for parallelism: claims never overlap.
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
        let full = match outbox.claim_batch::<H::Message>().await {
            Ok((rows, taken)) => {
                failures = 0;
                // Counted before claim's dead-lettering: a full claim means more may be waiting.
                let full = taken as i64 >= outbox.config().batch_size;
                if !rows.is_empty() {
                    process(&outbox, &*handler, rows).await;
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
async fn process<H: Handler>(outbox: &Outbox, handler: &H, rows: Vec<Claimed<H::Message>>) {
    let error = match hand_off(outbox, handler, &rows).await {
        Ok(()) => return,
        Err(Failure::Outbox(Error::LeaseLost { expected, matched })) => {
            tracing::warn!(
                stage = outbox.stage(),
                expected,
                matched,
                "lease lost; hand-off rolled back"
            );
            return;
        }
        Err(error) => error,
    };
    if rows.len() == 1 {
        isolate(outbox, handler, &rows[0], error.to_string()).await;
        return;
    }
    tracing::warn!(stage = outbox.stage(), batch = rows.len(), %error, "batch failed; isolating rows");
    for row in rows {
        let single = std::slice::from_ref(&row);
        match hand_off(outbox, handler, single).await {
            Ok(()) | Err(Failure::Outbox(Error::LeaseLost { .. })) => {}
            Err(error) => isolate(outbox, handler, &row, error.to_string()).await,
        }
    }
}

/// A row failed alone: split it if its message can be split, else retry it.
async fn isolate<H: Handler>(
    outbox: &Outbox,
    handler: &H,
    row: &Claimed<H::Message>,
    error: String,
) {
    let Some(halves) = handler.split(&row.body) else {
        return retry(outbox, row, error).await;
    };
    match outbox.replace(row, [halves.0, halves.1]).await {
        Ok(true) => tracing::warn!(
            stage = outbox.stage(), row = row.id, %error, "row failed; split in two to isolate the cause"
        ),
        Ok(false) => {}
        Err(split_error) => {
            tracing::warn!(stage = outbox.stage(), row = row.id, error = %split_error, "could not split row");
            retry(outbox, row, error).await;
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
    tx.commit().await.map_err(|e| Failure::Outbox(e.into()))
}

// Takes the message, not the `Failure`: a reference held across the await would make the worker's
// future `Send` only for `Sync` handler errors.
async fn retry<M>(outbox: &Outbox, row: &Claimed<M>, message: String) {
    match outbox.retry(row, &message).await {
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
