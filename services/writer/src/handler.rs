//! The writer's outbox handler.

use event_model::batch;
use eye_proto::v1::EventBatch;
use eye_service::{
    consumer::Stage,
    pipeline::{channel, stage},
};
use eye_telemetry::{metrics::Metrics, propagation};
use flush_event::{Claimed, Handler};
use sqlx::{PgConnection, PgPool};

use crate::store::{self, Partitions, Rows};

#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the batch does not decode: {0}")]
    Undecodable(#[from] batch::DecodeError),
}

#[derive(Debug)]
pub struct Writer {
    pool: PgPool,
    partitions: Partitions,
    metrics: Metrics,
    /// `writer.gin_pending_list_kb`.
    gin_pending_list_kb: u32,
}

impl Writer {
    pub fn new(
        pool: PgPool,
        partitions: Partitions,
        metrics: Metrics,
        gin_pending_list_kb: u32,
    ) -> Self {
        Self { pool, partitions, metrics, gin_pending_list_kb }
    }
}

impl Stage for Writer {
    async fn prepare(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        self.partitions.ensure_ahead(pool).await
    }
}

impl Handler for Writer {
    type Message = EventBatch;
    type Error = WriterError;

    /// The console's live tail (`channel::STORED`), after the commit: a NOTIFY inside the
    /// hand-off would serialise every commit on the server (`flush_events_unannounced`).
    fn wake_ups(&self) -> &[(&'static str, &'static str)] {
        &[(channel::STORED, "events")]
    }

    fn split(&self, body: &EventBatch) -> Option<(EventBatch, EventBatch)> {
        batch::split(body)
    }

    fn is_transient(&self, error: &WriterError) -> bool {
        match error {
            WriterError::Database(error) => {
                flush_event::is_transient(error) || store::is_missing_partition(error)
            }
            _ => false,
        }
    }

    async fn handle(
        &self,
        conn: &mut PgConnection,
        rows: &[Claimed<EventBatch>],
    ) -> Result<(), WriterError> {
        let mut events = Vec::with_capacity(rows.iter().map(|r| r.body.events.len()).sum());
        // One span per row, in the trace of the request that made it (the validator's
        // `traceparent`), kept open until the batch is written.
        let mut spans = Vec::with_capacity(rows.len());
        for row in rows {
            let span = propagation::row_span(stage::WRITE, row, row.body.events.len());
            let entered = span.enter();
            let (app, received_at) = batch::decode_header(&row.body)?;
            for event in row.body.events.iter().cloned() {
                let (event, version) = batch::decode_event(event)?;
                events.push((app, received_at, event, version));
            }
            drop(entered);
            spans.push(span);
        }
        events.sort_unstable_by_key(|(app, _, event, _)| (*app, event.event_id));
        let times: Vec<_> = events.iter().map(|(_, _, event, _)| event.occurred_at).collect();
        self.partitions.ensure(&self.pool, &times).await?;

        let mut columns = Rows::default();
        for (app, received_at, event, version) in events {
            columns.application_id.push(app.0);
            columns.event_id.push(event.event_id.0);
            columns.session_id.push(event.session_id.0);
            columns.category.push(event.event_type.category);
            columns.name.push(event.event_type.name);
            columns.data.push(event.data_json);
            columns.occurred_at.push(event.occurred_at);
            columns.received_at.push(received_at);
            columns.schema_version.push((version > 0).then_some(version));
        }
        if self.gin_pending_list_kb > 0 {
            store::set_gin_pending_list(conn, self.gin_pending_list_kb).await?;
        }
        let stored = store::insert(conn, &columns).await.inspect_err(|error| {
            if store::is_missing_partition(error) {
                // Retention dropped a partition this process knew: look again on the retry.
                self.partitions.forget();
            }
        })?;
        tracing::debug!(
            rows = rows.len(),
            events = columns.len(),
            stored = stored.events,
            subscriptions = stored.matched.len(),
            "batch written"
        );
        store::enqueue_deliveries(conn, stored.matched).await?;
        self.metrics.stage().observe_events(stage::WRITE, columns.len());
        drop(spans);
        Ok(())
    }
}
