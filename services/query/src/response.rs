//! Building read-path answers: rows become protobuf messages, pages are cut by count and by
//! encoded size. Pure functions, shared by every transport.

use std::time::Duration;

use chrono::{DateTime, Utc};
use event_model::envelope::to_timestamp;
use eye_proto::v1 as pb;
use eye_service::pipeline::stage;
use prost::Message;
use uuid::Uuid;

use crate::{
    queries::{self, ErrorRow, EventRow, Outcome},
    request::MAX_PAGE_BYTES,
};

/// The first `page_size` rows as messages, cut short before [`MAX_PAGE_BYTES`]; with the last row
/// taken when more rows follow (`rows` holds one more than a page when there is a next page).
pub(crate) fn page<R, M: Message>(
    rows: Vec<R>,
    page_size: i32,
    to_message: impl Fn(&R) -> M,
) -> (Vec<M>, Option<R>) {
    let total = rows.len();
    let mut messages = Vec::with_capacity(total.min(page_size as usize));
    let mut bytes = 0usize;
    let mut last = None;
    for row in rows {
        if messages.len() == page_size as usize {
            break;
        }
        let message = to_message(&row);
        // Field tag, length prefix and the message itself.
        let size = 1 + prost::length_delimiter_len(message.encoded_len()) + message.encoded_len();
        if !messages.is_empty() && bytes + size > MAX_PAGE_BYTES {
            break;
        }
        bytes += size;
        messages.push(message);
        last = Some(row);
    }
    let more = messages.len() < total;
    (messages, if more { last } else { None })
}

pub(crate) fn event_message(row: &EventRow) -> pb::StoredEvent {
    pb::StoredEvent {
        event_id: row.event_id.to_string(),
        session_id: row.session_id.to_string(),
        application_id: row.application_id.to_string(),
        category: row.category.clone(),
        name: row.name.clone(),
        data_json: row.data.clone(),
        timestamp: Some(to_timestamp(row.occurred_at)),
        received_at: Some(to_timestamp(row.received_at)),
        stored_at: Some(to_timestamp(row.stored_at)),
        schema_version: row.schema_version.unwrap_or(0),
    }
}

pub(crate) fn error_message(row: &ErrorRow) -> pb::EventError {
    let outcome = match Outcome::from_code(row.replay_outcome.as_deref()) {
        Some(Outcome::NotReplayed) => pb::ReplayOutcome::NotReplayed,
        Some(Outcome::Pending) => pb::ReplayOutcome::Pending,
        Some(Outcome::Stored) => pb::ReplayOutcome::Stored,
        Some(Outcome::StillInvalid) => pb::ReplayOutcome::StillInvalid,
        None => pb::ReplayOutcome::Unspecified,
    };
    pb::EventError {
        id: row.id,
        application_id: row.application_id.to_string(),
        event_id: row.event_id.to_string(),
        session_id: row.session_id.to_string(),
        category: row.category.clone(),
        name: row.name.clone(),
        data_json: row.data.clone(),
        timestamp: Some(to_timestamp(row.occurred_at)),
        received_at: Some(to_timestamp(row.received_at)),
        reason: row.reason.clone(),
        message: row.message.clone(),
        failed_at: Some(to_timestamp(row.failed_at)),
        failures: row.failures,
        replayed_at: row.replayed_at.map(to_timestamp),
        replay_outcome: outcome.into(),
    }
}

pub(crate) fn seconds(value: f64) -> prost_types::Duration {
    let duration = Duration::try_from_secs_f64(value.max(0.0)).unwrap_or_default();
    prost_types::Duration {
        seconds: duration.as_secs() as i64,
        nanos: duration.subsec_nanos() as i32,
    }
}

pub(crate) fn session_message(session: &queries::SessionRow) -> pb::SessionSummary {
    pb::SessionSummary {
        session_id: session.session_id.to_string(),
        first_seen_at: Some(to_timestamp(session.first_seen_at)),
        last_seen_at: Some(to_timestamp(session.last_seen_at)),
        event_count: session.event_count,
        application_ids: session.application_ids.iter().map(Uuid::to_string).collect(),
    }
}

/// The `GetStats` answer from the store's numbers since `since`; every stage of the pipeline
/// is reported, empty ones as 0.
pub(crate) fn stats_message(stats: queries::Stats, since: DateTime<Utc>) -> pb::GetStatsResponse {
    let mut stages: Vec<pb::StageStats> = stats
        .stages
        .iter()
        .map(|stage| pb::StageStats {
            stage: stage.stage.clone(),
            depth: stage.depth,
            in_flight: stage.in_flight,
            lag: Some(seconds(stage.oldest_age_seconds)),
            dead_letters: stage.dead_letters,
        })
        .collect();
    for stage in stage::ALL {
        if !stages.iter().any(|s| s.stage == *stage) {
            stages.push(pb::StageStats {
                stage: (*stage).to_owned(),
                lag: Some(seconds(0.0)),
                ..pb::StageStats::default()
            });
        }
    }
    stages.sort_by(|a, b| a.stage.cmp(&b.stage));
    let dead_letters = stages.iter().map(|s| s.dead_letters).sum();
    let errors = stats.errors_by_reason.iter().map(|(_, count)| count).sum();
    pb::GetStatsResponse {
        stages,
        since: Some(to_timestamp(since)),
        events_stored: stats.events_stored,
        errors,
        errors_by_reason: stats
            .errors_by_reason
            .into_iter()
            .map(|(reason, count)| pb::ReasonCount { reason, count })
            .collect(),
        dead_letters,
        // Set by the caller when it reads from a replica.
        replica_lag: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_stop_at_the_size_and_report_the_last_row() {
        let message = |n: &u32| pb::ReasonCount { reason: n.to_string(), count: 0 };
        let (messages, last) = page(vec![1u32, 2, 3], 2, message);
        assert_eq!((messages.len(), last), (2, Some(2)));
        let (messages, last) = page(vec![1u32, 2], 2, message);
        assert_eq!((messages.len(), last), (2, None));
        let (messages, last) = page(Vec::<u32>::new(), 2, message);
        assert_eq!((messages.len(), last), (0, None));
    }

    #[test]
    fn pages_stop_before_the_byte_limit() {
        let big = |_: &u32| pb::ReasonCount { reason: "x".repeat(1024 * 1024), count: 0 };
        let (messages, last) = page(vec![1u32, 2, 3, 4, 5], 5, big);
        assert_eq!((messages.len(), last), (3, Some(3)));
    }
}
