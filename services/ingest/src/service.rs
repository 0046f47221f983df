//! The `SendEvents` handler.

use std::time::Duration;

use event_model::{ApplicationId, Limits, PayloadLimits, envelope};
use eye_proto::v1::{
    EventResult, EventStatus, SendEventsRequest, SendEventsResponse,
    ingest_service_server::IngestService,
};
use eye_service::{
    auth::{Authenticator, Role},
    settings::IngestSettings,
};
use flush_event::Headers;
use prost::Message;
use tonic::{Request, Response, Status};

use crate::{
    backpressure::Backpressure,
    commit::{Committer, Submission},
    error::IngestError,
};

/// W3C trace context headers carried from the call into the outbox row.
const PROPAGATED: [&str; 2] = ["traceparent", "tracestate"];

pub struct Ingest {
    auth: Authenticator,
    backpressure: Backpressure,
    committer: Committer,
    limits: Limits,
    max_batch_events: usize,
    max_batch_bytes: usize,
}

impl Ingest {
    pub fn new(
        auth: Authenticator,
        backpressure: Backpressure,
        committer: Committer,
        settings: &IngestSettings,
    ) -> Self {
        Self {
            auth,
            backpressure,
            committer,
            limits: Limits {
                max_event_bytes: settings.max_event_bytes,
                max_type_chars: 255,
                payload: PayloadLimits { max_depth: settings.max_payload_depth },
            },
            max_batch_events: settings.max_batch_events,
            max_batch_bytes: settings.max_batch_bytes,
        }
    }

    async fn send_events(
        &self,
        request: Request<SendEventsRequest>,
    ) -> Result<SendEventsResponse, IngestError> {
        let result = self.try_send_events(request).await;
        if let Err(error) = &result {
            self.backpressure.observe(error);
        }
        result
    }

    async fn try_send_events(
        &self,
        request: Request<SendEventsRequest>,
    ) -> Result<SendEventsResponse, IngestError> {
        self.backpressure.check()?;
        let principal = self.auth.authenticate(request.metadata(), Role::Ingest).await?;
        let headers: Headers = PROPAGATED
            .iter()
            .filter_map(|name| {
                let value = request.metadata().get(*name)?.to_str().ok()?;
                Some((name.to_string(), value.to_owned()))
            })
            .collect();
        let request = request.into_inner();
        if request.events.is_empty() {
            return Err(IngestError::EmptyBatch);
        }
        if request.events.len() > self.max_batch_events {
            return Err(IngestError::TooManyEvents {
                count: request.events.len(),
                limit: self.max_batch_events,
            });
        }
        let size = request.encoded_len();
        if size > self.max_batch_bytes {
            return Err(IngestError::BatchTooLarge { size, limit: self.max_batch_bytes });
        }

        let received_at = chrono::Utc::now();
        let mut results = Vec::with_capacity(request.events.len());
        let mut accepted = Vec::with_capacity(request.events.len());
        for event in request.events {
            let sent_id = event.event_id.clone();
            match envelope::validate(event, &self.limits) {
                Ok(event) => {
                    results.push(EventResult {
                        event_id: event.event_id.to_string(),
                        status: EventStatus::Accepted.into(),
                        reason: String::new(),
                    });
                    accepted.push(event);
                }
                Err(rejection) => results.push(EventResult {
                    event_id: sent_id,
                    status: EventStatus::Rejected.into(),
                    reason: rejection.reason(),
                }),
            }
        }
        if !accepted.is_empty() {
            let submission = Submission {
                application_id: ApplicationId(principal.application_id),
                received_at,
                events: accepted,
                headers,
            };
            let new = self.committer.commit(submission).await?;
            let mut new = new.into_iter();
            for result in &mut results {
                if result.status == i32::from(EventStatus::Accepted) && !new.next().unwrap_or(true)
                {
                    result.status = EventStatus::Duplicate.into();
                }
            }
        }
        Ok(SendEventsResponse { results })
    }
}

#[tonic::async_trait]
impl IngestService for Ingest {
    #[tracing::instrument(name = "SendEvents", skip_all, fields(events))]
    async fn send_events(
        &self,
        request: Request<SendEventsRequest>,
    ) -> Result<Response<SendEventsResponse>, Status> {
        tracing::Span::current().record("events", request.get_ref().events.len());
        let started = std::time::Instant::now();
        let response = Ingest::send_events(self, request).await?;
        let elapsed: Duration = started.elapsed();
        tracing::debug!(elapsed_ms = elapsed.as_millis() as u64, "batch acknowledged");
        Ok(Response::new(response))
    }
}
