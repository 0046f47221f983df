//! Hostile traffic at the transport: garbage bytes, a stalled stream, floods of unknown keys.
//! Each is handled on its own, and ordinary traffic keeps working.

use std::time::Duration;

use chrono::Utc;
use eye_e2e::{Pipeline, authorized, db_with_key, event};
use eye_proto::v1::{EventStatus, SendEventsRequest};
use eye_service::auth::{AuthError, Authenticator, Role};
use eye_test_support::TestDb;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

fn one_event() -> SendEventsRequest {
    SendEventsRequest {
        events: vec![event(Uuid::new_v4(), "c", "n", json!({"a": 1}), Utc::now())],
        sent_at: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_wire_closes_that_connection_only() {
    let (db, _, key) = db_with_key("shop", &["ingest"]).await;
    let pipeline = Pipeline::start(&db, 0, 0).await;
    let mut client = pipeline.client().await;
    for garbage in [
        // HTTP/1.1 is spoken on this port (gRPC-Web): a stray request is answered and closed.
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
        (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect(),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\xff\xff\xff\xff\xff\xff".to_vec(),
    ] {
        let mut socket =
            tokio::net::TcpStream::connect(("127.0.0.1", pipeline.ingest_port)).await.unwrap();
        let _ = socket.write_all(&garbage).await;
        // The server answers with an error (or nothing) and closes the connection.
        let mut sink = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut sink));
        assert!(closed.await.is_ok(), "the server closes a connection that speaks garbage");
        // Everyone else is unaffected.
        let response = client.send_events(authorized(one_event(), &key)).await.unwrap();
        assert_eq!(response.into_inner().results[0].status(), EventStatus::Accepted);
    }
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_sends_headers_and_stalls_is_cut_off() {
    let (db, _, key) = db_with_key("shop", &["ingest"]).await;
    let mut settings = Pipeline::settings(&db);
    settings.ingest.request_timeout_ms = 300;
    let pipeline = Pipeline::start_with(settings, 0, 0, false).await;

    let socket = tokio::net::TcpStream::connect(("127.0.0.1", pipeline.ingest_port)).await.unwrap();
    let (h2, connection) = h2::client::handshake(socket).await.unwrap();
    tokio::spawn(connection);
    let mut h2 = h2.ready().await.unwrap();
    let request = http::Request::post(format!(
        "http://127.0.0.1:{}/eye.v1.IngestService/SendEvents",
        pipeline.ingest_port
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .header("authorization", format!("Bearer {key}"))
    .body(())
    .unwrap();
    // Headers, and then nothing: the body never comes.
    let (response, _stalled_body) = h2.send_request(request, false).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("the server answers a stalled call by itself")
        .unwrap();
    let status = response.headers().get("grpc-status").expect("a trailers-only gRPC error");
    assert_ne!(status, "0", "the stalled call failed");

    let mut client = pipeline.client().await;
    client.send_events(authorized(one_event(), &key)).await.unwrap();
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_keys_are_answered_from_the_negative_cache() {
    let db = TestDb::new().await;
    let auth = Authenticator::new(db.pool.clone(), Duration::from_secs(60));
    let bearer = |key: &str| format!("Bearer {key}");
    let unknown = format!("eye_{}", "0f".repeat(32));
    let first = auth.authenticate(Some(&bearer(&unknown)), Role::Ingest).await;
    assert!(matches!(first, Err(AuthError::Invalid)), "{first:?}");
    // No database any more: only the cache can answer now.
    db.pool.close().await;
    for _ in 0..1_000 {
        let again = auth.authenticate(Some(&bearer(&unknown)), Role::Ingest).await;
        assert!(matches!(again, Err(AuthError::Invalid)), "{again:?}");
    }
    // A key never seen before does need the database, which proves the cache answered above.
    let other = format!("eye_{}", "1e".repeat(32));
    let fresh = auth.authenticate(Some(&bearer(&other)), Role::Ingest).await;
    assert!(matches!(fresh, Err(AuthError::Unavailable(_))), "{fresh:?}");
}
