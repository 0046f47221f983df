//! Publishable (browser) keys: ingest only, only from their origins, rate-limited per client
//! address; secret keys refused from any page. The same rules over HTTP and gRPC-Web.

use chrono::Utc;
use eye_e2e::{
    Pipeline, count, db_with_key, event, metric_value, scrape_metrics, transport::http_body,
};
use eye_proto::v1::SendEventsRequest;
use serde_json::{Value, json};
use uuid::Uuid;

const SHOP: &str = "https://shop.example";

fn events(n: usize) -> String {
    http_body(&SendEventsRequest {
        events: (0..n).map(|_| event(Uuid::new_v4(), "c", "n", json!({}), Utc::now())).collect(),
        sent_at: None,
    })
}

/// POSTs `body` with `key` in the body (as the tracker does), from `origin`.
async fn from_page(
    pipeline: &Pipeline,
    key: &str,
    origin: Option<&str>,
    body: String,
    forwarded_for: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut body: Value = serde_json::from_str(&body).unwrap();
    body["key"] = json!(key);
    let mut request = reqwest::Client::new()
        .post(format!("{}/v1/events", pipeline.http_endpoint()))
        .header("content-type", "text/plain")
        .body(body.to_string());
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    if let Some(address) = forwarded_for {
        request = request.header("x-forwarded-for", address);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishable_keys_work_only_from_their_origins_and_secret_keys_never_from_a_page() {
    let (db, _, secret) = db_with_key("shop", &["ingest"]).await;
    let issued = eye_admin::apps::issue_publishable_key(&db.pool, "shop", &[format!("{SHOP}/")])
        .await
        .unwrap();
    let key = issued.key;
    assert!(key.starts_with("eye_pk_"), "a publishable key says so");
    let pipeline = Pipeline::start(&db, 0, 0).await;

    let (status, headers, body) = from_page(&pipeline, &key, Some(SHOP), events(2), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["access-control-allow-origin"], SHOP);
    assert_eq!(body["results"][1]["status"], "ACCEPTED");

    for (origin, code) in [
        (Some("https://evil.example"), "origin_not_allowed"),
        (Some("http://shop.example"), "origin_not_allowed"),
        (None, "origin_not_allowed"),
    ] {
        let (status, _, body) = from_page(&pipeline, &key, origin, events(1), None).await;
        assert_eq!((status, body["error"]["code"].as_str()), (403, Some(code)), "{origin:?}");
    }
    let (status, _, body) = from_page(&pipeline, &secret, Some(SHOP), events(1), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("secret_key_in_browser")));
    assert!(body["error"]["message"].as_str().unwrap().contains("publishable"), "{body}");
    // The secret key still works from a server (no Origin).
    let (status, _, _) = from_page(&pipeline, &secret, None, events(1), None).await;
    assert_eq!(status, 200);
    // A publishable key may only ingest.
    let read = eye_service::auth::Authenticator::new(db.pool.clone(), std::time::Duration::ZERO)
        .authenticate(Some(&format!("Bearer {key}")), eye_service::auth::Role::Read)
        .await;
    assert!(read.is_err(), "{read:?}");

    assert_eq!(count(&db.pool, "SELECT count(*) FROM idempotency_keys").await, 3);
    let (_, exposition) = scrape_metrics(pipeline.metrics_port("ingest")).await;
    let refusals = |reason: &str| {
        metric_value(&exposition, &format!("eye_ingest_refusals_total{{reason=\"{reason}\"}}"))
    };
    assert_eq!(refusals("origin_not_allowed"), Some(3.0), "{exposition}");
    assert_eq!(refusals("secret_key_in_browser"), Some(1.0));
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishable_keys_are_rate_limited_per_client_address() {
    let (db, _, _) = db_with_key("shop", &["ingest"]).await;
    let key = eye_admin::apps::issue_publishable_key(&db.pool, "shop", &[SHOP.to_owned()])
        .await
        .unwrap()
        .key;
    let mut settings = Pipeline::settings(&db);
    settings.ingest.publishable_rate = 0.5;
    settings.ingest.publishable_burst = 10.0;
    settings.ingest.trust_forwarded_for = true;
    let pipeline = Pipeline::start_with(settings, 0, 0, false).await;
    let visitor = Some("203.0.113.7");

    let (status, _, _) = from_page(&pipeline, &key, Some(SHOP), events(10), visitor).await;
    assert_eq!(status, 200, "the burst passes");
    let (status, headers, body) = from_page(&pipeline, &key, Some(SHOP), events(1), visitor).await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("rate_limited")), "{body}");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert_eq!(
        headers["access-control-expose-headers"].to_str().unwrap().to_ascii_lowercase(),
        "retry-after"
    );
    // Another visitor has a bucket of their own.
    let (status, _, _) =
        from_page(&pipeline, &key, Some(SHOP), events(1), Some("198.51.100.2")).await;
    assert_eq!(status, 200);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM idempotency_keys").await, 11);
    let (_, exposition) = scrape_metrics(pipeline.metrics_port("ingest")).await;
    assert_eq!(
        metric_value(&exposition, "eye_ingest_refusals_total{reason=\"rate_limited\"}"),
        Some(1.0)
    );
    pipeline.stop().await;
}
