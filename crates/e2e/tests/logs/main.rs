//! No API key and no payload content ever reaches the logs.
//!
//! Its own test binary: it installs a process-wide subscriber that captures every log line
//! (debug level, all crates) while the whole pipeline handles good, bad and unauthenticated
//! traffic, then scans the capture.

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::Utc;
use eye_e2e::{Pipeline, authorized, count, event};
use eye_proto::v1::SendEventsRequest;
use eye_test_support::wait_for;
use serde_json::json;
use tracing_subscriber::fmt::MakeWriter;
use uuid::Uuid;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

const MARKER: &str = "S3CRET-PAYLOAD-MARKER";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_hold_no_keys_and_no_payloads() {
    let capture = Capture::default();
    tracing_subscriber::fmt().json().with_env_filter("debug").with_writer(capture.clone()).init();

    let (db, _, key) = eye_e2e::shop_db().await;
    let pipeline = Pipeline::start(&db, 1, 1).await;
    let mut client = pipeline.client().await;
    let session = Uuid::new_v4();
    let now = Utc::now();
    let events = vec![
        // Stored.
        event(session, "page interaction", "pageview", json!({"host": MARKER, "path": "/"}), now),
        // Quarantined: breaks its schema, and the message names the value.
        event(session, "page interaction", "pageview", json!({"host": 7, "path": MARKER}), now),
        // Quarantined: from the future.
        event(session, "c", "n", json!({"m": MARKER}), now + chrono::Duration::hours(2)),
        // Rejected at ingest.
        eye_proto::v1::Event {
            data_json: format!(r#"{{"m":"{MARKER}","m":1}}"#),
            ..event(session, "c", "n", json!({}), now)
        },
    ];
    client
        .send_events(authorized(SendEventsRequest { events, sent_at: None }, &key))
        .await
        .unwrap();
    let wrong_key = format!("eye_{}", "ab".repeat(32));
    let refused = client
        .send_events(authorized(
            SendEventsRequest {
                events: vec![event(session, "c", "n", json!({}), now)],
                sent_at: None,
            },
            &wrong_key,
        ))
        .await;
    assert!(refused.is_err());
    wait_for(&db.pool, Duration::from_secs(60), "1 stored, 2 quarantined", || async {
        let stored = count(&db.pool, "SELECT count(*) FROM events").await;
        let errors = count(&db.pool, "SELECT count(*) FROM event_errors").await;
        (stored == 1 && errors == 2).then_some(())
    })
    .await;
    pipeline.stop().await;

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(logs.lines().count() > 10, "the capture saw the pipeline's logs:\n{logs}");
    assert!(logs.contains("SendEvents"), "request spans are logged");
    for (what, secret) in
        [("api key", key.as_str()), ("wrong key", &wrong_key), ("payload", MARKER)]
    {
        let line = logs.lines().find(|line| line.contains(secret));
        assert!(line.is_none(), "a log line holds the {what}: {}", line.unwrap_or_default());
    }
    // The key's hex alone, without its prefix, is a secret too.
    assert!(!logs.contains(&key[4..]), "a log line holds the api key's hex");
}
