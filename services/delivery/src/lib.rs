//! `eye-delivery`: the ways out. It delivers the stored events that match each subscription
//! (`eye subscriptions create`) to the subscription's destination: signed JSON batches to a
//! webhook ([`webhook`]), or one JetStream message per event ([`nats`]).
//!
//! The writer enqueues the keys of the events it stores that match a live subscription into the
//! subscription's outbox stage (`deliver/<id>`), in the transaction that stores them: delivery is
//! exactly as durable as storage, and costs nothing when there is no subscription. This service
//! claims those rows under a lease, delivers, and acks in one transaction with the delivered
//! count: at least once. Retries back off with jitter (honouring `Retry-After`); a batch still
//! failing after `delivery.consumer.max_attempts` claims is dead-lettered (`eye dlq`), and so is,
//! at once, an event the receiver refuses for good. An ordered subscription is claimed head of
//! line, one batch at a time, in storage order. A subscription created with `--from` is
//! backfilled first ([`backfill`]).
//!
//! # Layout
//! - [`supervisor`](crate): one task per subscription, following the subscriptions table.
//! - [`handler`]: the outbox handler: load, deliver, isolate refusals, count, ack.
//! - [`events`]: reading a batch's events; their JSON form.
//! - [`webhook`], [`nats`]: the destinations.
//! - [`backfill`]: enqueueing what was stored since `--from` without a gap or an overlap.

pub mod backfill;
pub mod events;
pub mod handler;
pub mod nats;
mod supervisor;
pub mod webhook;

use std::{sync::Arc, time::Duration};

use eye_service::{
    Settings,
    consumer::{Base, BuildError},
};
use eye_telemetry::metrics::Metrics;
use flush_event::Waker;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// How often the subscriptions' backlog is sampled into the metrics.
const BACKLOG_SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

/// A built, not yet running delivery service.
#[derive(Debug)]
pub struct Application {
    base: Base,
}

impl Application {
    /// Connects (lazily) to the database and binds the metrics port.
    pub async fn build(settings: Settings) -> Result<Self, BuildError> {
        Ok(Self { base: Base::build(settings).await? })
    }

    /// [`build`](Self::build), recording into `metrics` (served by the caller): for `eye dev`.
    pub async fn build_with_metrics(
        settings: Settings,
        metrics: Metrics,
    ) -> Result<Self, BuildError> {
        Ok(Self { base: Base::build_with_metrics(settings, metrics)? })
    }

    /// The bound port of `/metrics`; `None` when built with shared metrics.
    pub fn metrics_port(&self) -> Option<u16> {
        self.base.metrics_port()
    }

    /// Delivers until `shutdown`; each subscription finishes the batch in hand.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let Base { pool, settings, endpoint } = self.base;
        let metrics = endpoint.metrics().clone();
        let server = endpoint.spawn();
        sample_backlog(pool.clone(), metrics.clone(), shutdown.clone());
        let context = supervisor::Context {
            waker: Waker::listen(&pool, shutdown.clone()),
            pool,
            settings: Arc::new(settings.delivery),
            metrics,
        };
        supervisor::supervise(context, shutdown).await;
        if let Some(server) = server {
            server.stop().await;
        }
        tracing::info!("delivery drained");
        Ok(())
    }
}

/// Samples every subscription's pending events and lag into the metrics until `shutdown`.
fn sample_backlog(pool: PgPool, metrics: Metrics, shutdown: CancellationToken) {
    tokio::spawn(async move {
        loop {
            if let Ok(all) = eye_admin::subscriptions::list(&pool).await {
                for status in all {
                    metrics.delivery().backlog(&status.name, status.pending, status.lag_seconds);
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(BACKLOG_SAMPLE_INTERVAL) => {}
            }
        }
    });
}
