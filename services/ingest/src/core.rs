//! The transport-free ingest core: one call takes the caller (credentials, origin, address),
//! its trace context and the batch, and answers per event. The gRPC adapter ([`crate::grpc`],
//! gRPC-Web included) and the HTTP adapter ([`crate::http`]) call it, so an event gets the same
//! answer whichever way it came: keys and their browser rules, the limits of publishable keys,
//! applications' quotas, back-pressure, batch limits, the per-event envelope rules, group commit and duplicate
//! detection are written once, here.

use std::{net::IpAddr, sync::Arc, time::Instant};

use event_model::{ApplicationId, Limits, PayloadLimits, Rejection, envelope};
use eye_proto::v1::{self as pb, EventResult, EventStatus, SendEventsResponse};
use eye_service::{
    auth::{Authenticator, Principal, Role},
    rate_limit::RateLimiter,
    settings::IngestSettings,
};
use eye_telemetry::{metrics::Metrics, propagation};
use flush_event::Headers;
use prost::Message;

use crate::{
    backpressure::Backpressure,
    commit::{Committer, Submission},
    error::IngestError,
    redaction::Redaction,
};

/// The headers of the request's outbox row: the context of the current (`SendEvents`) span, so
/// the trace continues downstream even when the client sent none; without an OpenTelemetry
/// layer, the client's own trace context as it came.
fn outbox_headers(client: Headers) -> Headers {
    let mut headers = Headers::new();
    if propagation::inject(&tracing::Span::current(), &mut headers) { headers } else { client }
}

/// Who is calling, as the transport saw it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Caller<'a> {
    /// The `authorization` value (`Bearer <key>`), from a header, gRPC metadata, or (for
    /// browsers, which cannot always set headers) the body or the query.
    pub authorization: Option<&'a str>,
    /// The request's `Origin`: browsers send it, server-side clients do not.
    pub origin: Option<&'a str>,
    /// The client's address: publishable keys are rate-limited per key and address.
    pub address: Option<IpAddr>,
}

/// One event of a batch as its transport decoded it: a protobuf event, to be checked by the
/// envelope rules, or one the transport could already tell is bad (an HTTP event whose
/// `category` is a number, say), answered REJECTED in its place like any other.
#[derive(Debug, Clone)]
pub enum Incoming {
    Event(pb::Event),
    Refused { event_id: String, rejection: Rejection },
}

impl Incoming {
    /// The events of a protobuf batch.
    pub fn all(events: Vec<pb::Event>) -> Vec<Self> {
        events.into_iter().map(Self::Event).collect()
    }
}

/// The size of `events` as the `events` field of a protobuf `SendEventsRequest`: the measure of
/// `ingest.max_batch_bytes` whichever way the batch came.
fn encoded_size(events: &[Incoming]) -> usize {
    events
        .iter()
        .map(|incoming| match incoming {
            Incoming::Event(event) => {
                let len = event.encoded_len();
                1 + prost::length_delimiter_len(len) + len
            }
            Incoming::Refused { .. } => 0,
        })
        .sum()
}

/// The ingest core. Cheap to share (`Arc`); every transport adapter holds the same one.
#[derive(Debug)]
pub struct Ingest {
    metrics: Metrics,
    auth: Authenticator,
    publishable: RateLimiter<(uuid::Uuid, Option<IpAddr>)>,
    /// Applications' quotas, by application id.
    quotas: RateLimiter<uuid::Uuid>,
    /// `ingest.quota_rate` / `quota_burst`: the quota of applications without their own.
    default_quota: (f64, f64),
    backpressure: Backpressure,
    committer: Committer,
    redaction: Arc<Redaction>,
    limits: Limits,
    max_batch_events: usize,
    max_batch_bytes: usize,
}

