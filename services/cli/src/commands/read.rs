//! What the read commands (`events`, `session`, `errors`, `replay`, `stats`) share: connecting to
//! the query server, turning its refusals into messages that say what to do, and printing events
//! and errors as table rows or JSON lines.
//!
//! JSON output is one object per line, each with a `"kind"` (`event`, `session`, `error`,
//! `reason_count`, `replay`, `stats`), so mixed output filters with `jq 'select(.kind == "event")'`.
//! Times are RFC 3339 in UTC with their full precision; a payload is the JSON object itself
//! (`data`), for stored and quarantined events alike.

use chrono::{DateTime, Utc};
use eye_client::{self as client, ConnectError, QueryClient};
use eye_proto::v1::{EventError, ReplayOutcome, StoredEvent};
use serde_json::{Value, json};
use tonic::{Code, Status};

use crate::{
    cli::QueryArgs,
    time::{format_millis, format_precise},
};

/// Widest payload shown in a table cell; `--json` shows all of it.
const DATA_CELL_CHARS: usize = 80;

/// Connects to the query server of `args`.
pub async fn connect(args: &QueryArgs) -> anyhow::Result<QueryClient> {
    QueryClient::connect(args.endpoint.clone(), crate::cli::api_key(&args.key)?).await.map_err(
        |error| match error {
            ConnectError::Connect { endpoint, .. } => anyhow::anyhow!(
                "cannot connect to the query server at {endpoint}: is eye-query (or `eye dev`) \
             running? (--query-endpoint or EYE_QUERY_ENDPOINT)"
            ),
            other => other.into(),
        },
    )
}

/// A refused call as a message that says what to do.
pub fn refused(args: &QueryArgs, status: &Status) -> anyhow::Error {
    let hint = match status.code() {
        Code::Unauthenticated => "; set EYE_API_KEY (or --key) to a key issued by `eye apps`",
        Code::PermissionDenied => {
            "; read commands need a key with the `read` role: `eye apps key NAME --role read`"
        }
        Code::Unavailable => "; is the query server (and its database) up?",
        _ => "",
    };
    anyhow::anyhow!("{}: {}{hint}", args.endpoint, client::describe_status(status))
}

/// Appends `value` to `out` as one line.
pub fn push_json(out: &mut String, value: &Value) {
    out.push_str(&value.to_string());
    out.push('\n');
}

/// Writes a command's output to stdout at once. A reader that went away (`eye events --json |
/// head -1`) ends the command quietly: see [`crate::run`].
pub fn emit(out: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes())?;
    stdout.flush()
}

pub fn time(timestamp: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    timestamp.and_then(event_model::envelope::to_datetime)
}

fn precise(timestamp: Option<&prost_types::Timestamp>) -> Value {
    time(timestamp).map_or(Value::Null, |at| Value::String(format_precise(at)))
}

fn millis(timestamp: Option<&prost_types::Timestamp>) -> String {
    time(timestamp).map_or_else(|| "-".to_owned(), format_millis)
}

/// `text` cut to `max` characters, with an ellipsis when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// A payload as JSON output shows it: the JSON value itself. Stored and quarantined payloads are
/// `jsonb`, so they parse; the text is kept if a server ever says otherwise.
fn payload(data_json: &str) -> Value {
    serde_json::from_str(data_json).unwrap_or_else(|_| Value::String(data_json.to_owned()))
}

/// A stored event as a JSON line.
pub fn event_json(event: &StoredEvent) -> Value {
    let data = payload(&event.data_json);
    json!({
        "kind": "event",
        "event_id": event.event_id,
        "session_id": event.session_id,
        "application_id": event.application_id,
        "category": event.category,
        "name": event.name,
        "timestamp": precise(event.timestamp.as_ref()),
        "received_at": precise(event.received_at.as_ref()),
        "stored_at": precise(event.stored_at.as_ref()),
        "schema_version": (event.schema_version > 0).then_some(event.schema_version),
        "data": data,
    })
}

pub const EVENT_HEADER: [&str; 5] = ["TIME", "CATEGORY", "NAME", "SESSION", "DATA"];

pub fn event_row(event: &StoredEvent) -> [String; 5] {
    [
        millis(event.timestamp.as_ref()),
        event.category.clone(),
        event.name.clone(),
        event.session_id.clone(),
        truncate(&event.data_json, DATA_CELL_CHARS),
    ]
}

pub fn outcome_name(outcome: ReplayOutcome) -> &'static str {
    match outcome {
        ReplayOutcome::Unspecified => "unspecified",
        ReplayOutcome::NotReplayed => "not_replayed",
        ReplayOutcome::Pending => "pending",
        ReplayOutcome::Stored => "stored",
        ReplayOutcome::StillInvalid => "still_invalid",
    }
}

/// A quarantined event as a JSON line.
pub fn error_json(error: &EventError) -> Value {
    json!({
        "kind": "error",
        "id": error.id,
        "reason": error.reason,
        "message": error.message,
        "failed_at": precise(error.failed_at.as_ref()),
        "failures": error.failures,
        "replay_outcome": outcome_name(error.replay_outcome()),
        "replayed_at": precise(error.replayed_at.as_ref()),
        "event_id": error.event_id,
        "session_id": error.session_id,
        "application_id": error.application_id,
        "category": error.category,
        "name": error.name,
        "timestamp": precise(error.timestamp.as_ref()),
        "received_at": precise(error.received_at.as_ref()),
        "data": payload(&error.data_json),
    })
}

pub const ERROR_HEADER: [&str; 7] =
    ["ID", "FAILED AT", "REASON", "CATEGORY", "NAME", "REPLAY", "MESSAGE"];

pub fn error_row(error: &EventError) -> [String; 7] {
    [
        error.id.to_string(),
        millis(error.failed_at.as_ref()),
        error.reason.clone(),
        error.category.clone(),
        error.name.clone(),
        outcome_name(error.replay_outcome()).to_owned(),
        truncate(&error.message, DATA_CELL_CHARS),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_cells_are_cut_with_an_ellipsis() {
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcd", 3), "ab…");
        assert_eq!(truncate("ééééé", 4), "ééé…");
    }

    #[test]
    fn events_print_their_payload_as_json() {
        let event = StoredEvent {
            event_id: "e".into(),
            data_json: r#"{"path": "/"}"#.into(),
            timestamp: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 1_000 }),
            ..StoredEvent::default()
        };
        let line = event_json(&event);
        assert_eq!(line["kind"], "event");
        assert_eq!(line["data"]["path"], "/");
        assert_eq!(line["timestamp"], "2023-11-14T22:13:20.000001Z");
        assert_eq!(line["stored_at"], Value::Null);
        assert_eq!(line["schema_version"], Value::Null);
    }
}
