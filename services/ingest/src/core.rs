//! The transport-free ingest core: one call takes the request's credentials, its trace context
//! and the batch, and answers per event. The gRPC adapter ([`crate::grpc`]) and, next, the HTTP
//! adapter call it, so an event gets the same answer whichever way it came: batch limits, the
//! per-event envelope rules, group commit and duplicate detection are written once, here.

use event_model::{ApplicationId, Limits, PayloadLimits, envelope};
use eye_proto::v1::{EventResult, EventStatus, SendEventsRequest, SendEventsResponse};
use eye_service::{
    auth::{Authenticator, Principal, Role},
    settings::IngestSettings,
};
use eye_telemetry::{metrics::Metrics, propagation};
use flush_event::Headers;
use prost::Message;

use crate::{
    backpressure::Backpressure,
    commit::{Committer, Submission},
    error::IngestError,
};

/// The headers of the request's outbox row: the context of the current (`SendEvents`) span, so
/// the trace continues downstream even when the client sent none; without an OpenTelemetry
/// layer, the client's own trace context as it came.
fn outbox_headers(client: Headers) -> Headers {
    let mut headers = Headers::new();
    if propagation::inject(&tracing::Span::current(), &mut headers) { headers } else { client }
}

/// The ingest core. Cheap to share (`Arc`); every transport adapter holds the same one.
#[derive(Debug)]
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

    /// Answers one `SendEvents` batch: authenticates the request's `authorization` value
    /// (`Bearer <key>`) for the ingest role, refuses at once under back-pressure, then
    /// [`send_as`](Self::send_as). `trace` is the W3C trace context the client sent
    /// (`traceparent`, `tracestate`), as a text map.
    ///
    /// The key comes first: a caller without a valid key learns nothing about the backlog, and a
    /// misconfigured client is told so (UNAUTHENTICATED) instead of being asked to retry later.
    /// Lookups are cached, so the check costs no query under load; while the database is down,
    /// a key the cache does not know is answered UNAVAILABLE at once.
    pub async fn send(
        &self,
        authorization: Option<&str>,
        trace: Headers,
        request: SendEventsRequest,
    ) -> Result<SendEventsResponse, IngestError> {
        let result = async {
            let principal = if self.backpressure.database_is_up() {
                self.auth.authenticate(authorization, Role::Ingest).await?
            } else {
                // No database: answer at once, from the key cache alone, instead of waiting for
                // a connection that will not come.
                self.auth
                    .authenticate_cached(authorization, Role::Ingest)?
                    .ok_or(IngestError::DatabaseUnavailable)?
            };
            self.backpressure.check()?;
            self.send_as(&principal, trace, request).await
        }
        .await;
        if let Err(error) = &result {
            self.backpressure.observe(error);
        }
        result
    }

    /// Answers a batch of an already authenticated `principal`: checks the batch limits and
    /// each event's envelope, commits the accepted events (group commit), and answers
    /// `results[i]` for `events[i]`: ACCEPTED, DUPLICATE, or REJECTED with a reason.
    pub async fn send_as(
        &self,
        principal: &Principal,
        trace: Headers,
        request: SendEventsRequest,
    ) -> Result<SendEventsResponse, IngestError> {
        let headers = outbox_headers(trace);
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
