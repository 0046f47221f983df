//! The live tail: new events as they are stored, over server-sent events.
//!
//! Each stream LISTENs for the writer's `eye_stored` notification (and polls every second
//! anyway) and reads what was stored since its cursor. Writers' transactions commit out of
//! `stored_at` order, so every read goes back [`MARGIN`] before the cursor and drops the events
//! this stream has sent already: nothing committed late is skipped. The SSE id is the cursor, so
//! a browser that reconnects (`Last-Event-ID`) resumes where it was; the page drops the few
//! events it already shows. At most [`MAX_PER_READ`] events go out per read (and a read happens
//! on every notification, at least once a second); past that the stream says how many it
//! skipped (`event: skipped`) and jumps to the newest.

use std::{
    collections::{BTreeMap, HashMap},
    convert::Infallible,
    time::Duration,
};

use axum::{
    extract::{Query as Params, State},
    http::HeaderMap,
    response::sse::{Event, KeepAlive, Sse},
};
use chrono::{DateTime, Utc};
use eye_service::pipeline::channel;
use serde_json::json;
use tokio_stream::wrappers::ReceiverStream;
use uuid::Uuid;

use super::{Console, Failure, Signed, views::event_filter};
use crate::queries::{self, EventRow};

/// How far back each read looks before the cursor (longer than a writer's transaction).
const MARGIN: Duration = Duration::from_secs(5);
/// Most events sent per read.
const MAX_PER_READ: usize = 1_000;
/// Most rows read per read (the rest are counted as skipped).
const READ_LIMIT: i64 = 5_000;

pub(super) async fn stream(
    who: Signed,
    State(console): State<Console>,
    headers: HeaderMap,
    Params(params): Params<BTreeMap<String, String>>,
) -> Result<axum::response::Response, Failure> {
    let filter = console.query.event_filter(&who.readable(), event_filter(&params)?).await?;
    let resume = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok()?.parse::<i64>().ok())
        .and_then(DateTime::from_timestamp_micros);
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let pool = console.query.pool().clone();
    // Notifications come from the primary: a replica relays none.
    let primary = console.query.primary().clone();
    tokio::spawn(async move {
        let mut listener = sqlx::postgres::PgListener::connect_with(&primary).await.ok();
        if let Some(listener) = &mut listener {
            let _ = listener.listen(channel::STORED).await;
        }
        let margin = chrono::Duration::from_std(MARGIN).expect("small");
        let mut cursor = resume.unwrap_or_else(Utc::now);
        let mut sent: HashMap<Uuid, DateTime<Utc>> = HashMap::new();
        loop {
            let rows = match queries::tail(&pool, &filter, cursor - margin, READ_LIMIT).await {
                Ok(rows) => rows,
                Err(error) => {
                    tracing::warn!(%error, "live tail read failed");
                    Vec::new()
                }
            };
            let fresh: Vec<&EventRow> =
                rows.iter().filter(|row| !sent.contains_key(&row.event_id)).collect();
            let skipped = fresh.len().saturating_sub(MAX_PER_READ);
            if skipped > 0 || rows.len() as i64 == READ_LIMIT {
                let count = if rows.len() as i64 == READ_LIMIT {
                    format!("{skipped}+")
                } else {
                    skipped.to_string()
                };
                if tx.send(Ok(Event::default().event("skipped").data(count))).await.is_err() {
                    return;
                }
            }
            for row in fresh.iter().skip(skipped) {
                sent.insert(row.event_id, row.stored_at);
                cursor = cursor.max(row.stored_at);
                let event = Event::default()
                    .id(row.stored_at.timestamp_micros().to_string())
                    .event("stored")
                    .data(message(row).to_string());
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            if let Some(last) = rows.last() {
                cursor = cursor.max(last.stored_at);
            }
            sent.retain(|_, at| *at >= cursor - margin);
            let notified = async {
                match &mut listener {
                    Some(listener) => {
                        let _ = listener.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = tx.closed() => return,
            }
        }
    });
    let stream: ReceiverStream<Result<Event, Infallible>> = ReceiverStream::new(rx);
    Ok(axum::response::IntoResponse::into_response(
        Sse::new(stream).keep_alive(KeepAlive::default()),
    ))
}

fn message(row: &EventRow) -> serde_json::Value {
    let data: serde_json::Value =
        serde_json::from_str(&row.data).unwrap_or(serde_json::Value::Null);
    json!({
        "event_id": row.event_id, "application_id": row.application_id, "session_id": row.session_id,
        "category": row.category, "name": row.name, "data": data,
        "occurred_at": row.occurred_at, "received_at": row.received_at, "stored_at": row.stored_at,
        "schema_version": row.schema_version,
    })
}
