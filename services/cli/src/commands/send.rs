//! `eye send`: one event to an ingest server, with its result printed.
//!
//! Exits with an error if the server refuses the call (bad key, unreachable) or rejects the event,
//! so scripts can rely on the exit status.

use anyhow::bail;
use chrono::Utc;
use eye_client::{self as client, Client};
use eye_proto::v1::{Event, EventStatus};
use uuid::Uuid;

use crate::cli::SendArgs;

/// Runs `eye send`.
pub async fn run(args: SendArgs) -> anyhow::Result<()> {
    let client = Client::connect(args.endpoint.clone(), &args.key).await?;
    let session_id = args.session.unwrap_or_else(Uuid::new_v4);
    let event = Event {
        event_id: args.event_id.map(|id| id.to_string()).unwrap_or_default(),
        session_id: session_id.to_string(),
        category: args.category,
        name: args.name,
        data_json: args.data,
        timestamp: Some(event_model::envelope::to_timestamp(
            args.timestamp.unwrap_or_else(Utc::now),
        )),
    };
    let results = client.send(vec![event]).await.map_err(|status| {
        anyhow::anyhow!(
            "{} refused the events: {}",
            args.endpoint,
            client::describe_status(&status)
        )
    })?;
    let mut rejected = 0;
    for result in &results {
        let status = client::status_name(result.status);
        if result.reason.is_empty() {
            println!("{status} event {} (session {session_id})", result.event_id);
        } else {
            println!(
                "{status} event {} (session {session_id}): {}",
                result.event_id, result.reason
            );
        }
        if result.status != EventStatus::Accepted as i32
            && result.status != EventStatus::Duplicate as i32
        {
            rejected += 1;
        }
    }
    if rejected > 0 {
        bail!("{rejected} of {} event(s) not accepted", results.len());
    }
    Ok(())
}
