//! `/metrics` of every service after some traffic: the contract's families, and counters that
//! add up to what was sent.

use chrono::Utc;
use eye_e2e::{Pipeline, authorized, count, event, metric_value, scrape_metrics};
use eye_proto::v1::SendEventsRequest;
use eye_service::pipeline::stage;
use eye_test_support::wait_for;
use serde_json::json;
use tonic::Code;
use uuid::Uuid;

use crate::TIMEOUT;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The value of `series` in `text`, or a panic naming it.
fn value(text: &str, series: &str) -> f64 {
    metric_value(text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_exports_its_metrics() {
    let (db, _, key) = eye_e2e::shop_db().await;
    let pipeline = Pipeline::start_with_query(&db, 1, 1).await;
    let mut client = pipeline.client().await;

    let session = Uuid::new_v4();
    let now = Utc::now();
    let page = json!({"host": "shop.example", "path": "/"});
    let mut malformed = event(session, "page interaction", "pageview", page.clone(), now);
    malformed.session_id = "not-a-uuid".into();
    let events = vec![
        event(session, "page interaction", "pageview", page.clone(), now),
        event(session, "page interaction", "pageview", page.clone(), now),
        event(session, "page interaction", "pageview", page, now),
        // Accepted at ingest, quarantined by the validator: `path` is missing.
        event(session, "page interaction", "pageview", json!({"host": "shop.example"}), now),
        malformed,
    ];
    let request = SendEventsRequest { events, sent_at: None };
    client.send_events(authorized(request.clone(), &key)).await.unwrap();
    // The same again: four duplicates, the malformed one rejected again.
    client.send_events(authorized(request.clone(), &key)).await.unwrap();
    let refused = client.send_events(authorized(request, "eye_not-a-key")).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);

    wait_for(&db.pool, TIMEOUT, "3 events stored and 1 quarantined", || async {
        let stored = count(&db.pool, "SELECT count(*) FROM events").await;
        let quarantined = count(&db.pool, "SELECT count(*) FROM event_errors").await;
        (stored == 3 && quarantined == 1).then_some(())
    })
    .await;

    // Ingest counts before it answers: exact as soon as the calls returned.
    let (content_type, ingest) = scrape_metrics(pipeline.metrics_port("ingest")).await;
    assert_eq!(content_type, OPENMETRICS);
    assert!(ingest.ends_with("# EOF\n"), "{ingest}");
    assert_eq!(value(&ingest, "eye_events_received_total"), 10.0);
    assert_eq!(value(&ingest, "eye_events_accepted_total"), 4.0);
    assert_eq!(value(&ingest, "eye_events_duplicate_total"), 4.0);
    assert_eq!(value(&ingest, "eye_events_rejected_total{reason=\"invalid_session_id\"}"), 2.0);
    assert_eq!(value(&ingest, "eye_ingest_request_duration_seconds_count{code=\"OK\"}"), 2.0);
    assert_eq!(
        value(&ingest, "eye_ingest_request_duration_seconds_count{code=\"UNAUTHENTICATED\"}"),
        1.0
    );
    // The p99 target (25 ms) is a bucket bound.
    value(&ingest, "eye_ingest_request_duration_seconds_bucket{le=\"0.025\",code=\"OK\"}");
    assert_eq!(
        value(&ingest, "eye_ingest_request_duration_seconds_bucket{le=\"+Inf\",code=\"OK\"}"),
        2.0
    );
    // Two commits of one request each (the second commits its ids only: all duplicates).
    assert_eq!(value(&ingest, "eye_ingest_commit_requests_count"), 2.0);
    assert_eq!(value(&ingest, "eye_ingest_commit_events_sum"), 8.0);
    assert_eq!(value(&ingest, "eye_db_connections_max"), 6.0);
    assert!(value(&ingest, "eye_db_connections_in_use") >= 0.0);
    assert!(!ingest.contains("eye_stage_duration"), "only ingest's families: {ingest}");

    // The consumers report a batch after its commit: wait for the report.
    let stage_reported = |service: &'static str, stage: &'static str| {
        let port = pipeline.metrics_port(service);
        let series = format!("eye_stage_batch_events_sum{{stage=\"{stage}\"}}");
        let duration = format!("eye_stage_duration_seconds_count{{stage=\"{stage}\"}}");
        async move {
            let (_, text) = scrape_metrics(port).await;
            let events = metric_value(&text, &series)?;
            (metric_value(&text, &duration)? >= 1.0).then_some((events, text))
        }
    };
    let (validated, validator) = wait_for(&db.pool, TIMEOUT, "validator metrics", || {
        stage_reported("validator", stage::VALIDATE)
    })
    .await;
    assert_eq!(validated, 4.0, "every accepted event validated once");
    assert_eq!(
        value(
            &validator,
            "eye_validation_errors_total{reason=\"schema_violation\",event_type=\"page interaction/pageview\"}"
        ),
        1.0
    );
    assert!(value(&validator, "eye_stage_batch_rows_count{stage=\"validate\"}") >= 1.0);
    // Sampled from the database in the background, for both stages, even when empty.
    for stage in stage::ALL {
        for family in
            ["eye_outbox_depth", "eye_outbox_oldest_age_seconds", "eye_outbox_dead_letters"]
        {
            value(&validator, &format!("{family}{{stage=\"{stage}\"}}"));
        }
    }
    assert!(!validator.contains("eye_events_accepted"), "only the validator's: {validator}");

    let (written, writer) =
        wait_for(&db.pool, TIMEOUT, "writer metrics", || stage_reported("writer", stage::WRITE))
            .await;
    assert_eq!(written, 3.0, "the valid events written once");
    value(&writer, "eye_outbox_depth{stage=\"write\"}");
    value(&writer, "eye_db_connections_max");

    let (_, query) = scrape_metrics(pipeline.metrics_port("query")).await;
    value(&query, "eye_db_connections_max");

    pipeline.stop().await;
    let exposition = [ingest, validator, writer, query].concat();
    dashboard_and_docs_match(&exposition);
}

/// The Grafana dashboard asks only for series the services export, and every exported family is
/// in the metrics contract of docs/operations.md.
fn dashboard_and_docs_match(exposition: &str) {
    let root = eye_test_support::workspace_root();
    let dashboard = std::fs::read_to_string(root.join("deploy/grafana/the-eye.json")).unwrap();
    let docs = std::fs::read_to_string(root.join("docs/operations.md")).unwrap();
    let names = |text: &str| -> Vec<String> {
        text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| word.starts_with("eye_") && word.len() > 4)
            .map(str::to_owned)
            .collect()
    };
    let dashboard_names = names(&dashboard);
    assert!(!dashboard_names.is_empty());
    for name in dashboard_names {
        assert!(
            exposition.contains(&format!("\n{name}")),
            "the dashboard's {name} is not exported"
        );
    }
    for line in exposition.lines() {
        let Some(family) = line.strip_prefix("# TYPE ") else { continue };
        let (name, kind) = family.split_once(' ').unwrap();
        let documented =
            if kind == "counter" { format!("`{name}_total`") } else { format!("`{name}`") };
        assert!(docs.contains(&documented), "{documented} is not in docs/operations.md");
    }
}
