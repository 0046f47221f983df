//! W3C trace context (`traceparent`, `tracestate`) across process boundaries.
//!
//! A trace crosses two kinds of boundary: the client's gRPC call into ingest (metadata), and each
//! outbox hand-off (the row's `headers`). The same text map serves both: ingest copies the two
//! metadata entries into a [`Headers`] map, makes its `SendEvents` span a child of it
//! ([`set_parent`]) and stores its own span's context in the outbox row ([`inject`]); the
//! validator and the writer make each row's span a child of the row's headers, and the validator
//! injects its row span into the rows it hands to the writer.
//!
//! Everything here is a no-op when no OpenTelemetry layer records the span (no exporter
//! configured, or the span filtered out): [`inject`] then says so, and callers pass the headers
//! they received on unchanged, so a trace started by the client still reaches the writer's logs.

use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::TraceContextExt,
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The header names of W3C trace context.
pub const FIELDS: [&str; 2] = ["traceparent", "tracestate"];

/// A text map of headers (an outbox row's headers, or gRPC metadata copied into one).
pub type Headers = flush_event::Headers;

struct Reader<'a>(&'a Headers);

impl Extractor for Reader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

struct Writer<'a>(&'a mut Headers);

impl Injector for Writer<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

/// The remote context carried by `headers`; empty if they hold no valid `traceparent`.
fn extract(headers: &Headers) -> Context {
    TraceContextPropagator::new().extract(&Reader(headers))
}

/// The W3C trace context a request carried, read through `get` (a header or metadata lookup,
/// whatever the transport): the fields among [`FIELDS`] that are present and text.
pub fn from_request<'a>(get: impl Fn(&'static str) -> Option<&'a str>) -> Headers {
    FIELDS.iter().filter_map(|name| Some((name.to_string(), get(name)?.to_owned()))).collect()
}

/// Makes `span` continue the trace whose context `headers` carry. Call it before the span is
/// first entered (an OpenTelemetry span's parent is fixed when it starts). Without a valid
/// `traceparent`, `span` keeps its local parent (or starts a new trace). Returns whether the
/// parent was set.
pub fn set_parent(span: &tracing::Span, headers: &Headers) -> bool {
    let cx = extract(headers);
    cx.span().span_context().is_valid() && span.set_parent(cx).is_ok()
}

/// Writes `span`'s trace context into `headers` (`traceparent`, and `tracestate` when not
/// empty). Returns false, leaving `headers` unchanged, when no OpenTelemetry layer records `span`.
pub fn inject(span: &tracing::Span, headers: &mut Headers) -> bool {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return false;
    }
    TraceContextPropagator::new().inject_context(&cx, &mut Writer(headers));
    true
}

/// Links `span` to the span whose context `headers` carry (e.g. a group commit to each request
/// it commits), when they carry one.
pub fn link_to_headers(span: &tracing::Span, headers: &Headers) {
    span.add_link(extract(headers).span().span_context().clone());
}

/// Links `span` to `other` (e.g. a row's span, whose parent is remote, to the local batch it was
/// processed in), when an OpenTelemetry layer records `other`.
pub fn link_to_span(span: &tracing::Span, other: &tracing::Span) {
    span.add_link(other.context().span().span_context().clone());
}

/// The span of one claimed outbox row while a consumer stage works on it: named after the stage
/// (`otel.name`, so that exported traces read ingest -> validate -> write), in the trace of the
/// request that made the row (its `traceparent` header) and linked to the batch's own span.
/// Enter it while working on the row; keep it until the hand-off is written.
pub fn row_span<M>(stage: &str, row: &flush_event::Claimed<M>, events: usize) -> tracing::Span {
    let span = tracing::info_span!(
        "hand_off_row",
        otel.name = stage,
        otel.kind = "consumer",
        row = row.id,
        attempts = row.attempts,
        events,
    );
    set_parent(&span, &row.headers);
    link_to_span(&span, &tracing::Span::current());
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_an_opentelemetry_layer_nothing_is_set_or_injected() {
        let span = tracing::info_span!("test");
        let mut headers = Headers::new();
        headers.insert(
            "traceparent".into(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        );
        assert!(!set_parent(&span, &headers));
        let before = headers.clone();
        assert!(!inject(&span, &mut headers));
        assert_eq!(headers, before);
    }

    #[test]
    fn extracts_only_valid_trace_context() {
        let mut headers = Headers::new();
        assert!(!extract(&headers).span().span_context().is_valid());
        headers.insert("traceparent".into(), "00-not-a-trace-01".into());
        assert!(!extract(&headers).span().span_context().is_valid());
        headers.insert(
            "traceparent".into(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        );
        let cx = extract(&headers);
        let span = cx.span();
        let remote = span.span_context();
        assert!(remote.is_valid() && remote.is_remote());
        assert_eq!(remote.trace_id().to_string(), "0af7651916cd43dd8448eb211c80319c");
    }
}
