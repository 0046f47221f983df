//! `GetStats`: stage depth, lag and recent counts.

use super::*;
use eye_service::pipeline;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_report_depth_lag_and_recent_counts() {
    let (db, app, ingest_key) = db_with_key("shop", &["ingest", "read"]).await;
    // No validator or writer: what ingest accepts waits in `validate`.
    let pipeline = Pipeline::start_with_query(&db, 0, 0).await;
    let mut ingest = pipeline.client().await;
    let mut query = pipeline.query_client().await;

    let request = SendEventsRequest {
        events: vec![event(Uuid::new_v4(), "c", "n", json!({}), Utc::now())],
        sent_at: None,
    };
    ingest.send_events(authorized(request, &ingest_key)).await.unwrap();
    sqlx::query("UPDATE outbox SET created_at = now() - interval '5 seconds'")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO outbox_dead_letters (id, stage, body, headers, attempts, created_at, last_error) \
         VALUES (1000, 'write', '', '{}', 5, now(), 'gave up')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let session = Uuid::new_v4();
    for _ in 0..2 {
        insert_event(&db.pool, app, session, "c", Utc::now()).await;
    }
    let old = insert_event(&db.pool, app, session, "c", Utc::now()).await;
    sqlx::query("UPDATE events SET stored_at = now() - interval '2 hours' WHERE event_id = $1")
        .bind(old)
        .execute(&db.pool)
        .await
        .unwrap();
    let now = Utc::now();
    let error = |reason, failed_at| ErrorRow {
        app,
        category: "c",
        name: "n",
        reason,
        failed_at,
        received_at: failed_at,
        outcome: None,
    };
    for (reason, failed_at) in [
        ("schema_violation", now),
        ("schema_violation", now),
        ("timestamp_in_future", now),
        ("timestamp_in_future", now - chrono::Duration::hours(2)),
    ] {
        insert_error(&db.pool, error(reason, failed_at)).await;
    }

    let stats = query
        .get_stats(authorized(GetStatsRequest::default(), &ingest_key))
        .await
        .unwrap()
        .into_inner();
    let stage = |name: &str| stats.stages.iter().find(|s| s.stage == name).unwrap().clone();
    let validate = stage(pipeline::stage::VALIDATE);
    assert_eq!((validate.depth, validate.in_flight, validate.dead_letters), (1, 0, 0));
    assert!(validate.lag.unwrap().seconds >= 5, "{:?}", validate.lag);
    let write = stage(pipeline::stage::WRITE);
    assert_eq!((write.depth, write.dead_letters), (0, 1));
    assert_eq!(write.lag.unwrap(), prost_types::Duration::default());
    assert_eq!(stats.dead_letters, 1);
    assert_eq!(stats.events_stored, 2);
    assert_eq!(stats.errors, 3);
    let by_reason: Vec<_> =
        stats.errors_by_reason.iter().map(|c| (c.reason.as_str(), c.count)).collect();
    assert_eq!(by_reason, [("schema_violation", 2), ("timestamp_in_future", 1)]);
    let since = at(&stats.since);
    assert!(
        since < now - chrono::Duration::minutes(59) && since > now - chrono::Duration::minutes(61)
    );

    let wide =
        GetStatsRequest { window: Some(prost_types::Duration { seconds: 3 * 3_600, nanos: 0 }) };
    let stats = query.get_stats(authorized(wide, &ingest_key)).await.unwrap().into_inner();
    assert_eq!((stats.events_stored, stats.errors), (3, 4));
    pipeline.stop().await;
}
