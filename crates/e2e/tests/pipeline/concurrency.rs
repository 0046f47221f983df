//! Several validators and writers at once: every event stored exactly once.

use std::time::Duration;

use chrono::Utc;
use eye_e2e::{Pipeline, authorized, count, event};
use eye_proto::v1::{EventStatus, SendEventsRequest};
use eye_test_support::wait_for;
use serde_json::json;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_validators_and_two_writers_store_each_event_exactly_once() {
    const EVENTS: usize = 10_000;
    const BATCH: usize = 250;
    let (db, _, key) = eye_e2e::shop_db().await;
    let pipeline = Pipeline::start(&db, 2, 2).await;

    // 200 sessions, events spread over them; batches sent concurrently, and every fourth batch
    // sent twice at once, so ingest sees concurrent duplicates.
    let sessions: Vec<Uuid> = (0..200).map(|_| Uuid::new_v4()).collect();
    let start = Utc::now() - chrono::Duration::minutes(10);
    let batches: Vec<SendEventsRequest> = (0..EVENTS / BATCH)
        .map(|b| SendEventsRequest {
            events: (0..BATCH)
                .map(|i| {
                    let n = b * BATCH + i;
                    let at = start + chrono::Duration::milliseconds(n as i64);
                    let data = json!({"host": "shop.example", "path": format!("/p/{n}")});
                    event(sessions[n % sessions.len()], "page interaction", "pageview", data, at)
                })
                .collect(),
            sent_at: None,
        })
        .collect();
    let mut sends = tokio::task::JoinSet::new();
    for (b, batch) in batches.into_iter().enumerate() {
        let copies = if b % 4 == 0 { 2 } else { 1 };
        for _ in 0..copies {
            let mut client = pipeline.client().await;
            let request = authorized(batch.clone(), &key);
            sends.spawn(async move { client.send_events(request).await.unwrap().into_inner() });
        }
    }
    let (mut accepted, mut duplicate) = (0, 0);
    while let Some(response) = sends.join_next().await {
        for result in response.unwrap().results {
            match result.status() {
                EventStatus::Accepted => accepted += 1,
                EventStatus::Duplicate => duplicate += 1,
                other => panic!("unexpected {other:?}: {}", result.reason),
            }
        }
    }
    assert_eq!(accepted, EVENTS, "each event accepted exactly once");
    assert_eq!(duplicate, EVENTS / BATCH / 4 * BATCH);

    wait_for(&db.pool, Duration::from_secs(120), "all events stored", || async {
        let stored = count(&db.pool, "SELECT count(*) FROM events").await;
        let pending = count(&db.pool, "SELECT count(*) FROM outbox").await;
        (stored == EVENTS as i64 && pending == 0).then_some(())
    })
    .await;
    assert_eq!(
        count(&db.pool, "SELECT count(DISTINCT (application_id, event_id)) FROM events").await,
        EVENTS as i64
    );
    assert_eq!(
        count(&db.pool, "SELECT sum(event_count)::bigint FROM sessions").await,
        EVENTS as i64
    );
    assert_eq!(count(&db.pool, "SELECT count(*) FROM sessions").await, sessions.len() as i64);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM event_errors").await, 0);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM outbox_dead_letters").await, 0);
    pipeline.stop().await;
}
