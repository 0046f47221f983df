//! Back-pressure: ingest refuses at once, with a retry hint, and recovers by itself.

use chrono::Utc;
use eye_e2e::{Pipeline, authorized, count, db_with_key, event, transport::Transport};
use eye_proto::v1::{SendEventsRequest, ingest_service_client::IngestServiceClient};
use eye_test_support::TestDb;
use serde_json::json;
use tonic::Code;
use uuid::Uuid;

fn one_event() -> SendEventsRequest {
    SendEventsRequest {
        events: vec![event(Uuid::new_v4(), "c", "n", json!({}), Utc::now())],
        sent_at: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_over_the_bound_is_refused_until_it_drains() {
    let (db, _, key) = db_with_key("shop", &["ingest"]).await;
    let mut settings = Pipeline::settings(&db);
    settings.ingest.max_backlog_rows = 3;
    settings.ingest.backlog_check_ms = 20;
    // Ingest alone: nothing drains the `validate` stage.
    let ingest = Pipeline::start_with(settings.clone(), 0, 0, false).await;
    let mut client = ingest.client().await;
    for _ in 0..4 {
        client.send_events(authorized(one_event(), &key)).await.unwrap();
    }
    // The backlog (4 rows > 3) is noticed within a measurement interval; until then requests are
    // still accepted, so keep sending until refused.
    let refused = loop {
        match client.send_events(authorized(one_event(), &key)).await {
            Ok(_) => assert!(count(&db.pool, "SELECT count(*) FROM outbox").await < 100),
            Err(status) => break status,
        }
    };
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(refused.metadata().get("retry-after").unwrap(), "1");
    assert!(refused.message().contains("behind"), "{}", refused.message());
    // The same back-pressure over HTTP: 429 with the same hint.
    let over_http = ingest.send(Transport::Http, Some(&key), &one_event()).await.unwrap_err();
    assert_eq!((over_http.http_status, over_http.code), (Some(429), Code::ResourceExhausted));
    assert_eq!(over_http.retry_after.as_deref(), Some("1"));
    assert!(over_http.message.contains("behind"), "{}", over_http.message);
    // The key is checked first: a bad one is told so, and learns nothing about the backlog.
    let wrong = format!("eye_{}", "0".repeat(64));
    let status = client.send_events(authorized(one_event(), &wrong)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let accepted = count(&db.pool, "SELECT count(*) FROM outbox").await;

    // Validator and writer drain it; ingest takes events again by itself.
    let workers = Pipeline::start_with(settings, 1, 1, false).await;
    loop {
        match client.send_events(authorized(one_event(), &key)).await {
            Ok(_) => break,
            Err(status) => assert_eq!(status.code(), Code::ResourceExhausted),
        }
    }
    assert!(accepted >= 4);
    workers.stop().await;
    ingest.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_answered_unavailable_at_once() {
    let db = TestDb::new().await;
    let mut settings = Pipeline::settings(&db);
    // A port nothing listens on.
    let closed = eye_test_support::free_port();
    settings.database.url = Some(format!("postgres://postgres@127.0.0.1:{closed}/postgres").into());
    // Long enough that waiting for a connection would blow the request's deadline.
    settings.database.acquire_timeout_ms = 30_000;
    let ingest = Pipeline::start_with(settings, 0, 0, false).await;
    let channel = tonic::transport::Endpoint::from_shared(ingest.endpoint()).unwrap();
    let mut client = IngestServiceClient::new(channel.connect().await.unwrap());
    for _ in 0..3 {
        let mut request = authorized(one_event(), "eye_whatever");
        // The answer must not wait for connection timeouts: a deadline far shorter than a hang.
        request.set_timeout(std::time::Duration::from_secs(5));
        let status = client.send_events(request).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(!status.message().contains("127.0.0.1"), "no internals leak: {}", status.message());
        let over_http = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            ingest.send(Transport::Http, Some("eye_whatever"), &one_event()),
        )
        .await
        .expect("answered at once")
        .unwrap_err();
        assert_eq!((over_http.http_status, over_http.code), (Some(503), Code::Unavailable));
        assert_eq!(over_http.retry_after.as_deref(), Some("1"));
        assert!(!over_http.message.contains("127.0.0.1"), "{}", over_http.message);
    }
    ingest.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validator_and_writer_start_during_a_database_outage() {
    let db = TestDb::new().await;
    let mut settings = Pipeline::settings(&db);
    let closed = eye_test_support::free_port();
    settings.database.url = Some(format!("postgres://postgres@127.0.0.1:{closed}/postgres").into());
    settings.database.acquire_timeout_ms = 200;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let validator = eye_validator::Application::build(settings.clone()).await.unwrap();
    let writer = eye_writer::Application::build(settings).await.unwrap();
    let validator = tokio::spawn(validator.run_until_stopped(shutdown.clone()));
    let writer = tokio::spawn(writer.run_until_stopped(shutdown.clone()));
    // They wait for the database instead of exiting; stopping them is a clean exit.
    shutdown.cancel();
    for service in [validator, writer] {
        let stopped = tokio::time::timeout(std::time::Duration::from_secs(20), service).await;
        stopped.expect("stops when asked").unwrap().expect("no error for an unreachable database");
    }
}
