//! `ReplayErrors`: quarantined events back through validation, each once.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_errors_are_stored_once_after_a_schema_fix() {
    let (db, _, ingest_key) = eye_e2e::shop_db().await;
    let (_, key) = create_key(&db.pool, "operator", &["read", "admin"]).await;
    let pipeline = Pipeline::start_with_query(&db, 1, 1).await;
    let mut ingest = pipeline.client().await;
    let mut query = pipeline.query_client().await;

    let session = Uuid::new_v4();
    let now = Utc::now();
    let sent = vec![
        // Breaks pageview v1 (`path` missing); fine under v2.
        event(session, "page interaction", "pageview", json!({"host": "shop.example"}), now),
        // Breaks v1 and v2 (`host` missing).
        event(session, "page interaction", "pageview", json!({"path": "/"}), now),
        // An hour ahead of its receipt: no schema fixes that.
        event(
            session,
            "page interaction",
            "pageview",
            json!({"host": "shop.example", "path": "/"}),
            now + chrono::Duration::hours(1),
        ),
    ];
    let (fixable, hopeless, future) =
        (sent[0].event_id.clone(), sent[1].event_id.clone(), sent[2].event_id.clone());
    let request = SendEventsRequest { events: sent, sent_at: None };
    ingest.send_events(authorized(request, &ingest_key)).await.unwrap();
    wait_for(&db.pool, TIMEOUT, "3 errors", || async {
        (count(&db.pool, "SELECT count(*) FROM event_errors").await == 3).then_some(())
    })
    .await;

    let list =
        |filter: ErrorFilter| ListErrorsRequest { filter: Some(filter), ..Default::default() };
    let errors = query.list_errors(authorized(list(ErrorFilter::default()), &key)).await.unwrap();
    let errors = errors.into_inner();
    assert_eq!(errors.errors.len(), 3);
    let counts: Vec<_> = errors.counts.iter().map(|c| (c.reason.as_str(), c.count)).collect();
    assert_eq!(counts, [("schema_violation", 2), ("timestamp_in_future", 1)]);
    assert!(errors.errors.iter().all(|e| e.replay_outcome() == ReplayOutcome::NotReplayed));
    let id_of = |event_id: &str| errors.errors.iter().find(|e| e.event_id == event_id).unwrap().id;
    let fixable_id = id_of(&fixable);

    // The fix: version 2 no longer requires `path`.
    let v2 = json!({
        "type": "object",
        "properties": {"host": {"type": "string", "minLength": 1}},
        "required": ["host"]
    });
    register_schema(&db.pool, "page interaction", "pageview", 2, &v2).await;

    let replay = ReplayErrorsRequest {
        filter: Some(ErrorFilter {
            reason: "schema_violation".into(),
            application: "shop".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let replayed = query.replay_errors(authorized(replay, &key)).await.unwrap().into_inner();
    assert_eq!((replayed.replayed, replayed.batches), (2, 1), "one request, one batch");

    let outcome = |event_id: String| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, Option<String>>(
                "SELECT replay_outcome FROM event_errors WHERE event_id = $1::uuid",
            )
            .bind(event_id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    wait_for(&db.pool, TIMEOUT, "the fixed event stored, the other still invalid", || async {
        let stored =
            count(&db.pool, &format!("SELECT count(*) FROM events WHERE event_id = '{fixable}'"))
                .await;
        let fixed = outcome(fixable.clone()).await;
        let still = outcome(hopeless.clone()).await;
        (stored == 1
            && fixed.as_deref() == Some("stored")
            && still.as_deref() == Some("still_invalid"))
        .then_some(())
    })
    .await;
    let version: Option<i32> =
        sqlx::query_scalar("SELECT schema_version FROM events WHERE event_id = $1::uuid")
            .bind(&fixable)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(version, Some(2));

    // Through the API: each error says what became of it.
    let errors = query.list_errors(authorized(list(ErrorFilter::default()), &key)).await.unwrap();
    let errors = errors.into_inner().errors;
    let by_event = |event_id: &str| errors.iter().find(|e| e.event_id == event_id).unwrap();
    assert_eq!(by_event(&fixable).replay_outcome(), ReplayOutcome::Stored);
    assert!(by_event(&fixable).replayed_at.is_some());
    assert_eq!(by_event(&hopeless).replay_outcome(), ReplayOutcome::StillInvalid);
    assert_eq!(by_event(&hopeless).failures, 2);
    assert!(by_event(&hopeless).message.contains("host"), "{}", by_event(&hopeless).message);
    assert_eq!(by_event(&future).replay_outcome(), ReplayOutcome::NotReplayed);
    let still_invalid = ErrorFilter {
        replay_outcomes: vec![ReplayOutcome::StillInvalid.into()],
        ..Default::default()
    };
    let listed = query.list_errors(authorized(list(still_invalid), &key)).await.unwrap();
    assert_eq!(
        listed.into_inner().errors.iter().map(|e| &e.event_id).collect::<Vec<_>>(),
        [&hopeless]
    );

    // Replaying the stored one again: enqueued again, stored still once.
    let again = ReplayErrorsRequest { error_ids: vec![fixable_id], ..Default::default() };
    let replayed = query.replay_errors(authorized(again, &key)).await.unwrap().into_inner();
    assert_eq!(replayed.replayed, 1);
    wait_for(&db.pool, TIMEOUT, "the second replay done", || async {
        let pending = count(&db.pool, "SELECT count(*) FROM outbox").await;
        let fixed = outcome(fixable.clone()).await;
        (pending == 0 && fixed.as_deref() == Some("stored")).then_some(())
    })
    .await;
    assert_eq!(
        count(&db.pool, &format!("SELECT count(*) FROM events WHERE event_id = '{fixable}'")).await,
        1
    );
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 1);
    assert_eq!(
        count(
            &db.pool,
            &format!("SELECT event_count FROM sessions WHERE session_id = '{session}'")
        )
        .await,
        1,
        "the session counts the event once"
    );
    assert_eq!(count(&db.pool, "SELECT count(*) FROM event_errors").await, 3, "errors are kept");
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_enqueues_each_error_once_while_in_flight() {
    let (db, shop, key) = db_with_key("shop", &["read", "admin"]).await;
    let (blog, _) = create_key(&db.pool, "blog", &["ingest"]).await;
    // No validator: replayed errors stay in flight.
    let (pipeline, mut query) = query_server(&db).await;

    let now = Utc::now().trunc_subsecs(6);
    let (earlier, later) = (now - chrono::Duration::minutes(5), now - chrono::Duration::minutes(1));
    let row = |app, received_at, outcome| ErrorRow {
        app,
        category: "c",
        name: "n",
        reason: "schema_violation",
        failed_at: now,
        received_at,
        outcome,
    };
    for (app, received_at) in [(shop, earlier), (shop, earlier), (shop, later), (blog, later)] {
        insert_error(&db.pool, row(app, received_at, None)).await;
    }
    let stored = insert_error(&db.pool, row(shop, later, Some("stored"))).await;
    let never = ErrorFilter {
        replay_outcomes: vec![
            ReplayOutcome::NotReplayed.into(),
            ReplayOutcome::StillInvalid.into(),
        ],
        ..Default::default()
    };
    let replay = ReplayErrorsRequest { filter: Some(never.clone()), ..Default::default() };
    let first = query.replay_errors(authorized(replay.clone(), &key)).await.unwrap().into_inner();
    assert_eq!((first.replayed, first.batches), (4, 3), "one batch per application and receipt");
    let second = query.replay_errors(authorized(replay, &key)).await.unwrap().into_inner();
    assert_eq!((second.replayed, second.batches), (0, 0), "already in flight");
    // By id, too: pending errors are skipped; the stored one is not (the store dedupes it).
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM event_errors ORDER BY id")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    let by_id = ReplayErrorsRequest { error_ids: ids, ..Default::default() };
    let third = query.replay_errors(authorized(by_id, &key)).await.unwrap().into_inner();
    assert_eq!(third.replayed, 1);
    let outcome: Option<String> =
        sqlx::query_scalar("SELECT replay_outcome FROM event_errors WHERE id = $1")
            .bind(stored)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(outcome.as_deref(), Some("pending"));

    // The outbox rows: replay-marked EventBatches keeping each error's receipt time.
    let rows: Vec<(Vec<u8>, Option<String>)> =
        sqlx::query_as("SELECT body, headers->>'eye-replay' FROM outbox WHERE stage = 'validate'")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(rows.len(), 4);
    let mut batches: Vec<(Uuid, DateTime<Utc>, usize)> = rows
        .iter()
        .map(|(body, header)| {
            assert_eq!(header.as_deref(), Some("1"));
            let batch = EventBatch::decode(body.as_slice()).unwrap();
            let app = Uuid::from_slice(&batch.application_id).unwrap();
            (app, at(&batch.received_at), batch.events.len())
        })
        .collect();
    batches.sort();
    let mut expected =
        vec![(shop, earlier, 2), (shop, later, 1), (blog, later, 1), (shop, later, 1)];
    expected.sort();
    assert_eq!(batches, expected);
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM event_errors WHERE replay_outcome = 'pending'").await,
        5
    );
    pipeline.stop().await;
}
