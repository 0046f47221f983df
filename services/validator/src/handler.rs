//! The validator's outbox handler: validate a claimed batch, hand valid events to `write`,
//! quarantine the rest, all in the hand-off transaction.

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, Utc};
use event_model::{ApplicationId, ErrorReason, Event, batch};
use eye_proto::v1::EventBatch;
use eye_service::{
    Settings,
    pipeline::{channel, header, stage},
    settings::UnknownTypePolicy,
};
use eye_telemetry::{
    metrics::{Metrics, ValidationMetrics},
    propagation,
};
use flush_event::{Claimed, Handler, Headers};
use sqlx::PgConnection;
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::{
    registry::{self, Registry, Schema},
    rules::TimestampRules,
    suppressions::Suppressions,
};

/// The reason counted for events refused by a suppression (`eye delete --suppress`).
pub const SUPPRESSED: &str = "suppressed";

#[derive(Debug, thiserror::Error)]
pub enum ValidatorError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0} events in the batch do not decode")]
    Undecodable(usize),
}

#[derive(Debug)]
pub struct Validator {
    rules: TimestampRules,
    /// `privacy.pii_key`: the key of hashed personal properties.
    pii_key: Option<Vec<u8>>,
    unknown_type_policy: UnknownTypePolicy,
    registry: Mutex<Registry>,
    suppressions: Mutex<Suppressions>,
    metrics: Metrics,
}

impl Validator {
    pub fn new(all: &Settings, metrics: Metrics) -> Self {
        let settings = &all.validator;
        Self {
            metrics,
            pii_key: all.privacy.pii_key(),
            rules: TimestampRules {
                future_tolerance: Duration::from_millis(settings.future_tolerance_ms),
                max_age: settings.max_age_ms.map(Duration::from_millis),
                retention: all.store.retention(),
            },
            unknown_type_policy: settings.unknown_type_policy,
            registry: Mutex::default(),
            suppressions: Mutex::default(),
        }
    }

    /// The schema version an event is valid against (0: no schema, accepted unvalidated), or why
    /// it is not valid.
    fn check(
        &self,
        schema: Option<&Schema>,
        event: &Event,
        received_at: DateTime<Utc>,
    ) -> Result<i32, (ErrorReason, String)> {
        self.rules.check(event.occurred_at, received_at)?;
        let Some(schema) = schema else {
            return match self.unknown_type_policy {
                UnknownTypePolicy::Accept => Ok(0),
                UnknownTypePolicy::Reject => Err((
                    ErrorReason::UnknownEventType,
                    format!("no schema is registered for {}", event.event_type),
                )),
            };
        };
        registry::validate(schema, &event.data_json)
            .map(|()| schema.version)
            .map_err(|message| (ErrorReason::SchemaViolation, message))
    }
}

/// A quarantined event, column by column.
#[derive(Default)]
struct Quarantine {
    application_id: Vec<Uuid>,
    event_id: Vec<Uuid>,
    session_id: Vec<Uuid>,
    category: Vec<String>,
    name: Vec<String>,
    data: Vec<String>,
    occurred_at: Vec<DateTime<Utc>>,
    received_at: Vec<DateTime<Utc>>,
    reason: Vec<&'static str>,
    message: Vec<String>,
}

impl Quarantine {
    fn push(
        &mut self,
        app: ApplicationId,
        received_at: DateTime<Utc>,
        event: Event,
        reason: ErrorReason,
        message: String,
    ) {
        self.application_id.push(app.0);
        self.event_id.push(event.event_id.0);
        self.session_id.push(event.session_id.0);
        self.category.push(event.event_type.category);
        self.name.push(event.event_type.name);
        self.data.push(event.data_json);
        self.occurred_at.push(event.occurred_at);
        self.received_at.push(received_at);
        self.reason.push(reason.code());
        self.message.push(message);
    }

    async fn insert(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        if self.event_id.is_empty() {
            return Ok(());
        }
        // One row per (application, event_id): an event that fails again after a replay updates
        // its row instead of adding another.
        sqlx::query(
            "INSERT INTO event_errors (application_id, event_id, session_id, category, name, data, \
                                       occurred_at, received_at, reason, message) \
             SELECT a, e, s, c, n, d::jsonb, o, r, why, m \
             FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], \
                         $7::timestamptz[], $8::timestamptz[], $9::text[], $10::text[]) \
                  AS t(a, e, s, c, n, d, o, r, why, m) \
             ON CONFLICT (application_id, event_id) DO UPDATE SET \
                 reason = excluded.reason, message = excluded.message, failed_at = now(), \
                 failures = event_errors.failures + 1, replay_outcome = 'still_invalid'",
        )
        .bind(&self.application_id)
        .bind(&self.event_id)
        .bind(&self.session_id)
        .bind(&self.category)
        .bind(&self.name)
        .bind(&self.data)
        .bind(&self.occurred_at)
        .bind(&self.received_at)
        .bind(&self.reason)
        .bind(&self.message)
        .execute(&mut *conn)
        .await?;
        sqlx::query("SELECT pg_notify($1, 'event_errors')")
            .bind(channel::STORED)
            .execute(conn)
            .await?;
        Ok(())
    }
}

/// Replayed events that passed: their `event_errors` rows are marked `stored` in the hand-off
/// that passes them to the writer. (Those that fail again are marked `still_invalid` by the
/// quarantine upsert.)
#[derive(Default)]
struct Replayed {
    application_id: Vec<Uuid>,
    event_id: Vec<Uuid>,
}

