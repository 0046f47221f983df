//! `eye-delivery` against a real pipeline, a real Postgres, a webhook receiver on a real socket
//! and real nats-server processes.
//!
//! - `webhook`: filters, signatures, the body, refusals isolated and dead-lettered, 410, 429,
//!   backfill and order.
//! - `nats`: JetStream publishes, one node and a 3-node cluster losing a node.
//! - `crash`: 200,000 events through three subscriptions while `eye-delivery` processes are
//!   killed with SIGKILL (and stopped with SIGTERM) and restarted.

mod crash;
mod nats;
mod nats_server;
mod receiver;
mod webhook;

use std::time::Duration;

use chrono::Utc;
use eye_admin::subscriptions::{self, Created, Destination, Filter, NewSubscription};
use eye_e2e::{Pipeline, authorized, db_with_key, event};
use eye_proto::v1::{EventResult, SendEventsRequest};
use eye_test_support::TestDb;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A pipeline (ingest, a validator, a writer) with a key of the application `shop`.
#[derive(Debug)]
pub(crate) struct Env {
    pub(crate) db: TestDb,
    pub(crate) pipeline: Pipeline,
    pub(crate) key: String,
}

/// Settings with fast polling, short leases and quick retries.
pub(crate) fn settings(db: &TestDb) -> eye_service::Settings {
    let mut settings = Pipeline::settings(db);
    let consumer = &mut settings.delivery.consumer;
    consumer.poll_interval_ms = 200;
    consumer.backoff_base_ms = 50;
    consumer.backoff_max_ms = 400;
    consumer.lease_ms = 3_000;
    consumer.max_attempts = 50;
    settings.delivery.refresh_ms = 500;
    settings.delivery.webhook_timeout_ms = 1_000;
    settings.delivery.webhook_max_events = 100;
    settings
}

impl Env {
    pub(crate) async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// [`start`](Self::start) with the pipeline's settings adjusted by `adjust`.
    pub(crate) async fn start_with(adjust: impl FnOnce(&mut eye_service::Settings)) -> Self {
        let (db, _, key) = db_with_key("shop", &["ingest", "read"]).await;
        let mut settings = settings(&db);
        adjust(&mut settings);
        let pipeline = Pipeline::start_with(settings, 1, 1, false).await;
        Self { db, pipeline, key }
    }

    /// Sends `events` (in batches of 500) and checks every one was accepted.
    pub(crate) async fn send(&self, events: Vec<eye_proto::v1::Event>) {
        let mut client = self.pipeline.client().await;
        for batch in events.chunks(500) {
            let results = send_batch(&mut client, &self.key, batch).await;
            assert!(
                results.iter().all(|r| r.status() == eye_proto::v1::EventStatus::Accepted),
                "{results:?}"
            );
        }
    }

    /// Waits until `n` events are stored.
    pub(crate) async fn stored(&self, n: i64) {
        eye_test_support::wait_for(
            &self.db.pool,
            Duration::from_secs(120),
            "events stored",
            || async {
                let stored = eye_e2e::count(&self.db.pool, "SELECT count(*) FROM events").await;
                (stored >= n).then_some(())
            },
        )
        .await;
    }

    /// Runs a delivery service in this process until the returned token is cancelled.
    pub(crate) async fn delivery(&self) -> Delivery {
        Delivery::start(settings(&self.db)).await
    }
}

/// Sends one batch as a well-behaved client does: an answer of UNAVAILABLE or
/// RESOURCE_EXHAUSTED (a busy machine running the whole test suite) is retried after a pause.
pub(crate) async fn send_batch(
    client: &mut eye_proto::v1::ingest_service_client::IngestServiceClient<
        tonic::transport::Channel,
    >,
    key: &str,
    batch: &[eye_proto::v1::Event],
) -> Vec<EventResult> {
    let mut pause = Duration::from_millis(100);
    loop {
        let request = SendEventsRequest { events: batch.to_vec(), sent_at: None };
        match client.send_events(authorized(request, key)).await {
            Ok(answer) => return answer.into_inner().results,
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::ResourceExhausted
                ) =>
            {
                // Backoff of a retrying client, not a wait for some state.
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(status) => panic!("send: {status:?}"),
        }
    }
}

/// An in-process `eye-delivery`.
#[derive(Debug)]
pub(crate) struct Delivery {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Delivery {
    pub(crate) async fn start(settings: eye_service::Settings) -> Self {
        let app = eye_delivery::Application::build(settings).await.expect("build delivery");
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task =
            tokio::spawn(async move { app.run_until_stopped(token).await.expect("delivery") });
        Self { stop, task }
    }

    pub(crate) async fn stop(self) {
        self.stop.cancel();
        self.task.await.expect("delivery stopped");
    }
}

/// Creates a subscription through `eye_admin`, as `eye subscriptions create` does.
pub(crate) async fn subscribe(
    db: &TestDb,
    name: &str,
    destination: Destination,
    filter: Filter,
    from: Option<chrono::DateTime<Utc>>,
    ordered: bool,
) -> Created {
    let new = NewSubscription { name: name.into(), destination, filter, from, ordered };
    subscriptions::create(&db.pool, &new).await.expect("create subscription")
}

/// A filter on the payload's `client`.
pub(crate) fn client(name: &str) -> Filter {
    Filter { contains: Some(json!({ "client": name })), ..Default::default() }
}

/// `n` events of `client`, numbered from `from` in `data.n`, one session each client.
pub(crate) fn events_of(client: &str, from: usize, n: usize) -> Vec<eye_proto::v1::Event> {
    let session = Uuid::new_v5(&Uuid::NAMESPACE_OID, client.as_bytes());
    (from..from + n)
        .map(|i| {
            event(
                session,
                "page interaction",
                "click",
                json!({ "client": client, "n": i }),
                Utc::now(),
            )
        })
        .collect()
}

/// The event ids of a receiver's accepted batches, in arrival order.
pub(crate) fn ids(seen: &[receiver::Seen]) -> Vec<String> {
    seen.iter()
        .flat_map(|s| s.events.iter().map(|e| e["event_id"].as_str().unwrap().to_owned()))
        .collect()
}

/// The subscription's state as `eye subscriptions list` shows it.
pub(crate) async fn status(db: &TestDb, name: &str) -> subscriptions::SubscriptionStatus {
    subscriptions::list(&db.pool)
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.name == name)
        .expect("the subscription")
}
