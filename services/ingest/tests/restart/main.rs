//! Rolling restart with real processes and real signals: `eye-ingest` is stopped (SIGTERM, then
//! kill -9, then SIGTERM) and replaced while retrying clients keep sending over gRPC and over
//! HTTP. Every acknowledged event must be durable, exactly once; each SIGTERMed process must
//! drain and exit cleanly.

use eye_service::auth::Role;
use std::{collections::HashSet, process::Stdio, time::Duration};

use eye_proto::v1::{
    EventBatch, EventStatus, SendEventsRequest, ingest_service_client::IngestServiceClient,
};
use eye_test_support::TestDb;
use prost::Message;
use tokio::process::{Child, Command};
use tonic::transport::Channel;
use uuid::Uuid;

fn spawn_ingest(db: &TestDb, port: u16, http_port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_eye-ingest"))
        .env("DATABASE_URL", &db.url)
        .env("EYE__INGEST__HOST", "127.0.0.1")
        .env("EYE__INGEST__PORT", port.to_string())
        .env("EYE__INGEST__HTTP_PORT", http_port.to_string())
        .env("EYE__METRICS__PORT", "0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start eye-ingest")
}

async fn create_key(db: &TestDb) -> String {
    eye_admin::apps::create(&db.pool, "shop", &[Role::Ingest]).await.unwrap().key
}

fn batch(n: usize) -> SendEventsRequest {
    let now = chrono::Utc::now();
    let events = (0..n)
        .map(|i| eye_proto::v1::Event {
            event_id: Uuid::now_v7().to_string(),
            session_id: Uuid::new_v4().to_string(),
            category: "c".into(),
            name: "n".into(),
            data_json: format!(r#"{{"i":{i}}}"#),
            timestamp: Some(prost_types::Timestamp {
                seconds: now.timestamp(),
                nanos: now.timestamp_subsec_nanos() as i32,
            }),
        })
        .collect();
    SendEventsRequest { events, sent_at: None }
}

/// Sends `request` until some server answers it (retrying across restarts, as a client
/// should); returns the ids it acknowledged (ACCEPTED or DUPLICATE of an earlier attempt).
async fn send_until_answered(
    endpoint: &str,
    key: &str,
    request: &SendEventsRequest,
) -> Vec<String> {
    let mut backoff = Duration::from_millis(5);
    loop {
        if let Ok(channel) = Channel::from_shared(endpoint.to_owned()).unwrap().connect().await {
            let mut client = IngestServiceClient::new(channel);
            let mut call = tonic::Request::new(request.clone());
            call.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
            match client.send_events(call).await {
                Ok(response) => {
                    return response
                        .into_inner()
                        .results
                        .into_iter()
                        .filter(|r| {
                            matches!(r.status(), EventStatus::Accepted | EventStatus::Duplicate)
                        })
                        .map(|r| r.event_id)
                        .collect();
                }
                // Anything but a verdict on the request itself is retried with the same ids: a
                // connection closing under a draining server surfaces as UNAVAILABLE, or as
                // INTERNAL from the transport (a stream sent after the server's GOAWAY).
                Err(status) => assert!(
                    !matches!(
                        status.code(),
                        tonic::Code::InvalidArgument
                            | tonic::Code::Unauthenticated
                            | tonic::Code::PermissionDenied
                    ),
                    "unexpected {status:?}"
                ),
            }
        }
        // A client's retry backoff while the server restarts (not test synchronisation).
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(200));
    }
}

/// [`send_until_answered`] over HTTP/JSON (`POST /v1/events`): 429, 503 and connection
/// failures are retried with the same ids; any other refusal fails the test.
async fn post_until_answered(url: &str, key: &str, request: &SendEventsRequest) -> Vec<String> {
    let events: Vec<serde_json::Value> = request
        .events
        .iter()
        .map(|event| {
            let at = event.timestamp.as_ref().unwrap();
            let at = chrono::DateTime::from_timestamp(at.seconds, at.nanos as u32).unwrap();
            serde_json::json!({
                "event_id": event.event_id, "session_id": event.session_id,
                "category": event.category, "name": event.name,
                "data": serde_json::from_str::<serde_json::Value>(&event.data_json).unwrap(),
                "timestamp": at.to_rfc3339(),
            })
        })
        .collect();
    let body = serde_json::json!({ "events": events }).to_string();
    let client = reqwest::Client::new();
    let mut backoff = Duration::from_millis(5);
    loop {
        let sent = client.post(url).bearer_auth(key).body(body.clone()).send().await;
        if let Ok(response) = sent {
            let status = response.status().as_u16();
            if let Ok(answer) = response.json::<serde_json::Value>().await {
                assert!(matches!(status, 200 | 429 | 503), "unexpected {status}: {answer}");
                if status == 200 {
                    return answer["results"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter(|r| matches!(r["status"].as_str(), Some("ACCEPTED" | "DUPLICATE")))
                        .map(|r| r["event_id"].as_str().unwrap().to_owned())
                        .collect();
                }
            }
        }
        // A client's retry backoff while the server restarts (not test synchronisation).
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(200));
    }
}

