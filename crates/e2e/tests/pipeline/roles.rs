//! Least privilege: each service runs as a login role of its group role (`eye_ingest`,
//! `eye_validator`, `eye_writer`, `eye_query`; migrations create and grant them), events flow
//! end to end, the writer's upkeep drops partitions through the schema owner's function, and each
//! role is refused what its service must not do.

use std::time::Duration;

use chrono::Utc;
use eye_e2e::{Pipeline, authorized, count, db_with_key, event, login_as, transport::Transport};
use eye_proto::v1::{EventStatus, ListEventsRequest, ReplayErrorsRequest, SendEventsRequest};
use eye_test_support::{TestDb, wait_for};
use serde_json::json;
use sqlx::{Connection, PgConnection};

use uuid::Uuid;

const TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `sql` as the login `url` and returns the SQLSTATE it failed with (`None`: it worked, and
/// was committed).
async fn as_role(url: &str, sql: &str) -> Option<String> {
    let mut conn = PgConnection::connect(url).await.expect("connect as the role");
    let outcome = sqlx::query(sql).execute(&mut conn).await;
    outcome.err().map(|error| {
        error.as_database_error().and_then(|e| e.code()).map(|c| c.into_owned()).unwrap_or_default()
    })
}

const DENIED: Option<&str> = Some("42501");

async fn logins(db: &TestDb) -> [(&'static str, String); 5] {
    [
        ("ingest", login_as(db, "eye_ingest").await),
        ("validator", login_as(db, "eye_validator").await),
        ("writer", login_as(db, "eye_writer").await),
        ("query", login_as(db, "eye_query").await),
        ("delivery", login_as(db, "eye_delivery").await),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_runs_with_each_service_in_its_own_least_privileged_role() {
    let (db, _, key) = db_with_key("shop", &["ingest", "read", "admin"]).await;
    let logins = logins(&db).await;
    // An expired partition, two years old: the writer's upkeep drops it with its own role.
    let old = Utc::now() - chrono::Duration::days(730);
    sqlx::query("SELECT eye_ensure_partition('events', $1, 'month')")
        .bind(old)
        .execute(&db.pool)
        .await
        .unwrap();
    let expired = format!("events_p{}", old.format("%Y%m"));
    let pipeline = Pipeline::start_each(
        |service| {
            let mut settings = Pipeline::settings(&db);
            let url = &logins.iter().find(|(name, _)| *name == service).expect("a login").1;
            settings.database.url = Some(url.clone().into());
            settings.store.retention = Some("365 days".into());
            settings
        },
        1,
        1,
        true,
    )
    .await;

    let session = Uuid::new_v4();
    for transport in Transport::ALL {
        let request = SendEventsRequest {
            events: vec![
                event(session, "c", "n", json!({"i": 1}), Utc::now()),
                event(session, "c", "n", json!({"i": 2}), Utc::now() + chrono::Duration::hours(2)),
            ],
            sent_at: None,
        };
        let results = pipeline.send(transport, Some(&key), &request).await.unwrap();
        assert!(results.iter().all(|r| r.status() == EventStatus::Accepted), "{results:?}");
    }
    wait_for(&db.pool, TIMEOUT, "2 stored, 2 quarantined, the old partition dropped", || async {
        let stored = count(&db.pool, "SELECT count(*) FROM events").await;
        let errors = count(&db.pool, "SELECT count(*) FROM event_errors").await;
        let gone: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NULL")
            .bind(&expired)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        (stored == 2 && errors == 2 && gone).then_some(())
    })
    .await;

    // The query server reads...
    let mut client = pipeline.query_client().await;
    let listed = client
        .list_events(authorized(ListEventsRequest::default(), &key))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.events.len(), 2);
    // ...and only reads: a replay (a write) is refused, saying why, not INTERNAL.
    let replay = ReplayErrorsRequest { error_ids: vec![1], ..Default::default() };
    let refused = client.replay_errors(authorized(replay, &key)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("read-only"), "{}", refused.message());
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_role_is_refused_what_it_must_not_do() {
    let db = TestDb::new().await;
    let logins = logins(&db).await;
    let url = |service: &str| logins.iter().find(|(name, _)| *name == service).unwrap().1.clone();
    let partition: String =
        sqlx::query_scalar("SELECT eye_ensure_partition('events', now(), 'month')::text")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let insert_event = "INSERT INTO events (application_id, event_id, session_id, category, name, \
                        data, occurred_at, received_at) VALUES (gen_random_uuid(), \
                        gen_random_uuid(), gen_random_uuid(), 'c', 'n', '{}', now(), now())";
    let drop_expired = "SELECT eye_drop_partitions_before('events', now() - interval '10 years')";
    let cases: &[(&str, &str, Option<&str>)] = &[
        // Ingest cannot read the store, nor change keys or schemas, nor drop partitions.
        ("ingest", "SELECT * FROM events", DENIED),
        ("ingest", "SELECT * FROM event_errors", DENIED),
        ("ingest", "SELECT * FROM sessions", DENIED),
        ("ingest", "UPDATE api_keys SET revoked_at = now()", DENIED),
        ("ingest", "INSERT INTO event_schemas VALUES ('c', 'n', 1, '{}')", DENIED),
        ("ingest", drop_expired, DENIED),
        ("ingest", "SELECT eye_ensure_partition('idempotency_keys', now(), '7 days')", None),
        (
            "ingest",
            "INSERT INTO idempotency_keys (application_id, event_id, slice) \
             VALUES (gen_random_uuid(), gen_random_uuid(), eye_ledger_slice(7, now()))",
            None,
        ),
        // The validator cannot store events, nor read keys.
        ("validator", insert_event, DENIED),
        ("validator", "SELECT * FROM api_keys", DENIED),
        ("validator", "SELECT * FROM events", DENIED),
        // The writer stores, but cannot change keys or schemas, nor create or drop tables itself.
        ("writer", insert_event, None),
        ("writer", "SELECT * FROM api_keys", DENIED),
        ("writer", "DELETE FROM events", DENIED),
        ("writer", &format!("DROP TABLE {partition}"), DENIED),
        ("writer", "CREATE TABLE events_mine (x int)", DENIED),
        ("writer", drop_expired, None),
        // The query service only reads.
        ("query", "SELECT count(*) FROM events", None),
        ("query", insert_event, DENIED),
        ("query", "DELETE FROM sessions", DENIED),
        ("query", "UPDATE event_errors SET replayed_at = now()", DENIED),
        (
            "query",
            "INSERT INTO api_keys (id, application_id, key_hash) VALUES (gen_random_uuid(), gen_random_uuid(), '\\x00')",
            DENIED,
        ),
        ("query", drop_expired, DENIED),
        // Delivery reads events and moves its own rows, nothing else.
        ("delivery", "SELECT count(*) FROM events", None),
        ("delivery", insert_event, DENIED),
        ("delivery", "SELECT * FROM api_keys", DENIED),
        ("delivery", "DELETE FROM sessions", DENIED),
    ];
    for (service, sql, expected) in cases {
        let outcome = as_role(&url(service), sql).await;
        assert_eq!(outcome.as_deref(), *expected, "{service}: {sql}");
    }
}