impl Replayed {
    fn push(&mut self, app: ApplicationId, event: &Event) {
        self.application_id.push(app.0);
        self.event_id.push(event.event_id.0);
    }

    async fn mark_stored(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        if self.event_id.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "UPDATE event_errors e SET replay_outcome = 'stored' \
             FROM UNNEST($1::uuid[], $2::uuid[]) AS r(application_id, event_id) \
             WHERE e.application_id = r.application_id AND e.event_id = r.event_id",
        )
        .bind(&self.application_id)
        .bind(&self.event_id)
        .execute(conn)
        .await?;
        Ok(())
    }
}

impl Handler for Validator {
    type Message = EventBatch;
    type Error = ValidatorError;

    fn split(&self, body: &EventBatch) -> Option<(EventBatch, EventBatch)> {
        batch::split(body)
    }

    /// The writer's wake-up, after the commit (`handle` enqueues unannounced).
    fn wake_ups(&self) -> &[(&'static str, &'static str)] {
        &[(flush_event::CHANNEL, stage::WRITE)]
    }

    fn is_transient(&self, error: &ValidatorError) -> bool {
        match error {
            ValidatorError::Database(error) => flush_event::is_transient(error),
            _ => false,
        }
    }

    async fn handle(
        &self,
        conn: &mut PgConnection,
        rows: &[Claimed<EventBatch>],
    ) -> Result<(), ValidatorError> {
        let mut registry = self.registry.lock().await;
        registry.refresh(conn).await?;
        let mut suppressions = self.suppressions.lock().await;
        suppressions.refresh(conn).await?;
        let mut valid: Vec<(EventBatch, Headers)> = Vec::with_capacity(rows.len());
        let mut quarantine = Quarantine::default();
        let mut replayed = Replayed::default();
        let mut undecodable = 0usize;
        // Quarantined events per (reason, registered type), counted once the batch is written.
        let mut errors: BTreeMap<(&'static str, String), u64> = BTreeMap::new();
        // One span per row, in the trace of the request that made it (its `traceparent`), kept
        // open until the batch is written.
        let mut spans = Vec::with_capacity(rows.len());
        for row in rows {
            let span = propagation::row_span(stage::VALIDATE, row, row.body.events.len());
            let entered = span.enter();
            let Ok((app, received_at)) = batch::decode_header(&row.body) else {
                undecodable += row.body.events.len();
                tracing::error!(row = row.id, "batch header does not decode");
                continue;
            };
            let replay = row.headers.contains_key(header::REPLAY);
            let mut passed = Vec::with_capacity(row.body.events.len());
            for event in row.body.events.iter().cloned() {
                let Ok((mut event, _)) = batch::decode_event(event) else {
                    undecodable += 1;
                    continue;
                };
                let schema = registry.get(&event.event_type);
                // Registered types are a bounded set; others are labelled `unregistered`.
                let label = || match &schema {
                    Some(_) => event.event_type.to_string(),
                    None => ValidationMetrics::UNREGISTERED_TYPE.to_owned(),
                };
                // Personal properties go before anything is checked or kept (ingest did it
                // already unless the schema is newer than its copy; twice changes nothing).
                if let Some(schema) = &schema {
                    schema.pii.apply(&mut event.data_json, self.pii_key.as_deref());
                }
                // A deleted subject's later events are refused, and kept nowhere.
                if suppressions.matches(app.0, &event) {
                    *errors.entry((SUPPRESSED, label())).or_default() += 1;
                    continue;
                }
                match self.check(schema.as_deref(), &event, received_at) {
                    Ok(version) => {
                        if replay {
                            replayed.push(app, &event);
                        }
                        passed.push((event, version))
                    }
                    Err((reason, message)) => {
                        *errors.entry((reason.code(), label())).or_default() += 1;
                        quarantine.push(app, received_at, event, reason, message)
                    }
                }
            }
            if !passed.is_empty() {
                // The writer's row continues this row's trace from this span.
                let mut headers = row.headers.clone();
                propagation::inject(&span, &mut headers);
                valid.push((batch::encode(app, received_at, passed), headers));
            }
            drop(entered);
            spans.push(span);
        }
        drop(registry);
        drop(suppressions);
        if undecodable > 0 {
            // Never drop silently: fail the hand-off so the row is retried and dead-lettered
            // (kept, with its body) rather than half-processed.
            return Err(ValidatorError::Undecodable(undecodable));
        }
        flush_event::flush_events_unannounced(
            conn,
            stage::WRITE,
            valid.iter().map(|(b, h)| (b, h)),
        )
        .await?;
        quarantine.insert(conn).await?;
        replayed.mark_stored(conn).await?;
        tracing::debug!(
            rows = rows.len(),
            quarantined = quarantine.event_id.len(),
            "batch validated"
        );
        // Counted when the hand-off's writes succeeded; a hand-off that still rolls back after
        // this (lease lost, commit failed) is redone and counted again: rare, and event_errors
        // holds the exact numbers.
        let events = rows.iter().map(|row| row.body.events.len()).sum();
        self.metrics.stage().observe_events(stage::VALIDATE, events);
        for ((reason, event_type), count) in errors {
            self.metrics.validation().quarantined(reason, event_type, count);
        }
        drop(spans);
        Ok(())
    }
}