async fn wait_until_serving(endpoint: &str) {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(channel) = Channel::from_shared(endpoint.to_owned()).unwrap().connect().await {
            let request = HealthCheckRequest { service: "eye.v1.IngestService".into() };
            if let Ok(response) = HealthClient::new(channel).check(request).await
                && response.into_inner().status == 1
            {
                return;
            }
        }
        assert!(std::time::Instant::now() < deadline, "eye-ingest did not start serving");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_across_a_rolling_restart() {
    let db = TestDb::new().await;
    let key = create_key(&db).await;
    let (port, http_port) = (eye_test_support::free_port(), eye_test_support::free_port());
    let endpoint = format!("http://127.0.0.1:{port}");
    let url = format!("http://127.0.0.1:{http_port}/v1/events");
    let mut server = spawn_ingest(&db, port, http_port);
    wait_until_serving(&endpoint).await;

    // Four senders (two over gRPC, two over HTTP) keep requests in flight while the servers
    // are replaced.
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let mut senders = tokio::task::JoinSet::new();
    for sender in 0..4 {
        let (endpoint, url, key, done) =
            (endpoint.clone(), url.clone(), key.clone(), done_rx.clone());
        senders.spawn(async move {
            let mut acknowledged = Vec::new();
            while !*done.borrow() {
                acknowledged.extend(if sender % 2 == 0 {
                    send_until_answered(&endpoint, &key, &batch(50)).await
                } else {
                    post_until_answered(&url, &key, &batch(50)).await
                });
            }
            (sender % 2 == 0, acknowledged)
        });
    }
    for signal in ["-TERM", "-KILL", "-TERM"] {
        // Let some traffic through this server, then replace it.
        let before: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        eye_test_support::wait_for(&db.pool, Duration::from_secs(30), "traffic", || async {
            let now: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys")
                .fetch_one(&db.pool)
                .await
                .unwrap();
            (now >= before + 500).then_some(())
        })
        .await;
        eye_test_support::signal(server.id(), signal);
        let exit = tokio::time::timeout(Duration::from_secs(30), server.wait()).await;
        let exit = exit.expect("drains within the grace period").unwrap();
        if signal == "-TERM" {
            assert!(exit.success(), "SIGTERM is a clean exit: {exit:?}");
        }
        server = spawn_ingest(&db, port, http_port);
        wait_until_serving(&endpoint).await;
    }
    done_tx.send(true).unwrap();
    let mut acknowledged = HashSet::new();
    let mut over = [0, 0];
    while let Some(joined) = senders.join_next().await {
        let (grpc, ids) = joined.unwrap();
        over[usize::from(grpc)] += ids.len();
        acknowledged.extend(ids);
    }
    assert!(over.iter().all(|&n| n > 0), "both transports acknowledged events: {over:?}");
    eye_test_support::signal(server.id(), "-TERM");
    server.wait().await.unwrap();

    // Every acknowledged event is in the outbox (nothing consumes it here), exactly once.
    let bodies: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT body FROM outbox WHERE stage = 'validate'")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let mut queued = Vec::new();
    for body in bodies {
        for event in EventBatch::decode(body.as_slice()).unwrap().events {
            queued.push(Uuid::from_slice(&event.event_id).unwrap().to_string());
        }
    }
    let queued_set: HashSet<String> = queued.iter().cloned().collect();
    assert_eq!(queued.len(), queued_set.len(), "no event queued twice");
    let lost: Vec<_> = acknowledged.difference(&queued_set).collect();
    assert!(lost.is_empty(), "{} acknowledged events lost, e.g. {:?}", lost.len(), lost.first());
    assert!(acknowledged.len() >= 1_500, "traffic flowed through every server");
}
