//! `eye send`: one event through the eye client, with its outcome printed.
//!
//! The event's id is assigned here (a UUIDv7, or `--event-id`) before anything is sent, and a
//! retry (the client retries UNAVAILABLE and the like for up to 10 s) carries the same id, so a
//! lost answer cannot store the event twice. Exits with an error if the server refuses the call
//! (bad key), the event is rejected, or delivery cannot be confirmed, so scripts can rely on the
//! exit status.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{anyhow, bail};
use eye_client::{Client, Config, ConnectError, EyeClient, NewEvent, OutcomeKind};
use uuid::Uuid;

use crate::cli::SendArgs;

/// How long `eye send` keeps retrying before it gives up on the event.
const RETRY_BUDGET: Duration = Duration::from_secs(10);

/// Runs `eye send`.
pub async fn run(args: SendArgs) -> anyhow::Result<()> {
    let data: serde_json::Value = serde_json::from_str(&args.data)
        .map_err(|error| anyhow!("--data is not valid JSON ({error}); pass a JSON object, e.g. --data '{{\"path\": \"/\"}}'"))?;
    if !data.is_object() {
        bail!("--data must be a JSON object, e.g. --data '{{\"path\": \"/\"}}'");
    }
    // Fail fast, saying what to do, when nothing listens or the key cannot be sent.
    Client::connect(args.endpoint.clone(), crate::cli::api_key(&args.key)?).await.map_err(
        |error| match error {
            ConnectError::Connect { endpoint, .. } => anyhow!(
                "cannot connect to the ingest server at {endpoint}: is eye-ingest (or `eye dev`) \
             running? (--endpoint or EYE_ENDPOINT)"
            ),
            other => other.into(),
        },
    )?;
    let outcome = Arc::new(Mutex::new(None));
    let mut config = Config::new(args.endpoint.clone(), crate::cli::api_key(&args.key)?);
    config.linger = Duration::ZERO;
    config.retry.budget = RETRY_BUDGET;
    config.on_outcome = Some(Arc::new({
        let outcome = outcome.clone();
        move |o: &eye_client::Outcome| *outcome.lock().expect("outcome") = Some(o.kind.clone())
    }));
    let client = EyeClient::start(config)?;
    let session_id = args.session.unwrap_or_else(Uuid::new_v4);
    let event = NewEvent {
        category: args.category,
        name: args.name,
        data_json: args.data,
        session_id: Some(session_id),
        timestamp: args.timestamp,
        event_id: args.event_id,
    };
    let event_id = client.track_event(event).await?;
    client.flush().await?;
    client.shutdown(Duration::from_secs(1)).await;
    let outcome = outcome.lock().expect("outcome").take();
    match outcome {
        Some(OutcomeKind::Accepted) => println!("ACCEPTED event {event_id} (session {session_id})"),
        Some(OutcomeKind::Duplicate) => println!(
            "DUPLICATE event {event_id} (session {session_id}): already stored, nothing changed"
        ),
        Some(OutcomeKind::Rejected(reason)) => {
            println!("REJECTED event {event_id} (session {session_id}): {reason}");
            bail!("the event was not accepted: {reason}");
        }
        Some(OutcomeKind::Failed(reason) | OutcomeKind::Dropped(reason)) => {
            bail!("{} refused the event: {reason}", args.endpoint)
        }
        None => bail!("no answer from {} for event {event_id}", args.endpoint),
    }
    Ok(())
}
