//! The outbox handler of one subscription's stage: read the batch's events, deliver them, dead-
//! letter the ones the destination refuses for good, count the rest, ack.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use eye_admin::subscriptions::Subscription;
use eye_proto::v1::DeliveryBatch;
use eye_service::pipeline::delivery;
use eye_telemetry::metrics::Metrics;
use flush_event::{Claimed, Handler};
use sqlx::{PgConnection, PgPool};

use crate::{
    events::{self, DeliveredEvent, LoadError},
    nats::Nats,
    webhook::{Answer, Webhook},
};

/// Where one subscription's events go.
#[derive(Debug, Clone)]
pub enum Destination {
    Webhook(Webhook),
    Nats(Nats),
}

/// Why a batch was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Load(LoadError),
    /// The destination failed; the batch is retried with backoff (or after `after`).
    #[error("{reason}: {detail}")]
    Failed { reason: &'static str, detail: String, after: Option<Duration> },
    /// The webhook answered 410: the subscription was paused and the batch released.
    #[error("the webhook answered 410 Gone; the subscription is paused")]
    Gone,
}

impl From<LoadError> for DeliveryError {
    fn from(error: LoadError) -> Self {
        match error {
            LoadError::Database(error) => Self::Database(error),
            other => Self::Load(other),
        }
    }
}

/// How far delivery of one batch got: its first `done` events are settled (delivered, or
/// refused for good and listed in `refused`, by index).
#[derive(Debug, Default)]
struct Progress {
    done: usize,
    refused: Vec<(usize, String)>,
}

/// Delivers the batches of one subscription.
#[derive(Debug)]
pub struct Deliverer {
    subscription: Arc<Subscription>,
    destination: Destination,
    pool: PgPool,
    metrics: Metrics,
    max_events: usize,
}

impl Deliverer {
    pub fn new(
        subscription: Arc<Subscription>,
        destination: Destination,
        pool: PgPool,
        metrics: Metrics,
        max_events: usize,
    ) -> Self {
        Self { subscription, destination, pool, metrics, max_events: max_events.max(1) }
    }

    fn failed(
        &self,
        reason: &'static str,
        detail: String,
        after: Option<Duration>,
    ) -> DeliveryError {
        self.metrics.delivery().failed(&self.subscription.name, reason);
        DeliveryError::Failed { reason, detail, after }
    }

    /// Delivers `events` in order, recording in `progress` how far it got.
    async fn deliver(
        &self,
        events: &[DeliveredEvent],
        progress: &mut Progress,
    ) -> Result<(), DeliveryError> {
        match &self.destination {
            Destination::Nats(nats) => {
                for chunk in events.chunks(self.max_events.max(1000)) {
                    nats.publish(chunk)
                        .await
                        .map_err(|error| self.failed("nats", error.to_string(), None))?;
                    progress.done += chunk.len();
                }
            }
            Destination::Webhook(hook) => {
                for chunk in events.chunks(self.max_events) {
                    self.post_isolating(hook, chunk, progress).await?;
                }
            }
        }
        Ok(())
    }

    /// POSTs `chunk` (the events after `progress.done`); if the receiver refuses it, halves it
    /// until the refused events are alone, delivering the others.
    async fn post_isolating(
        &self,
        hook: &Webhook,
        chunk: &[DeliveredEvent],
        progress: &mut Progress,
    ) -> Result<(), DeliveryError> {
        match hook.post(self.subscription.id, &self.subscription.name, chunk).await {
            Answer::Delivered => {
                progress.done += chunk.len();
                Ok(())
            }
            Answer::Retry { reason, detail, after } => Err(self.failed(reason, detail, after)),
            Answer::Gone => {
                self.metrics.delivery().failed(&self.subscription.name, "gone");
                let mut conn = self.pool.acquire().await?;
                let reason = "the webhook answered 410 Gone";
                eye_admin::subscriptions::pause_id(&mut conn, self.subscription.id, reason)
                    .await
                    .map_err(|error| match error {
                    eye_admin::AdminError::Database(error) => DeliveryError::Database(error),
                    other => self.failed("gone", other.to_string(), None),
                })?;
                tracing::warn!(subscription = %self.subscription.name, "webhook answered 410; subscription paused");
                Err(DeliveryError::Gone)
            }
            Answer::Refused { status, excerpt } if chunk.len() == 1 => {
                self.metrics.delivery().failed(&self.subscription.name, "http_4xx");
                progress
                    .refused
                    .push((progress.done, format!("webhook answered {status}: {excerpt}")));
                progress.done += 1;
                Ok(())
            }
            Answer::Refused { .. } => {
                let (left, right) = chunk.split_at(chunk.len() / 2);
                Box::pin(self.post_isolating(hook, left, progress)).await?;
                Box::pin(self.post_isolating(hook, right, progress)).await
            }
        }
    }

