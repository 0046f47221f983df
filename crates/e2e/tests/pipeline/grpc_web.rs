//! gRPC-Web on the gRPC port: the call a page makes (HTTP/1.1, `application/grpc-web+proto`,
//! framed messages, trailers in the body), answered by the same core.

use chrono::Utc;
use eye_e2e::{Pipeline, db_with_key, event};
use eye_proto::v1::{EventStatus, SendEventsRequest, SendEventsResponse};
use prost::Message;
use serde_json::json;
use uuid::Uuid;

/// One gRPC-Web frame: flag, big-endian length, payload.
fn frame(flag: u8, payload: &[u8]) -> Vec<u8> {
    let mut framed = vec![flag];
    framed.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    framed.extend_from_slice(payload);
    framed
}

/// Calls SendEvents over gRPC-Web: the response message (if any) and the trailers' text.
async fn call(
    pipeline: &Pipeline,
    key: &str,
    origin: Option<&str>,
) -> (Option<SendEventsResponse>, String) {
    let request = SendEventsRequest {
        events: vec![event(Uuid::new_v4(), "c", "n", json!({"a": 1}), Utc::now())],
        sent_at: None,
    };
    let mut post = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/eye.v1.IngestService/SendEvents", pipeline.ingest_port))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("authorization", format!("Bearer {key}"))
        .body(frame(0, &request.encode_to_vec()));
    if let Some(origin) = origin {
        post = post.header("origin", origin);
    }
    let response = post.send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    if let Some(origin) = origin {
        assert_eq!(response.headers()["access-control-allow-origin"], origin);
    }
    let header_status =
        response.headers().get("grpc-status").map(|v| v.to_str().unwrap().to_owned());
    let body = response.bytes().await.unwrap();
    let (mut message, mut trailers, mut rest) = (None, String::new(), &body[..]);
    while rest.len() >= 5 {
        let length = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
        let payload = &rest[5..5 + length];
        if rest[0] & 0x80 == 0 {
            message = Some(SendEventsResponse::decode(payload).unwrap());
        } else {
            trailers = String::from_utf8(payload.to_vec()).unwrap();
        }
        rest = &rest[5 + length..];
    }
    // A trailers-only answer puts the status in the headers instead.
    if let (true, Some(status)) = (trailers.is_empty(), header_status) {
        trailers = format!("grpc-status:{status}");
    }
    (message, trailers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_calls_get_the_same_answers() {
    let (db, _, secret) = db_with_key("shop", &["ingest"]).await;
    let publishable =
        eye_admin::apps::issue_publishable_key(&db.pool, "shop", &["https://shop.example".into()])
            .await
            .unwrap()
            .key;
    let pipeline = Pipeline::start(&db, 0, 0).await;

    let (message, trailers) = call(&pipeline, &secret, None).await;
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    assert_eq!(message.unwrap().results[0].status(), EventStatus::Accepted);

    let (message, trailers) = call(&pipeline, &publishable, Some("https://shop.example")).await;
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    assert_eq!(message.unwrap().results[0].status(), EventStatus::Accepted);

    // The browser rules hold here too: a secret key from a page, a publishable one from
    // elsewhere, are PERMISSION_DENIED (7).
    let (message, trailers) = call(&pipeline, &secret, Some("https://shop.example")).await;
    assert!(message.is_none() && trailers.contains("grpc-status:7"), "{trailers}");
    let (message, trailers) = call(&pipeline, &publishable, Some("https://evil.example")).await;
    assert!(message.is_none() && trailers.contains("grpc-status:7"), "{trailers}");

    pipeline.stop().await;
}
