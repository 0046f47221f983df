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
use eye_telemetry::{metrics::Metrics, propagation};
use flush_event::Headers;
use prost::Message;
use tonic::{Request, Response, Status, metadata::MetadataMap};
use tracing::Instrument;

use crate::{
    backpressure::Backpressure,
    commit::{Committer, Submission},
    error::IngestError,
};

/// The W3C trace context a client sent as gRPC metadata (`traceparent`, `tracestate`).
fn trace_context(metadata: &MetadataMap) -> Headers {
    propagation::FIELDS
        .iter()
        .filter_map(|name| {
            let value = metadata.get(*name)?.to_str().ok()?;
            Some((name.to_string(), value.to_owned()))
        })
        .collect()
}

/// The headers of the request's outbox row: the context of the current (`SendEvents`) span, so
/// the trace continues downstream even when the client sent none; without an OpenTelemetry
/// layer, the client's own trace context as it came.
fn outbox_headers(metadata: &MetadataMap) -> Headers {
    let mut headers = Headers::new();
    if propagation::inject(&tracing::Span::current(), &mut headers) {
        headers
    } else {
        trace_context(metadata)
    }
}

pub struct Ingest {
    metrics: Metrics,
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
        metrics: Metrics,
    ) -> Self {
        Self {
            metrics,
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
        let headers = outbox_headers(request.metadata());
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
        let mut rejected = Vec::new();
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
                Err(rejection) => {
                    rejected.push(rejection.code());
                    results.push(EventResult {
                        event_id: sent_id,
                        status: EventStatus::Rejected.into(),
                        reason: rejection.reason(),
                    })
                }
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
        let duplicate =
            results.iter().filter(|r| r.status == i32::from(EventStatus::Duplicate)).count();
        let accepted = results.len() - duplicate - rejected.len();
        self.metrics.ingest().record_response(accepted as u64, duplicate as u64, &rejected);
        Ok(SendEventsResponse { results })
    }
}

#[tonic::async_trait]
impl IngestService for Ingest {
    async fn send_events(
        &self,
        request: Request<SendEventsRequest>,
    ) -> Result<Response<SendEventsResponse>, Status> {
        let started = std::time::Instant::now();
        let span = tracing::info_span!(
            "SendEvents",
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = "eye.v1.IngestService",
            rpc.method = "SendEvents",
            rpc.grpc.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            events = request.get_ref().events.len(),
        );
        // Before the span is entered: a started span's parent is fixed.
        propagation::set_parent(&span, &trace_context(request.metadata()));
        let answer = async { Ingest::send_events(self, request).await.map_err(Status::from) }
            .instrument(span.clone())
            .await;
        let code = answer.as_ref().map_or_else(|status| status.code(), |_| tonic::Code::Ok);
        span.record("rpc.grpc.status_code", code as i32);
        // As OpenTelemetry's gRPC conventions say: a server span fails on the server's faults,
        // not on the client's (INVALID_ARGUMENT, UNAUTHENTICATED, ...).
        use tonic::Code::{
            DataLoss, DeadlineExceeded, Internal, Unavailable, Unimplemented, Unknown,
        };
        if matches!(
            code,
            Unknown | DeadlineExceeded | Unimplemented | Internal | Unavailable | DataLoss
        ) {
            span.record("otel.status_code", "error");
        }
        let elapsed: Duration = started.elapsed();
        self.metrics.ingest().observe_request(eye_service::grpc::code_name(code), elapsed);
        let response = answer?;
        tracing::debug!(parent: &span, elapsed_ms = elapsed.as_millis() as u64, "batch acknowledged");
        Ok(Response::new(response))
    }
}
