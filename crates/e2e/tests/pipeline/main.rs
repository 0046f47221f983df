//! The whole write path, end to end: ingest -> outbox -> validator -> writer -> store.

mod backpressure;
mod browser_keys;
mod concurrency;
mod database_tls;
mod grpc_web;
mod hostile;
mod http;
mod limits;
mod metrics;
mod poison;
mod quotas;
mod redaction;
mod retention;
mod roles;
mod tls;

use std::time::Duration;

use chrono::Utc;
use eye_e2e::{
    Pipeline, count, create_key, db_with_key, event,
    transport::Transport::{self, Grpc, Http},
};
use eye_proto::v1::{EventStatus, SendEventsRequest};
use eye_test_support::{TestDb, wait_for};
use serde_json::json;
use tonic::Code;
use uuid::Uuid;

const TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_flow_from_ingest_to_store_and_errors_over_grpc() {
    events_flow_from_ingest_to_store_and_errors(Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_flow_from_ingest_to_store_and_errors_over_http() {
    events_flow_from_ingest_to_store_and_errors(Http).await;
}

async fn events_flow_from_ingest_to_store_and_errors(transport: Transport) {
    let (db, app_id, key) = eye_e2e::shop_db().await;
    let pipeline = Pipeline::start(&db, 1, 1).await;

    let session = Uuid::new_v4();
    let now = Utc::now();
    let page = json!({"host": "shop.example", "path": "/"});
    let mut malformed = event(session, "page interaction", "pageview", page.clone(), now);
    malformed.session_id = "not-a-uuid".into();
    let events = vec![
        event(
            session,
            "page interaction",
            "pageview",
            page.clone(),
            now - chrono::Duration::seconds(3),
        ),
        event(
            session,
            "page interaction",
            "cta click",
            json!({"host": "shop.example", "path": "/", "element": "buy"}),
            now - chrono::Duration::seconds(2),
        ),
        event(
            session,
            "form interaction",
            "submit",
            json!({"host": "shop.example", "path": "/checkout", "form": {"email": "a@b.c"}}),
            now - chrono::Duration::seconds(1),
        ),
        // Breaks its schema: `path` is missing.
        event(session, "page interaction", "pageview", json!({"host": "shop.example"}), now),
        // An hour in the future.
        event(
            session,
            "page interaction",
            "pageview",
            page.clone(),
            now + chrono::Duration::hours(1),
        ),
        malformed,
    ];
    let request = SendEventsRequest { events: events.clone(), sent_at: None };

    let results = pipeline.send(transport, Some(&key), &request).await.unwrap();
    let statuses: Vec<_> = results.iter().map(|r| r.status()).collect();
    use EventStatus::{Accepted, Duplicate, Rejected};
    assert_eq!(statuses, [Accepted, Accepted, Accepted, Accepted, Accepted, Rejected]);
    for (result, sent) in results.iter().zip(&events) {
        assert_eq!(result.event_id, sent.event_id, "results answer events in order");
    }
    assert!(results[5].reason.starts_with("invalid_session_id:"), "{}", results[5].reason);

    wait_for(&db.pool, TIMEOUT, "3 events stored and 2 quarantined", || async {
        let stored = count(&db.pool, "SELECT count(*) FROM events").await;
        let errors = count(&db.pool, "SELECT count(*) FROM event_errors").await;
        (stored == 3 && errors == 2).then_some(())
    })
    .await;

    let stored: Vec<(String, String, Option<i32>, serde_json::Value)> = sqlx::query_as(
        "SELECT category, name, schema_version, data FROM events WHERE session_id = $1 ORDER BY occurred_at",
    )
    .bind(session)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let types: Vec<_> = stored.iter().map(|(c, n, _, _)| format!("{c}/{n}")).collect();
    assert_eq!(
        types,
        ["page interaction/pageview", "page interaction/cta click", "form interaction/submit"]
    );
    assert!(stored.iter().all(|(_, _, version, _)| *version == Some(1)));
    assert_eq!(stored[0].3, page);

    let (event_count, apps, first, last): (i64, Vec<Uuid>, chrono::DateTime<Utc>, chrono::DateTime<Utc>) =
        sqlx::query_as(
            "SELECT event_count, application_ids, first_seen_at, last_seen_at FROM sessions WHERE session_id = $1",
        )
        .bind(session)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!((event_count, apps), (3, vec![app_id]));
    assert!(first < last);

    let errors: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT event_id::text, reason, message, data::text FROM event_errors ORDER BY occurred_at",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(errors[0].0, events[3].event_id);
    assert_eq!(errors[0].1, "schema_violation");
    assert!(errors[0].2.contains("path"), "message names the field: {}", errors[0].2);
    let kept: serde_json::Value = serde_json::from_str(&errors[0].3).unwrap();
    let sent: serde_json::Value = serde_json::from_str(&events[3].data_json).unwrap();
    assert_eq!(kept, sent, "the whole event is kept");
    assert_eq!(errors[1].0, events[4].event_id);
    assert_eq!(errors[1].1, "timestamp_in_future");

    // The same batch again stores nothing twice.
    let again = pipeline.send(transport, Some(&key), &request).await.unwrap();
    let statuses: Vec<_> = again.iter().map(|r| r.status()).collect();
    assert_eq!(statuses, [Duplicate, Duplicate, Duplicate, Duplicate, Duplicate, Rejected]);
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM outbox").await,
        0,
        "duplicates enqueue nothing"
    );
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 3);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM event_errors").await, 2);
    assert_eq!(count(&db.pool, "SELECT sum(event_count)::bigint FROM sessions").await, 3);

    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_checked() {
    let (db, _, key) = db_with_key("shop", &["ingest"]).await;
    let (_, read_only) = create_key(&db.pool, "analyst", &["read"]).await;
    let pipeline = Pipeline::start(&db, 0, 0).await;
    let request = || SendEventsRequest {
        events: vec![event(Uuid::new_v4(), "c", "n", json!({}), Utc::now())],
        sent_at: None,
    };

    for transport in Transport::ALL {
        let before = count(&db.pool, "SELECT count(*) FROM outbox").await;
        let refused =
            async |key: Option<&str>| pipeline.send(transport, key, &request()).await.unwrap_err();
        let missing = refused(None).await;
        assert_eq!(missing.code, Code::Unauthenticated, "{transport:?}");
        assert!(missing.message.contains("authorization"), "{}", missing.message);
        let wrong = refused(Some("eye_0000")).await;
        assert_eq!(wrong.code, Code::Unauthenticated, "{transport:?}");
        let forbidden = refused(Some(&read_only)).await;
        assert_eq!(forbidden.code, Code::PermissionDenied, "{transport:?}");
        assert!(forbidden.message.contains("`ingest` role"), "{}", forbidden.message);
        assert_eq!(count(&db.pool, "SELECT count(*) FROM outbox").await, before, "none enqueued");
        pipeline.send(transport, Some(&key), &request()).await.unwrap();
    }

    // Revocation takes effect once the cached answer expires (5 s by default); a fresh server
    // has no cache, so it refuses at once.
    eye_admin::apps::revoke(&db.pool, "shop").await.unwrap();
    let pipeline2 = Pipeline::start(&db, 0, 0).await;
    for transport in Transport::ALL {
        let revoked = pipeline2.send(transport, Some(&key), &request()).await.unwrap_err();
        assert_eq!(revoked.code, Code::Unauthenticated, "{transport:?}");
    }
    pipeline2.stop().await;
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_report_health_once_the_database_answers() {
    let db = TestDb::new().await;
    let pipeline = Pipeline::start(&db, 0, 0).await;
    let channel = pipeline.channel().await;
    eye_e2e::wait_until_serving(channel, "eye.v1.IngestService").await;
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_reflection_lists_exactly_its_services_in_both_protocols() {
    let db = TestDb::new().await;
    let pipeline = Pipeline::start(&db, 0, 0).await;
    let channel = pipeline.channel().await;
    let expected = eye_e2e::expected_services("eye.v1.IngestService");
    for v1alpha in [false, true] {
        let services = eye_e2e::reflected_services(channel.clone(), v1alpha).await;
        assert_eq!(services, expected, "v1alpha: {v1alpha}");
    }
    pipeline.stop().await;
}
