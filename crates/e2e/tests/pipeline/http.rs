//! What only HTTP ingest has: the body's forms and failures, where the key may be, CORS,
//! compression, `/healthz`, `/openapi.json` and the tracker. (What both transports share runs
//! over both in the other files.)

use std::io::Write;

use chrono::Utc;
use eye_e2e::{
    Pipeline, count, db_with_key, event,
    transport::{Transport, http_body},
};
use eye_proto::v1::{EventStatus, SendEventsRequest};
use eye_test_support::wait_for;
use serde_json::{Value, json};
use uuid::Uuid;

/// The requirements' own example, exactly as they print it.
const REQUIREMENTS_EXAMPLE: &str = r#"{"session_id": "e2085be5-9137-4e4e-80b5-f1ffddc25423", "category": "page interaction", "name": "pageview", "data": {"host": "www.consumeraffairs.com", "path": "/"}, "timestamp": "2021-01-01 09:15:27.243860"}"#;

fn post(pipeline: &Pipeline) -> reqwest::RequestBuilder {
    reqwest::Client::new().post(format!("{}/v1/events", pipeline.http_endpoint()))
}

/// The status and JSON body of an answer.
async fn answer(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("HTTP ingest answers");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"));
    (status, body)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_requirements_example_is_accepted_as_posted_and_stored_in_utc() {
    let (db, _, key) = eye_e2e::shop_db().await;
    let pipeline = Pipeline::start(&db, 1, 1).await;
    let (status, body) = answer(post(&pipeline).bearer_auth(&key).body(REQUIREMENTS_EXAMPLE)).await;
    assert_eq!(status, 200, "{body}");
    let result = &body["results"][0];
    assert_eq!(result["status"], "ACCEPTED", "{body}");
    assert_eq!(result["reason"], "");
    let id: Uuid = result["event_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(id.get_version_num(), 7, "a server-assigned UUIDv7");

    let timeout = std::time::Duration::from_secs(60);
    let stored: (String, String) = wait_for(&db.pool, timeout, "the example stored", || async {
        sqlx::query_as(
            "SELECT to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), data::text \
             FROM events WHERE event_id = $1",
        )
        .bind(id)
        .fetch_optional(&db.pool)
        .await
        .unwrap()
    })
    .await;
    assert_eq!(stored.0, "2021-01-01 09:15:27.243860", "a time without a zone is UTC");
    let data: Value = serde_json::from_str(&stored.1).unwrap();
    assert_eq!(data, json!({"host": "www.consumeraffairs.com", "path": "/"}));
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_get_a_4xx_naming_the_problem_and_store_nothing() {
    let (db, _, key) = db_with_key("shop", &["ingest"]).await;
    let mut settings = Pipeline::settings(&db);
    settings.ingest.http_max_body_bytes = 1024 * 1024;
    let pipeline = Pipeline::start_with(settings, 0, 0, false).await;
    let json_post = || post(&pipeline).bearer_auth(&key).header("content-type", "application/json");

    for (body, code, says) in [
        ("", "invalid_body", "empty"),
        ("{\"events\": [", "invalid_json", "not JSON"),
        ("<events/>", "invalid_json", "not JSON"),
        ("42", "invalid_body", "a number"),
        ("\"pageview\"", "invalid_body", "a string"),
        ("[{\"category\": \"c\"}]", "invalid_body", "an array"),
        ("{\"events\": [{\"category\": \"c\"},]}", "invalid_json", "line 1 column 31"),
        ("{\"events\": \"all\"}", "invalid_body", "events: must be an array"),
        ("{\"events\": []}", "empty_batch", "events: the batch is empty"),
    ] {
        let (status, got) = answer(json_post().body(body)).await;
        assert_eq!(status, 400, "{body:?}: {got}");
        assert_eq!(got["error"]["code"], code, "{body:?}: {got}");
        let message = got["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{body:?}: {message}");
    }

    let (status, got) = answer(
        post(&pipeline).bearer_auth(&key).header("content-type", "application/xml").body("{}"),
    )
    .await;
    assert_eq!((status, got["error"]["code"].as_str()), (415, Some("unsupported_content_type")));
    assert!(got["error"]["message"].as_str().unwrap().contains("application/json"));
    let (status, got) = answer(json_post().header("content-encoding", "br").body("{}")).await;
    assert_eq!(
        (status, got["error"]["code"].as_str()),
        (415, Some("unsupported_content_encoding"))
    );

    // Over the limit as sent, and over it once inflated (a decompression bomb: 64 MiB of zeros
    // in about 64 KiB): 413, read no further.
    let (status, got) = answer(json_post().body(vec![b' '; 2 * 1024 * 1024])).await;
    assert_eq!((status, got["error"]["code"].as_str()), (413, Some("body_too_large")));
    let bomb = gzip(&vec![b' '; 64 * 1024 * 1024]);
    assert!(bomb.len() < 1024 * 1024);
    let (status, got) = answer(json_post().header("content-encoding", "gzip").body(bomb)).await;
    assert_eq!((status, got["error"]["code"].as_str()), (413, Some("body_too_large")), "{got}");
    let (status, got) =
        answer(json_post().header("content-encoding", "gzip").body(&b"not gzip"[..])).await;
    assert_eq!((status, got["error"]["code"].as_str()), (400, Some("invalid_body")), "{got}");

    assert_eq!(count(&db.pool, "SELECT count(*) FROM outbox").await, 0, "nothing was accepted");
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_fields_fail_their_event_alone_with_the_grpc_reason_codes() {
    let (db, _, key) = db_with_key("shop", &["ingest"]).await;
    let pipeline = Pipeline::start(&db, 0, 0).await;
    let session = Uuid::new_v4().to_string();
    let good = json!({"session_id": session, "category": "c", "name": "n", "data": {},
        "timestamp": Utc::now().to_rfc3339()});
    let with = |field: &str, value: Value| {
        let mut event = good.clone();
        event[field] = value;
        event
    };
    let mut without_data = good.clone();
    without_data.as_object_mut().unwrap().remove("data");
    let mut without_timestamp = good.clone();
    without_timestamp.as_object_mut().unwrap().remove("timestamp");
    let events = json!([
        good,
        "not an event",
        with("category", json!(5)),
        with("timestamp", json!("next tuesday")),
        with("timestamp", json!(1_609_492_527)),
        with("session_id", json!("abc")),
        with("data", json!([1, 2])),
        without_timestamp,
        without_data,
        with("timestamp", json!("2021-01-01T09:15:27.243860")),
    ]);
    let (status, body) =
        answer(post(&pipeline).bearer_auth(&key).body(json!({"events": events}).to_string())).await;
    assert_eq!(status, 200, "{body}");
    let reasons: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| match r["status"].as_str().unwrap() {
            "ACCEPTED" => "ACCEPTED",
            _ => r["reason"].as_str().unwrap().split(':').next().unwrap(),
        })
        .collect();
    assert_eq!(
        reasons,
        [
            "ACCEPTED",
            "invalid_field",
            "invalid_field",
            "invalid_timestamp",
            "invalid_field",
            "invalid_session_id",
            "data_not_object",
            "missing_timestamp",
            "ACCEPTED",
            "ACCEPTED",
        ]
    );
    assert_eq!(count(&db.pool, "SELECT count(*) FROM idempotency_keys").await, 3);
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_may_come_in_the_body_or_the_query_and_text_plain_and_gzip_are_read_as_json() {
    let (db, _, key) = db_with_key("shop", &["ingest"]).await;
    let pipeline = Pipeline::start(&db, 0, 0).await;
    let one = || SendEventsRequest {
        events: vec![event(Uuid::new_v4(), "c", "n", json!({"a": 1}), Utc::now())],
        sent_at: None,
    };
    let with_key = |request: &SendEventsRequest| {
        let mut body: Value = serde_json::from_str(&http_body(request)).unwrap();
        body["key"] = json!(key);
        body.to_string()
    };
    let accepted = |body: Value| {
        assert_eq!(body["results"][0]["status"], "ACCEPTED", "{body}");
    };

    // sendBeacon's shape: text/plain, the key in the body.
    let (status, body) = answer(
        post(&pipeline).header("content-type", "text/plain;charset=UTF-8").body(with_key(&one())),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    accepted(body);
    // The key in the query; the body gzipped; and deflated.
    let url = format!("{}/v1/events?key={key}", pipeline.http_endpoint());
    let (status, body) = answer(reqwest::Client::new().post(&url).body(http_body(&one()))).await;
    assert_eq!(status, 200, "{body}");
    accepted(body);
    let (status, body) = answer(
        post(&pipeline)
            .bearer_auth(&key)
            .header("content-encoding", "gzip")
            .body(gzip(http_body(&one()).as_bytes())),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    accepted(body);
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    zlib.write_all(http_body(&one()).as_bytes()).unwrap();
    let (status, body) = answer(
        post(&pipeline)
            .bearer_auth(&key)
            .header("content-encoding", "deflate")
            .body(zlib.finish().unwrap()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    accepted(body);

    // A bad key is told so, with the scheme to use.
    let response =
        post(&pipeline).bearer_auth("eye_nope").body(http_body(&one())).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_key", "{body}");
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_and_http_share_one_ledger_so_a_resend_over_the_other_is_a_duplicate() {
    let (db, _, key) = db_with_key("shop", &["ingest"]).await;
    let pipeline = Pipeline::start(&db, 0, 0).await;
    let request = SendEventsRequest {
        events: (0..3).map(|_| event(Uuid::new_v4(), "c", "n", json!({}), Utc::now())).collect(),
        sent_at: None,
    };
    let first = pipeline.send(Transport::Grpc, Some(&key), &request).await.unwrap();
    assert!(first.iter().all(|r| r.status() == EventStatus::Accepted));
    let again = pipeline.send(Transport::Http, Some(&key), &request).await.unwrap();
    assert!(again.iter().all(|r| r.status() == EventStatus::Duplicate), "{again:?}");
    assert_eq!(count(&db.pool, "SELECT count(*) FROM idempotency_keys").await, 3);
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_the_api_document_and_the_tracker_are_served() {
    let (db, _, key) = db_with_key("shop", &["ingest"]).await;
    let pipeline = Pipeline::start(&db, 0, 0).await;
    let get = |path: &str| reqwest::get(format!("{}{path}", pipeline.http_endpoint()));

    let health = get("/healthz").await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    assert_eq!(health.json::<Value>().await.unwrap(), json!({"status": "serving"}));

    let doc: Value = get("/openapi.json").await.unwrap().json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let operation = &doc["paths"]["/v1/events"]["post"];
    for status in ["200", "400", "401", "403", "413", "415", "429", "503"] {
        assert!(operation["responses"][status].is_object(), "{status} is documented");
    }
    // The document's own example is a body the server accepts.
    let example = &doc["components"]["schemas"]["EventBody"]["example"];
    assert_eq!(example["name"], "pageview", "{doc}");
    let (status, body) = answer(post(&pipeline).bearer_auth(&key).body(example.to_string())).await;
    assert_eq!((status, body["results"][0]["status"].as_str()), (200, Some("ACCEPTED")));

    let tracker = get("/v1/eye.js").await.unwrap();
    assert_eq!(tracker.status().as_u16(), 200);
    assert!(tracker.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_requests_from_pages_get_cors_preflight_answers() {
    let db = eye_test_support::TestDb::new().await;
    let pipeline = Pipeline::start(&db, 0, 0).await;
    let response = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, format!("{}/v1/events", pipeline.http_endpoint()))
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type")
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let headers = response.headers();
    assert_eq!(headers["access-control-allow-origin"], "https://shop.example");
    let allowed = headers["access-control-allow-headers"].to_str().unwrap().to_ascii_lowercase();
    assert!(allowed.contains("authorization") && allowed.contains("content-type"), "{allowed}");
    assert!(headers["access-control-allow-methods"].to_str().unwrap().contains("POST"));
    assert!(headers.contains_key("access-control-max-age"));
    pipeline.stop().await;
}
