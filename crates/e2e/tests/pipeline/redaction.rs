//! Personal properties (`x-eye-pii`) never reach the database in clear text: not the outbox
//! (ingest redacts), not the store, not the quarantine (the validator redacts again with the
//! schema in force, which also covers a schema newer than ingest's copy). Checked by scanning
//! every table for the values sent.

use std::time::Duration;

use chrono::Utc;
use eye_e2e::{Pipeline, count, event, register_schema, tables_containing, transport::Transport};
use eye_proto::v1::{EventStatus, SendEventsRequest};
use eye_test_support::{TestDb, wait_for};
use serde_json::{Value, json};
use uuid::Uuid;

const KEY: &str = "a-test-key-of-at-least-32-bytes-for-hmac";
const EMAIL: &str = "alice.liddell@example.com";
const PHONE: &str = "+44 20 7946 0958";

fn schema() -> Value {
    serde_json::from_str(include_str!(
        "../../../../schemas/examples/form_interaction.submit.pii.json"
    ))
    .unwrap()
}

/// A valid submit, one that breaks the schema (no `host`: quarantined) and one from the future
/// (quarantined by the timestamp rules): each carries the personal values.
fn submits() -> SendEventsRequest {
    let form = json!({"email": EMAIL, "phone": PHONE, "newsletter": true});
    let session = Uuid::new_v4();
    let now = Utc::now();
    SendEventsRequest {
        events: vec![
            event(
                session,
                "form interaction",
                "submit",
                json!({"host": "shop.example", "path": "/signup", "form": form}),
                now,
            ),
            event(
                session,
                "form interaction",
                "submit",
                json!({"path": "/signup", "form": form}),
                now,
            ),
            event(
                session,
                "form interaction",
                "submit",
                json!({"host": "shop.example", "path": "/signup", "form": form}),
                now + chrono::Duration::hours(2),
            ),
        ],
        sent_at: None,
    }
}

async fn assert_no_trace(db: &TestDb) {
    for value in [EMAIL, PHONE] {
        assert_eq!(tables_containing(&db.pool, value).await, Vec::<String>::new(), "{value}");
    }
}

async fn settle(db: &TestDb, expected: usize) {
    wait_for(&db.pool, Duration::from_secs(60), "1 stored and 2 quarantined per batch", || async {
        let stored = count(&db.pool, "SELECT count(*) FROM events").await;
        let errors = count(&db.pool, "SELECT count(*) FROM event_errors").await;
        let pending = count(&db.pool, "SELECT count(*) FROM outbox").await;
        (stored == expected as i64 && errors == 2 * expected as i64 && pending == 0).then_some(())
    })
    .await;
}

fn settings(db: &TestDb) -> eye_service::Settings {
    let mut settings = Pipeline::settings(db);
    settings.privacy.pii_key = Some(KEY.to_owned().into());
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_properties_never_reach_any_table_in_clear_text() {
    let (db, _, key) = eye_e2e::db_with_key("shop", &["ingest"]).await;
    register_schema(&db.pool, "form interaction", "submit", 1, &schema()).await;

    // Ingest alone: what waits in the outbox is already redacted.
    let ingest = Pipeline::start_with(settings(&db), 0, 0, false).await;
    for transport in Transport::ALL {
        let results = ingest.send(transport, Some(&key), &submits()).await.unwrap();
        assert!(results.iter().all(|r| r.status() == EventStatus::Accepted), "{results:?}");
    }
    assert_eq!(count(&db.pool, "SELECT count(*) FROM outbox").await, 2);
    assert_no_trace(&db).await;
    ingest.stop().await;

    let pipeline = Pipeline::start_with(settings(&db), 1, 1, false).await;
    settle(&db, 2).await;
    assert_no_trace(&db).await;

    let form: Value = sqlx::query_scalar("SELECT data->'form' FROM events LIMIT 1")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let hashed = event_model::pii::hash(KEY.as_bytes(), EMAIL);
    assert_eq!(form, json!({"email": hashed, "phone": "[redacted]", "newsletter": true}));
    // Equal values hash alike, so the analyst can still find (and count) one person's events.
    let quarantined: i64 =
        sqlx::query_scalar("SELECT count(*) FROM event_errors WHERE data->'form'->>'email' = $1")
            .bind(&hashed)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(quarantined, 4);
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_validator_redacts_what_ingest_enqueued_before_the_schema_said_so() {
    let (db, _, key) = eye_e2e::db_with_key("shop", &["ingest"]).await;
    let ingest = Pipeline::start_with(settings(&db), 0, 0, false).await;
    ingest.send(Transport::Grpc, Some(&key), &submits()).await.unwrap();
    ingest.stop().await;
    assert!(!tables_containing(&db.pool, EMAIL).await.is_empty(), "no schema yet: in clear");

    // The schema arrives while the events wait for validation.
    register_schema(&db.pool, "form interaction", "submit", 1, &schema()).await;
    let pipeline = Pipeline::start_with(settings(&db), 1, 1, false).await;
    settle(&db, 1).await;
    assert_no_trace(&db).await;
    pipeline.stop().await;
}
