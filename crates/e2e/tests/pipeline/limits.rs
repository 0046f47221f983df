//! Batch limits and per-event rejections at ingest.

use chrono::Utc;
use eye_e2e::{
    Pipeline, count, db_with_key, event,
    transport::Transport::{self, Grpc, Http},
};
use eye_proto::v1::{EventStatus, SendEventsRequest};
use serde_json::json;
use tonic::Code;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_over_the_limits_fail_whole_and_bad_events_fail_alone_over_grpc() {
    batches_over_the_limits_fail_whole_and_bad_events_fail_alone(Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_over_the_limits_fail_whole_and_bad_events_fail_alone_over_http() {
    batches_over_the_limits_fail_whole_and_bad_events_fail_alone(Http).await;
}

async fn batches_over_the_limits_fail_whole_and_bad_events_fail_alone(transport: Transport) {
    let (db, _, key) = db_with_key("shop", &["ingest"]).await;
    let pipeline = Pipeline::start(&db, 0, 0).await;
    let send = |request: SendEventsRequest| {
        let (pipeline, key) = (&pipeline, &key);
        async move { pipeline.send(transport, Some(key), &request).await }
    };
    let session = Uuid::new_v4();
    let batch = |n: usize| SendEventsRequest {
        events: (0..n).map(|_| event(session, "c", "n", json!({"i": 1}), Utc::now())).collect(),
        sent_at: None,
    };

    let empty = send(batch(0)).await.unwrap_err();
    assert_eq!(empty.code, Code::InvalidArgument);
    assert!(empty.message.contains("empty"), "{}", empty.message);

    let too_many = send(batch(1_001)).await.unwrap_err();
    assert_eq!(too_many.code, Code::InvalidArgument);
    assert!(too_many.message.contains("1001"), "{}", too_many.message);

    let big = json!({"blob": "x".repeat(60_000)});
    let too_big = SendEventsRequest {
        events: (0..80).map(|_| event(session, "c", "n", big.clone(), Utc::now())).collect(),
        sent_at: None,
    };
    let too_big = send(too_big).await.unwrap_err();
    assert_eq!(too_big.code, Code::InvalidArgument);
    assert!(too_big.message.starts_with("events: the batch is"), "{}", too_big.message);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM outbox").await, 0);

    let full = send(batch(1_000)).await.unwrap();
    assert!(full.iter().all(|r| r.status() == EventStatus::Accepted));

    // One bad event of each kind, between good ones: each gets its own reason, the good ones pass.
    let good = || event(session, "c", "n", json!({"ok": true}), Utc::now());
    let mut cases: Vec<(&str, eye_proto::v1::Event)> = Vec::new();
    let mut bad = good();
    bad.event_id = "123".into();
    cases.push(("invalid_event_id", bad));
    let mut bad = good();
    bad.category = String::new();
    cases.push(("missing_category", bad));
    let mut bad = good();
    bad.name = "n".repeat(256);
    cases.push(("name_too_long", bad));
    let mut bad = good();
    bad.data_json = "[1,2]".into();
    cases.push(("data_not_object", bad));
    if transport == Grpc {
        // A JSON body cannot carry a payload that is not JSON: over HTTP, the whole body is
        // refused instead (see http.rs).
        let mut bad = good();
        bad.data_json = "{\"a\":".into();
        cases.push(("invalid_json", bad));
    }
    let mut bad = good();
    bad.timestamp = None;
    cases.push(("missing_timestamp", bad));
    let mut bad = good();
    bad.data_json = json!({"blob": "x".repeat(70_000)}).to_string();
    cases.push(("event_too_large", bad));
    let mut bad = good();
    bad.data_json = r#"{"a":1,"a":2}"#.into();
    cases.push(("duplicate_key", bad));
    let mut bad = good();
    bad.data_json = r#"{"a":"\u0000"}"#.into();
    cases.push(("nul_character", bad));
    let mut bad = good();
    bad.data_json = format!("{{\"a\":{}1{}}}", "[".repeat(64), "]".repeat(64));
    cases.push(("payload_too_deep", bad));
    let mut bad = good();
    bad.data_json = r#"{"a":1e400}"#.into();
    cases.push(("number_out_of_range", bad));
    let mut events = vec![good()];
    for (_, bad) in &cases {
        events.push(bad.clone());
        events.push(good());
    }
    let response = send(SendEventsRequest { events, sent_at: None }).await.unwrap();
    let mut results = response.iter();
    assert_eq!(results.next().unwrap().status(), EventStatus::Accepted);
    for (code, _) in &cases {
        let rejected = results.next().unwrap();
        assert_eq!(rejected.status(), EventStatus::Rejected, "{code}");
        assert!(rejected.reason.starts_with(&format!("{code}:")), "{code}: {}", rejected.reason);
        assert_eq!(results.next().unwrap().status(), EventStatus::Accepted, "after {code}");
    }

    // An empty event_id gets a server-assigned UUIDv7, returned in the result.
    let mut anonymous = good();
    anonymous.event_id.clear();
    let response =
        send(SendEventsRequest { events: vec![anonymous], sent_at: None }).await.unwrap();
    let assigned: Uuid = response[0].event_id.parse().unwrap();
    assert_eq!(assigned.get_version_num(), 7);
    pipeline.stop().await;
}
