//! Poison: one event the database refuses must not sink or stall its batch-mates.

use eye_service::pipeline::stage;
use std::time::Duration;

use chrono::Utc;
use event_model::{ApplicationId, Event, EventId, EventType, SessionId, batch};
use eye_e2e::{Pipeline, count, db_with_key};
use eye_proto::v1::EventBatch;
use eye_test_support::wait_for;
use prost::Message;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_split_off_retried_and_dead_lettered_alone() {
    let (db, app, _) = db_with_key("shop", &["ingest"]).await;
    let session = SessionId(Uuid::new_v4());
    // Ten events, the seventh with a string `jsonb` refuses (ingest would reject it; this row is
    // written straight into the writer's stage, as a buggy or older producer might).
    let events: Vec<(Event, i32)> = (0..10)
        .map(|n| {
            let data_json =
                if n == 6 { r#"{"a":"\u0000"}"#.to_owned() } else { format!(r#"{{"n":{n}}}"#) };
            let event = Event {
                event_id: EventId::new_v7(),
                session_id: session,
                event_type: EventType::new("c", "n"),
                data_json,
                occurred_at: Utc::now() - chrono::Duration::seconds(10 - n),
            };
            (event, 0)
        })
        .collect();
    let poison_id = events[6].0.event_id;
    let body = batch::encode(ApplicationId(app), Utc::now(), events);
    let mut tx = db.pool.begin().await.unwrap();
    flush_event::flush_event(&mut tx, stage::WRITE, &body, &Default::default()).await.unwrap();
    tx.commit().await.unwrap();

    let pipeline = Pipeline::start(&db, 0, 1).await;
    wait_for(&db.pool, Duration::from_secs(60), "9 stored and 1 dead letter", || async {
        let stored = count(&db.pool, "SELECT count(*) FROM events").await;
        let dead = count(&db.pool, "SELECT count(*) FROM outbox_dead_letters").await;
        (stored == 9 && dead == 1).then_some(())
    })
    .await;
    pipeline.stop().await;

    let (stage, attempts, last_error, body): (String, i32, String, Vec<u8>) =
        sqlx::query_as("SELECT stage, attempts, last_error, body FROM outbox_dead_letters")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(stage, stage::WRITE);
    assert_eq!(attempts, 5, "retried up to max_attempts, alone");
    assert!(last_error.contains("Unicode"), "the database's reason is kept: {last_error}");
    let dead = EventBatch::decode(body.as_slice()).unwrap();
    assert_eq!(dead.events.len(), 1, "the poison event alone");
    assert_eq!(dead.events[0].event_id, poison_id.as_bytes().to_vec());
    assert_eq!(count(&db.pool, "SELECT count(*) FROM outbox").await, 0);
    assert_eq!(count(&db.pool, "SELECT sum(event_count)::bigint FROM sessions").await, 9);
}