impl Ingest {
    pub fn new(
        auth: Authenticator,
        backpressure: Backpressure,
        committer: Committer,
        redaction: Arc<Redaction>,
        settings: &IngestSettings,
        metrics: Metrics,
    ) -> Self {
        Self {
            metrics,
            auth,
            publishable: RateLimiter::new(settings.publishable_rate, settings.publishable_burst),
            quotas: RateLimiter::new(1.0, 1.0),
            default_quota: (settings.quota_rate, settings.quota_burst),
            backpressure,
            committer,
            redaction,
            limits: Limits {
                max_event_bytes: settings.max_event_bytes,
                max_type_chars: 255,
                payload: PayloadLimits { max_depth: settings.max_payload_depth },
            },
            max_batch_events: settings.max_batch_events,
            max_batch_bytes: settings.max_batch_bytes,
        }
    }

    /// Answers one batch: authenticates the caller's key for the ingest role, applies the
    /// browser rules (a publishable key only from its origins and within its rate, a secret key
    /// never from a browser), refuses at once under back-pressure, then
    /// [`send_as`](Self::send_as). `trace` is the W3C trace context the client sent
    /// (`traceparent`, `tracestate`), as a text map.
    ///
    /// The key comes first: a caller without a valid key learns nothing about the backlog, and a
    /// misconfigured client is told so (UNAUTHENTICATED) instead of being asked to retry later.
    /// Lookups are cached, so the check costs no query under load; while the database is down,
    /// a key the cache does not know is answered UNAVAILABLE at once.
    pub async fn send(
        &self,
        caller: Caller<'_>,
        trace: Headers,
        events: Vec<Incoming>,
    ) -> Result<SendEventsResponse, IngestError> {
        let result = async {
            let principal = if self.backpressure.database_is_up() {
                self.auth.authenticate(caller.authorization, Role::Ingest).await?
            } else {
                // No database: answer at once, from the key cache alone, instead of waiting for
                // a connection that will not come.
                self.auth
                    .authenticate_cached(caller.authorization, Role::Ingest)?
                    .ok_or(IngestError::DatabaseUnavailable)?
            };
            principal.check_origin(caller.origin)?;
            let count = u32::try_from(events.len()).unwrap_or(u32::MAX);
            let now = Instant::now();
            if principal.publishable {
                self.publishable
                    .take((principal.key_id, caller.address), count, now)
                    .map_err(|retry_after| IngestError::RateLimited { retry_after })?;
            }
            if let Some(quota) = principal.quota(self.default_quota.0, self.default_quota.1) {
                self.quotas.take_within(principal.application_id, count, now, quota).map_err(
                    |retry_after| {
                        self.metrics.ingest().record_over_quota(principal.application_id, count);
                        IngestError::QuotaExceeded { retry_after }
                    },
                )?;
            }
            self.backpressure.check()?;
            self.send_as(&principal, trace, events).await
        }
        .await;
        if let Err(error) = &result {
            self.backpressure.observe(error);
            self.metrics.ingest().record_refusal(error.code());
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
        events: Vec<Incoming>,
    ) -> Result<SendEventsResponse, IngestError> {
        let headers = outbox_headers(trace);
        if events.is_empty() {
            return Err(IngestError::EmptyBatch);
        }
        if events.len() > self.max_batch_events {
            return Err(IngestError::TooManyEvents {
                count: events.len(),
                limit: self.max_batch_events,
            });
        }
        let size = encoded_size(&events);
        if size > self.max_batch_bytes {
            return Err(IngestError::BatchTooLarge { size, limit: self.max_batch_bytes });
        }

        // Nothing is enqueued before the redaction rules were read once.
        self.redaction.ready().await.map_err(|error| IngestError::Storage(Arc::new(error)))?;
        let redact = self.redaction.rules();
        let received_at = chrono::Utc::now();
        let mut results = Vec::with_capacity(events.len());
        let mut accepted = Vec::with_capacity(events.len());
        let mut rejected = Vec::new();
        for incoming in events {
            let (sent_id, checked) = match incoming {
                Incoming::Event(event) => {
                    (event.event_id.clone(), envelope::validate(event, &self.limits))
                }
                Incoming::Refused { event_id, rejection } => (event_id, Err(rejection)),
            };
            match checked {
                Ok(mut event) => {
                    redact.apply(&mut event);
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
