//! Per-application ingest quotas: an application over its quota is refused whole requests
//! (RESOURCE_EXHAUSTED / 429 with `retry-after`), counted in metrics, while another application
//! sends on untouched. The ack latency the other application keeps is a benchmark
//! (`eye-bench --scenario quota`), not a timed test.

use chrono::Utc;
use eye_e2e::{
    Pipeline, count, create_key, db_with_key, event, metric_value, scrape_metrics,
    transport::Transport,
};
use eye_proto::v1::{EventStatus, SendEventsRequest};
use serde_json::json;
use tonic::Code;
use uuid::Uuid;

fn batch(n: usize) -> SendEventsRequest {
    SendEventsRequest {
        events: (0..n).map(|_| event(Uuid::new_v4(), "c", "n", json!({}), Utc::now())).collect(),
        sent_at: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_over_its_quota_is_refused_and_others_are_not() {
    let (db, noisy_id, noisy) = db_with_key("noisy", &["ingest"]).await;
    let (_, quiet) = create_key(&db.pool, "quiet", &["ingest"]).await;
    let (_, exempt) = create_key(&db.pool, "exempt", &["ingest"]).await;
    // A default quota for every application; `noisy` gets a smaller one of its own, `exempt`
    // none at all.
    eye_admin::apps::set_quota(&db.pool, "noisy", Some(0.5), Some(20.0)).await.unwrap();
    eye_admin::apps::set_quota(&db.pool, "exempt", Some(0.0), None).await.unwrap();
    let mut settings = Pipeline::settings(&db);
    settings.ingest.quota_rate = 1_000.0;
    let pipeline = Pipeline::start_with(settings, 0, 0, false).await;

    // The burst passes...
    let first = pipeline.send(Transport::Grpc, Some(&noisy), &batch(20)).await.unwrap();
    assert!(first.iter().all(|r| r.status() == EventStatus::Accepted));
    for transport in Transport::ALL {
        // ...then the application is over its quota, whichever way it sends.
        let refused = pipeline.send(transport, Some(&noisy), &batch(10)).await.unwrap_err();
        assert_eq!(refused.code, Code::ResourceExhausted, "{transport:?}: {refused:?}");
        assert!(refused.message.contains("quota"), "{}", refused.message);
        let retry_after: u64 = refused.retry_after.expect("a retry hint").parse().unwrap();
        assert!((1..=40).contains(&retry_after), "{retry_after}");
        if let Some(status) = refused.http_status {
            assert_eq!(status, 429);
        }
        // The others are untouched: the quiet one by the default quota, far above its use.
        for key in [&quiet, &exempt] {
            let results = pipeline.send(transport, Some(key), &batch(500)).await.unwrap();
            assert!(results.iter().all(|r| r.status() == EventStatus::Accepted), "{transport:?}");
        }
    }
    // Nothing of a refused request was enqueued: only noisy's first 20 events.
    let noisy_count =
        format!("SELECT count(*) FROM idempotency_keys WHERE application_id = '{noisy_id}'");
    assert_eq!(count(&db.pool, &noisy_count).await, 20);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM idempotency_keys").await, 20 + 4 * 500);

    let (_, exposition) = scrape_metrics(pipeline.metrics_port("ingest")).await;
    assert_eq!(
        metric_value(&exposition, "eye_ingest_refusals_total{reason=\"quota_exceeded\"}"),
        Some(2.0),
        "{exposition}"
    );
    let series = format!("eye_ingest_over_quota_events_total{{application=\"{noisy_id}\"}}");
    assert_eq!(metric_value(&exposition, &series), Some(20.0), "{exposition}");

    // Clearing the quota puts the application back on the default (1,000/s): a fresh ingest
    // (no cached key) lets it send again.
    eye_admin::apps::set_quota(&db.pool, "noisy", None, None).await.unwrap();
    let pipeline2 = Pipeline::start(&db, 0, 0).await;
    let results = pipeline2.send(Transport::Grpc, Some(&noisy), &batch(100)).await.unwrap();
    assert!(results.iter().all(|r| r.status() == EventStatus::Accepted));
    pipeline2.stop().await;
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_are_checked_when_set() {
    let (db, _, _) = db_with_key("shop", &["ingest"]).await;
    for (rate, burst) in [(Some(-1.0), None), (Some(f64::NAN), None), (None, Some(5.0))] {
        let refused = eye_admin::apps::set_quota(&db.pool, "shop", rate, burst).await;
        assert!(refused.is_err(), "{rate:?} {burst:?}");
    }
    let missing = eye_admin::apps::set_quota(&db.pool, "nobody", Some(1.0), None).await;
    assert!(missing.unwrap_err().to_string().contains("nobody"));
}
