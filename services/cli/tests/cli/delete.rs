//! Deleting a data subject (`eye delete`, QueryService `DeleteEvents`): no trace of the subject
//! is left in any table (stored, quarantined, waiting in the outbox, dead-lettered, in the
//! receipt or the suppression), the sessions follow, the export is rewritten without it, the
//! receipt's counts are what went, and later events of the subject are refused.

use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use eye_e2e::{Pipeline, authorized, count, create_key, db_with_key, event, tables_containing};
use eye_export::{Destination, replay};
use eye_proto::v1::{BatchEvent, DeleteEventsRequest, EventBatch, EventStatus, SendEventsRequest};
use eye_test_support::wait_for;
use prost::Message;
use serde_json::json;
use tonic::Code;
use uuid::Uuid;

use crate::eye;

const SUBJECT: &str = "u-erase-me-7f3a";
const TIMEOUT: Duration = Duration::from_secs(60);

/// Every event read back from the export at `dir`.
async fn exported(dir: &std::path::Path) -> Vec<String> {
    let destination = Destination::parse(dir.to_str().unwrap()).unwrap();
    let mut data = Vec::new();
    for (hour, manifest) in replay::manifests(&destination).await.unwrap() {
        for event in replay::read_hour(&destination, &hour, &manifest).await.unwrap() {
            data.push(event.data);
        }
    }
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_leaves_no_trace_of_the_subject_and_its_receipt_counts_what_went() {
    let (db, app, key) = db_with_key("shop", &["ingest", "read", "admin"]).await;
    let (_, reader) = create_key(&db.pool, "analyst", &["read"]).await;
    let url = db.url.clone();
    let pipeline = Pipeline::start_with_query(&db, 1, 1).await;
    let (only_subject, mixed) = (Uuid::new_v4(), Uuid::new_v4());
    let base = Utc::now() - TimeDelta::hours(3);
    let mine = json!({"user_id": SUBJECT, "page": "/account"});
    let theirs = json!({"user_id": "someone-else", "page": "/"});
    let mut events = Vec::new();
    for i in 0..3 {
        events.push(event(only_subject, "c", "n", mine.clone(), base + TimeDelta::seconds(i)));
    }
    for i in 0..2 {
        events.push(event(mixed, "c", "n", mine.clone(), base + TimeDelta::seconds(10 + i)));
        events.push(event(mixed, "c", "n", theirs.clone(), base + TimeDelta::seconds(20 + i)));
    }
    // Quarantined (from the future), with the subject in it.
    events.push(event(mixed, "c", "n", mine.clone(), Utc::now() + TimeDelta::hours(2)));
    let request = SendEventsRequest { events: events.clone(), sent_at: None };
    pipeline.send(eye_e2e::transport::Transport::Grpc, Some(&key), &request).await.unwrap();
    wait_for(&db.pool, TIMEOUT, "7 stored, 1 quarantined", || async {
        let stored = count(&db.pool, "SELECT count(*) FROM events").await;
        let errors = count(&db.pool, "SELECT count(*) FROM event_errors").await;
        (stored == 7 && errors == 1).then_some(())
    })
    .await;
    let dir = tempfile_dir();
    eye(&url, &["export", dir.to_str().unwrap()]).await.success();
    assert_eq!(exported(&dir).await.len(), 7);
    pipeline.stop().await;

    // In flight: a batch waiting for validation, and a dead letter, each mixing the subject's
    // event with someone else's.
    let ingest = Pipeline::start(&db, 0, 0).await;
    let waiting = SendEventsRequest {
        events: vec![
            event(mixed, "c", "n", mine.clone(), base + TimeDelta::seconds(30)),
            event(mixed, "c", "n", theirs.clone(), base + TimeDelta::seconds(31)),
        ],
        sent_at: None,
    };
    ingest.send(eye_e2e::transport::Transport::Grpc, Some(&key), &waiting).await.unwrap();
    ingest.stop().await;
    let dead = EventBatch {
        application_id: app.as_bytes().to_vec(),
        received_at: Some(event_model::envelope::to_timestamp(Utc::now())),
        events: [&mine, &theirs]
            .into_iter()
            .map(|data| BatchEvent {
                event_id: Uuid::now_v7().as_bytes().to_vec(),
                session_id: mixed.as_bytes().to_vec(),
                category: "c".into(),
                name: "n".into(),
                data_json: data.to_string(),
                occurred_at: Some(event_model::envelope::to_timestamp(base)),
                schema_version: 0,
            })
            .collect(),
    };
    sqlx::query(
        "INSERT INTO outbox_dead_letters (id, stage, body, headers, attempts, created_at, last_error) \
         VALUES (424242, 'write', $1, '{}', 5, now(), 'test')",
    )
    .bind(dead.encode_to_vec())
    .execute(&db.pool)
    .await
    .unwrap();
    assert!(tables_containing(&db.pool, SUBJECT).await.len() >= 4, "the subject is everywhere");

    // Over QueryService, with an admin key (the query server alone: nothing consumes meanwhile).
    let query = Pipeline::start_with_query(&db, 0, 0).await;
    let mut client = query.query_client().await;
    let ask = |contains: &str, suppress: bool| DeleteEventsRequest {
        contains_json: contains.into(),
        suppress,
        ..Default::default()
    };
    let subject = json!({"user_id": SUBJECT}).to_string();
    let refused = client.delete_events(authorized(ask(&subject, true), &reader)).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let bad = client.delete_events(authorized(ask("{nope", true), &key)).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().starts_with("contains_json"), "{}", bad.message());
    let empty = client.delete_events(authorized(ask("", false), &key)).await.unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument, "{empty:?}");
    let array = client.delete_events(authorized(ask("[1]", false), &key)).await.unwrap_err();
    assert_eq!(array.code(), Code::InvalidArgument, "{array:?}");

    let receipt =
        client.delete_events(authorized(ask(&subject, true), &key)).await.unwrap().into_inner();
    let hours: std::collections::BTreeSet<DateTime<Utc>> = events[..5]
        .iter()
        .chain(&events[6..7])
        .filter(|e| e.data_json.contains(SUBJECT))
        .map(|e| {
            let t = e.timestamp.unwrap();
            DateTime::from_timestamp(t.seconds, t.nanos as u32)
                .unwrap()
                .duration_trunc(TimeDelta::hours(1))
                .unwrap()
        })
        .collect();
    let counts = (
        receipt.events,
        receipt.event_errors,
        receipt.outbox_events,
        receipt.dead_letter_events,
        receipt.sessions_recomputed,
        receipt.sessions_removed,
        receipt.export_hours,
    );
    assert_eq!(counts, (5, 1, 1, 1, 2, 1, hours.len() as i64), "{receipt:?}");
    assert!(receipt.suppressed && receipt.finished_at.is_some());
    query.stop().await;

    // No table holds the subject: not the store, the quarantine, the outbox, the dead letters,
    // nor the receipt and the suppression (digests only).
    assert_eq!(tables_containing(&db.pool, SUBJECT).await, Vec::<String>::new());
    assert_eq!(
        count(
            &db.pool,
            &format!("SELECT count(*) FROM sessions WHERE session_id = '{only_subject}'")
        )
        .await,
        0
    );
    let (left, apps): (i64, Vec<Uuid>) =
        sqlx::query_as("SELECT event_count, application_ids FROM sessions WHERE session_id = $1")
            .bind(mixed)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!((left, apps), (2, vec![app]));
    // The receipt, as kept, says the same, and its digest is the request's.
    let kept = eye_admin::deletion::receipts(&db.pool, 1).await.unwrap().remove(0);
    assert_eq!(kept.id.to_string(), receipt.deletion_id);
    assert_eq!(kept.counts.events + kept.counts.event_errors, 6);
    assert_eq!(kept.requested_by, format!("key:{}", key_id(&db.pool, &key).await));
    let asked = eye_admin::deletion::Subject {
        contains: Some(json!({"user_id": SUBJECT})),
        ..Default::default()
    };
    let digest = eye_admin::deletion::digest_of(&db.pool, &asked).await.unwrap();
    assert_eq!(kept.filter_digest, digest);

    // The export, run again, rewrites the marked hours without the subject.
    eye(&url, &["export", dir.to_str().unwrap()]).await.success();
    let data = exported(&dir).await;
    assert_eq!(data.len(), 2, "{data:?}");
    assert!(data.iter().all(|d| !d.contains(SUBJECT)));

    // The pipeline goes on: the rewritten batch stores someone else's event, and a later event of
    // the subject is accepted by ingest but refused at validation, kept nowhere.
    let pipeline = Pipeline::start_with(Pipeline::settings(&db), 1, 1, false).await;
    let later = SendEventsRequest {
        events: vec![event(Uuid::new_v4(), "c", "n", mine.clone(), Utc::now())],
        sent_at: None,
    };
    let results =
        pipeline.send(eye_e2e::transport::Transport::Http, Some(&key), &later).await.unwrap();
    assert_eq!(results[0].status(), EventStatus::Accepted);
    wait_for(&db.pool, TIMEOUT, "the outbox drained", || async {
        let pending = count(&db.pool, "SELECT count(*) FROM outbox").await;
        let stored = count(&db.pool, "SELECT count(*) FROM events").await;
        (pending == 0 && stored == 3).then_some(())
    })
    .await;
    assert_eq!(tables_containing(&db.pool, SUBJECT).await, Vec::<String>::new());
    let (_, exposition) = eye_e2e::scrape_metrics(pipeline.metrics_port("validator")).await;
    assert!(
        exposition.lines().any(|l| l.starts_with("eye_validation_errors_total")
            && l.contains("reason=\"suppressed\"")
            && l.ends_with(" 1")),
        "{exposition}"
    );
    pipeline.stop().await;

    // The CLI: a whole application needs --yes; a session is deleted and listed.
    let all = eye(&url, &["delete", "--application", "shop"]).await.failure();
    assert!(all.stderr.contains("--yes"), "{}", all.stderr);
    let by_session = eye(&url, &["delete", "--session", &mixed.to_string()]).await.success();
    assert!(by_session.stdout.contains("deleted 3 stored event(s)"), "{}", by_session.stdout);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 0);
    let listed = eye(&url, &["deletions"]).await.success();
    assert_eq!(listed.stdout.lines().count(), 3, "a header and two receipts:\n{}", listed.stdout);
    assert!(listed.stdout.contains("contains (suppressed)") && listed.stdout.contains("session"));
}

async fn key_id(pool: &sqlx::PgPool, key: &str) -> Uuid {
    sqlx::query_scalar("SELECT id FROM api_keys WHERE key_hash = $1")
        .bind(&eye_service::auth::hash_key(key)[..])
        .fetch_one(pool)
        .await
        .unwrap()
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("eye-delete-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
