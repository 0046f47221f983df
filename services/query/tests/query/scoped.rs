//! Scoped keys: a read key reads its own application's events, sessions, errors and counts; a
//! key with `admin` reads every application's. Through real gRPC.

use chrono::Utc;
use eye_e2e::{authorized, create_key};
use eye_proto::v1::{
    ErrorFilter, EventFilter, GetSessionRequest, GetStatsRequest, ListErrorsRequest,
    ListEventsRequest, ReplayErrorsRequest,
};
use eye_test_support::TestDb;
use tonic::Code;
use uuid::Uuid;

use crate::{ErrorRow, ids, insert_error, insert_event, list_all, query_server};

#[tokio::test]
async fn a_read_key_sees_only_its_own_application_and_an_admin_key_sees_all() {
    let db = TestDb::new().await;
    let (shop, shop_key) = create_key(&db.pool, "shop", &["ingest", "read"]).await;
    let (blog, blog_key) = create_key(&db.pool, "blog", &["ingest", "read"]).await;
    let (_, admin_key) = create_key(&db.pool, "ops", &["read", "admin"]).await;
    let (shared, blog_only) = (Uuid::new_v4(), Uuid::new_v4());
    let now = Utc::now() - chrono::Duration::minutes(5);
    let at = |s: i64| now + chrono::Duration::seconds(s);
    let mut shop_events = Vec::new();
    for s in 0..3 {
        shop_events.push(insert_event(&db.pool, shop, shared, "page", at(s)).await.to_string());
    }
    let mut blog_events = Vec::new();
    for s in 3..5 {
        blog_events.push(insert_event(&db.pool, blog, shared, "page", at(s)).await.to_string());
    }
    blog_events.push(insert_event(&db.pool, blog, blog_only, "page", at(6)).await.to_string());
    // The writer keeps sessions; these rows say what it would have.
    sqlx::query(
        "INSERT INTO sessions (session_id, first_seen_at, last_seen_at, event_count, application_ids) \
         VALUES ($1, $2, $3, 5, $4), ($5, $6, $6, 1, $7)",
    )
    .bind(shared)
    .bind(at(0))
    .bind(at(4))
    .bind(vec![shop, blog])
    .bind(blog_only)
    .bind(at(6))
    .bind(vec![blog])
    .execute(&db.pool)
    .await
    .unwrap();
    let error = |app| ErrorRow {
        app,
        category: "page",
        name: "n",
        reason: "schema_violation",
        failed_at: Utc::now(),
        received_at: Utc::now(),
        outcome: None,
    };
    let shop_error = insert_error(&db.pool, error(shop)).await;
    let blog_error = insert_error(&db.pool, error(blog)).await;
    let (pipeline, mut query) = query_server(&db).await;

    // ListEvents.
    let listed = ids(&list_all(&mut query, &shop_key, EventFilter::default(), 2).await);
    assert_eq!(listed, shop_events, "the shop key reads the shop's events only");
    let everything = ids(&list_all(&mut query, &admin_key, EventFilter::default(), 0).await);
    assert_eq!(everything.len(), 6, "the admin key reads both");
    let other = EventFilter { application: "blog".into(), ..Default::default() };
    let request = ListEventsRequest { filter: Some(other), ..Default::default() };
    let status = query.list_events(authorized(request, &shop_key)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // GetSession: the shared session shows the shop key its own part, counts included.
    let get =
        |session: Uuid| GetSessionRequest { session_id: session.to_string(), ..Default::default() };
    let mine = query.get_session(authorized(get(shared), &shop_key)).await.unwrap().into_inner();
    let summary = mine.session.unwrap();
    assert_eq!(summary.event_count, 3);
    assert_eq!(summary.application_ids, vec![shop.to_string()]);
    assert_eq!(ids(&mine.events), shop_events);
    let all = query.get_session(authorized(get(shared), &admin_key)).await.unwrap().into_inner();
    assert_eq!(all.session.unwrap().event_count, 5);
    assert_eq!(all.events.len(), 5);
    let theirs = query.get_session(authorized(get(blog_only), &shop_key)).await.unwrap_err();
    assert_eq!(
        theirs.code(),
        Code::NotFound,
        "another application's session does not exist for it"
    );
    let blogs =
        query.get_session(authorized(get(blog_only), &blog_key)).await.unwrap().into_inner();
    assert_eq!(ids(&blogs.events), blog_events[2..]);

    // ListErrors and its counts, ReplayErrors.
    let errors = |key: &str| {
        let request = ListErrorsRequest::default();
        let mut query = query.clone();
        let key = key.to_owned();
        async move { query.list_errors(authorized(request, &key)).await.unwrap().into_inner() }
    };
    let shop_errors = errors(&shop_key).await;
    assert_eq!(shop_errors.errors.iter().map(|e| e.id).collect::<Vec<_>>(), [shop_error]);
    assert_eq!(shop_errors.counts.iter().map(|c| c.count).sum::<i64>(), 1);
    assert_eq!(errors(&admin_key).await.errors.len(), 2);
    let replay = ReplayErrorsRequest { error_ids: vec![blog_error], ..Default::default() };
    let replayed = query.replay_errors(authorized(replay, &shop_key)).await.unwrap().into_inner();
    assert_eq!(replayed.replayed, 0, "the shop key cannot replay the blog's errors");
    let replay = ReplayErrorsRequest {
        filter: Some(ErrorFilter { reason: "schema_violation".into(), ..Default::default() }),
        ..Default::default()
    };
    let replayed = query.replay_errors(authorized(replay, &shop_key)).await.unwrap().into_inner();
    assert_eq!(replayed.replayed, 1, "its own error only");

    // GetStats: counts of what the key reads.
    let stats = |key: &str| {
        let window = Some(prost_types::Duration { seconds: 3_600, nanos: 0 });
        let mut query = query.clone();
        let key = key.to_owned();
        async move {
            query
                .get_stats(authorized(GetStatsRequest { window }, &key))
                .await
                .unwrap()
                .into_inner()
        }
    };
    assert_eq!(stats(&shop_key).await.events_stored, 3);
    assert_eq!(stats(&admin_key).await.events_stored, 6);
    pipeline.stop().await;
}