    /// Writes down, in the transaction `conn` is in, the settled part of a batch: dead letters
    /// for the refused events, the delivered count, the metrics.
    async fn settle(
        &self,
        conn: &mut PgConnection,
        events: &[DeliveredEvent],
        progress: &Progress,
    ) -> Result<(), DeliveryError> {
        let stage = self.subscription.stage();
        for (index, why) in &progress.refused {
            let event = &events[*index];
            let body = DeliveryBatch {
                events: vec![event.key.clone()],
                first_sequence: event.sequence.unwrap_or(0),
            };
            flush_event::dead_letter_new_in_hand_off(
                conn,
                &stage,
                &body,
                &delivery::headers(1),
                why,
            )
            .await?;
        }
        let delivered = progress.done - progress.refused.len();
        sqlx::query("UPDATE subscriptions SET delivered = delivered + $2 WHERE id = $1")
            .bind(self.subscription.id)
            .bind(delivered as i64)
            .execute(conn)
            .await?;
        let now = Utc::now();
        let metrics = self.metrics.delivery();
        metrics.dead_lettered(&self.subscription.name, progress.refused.len() as u64);
        let latencies = events[..progress.done]
            .iter()
            .enumerate()
            .filter(|(i, _)| !progress.refused.iter().any(|(r, _)| r == i))
            .map(|(_, event)| (now - event.stored_at).as_seconds_f64());
        metrics.delivered(&self.subscription.name, latencies);
        Ok(())
    }

    /// After a failure midway: settles what was done and shrinks the row to the rest, in a
    /// transaction of its own, so that the retry does not deliver the settled part again.
    async fn keep_progress(
        &self,
        row: &Claimed<DeliveryBatch>,
        events: &[DeliveredEvent],
        progress: &Progress,
    ) -> Result<(), DeliveryError> {
        let rest = &events[progress.done..];
        let remaining = DeliveryBatch {
            events: rest.iter().map(|event| event.key.clone()).collect(),
            first_sequence: rest.first().and_then(|event| event.sequence).unwrap_or(0),
        };
        let mut tx = self.pool.begin().await?;
        let headers = delivery::headers(rest.len());
        if flush_event::record_progress(&mut tx, row.id, row.fence, &remaining, &headers).await? {
            self.settle(&mut tx, events, progress).await?;
            tx.commit().await?;
        }
        Ok(())
    }
}

impl Handler for Deliverer {
    type Message = DeliveryBatch;
    type Error = DeliveryError;

    /// Rows are claimed one at a time (the supervisor sets `batch_size` 1): a row's progress is
    /// kept when it fails midway, which a batch of rows rolled back together could not do.
    async fn handle(
        &self,
        conn: &mut PgConnection,
        rows: &[Claimed<DeliveryBatch>],
    ) -> Result<(), DeliveryError> {
        for row in rows {
            let events = events::load(conn, &row.body).await?;
            let mut progress = Progress::default();
            if let Err(error) = self.deliver(&events, &mut progress).await {
                if progress.done > 0 {
                    self.keep_progress(row, &events, &progress).await?;
                }
                return Err(error);
            }
            self.settle(conn, &events, &progress).await?;
        }
        Ok(())
    }

    fn is_transient(&self, error: &DeliveryError) -> bool {
        match error {
            DeliveryError::Database(error) => flush_event::is_transient(error),
            // Released without charging an attempt: the subscription is paused meanwhile.
            DeliveryError::Gone => true,
            DeliveryError::Load(_) | DeliveryError::Failed { .. } => false,
        }
    }

    fn retry_after(&self, error: &DeliveryError) -> Option<Duration> {
        match error {
            DeliveryError::Failed { after, .. } => *after,
            _ => None,
        }
    }
}
