//! `eye-relay`: the other half of a producer's transactional outbox. A producer service (a card
//! service, a user service) writes its rows and, in the same transaction, enqueues an
//! `eye.v1.Event` into stage `eye` of the outbox installed in its own database
//! (`eye outbox migrate`). The relay claims those rows under a lease, sends them to The Eye's
//! ingest through `eye-client`, and acks (deletes) them only once ingest answered ACCEPTED or
//! DUPLICATE; a REJECTED event is dead-lettered in the producer's outbox with its reason (the
//! dead-letter commands show it). The producer's `event_id` is the idempotency key end to end,
//! so a relay killed between the answer and the ack sends again and is answered DUPLICATE.
//!
//! It is a consumer stage like the validator and the writer ([`eye_service::consumer`]): leases,
//! several relays at once, retries with backoff, poison isolation, dead letters, metrics and the
//! SIGTERM drain come with the shell. While ingest is unreachable, a batch is retried with
//! backoff for `relay.retry_budget_ms`, then released and claimed again.

use std::time::Duration;

use clap::Args;
use eye_client::{Client, ConnectOptions, Delivery, RetryPolicy};
use eye_proto::v1::{Event, EventStatus};
use eye_service::{
    Settings,
    consumer::{ConsumerService, Stage},
    pipeline::stage,
    settings::ConsumerSettings,
};
use eye_telemetry::metrics::Metrics;
use flush_event::{Claimed, Handler};
use secrecy::ExposeSecret;
use sqlx::{PgConnection, PgPool};

/// What `eye relay` and `eye-relay` take (also from the environment).
#[derive(Debug, Clone, Args)]
pub struct RelayArgs {
    /// The producer's database, where `eye outbox migrate` installed the outbox.
    #[arg(long, env = "EYE_RELAY_SOURCE", value_name = "DATABASE_URL", hide_env_values = true)]
    pub source: String,
    /// The schema of the producer's outbox tables.
    #[arg(long, env = "EYE_RELAY_SCHEMA", default_value = "eye")]
    pub schema: String,
    /// The Eye's ingest endpoint.
    #[arg(long, env = "EYE_ENDPOINT", default_value = "http://127.0.0.1:50051")]
    pub endpoint: String,
    /// The producer application's API key (role ingest).
    #[arg(long, env = "EYE_API_KEY", hide_env_values = true)]
    pub key: Option<String>,
}

impl RelayArgs {
    /// `settings` with these arguments in force.
    pub fn apply(&self, mut settings: Settings) -> Result<Settings, RelayError> {
        flush_event::install::check_schema(&self.schema)
            .map_err(|error| RelayError::Config(error.to_string()))?;
        settings.database.url = Some(self.source.clone().into());
        settings.database.search_path = Some(self.schema.clone());
        settings.relay.schema = self.schema.clone();
        settings.relay.endpoint = self.endpoint.clone();
        if let Some(key) = &self.key {
            settings.relay.api_key = Some(key.clone().into());
        }
        Ok(settings)
    }
}

/// Why a batch was not handed off.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("invalid relay configuration: {0}")]
    Config(String),
    /// Ingest refused the batch as a whole for its size: the rows are tried one by one.
    #[error("ingest refused the batch as too large: {0}")]
    TooLarge(String),
    /// Ingest refused the key (or answered something retrying cannot fix): nothing is
    /// dead-lettered for it; the rows wait until the configuration is fixed.
    #[error("ingest refused the relay: {0}")]
    Refused(String),
    #[error("ingest is unreachable: {0}")]
    Unreachable(String),
    #[error("the outbox: {0}")]
    Database(#[from] sqlx::Error),
}

/// The relay's stage: one `SendEvents` per claimed batch.
#[derive(Debug)]
pub struct Relay {
    client: Client,
    policy: RetryPolicy,
}

impl Relay {
    /// A relay of `settings.relay`; fails on a missing key or a malformed endpoint.
    pub fn new(settings: &Settings) -> Result<Self, RelayError> {
        let relay = &settings.relay;
        let key =
            relay.api_key.as_ref().map(|key| key.expose_secret().to_owned()).ok_or_else(|| {
                RelayError::Config("no API key: set EYE_API_KEY or pass --key".into())
            })?;
        let client = Client::lazy(&relay.endpoint, &key, &ConnectOptions::default())
            .map_err(|error| RelayError::Config(error.to_string()))?;
        let policy = RetryPolicy {
            budget: Duration::from_millis(relay.retry_budget_ms),
            ..Default::default()
        };
        Ok(Self { client, policy })
    }
}

impl Handler for Relay {
    type Message = Event;
    type Error = RelayError;

    async fn handle(
        &self,
        conn: &mut PgConnection,
        rows: &[Claimed<Event>],
    ) -> Result<(), RelayError> {
        let events: Vec<Event> = rows.iter().map(|row| row.body.clone()).collect();
        match self.client.send_retrying(&events, &self.policy).await {
            Delivery::Answered(results) => {
                for (row, result) in rows.iter().zip(&results) {
                    match result.status() {
                        EventStatus::Accepted | EventStatus::Duplicate => {}
                        _ => {
                            tracing::warn!(row = row.id, reason = %result.reason, "event rejected by ingest; dead-lettered");
                            let reason = format!("rejected by ingest: {}", result.reason);
                            flush_event::dead_letter_in_hand_off(conn, row.id, &reason).await?;
                        }
                    }
                }
                Ok(())
            }
            Delivery::TooLarge(status) => Err(RelayError::TooLarge(status.message().to_owned())),
            Delivery::Refused(status) => {
                tracing::error!(code = ?status.code(), message = status.message(), "ingest refuses the relay; check its key");
                Err(RelayError::Refused(eye_client::describe_status(&status)))
            }
            Delivery::GaveUp(status) => {
                Err(RelayError::Unreachable(eye_client::describe_status(&status)))
            }
        }
    }

    /// A refused key and an unreachable ingest are the configuration's or the network's fault,
    /// not the rows': they are released without being charged an attempt.
    fn is_transient(&self, error: &RelayError) -> bool {
        match error {
            RelayError::Refused(_) | RelayError::Unreachable(_) => true,
            RelayError::Database(error) => flush_event::is_transient(error),
            RelayError::Config(_) | RelayError::TooLarge(_) => false,
        }
    }
}

impl Stage for Relay {}

/// The relay as a consumer of the producer's stage `eye`.
#[derive(Debug)]
pub struct RelayService;

impl ConsumerService for RelayService {
    const STAGE: &'static str = stage::PRODUCER;
    type Stage = Relay;

    fn consumer_settings(settings: &Settings) -> &ConsumerSettings {
        &settings.relay.consumer
    }

    fn stage(settings: &Settings, _pool: &PgPool, _metrics: &Metrics) -> Relay {
        Relay::new(settings).expect("checked by `build`")
    }
}

/// A built relay.
pub type Application = eye_service::consumer::Application<RelayService>;

/// Builds and runs a relay with `args` over `settings` until `shutdown`; checks the
/// configuration first, so a missing key is an error at start, not a crash later.
pub async fn run(
    settings: Settings,
    args: &RelayArgs,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let settings = args.apply(settings)?;
    Relay::new(&settings)?;
    tracing::info!(schema = %settings.relay.schema, endpoint = %settings.relay.endpoint, "relay starting");
    Application::build(settings).await?.run_until_stopped(shutdown).await?;
    Ok(())
}
