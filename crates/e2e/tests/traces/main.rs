//! One trace follows a request from the application's call to its row in `events`: ingest's
//! `SendEvents` span continues the client's `traceparent`, the validator's row span continues the
//! outbox row's headers, and the writer's row span the headers the validator wrote.
//!
//! Its own test binary: it installs the process-wide subscriber (`eye_telemetry`'s, as the
//! services do) with a tracer provider exporting to memory. It needs spans at `info`, the default
//! filter: do not run it with a `RUST_LOG` that turns them off.

use chrono::Utc;
use eye_e2e::{Pipeline, authorized, count, event};
use eye_proto::v1::SendEventsRequest;
use eye_service::pipeline::stage;
use eye_service::settings::TelemetrySettings;
use eye_test_support::wait_for;
use opentelemetry::trace::SpanId;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

/// The client's trace and its span that made the call.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN_ID: &str = "00f067aa0ba902b7";

/// The span named `name` whose parent is `parent`, in `parent`'s trace.
fn child<'a>(spans: &'a [SpanData], parent: &SpanData, name: &str) -> &'a SpanData {
    let found = spans
        .iter()
        .find(|span| span.name == name && span.parent_span_id == parent.span_context.span_id())
        .unwrap_or_else(|| {
            let names: Vec<_> = spans
                .iter()
                .map(|s| (s.name.as_ref(), s.span_context.trace_id(), s.parent_span_id))
                .collect();
            panic!("no {name} span under {}: {names:#?}", parent.name)
        });
    assert_eq!(found.span_context.trace_id(), parent.span_context.trace_id());
    found
}

fn links_to(span: &SpanData, target: &SpanData) -> bool {
    let target = &target.span_context;
    span.links.iter().any(|link| {
        link.span_context.trace_id() == target.trace_id()
            && link.span_context.span_id() == target.span_id()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_follows_a_request_through_the_outbox() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    let settings = TelemetrySettings { log_filter: "info".into(), ..Default::default() };
    let _telemetry = eye_telemetry::init_with_provider("eye-e2e", &settings, provider.clone());

    let (db, _, key) = eye_e2e::shop_db().await;
    let pipeline = Pipeline::start(&db, 1, 1).await;
    let mut client = pipeline.client().await;
    let session = Uuid::new_v4();
    let page = json!({"host": "shop.example", "path": "/"});
    let send = |page: serde_json::Value| SendEventsRequest {
        events: vec![event(session, "page interaction", "pageview", page, Utc::now())],
        sent_at: None,
    };

    // A client that propagates its trace, and one that does not (ingest starts the trace).
    let mut traced = authorized(send(page.clone()), &key);
    let traceparent = format!("00-{TRACE_ID}-{CLIENT_SPAN_ID}-01");
    traced.metadata_mut().insert("traceparent", traceparent.parse().unwrap());
    client.send_events(traced).await.unwrap();
    client.send_events(authorized(send(page), &key)).await.unwrap();
    wait_for(&db.pool, Duration::from_secs(60), "2 events stored", || async {
        (count(&db.pool, "SELECT count(*) FROM events").await == 2).then_some(())
    })
    .await;
    pipeline.stop().await;
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();

    // The client's trace: client -> SendEvents (ingest) -> validate -> write.
    let request = spans
        .iter()
        .find(|s| s.name == "SendEvents" && s.span_context.trace_id().to_string() == TRACE_ID)
        .expect("ingest's span is in the client's trace");
    assert_eq!(request.parent_span_id.to_string(), CLIENT_SPAN_ID);
    assert!(request.parent_span_is_remote);
    let validate = child(&spans, request, stage::VALIDATE);
    assert!(validate.parent_span_is_remote, "the parent came through the outbox row");
    let write = child(&spans, validate, stage::WRITE);
    assert!(write.parent_span_is_remote);

    // The client that sent no trace context: the trace starts at ingest and still reaches the
    // writer.
    let untraced = spans
        .iter()
        .find(|s| s.name == "SendEvents" && s.span_context.trace_id().to_string() != TRACE_ID)
        .expect("the second request's span");
    assert_eq!(untraced.parent_span_id, SpanId::INVALID);
    child(&spans, child(&spans, untraced, stage::VALIDATE), stage::WRITE);

    // Batch-level work has traces of its own, linked to the requests and rows it served.
    assert!(
        spans.iter().any(|s| s.name == "group_commit" && links_to(s, request)),
        "a group commit links to the request"
    );
    let batch = spans
        .iter()
        .find(|s| s.name == "hand_off" && links_to(validate, s))
        .expect("the validator's row span links to its batch");
    assert_ne!(batch.span_context.trace_id(), validate.span_context.trace_id());
}
