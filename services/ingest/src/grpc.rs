//! The gRPC adapter of the ingest core: `eye.v1.IngestService/SendEvents`. It opens the server
//! span (in the client's trace), hands the `authorization` metadata, the trace context and the
//! batch to [`Ingest::send`], records the request's metrics, and maps [`IngestError`] to a
//! `tonic::Status`: the one place that mapping lives.

use std::{sync::Arc, time::Duration};

use eye_proto::v1::{SendEventsRequest, SendEventsResponse, ingest_service_server::IngestService};
use eye_telemetry::{metrics::Metrics, propagation};
use flush_event::Headers;
use tonic::{Request, Response, Status, metadata::MetadataMap};
use tracing::Instrument;

use crate::{
    core::{Caller, Incoming, Ingest},
    error::IngestError,
};

/// `IngestService` over the shared core.
#[derive(Debug, Clone)]
pub struct GrpcIngest {
    core: Arc<Ingest>,
    metrics: Metrics,
}

impl GrpcIngest {
    pub fn new(core: Arc<Ingest>, metrics: Metrics) -> Self {
        Self { core, metrics }
    }
}

/// The W3C trace context a client sent as gRPC metadata (`traceparent`, `tracestate`).
fn trace_context(metadata: &MetadataMap) -> Headers {
    propagation::from_request(|name| metadata.get(name)?.to_str().ok())
}

#[tonic::async_trait]
impl IngestService for GrpcIngest {
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
        let trace = trace_context(request.metadata());
        // Before the span is entered: a started span's parent is fixed.
        propagation::set_parent(&span, &trace);
        // gRPC-Web calls from a page carry the page's `Origin`, as HTTP headers do.
        let (metadata, _, request) = request.into_parts();
        let caller = Caller {
            authorization: eye_service::grpc::authorization(&metadata),
            origin: metadata.get("origin").and_then(|value| value.to_str().ok()),
            address: None,
        };
        let answer = self
            .core
            .send(caller, trace, Incoming::all(request.events))
            .instrument(span.clone())
            .await
            .map_err(Status::from);
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

fn retry_later(code: tonic::Code, error: &IngestError) -> Status {
    let mut metadata = MetadataMap::new();
    if let Some(seconds) = error.retry_after() {
        metadata.insert("retry-after", seconds.to_string().parse().expect("ascii digits"));
    }
    Status::with_metadata(code, error.to_string(), metadata)
}

impl From<IngestError> for Status {
    fn from(error: IngestError) -> Self {
        match error {
            IngestError::Auth(error) => error.into(),
            IngestError::EmptyBatch
            | IngestError::TooManyEvents { .. }
            | IngestError::BatchTooLarge { .. } => Status::invalid_argument(error.to_string()),
            IngestError::RateLimited { .. }
            | IngestError::QuotaExceeded { .. }
            | IngestError::Overloaded
            | IngestError::Backlogged { .. } => retry_later(tonic::Code::ResourceExhausted, &error),
            IngestError::DatabaseUnavailable => retry_later(tonic::Code::Unavailable, &error),
            IngestError::ShuttingDown => Status::unavailable(error.to_string()),
            IngestError::Storage(ref source) => {
                // The database's text stays in our logs; the client learns only what to do.
                tracing::error!(error = %source, "ingest commit failed");
                Status::unavailable(error.to_string())
            }
        }
    }
}
