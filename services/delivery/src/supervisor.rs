//! Keeps one task per subscription running as the subscriptions table says: a backfill while it
//! is `backfilling`, claim loops over its stage while it is `live` and not paused, nothing
//! otherwise. It rereads the table on every change notification (a trigger sends them) and every
//! `delivery.refresh_ms`, so changes take effect within seconds and no restart is needed.

use std::{collections::HashMap, sync::Arc, time::Duration};

use eye_admin::subscriptions::{self, Subscription};
use eye_service::{consumer::outbox_config, pipeline::channel, settings::DeliverySettings};
use eye_telemetry::metrics::Metrics;
use flush_event::{Outbox, Waker};
use sqlx::{PgPool, postgres::PgListener};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{
    backfill,
    handler::{Deliverer, Destination},
    nats::Nats,
    webhook::Webhook,
};

/// What the supervisor's tasks share.
#[derive(Debug, Clone)]
pub(crate) struct Context {
    pub(crate) pool: PgPool,
    pub(crate) settings: Arc<DeliverySettings>,
    pub(crate) metrics: Metrics,
    pub(crate) waker: Waker,
}

struct Running {
    subscription: Subscription,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Runs until `shutdown`, then stops every task (each finishes the batch in hand) and returns.
pub(crate) async fn supervise(context: Context, shutdown: CancellationToken) {
    let refresh = Duration::from_millis(context.settings.refresh_ms);
    let mut listener = None;
    let mut running: HashMap<uuid::Uuid, Running> = HashMap::new();
    let mut failing = false;
    while !shutdown.is_cancelled() {
        if listener.is_none() {
            listener = listen(&context.pool).await;
        }
        match subscriptions::all(&context.pool).await {
            Ok(all) => {
                failing = false;
                reconcile(&context, &mut running, all, &shutdown).await;
            }
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(%error, "cannot read the subscriptions; retrying");
            }
            Err(_) => {}
        }
        let changed = async {
            match listener.as_mut() {
                Some(listener) => listener.recv().await.map(|_| ()),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            received = changed => if received.is_err() { listener = None },
            () = tokio::time::sleep(refresh) => {}
        }
    }
    for (_, task) in running.drain() {
        task.stop.cancel();
        let _ = task.task.await;
    }
}

async fn listen(pool: &PgPool) -> Option<PgListener> {
    let mut listener = PgListener::connect_with(pool).await.ok()?;
    listener.listen(channel::SUBSCRIPTIONS).await.ok()?;
    Some(listener)
}

/// Stops the tasks of subscriptions that changed or went away, and starts what is missing.
async fn reconcile(
    context: &Context,
    running: &mut HashMap<uuid::Uuid, Running>,
    all: Vec<Subscription>,
    shutdown: &CancellationToken,
) {
    let mut wanted: HashMap<uuid::Uuid, Subscription> =
        all.into_iter().map(|subscription| (subscription.id, subscription)).collect();
    let stale: Vec<uuid::Uuid> = running
        .iter()
        .filter(|(id, task)| wanted.get(id) != Some(&task.subscription) || task.task.is_finished())
        .map(|(id, _)| *id)
        .collect();
    for id in stale {
        let task = running.remove(&id).expect("listed above");
        task.stop.cancel();
        let _ = task.task.await;
    }
    for (id, subscription) in wanted.drain() {
        // A backfill runs even while paused (feeding goes on); delivery does not.
        let idle = subscription.paused && !subscription.is_backfilling();
        if running.contains_key(&id) || idle {
            continue;
        }
        let stop = shutdown.child_token();
        let task = tokio::spawn(run(context.clone(), subscription.clone(), stop.clone()));
        running.insert(id, Running { subscription, stop, task });
    }
}

/// One subscription's task, until `stop`.
async fn run(context: Context, subscription: Subscription, stop: CancellationToken) {
    let name = subscription.name.clone();
    if subscription.is_backfilling() {
        let mut pause = Duration::from_millis(200);
        loop {
            match backfill::run(&context.pool, &subscription, context.settings.backfill_page, &stop)
                .await
            {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(subscription = %name, %error, "backfill failed; retrying")
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(pause) => pause = (pause * 2).min(Duration::from_secs(10)),
            }
        }
    }
    let settings = &context.settings;
    let destination = match subscription.destination.as_str() {
        "webhook" => Webhook::new(
            &subscription.url,
            subscription.secret.as_deref().unwrap_or_default(),
            Duration::from_millis(settings.webhook_timeout_ms),
        )
        .map(Destination::Webhook)
        .map_err(|error| error.to_string()),
        _ => Nats::connect(&subscription.url, Duration::from_millis(settings.nats_timeout_ms))
            .await
            .map(Destination::Nats)
            .map_err(|error| error.to_string()),
    };
    let destination = match destination {
        Ok(destination) => destination,
        Err(error) => {
            // Waits for the subscription to change (delete and create it again).
            tracing::error!(subscription = %name, %error, "cannot set up the destination");
            return stop.cancelled().await;
        }
    };
    let mut config = outbox_config(&settings.consumer);
    config.ordered = subscription.ordered;
    // One row per claim: the handler keeps a row's progress when it fails midway.
    config.batch_size = 1;
    let loops = if subscription.ordered { 1 } else { settings.consumer.concurrency.max(1) };
    let outbox = Outbox::new(context.pool.clone(), subscription.stage(), config);
    let deliverer = Deliverer::new(
        Arc::new(subscription),
        destination,
        context.pool.clone(),
        context.metrics.clone(),
        settings.webhook_max_events,
    );
    tracing::info!(subscription = %name, loops, "delivering");
    flush_event::run_workers(outbox, Arc::new(deliverer), context.waker.clone(), loops, stop).await;
}
