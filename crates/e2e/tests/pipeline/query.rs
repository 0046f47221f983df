//! The read path: events, sessions, errors (and their replay) and stats, read back through
//! `eye.v1.QueryService` over real gRPC.

use std::{collections::HashSet, time::Duration};

use chrono::{DateTime, Datelike, SubsecRound, Utc};
use eye_e2e::{
    Pipeline, authorized, count, create_key, event, register_example_schemas, register_schema,
};
use eye_proto::v1::{
    ErrorFilter, EventBatch, EventFilter, EventStatus, GetSessionRequest, GetStatsRequest,
    ListErrorsRequest, ListEventsRequest, ReplayErrorsRequest, ReplayOutcome, SendEventsRequest,
    StoredEvent, query_service_client::QueryServiceClient,
};
use eye_test_support::{TestDb, wait_for};
use prost::Message;
use serde_json::json;
use sqlx::PgPool;
use tonic::{Code, transport::Channel};
use uuid::Uuid;

const TIMEOUT: Duration = Duration::from_secs(60);

type Client = QueryServiceClient<Channel>;

fn ts(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: at.timestamp(), nanos: at.timestamp_subsec_nanos() as i32 }
}

fn at(timestamp: &Option<prost_types::Timestamp>) -> DateTime<Utc> {
    let t = timestamp.as_ref().expect("timestamp set");
    DateTime::from_timestamp(t.seconds, t.nanos as u32).unwrap()
}

/// Every event matching `filter`, following page tokens.
async fn list_all(
    client: &mut Client,
    key: &str,
    filter: EventFilter,
    page_size: i32,
) -> Vec<StoredEvent> {
    let mut events = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = ListEventsRequest { filter: Some(filter.clone()), page_size, page_token };
        let page = client.list_events(authorized(request, key)).await.unwrap().into_inner();
        let limit = if page_size == 0 { 100 } else { page_size };
        assert!(page.events.len() <= limit as usize);
        assert!(
            !page.events.is_empty() || page.next_page_token.is_empty(),
            "only the last page may be empty"
        );
        events.extend(page.events);
        if page.next_page_token.is_empty() {
            return events;
        }
        page_token = page.next_page_token;
    }
}

fn ids(events: &[StoredEvent]) -> Vec<String> {
    events.iter().map(|e| e.event_id.clone()).collect()
}

/// Stores an event directly (no pipeline): for tests about reading, not writing.
async fn insert_event(
    pool: &PgPool,
    app: Uuid,
    session: Uuid,
    category: &str,
    occurred_at: DateTime<Utc>,
) -> Uuid {
    let event_id = Uuid::now_v7();
    sqlx::query("SELECT eye_ensure_event_partition($1)")
        .bind(occurred_at)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO events (application_id, event_id, session_id, category, name, data, \
                             occurred_at, received_at) \
         VALUES ($1, $2, $3, $4, 'n', '{}', $5, now())",
    )
    .bind(app)
    .bind(event_id)
    .bind(session)
    .bind(category)
    .bind(occurred_at)
    .execute(pool)
    .await
    .unwrap();
    event_id
}

/// Quarantines an event directly, the way the validator does.
struct ErrorRow<'a> {
    app: Uuid,
    category: &'a str,
    name: &'a str,
    reason: &'a str,
    failed_at: DateTime<Utc>,
    received_at: DateTime<Utc>,
    outcome: Option<&'a str>,
}

async fn insert_error(pool: &PgPool, row: ErrorRow<'_>) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO event_errors (application_id, event_id, session_id, category, name, data, \
                                   occurred_at, received_at, reason, message, failed_at, \
                                   replay_outcome) \
         VALUES ($1, $2, $3, $4, $5, '{\"x\": 1}', $6, $6, $7, 'broken', $8, $9) RETURNING id",
    )
    .bind(row.app)
    .bind(Uuid::now_v7())
    .bind(Uuid::new_v4())
    .bind(row.category)
    .bind(row.name)
    .bind(row.received_at)
    .bind(row.reason)
    .bind(row.failed_at)
    .bind(row.outcome)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_sent_through_ingest_are_read_back_by_every_filter() {
    let db = TestDb::new().await;
    register_example_schemas(&db.pool).await;
    let (shop, shop_key) = create_key(&db.pool, "shop", &["ingest"]).await;
    let (_, blog_key) = create_key(&db.pool, "blog", &["ingest"]).await;
    let (_, key) = create_key(&db.pool, "analyst", &["read"]).await;
    let pipeline = Pipeline::start_with_query(&db, 1, 1).await;
    let mut ingest = pipeline.client().await;
    let mut query = pipeline.query_client().await;

    // Two sessions; session `a` gets events from both applications.
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let base = Utc::now().trunc_subsecs(0) - chrono::Duration::minutes(10);
    let second = |n: i64| base + chrono::Duration::seconds(n);
    let page = |path: &str| json!({"host": "shop.example", "path": path});
    let sent = [
        event(a, "page interaction", "pageview", page("/"), second(0)),
        event(
            a,
            "page interaction",
            "cta click",
            json!({"host": "shop.example", "path": "/", "element": "buy"}),
            second(1),
        ),
        event(
            a,
            "form interaction",
            "submit",
            json!({"host": "shop.example", "path": "/checkout", "form": {"email": "a@b.c"}}),
            second(2),
        ),
        event(b, "page interaction", "pageview", page("/blog"), second(3)),
        event(b, "page interaction", "pageview", page("/checkout"), second(4)),
        event(a, "page interaction", "pageview", page("/checkout"), second(5)),
    ];
    for (events, key) in [(&sent[..3], &shop_key), (&sent[3..], &blog_key)] {
        let request = SendEventsRequest { events: events.to_vec(), sent_at: None };
        let response = ingest.send_events(authorized(request, key)).await.unwrap().into_inner();
        assert!(response.results.iter().all(|r| r.status() == EventStatus::Accepted));
    }
    wait_for(&db.pool, TIMEOUT, "6 events stored", || async {
        (count(&db.pool, "SELECT count(*) FROM events").await == 6).then_some(())
    })
    .await;

    let expect = |indexes: &[usize]| -> Vec<String> {
        indexes.iter().map(|&i| sent[i].event_id.clone()).collect()
    };
    let cases: Vec<(&str, EventFilter, Vec<String>)> = vec![
        ("no filter", EventFilter::default(), expect(&[0, 1, 2, 3, 4, 5])),
        (
            "session",
            EventFilter { session_id: a.to_string(), ..Default::default() },
            expect(&[0, 1, 2, 5]),
        ),
        (
            "category",
            EventFilter { category: "page interaction".into(), ..Default::default() },
            expect(&[0, 1, 3, 4, 5]),
        ),
        (
            "category and name",
            EventFilter {
                category: "page interaction".into(),
                name: "pageview".into(),
                ..Default::default()
            },
            expect(&[0, 3, 4, 5]),
        ),
        ("name", EventFilter { name: "submit".into(), ..Default::default() }, expect(&[2])),
        (
            "application by id",
            EventFilter { application: shop.to_string(), ..Default::default() },
            expect(&[0, 1, 2]),
        ),
        (
            "application by name",
            EventFilter { application: "blog".into(), ..Default::default() },
            expect(&[3, 4, 5]),
        ),
        (
            "half-open time range",
            EventFilter {
                from: Some(ts(second(1))),
                to: Some(ts(second(4))),
                ..Default::default()
            },
            expect(&[1, 2, 3]),
        ),
        (
            "from only",
            EventFilter { from: Some(ts(second(4))), ..Default::default() },
            expect(&[4, 5]),
        ),
        ("to only", EventFilter { to: Some(ts(second(1))), ..Default::default() }, expect(&[0])),
        (
            "empty range",
            EventFilter {
                from: Some(ts(second(2))),
                to: Some(ts(second(2))),
                ..Default::default()
            },
            vec![],
        ),
        (
            "data contains a value",
            EventFilter { data_contains: r#"{"path": "/checkout"}"#.into(), ..Default::default() },
            expect(&[2, 4, 5]),
        ),
        (
            "data contains a nested object",
            EventFilter {
                data_contains: r#"{"form": {"email": "a@b.c"}}"#.into(),
                ..Default::default()
            },
            expect(&[2]),
        ),
        (
            "data contains nothing particular",
            EventFilter { data_contains: "{}".into(), ..Default::default() },
            expect(&[0, 1, 2, 3, 4, 5]),
        ),
        (
            "everything at once",
            EventFilter {
                session_id: a.to_string(),
                category: "page interaction".into(),
                name: "pageview".into(),
                application: "blog".into(),
                from: Some(ts(second(0))),
                to: Some(ts(second(6))),
                data_contains: r#"{"path": "/checkout"}"#.into(),
            },
            expect(&[5]),
        ),
        (
            "nothing matches",
            EventFilter {
                category: "page interaction".into(),
                name: "submit".into(),
                ..Default::default()
            },
            vec![],
        ),
    ];
    for (what, filter, expected) in cases {
        for page_size in [0, 1, 2] {
            let events = list_all(&mut query, &key, filter.clone(), page_size).await;
            assert_eq!(ids(&events), expected, "{what}, page size {page_size}");
        }
    }

    // The fields of a stored event.
    let events = list_all(&mut query, &key, EventFilter::default(), 0).await;
    let first = &events[0];
    assert_eq!(first.session_id, a.to_string());
    assert_eq!(first.application_id, shop.to_string());
    assert_eq!((first.category.as_str(), first.name.as_str()), ("page interaction", "pageview"));
    let data: serde_json::Value = serde_json::from_str(&first.data_json).unwrap();
    assert_eq!(data, page("/"));
    assert_eq!(at(&first.timestamp), second(0));
    assert_eq!(first.schema_version, 1);
    assert!(at(&first.received_at) > second(0) && at(&first.stored_at) >= at(&first.received_at));

    // A session: its summary and its events in time order, paginated.
    let mut pages = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = GetSessionRequest { session_id: a.to_string(), page_size: 3, page_token };
        let response = query.get_session(authorized(request, &key)).await.unwrap().into_inner();
        let session = response.session.unwrap();
        assert_eq!(session.event_count, 4);
        let apps: HashSet<_> = session.application_ids.into_iter().collect();
        assert_eq!(apps.len(), 2, "both applications sent events for the session");
        assert!(apps.contains(&shop.to_string()));
        assert_eq!((at(&session.first_seen_at), at(&session.last_seen_at)), (second(0), second(5)));
        pages.push(ids(&response.events));
        if response.next_page_token.is_empty() {
            break;
        }
        page_token = response.next_page_token;
    }
    assert_eq!(pages, [expect(&[0, 1, 2]), expect(&[5])]);

    let unknown =
        GetSessionRequest { session_id: Uuid::new_v4().to_string(), ..Default::default() };
    let status = query.get_session(authorized(unknown, &key)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_neither_skip_nor_repeat_while_events_arrive() {
    let db = TestDb::new().await;
    let (app, key) = create_key(&db.pool, "analyst", &["read"]).await;
    let pipeline = Pipeline::start_with_query(&db, 0, 0).await;
    let mut query = pipeline.query_client().await;

    // 60 events, three per timestamp (the event id breaks the ties), straddling a month boundary
    // so pages cross partitions.
    let session = Uuid::new_v4();
    let month = Utc::now().date_naive().with_day0(0).unwrap().and_hms_opt(0, 0, 0).unwrap();
    let base = month.and_utc() - chrono::Duration::seconds(10);
    let mut original = Vec::new();
    for i in 0..60 {
        let at = base + chrono::Duration::seconds(i / 3);
        original.push(insert_event(&db.pool, app, session, "c", at).await);
    }

    let filters = [
        ("no filter", EventFilter::default()),
        ("session", EventFilter { session_id: session.to_string(), ..Default::default() }),
        ("category", EventFilter { category: "c".into(), ..Default::default() }),
    ];
    for (what, filter) in filters {
        let mut seen: Vec<(DateTime<Utc>, Uuid)> = Vec::new();
        let mut page_token = String::new();
        let mut pages = 0;
        loop {
            let request =
                ListEventsRequest { filter: Some(filter.clone()), page_size: 7, page_token };
            let page = query.list_events(authorized(request, &key)).await.unwrap().into_inner();
            seen.extend(
                page.events.iter().map(|e| (at(&e.timestamp), e.event_id.parse().unwrap())),
            );
            pages += 1;
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
            // Between pages: an event before everything, one tied with an original timestamp,
            // one after everything.
            let (last_at, _) = *seen.last().unwrap();
            for at in
                [base - chrono::Duration::hours(1), last_at, base + chrono::Duration::hours(1)]
            {
                insert_event(&db.pool, app, session, "c", at).await;
            }
        }
        assert!(pages >= 9, "{what}: paged through ({pages} pages)");
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{what}: strictly increasing, no repeats");
        let seen_ids: HashSet<Uuid> = seen.iter().map(|(_, id)| *id).collect();
        for id in &original {
            assert!(seen_ids.contains(id), "{what}: original event {id} missed");
        }
    }
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_errors_are_stored_once_after_a_schema_fix() {
    let db = TestDb::new().await;
    register_example_schemas(&db.pool).await;
    let (_, ingest_key) = create_key(&db.pool, "shop", &["ingest"]).await;
    let (_, key) = create_key(&db.pool, "operator", &["read"]).await;
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
    let db = TestDb::new().await;
    let (shop, key) = create_key(&db.pool, "shop", &["read"]).await;
    let (blog, _) = create_key(&db.pool, "blog", &["ingest"]).await;
    // No validator: replayed errors stay in flight.
    let pipeline = Pipeline::start_with_query(&db, 0, 0).await;
    let mut query = pipeline.query_client().await;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_listed_by_filter_newest_first_with_counts() {
    let db = TestDb::new().await;
    let (shop, key) = create_key(&db.pool, "shop", &["read"]).await;
    let (blog, _) = create_key(&db.pool, "blog", &["ingest"]).await;
    let pipeline = Pipeline::start_with_query(&db, 0, 0).await;
    let mut query = pipeline.query_client().await;

    let base = Utc::now().trunc_subsecs(6) - chrono::Duration::hours(1);
    let minute = |n: i64| base + chrono::Duration::minutes(n);
    // 20 errors: reasons, types, applications and failure times varied.
    let mut all = Vec::new();
    for i in 0..20i64 {
        let id = insert_error(
            &db.pool,
            ErrorRow {
                app: if i % 2 == 0 { shop } else { blog },
                category: if i % 4 < 2 { "page interaction" } else { "form interaction" },
                name: if i % 3 == 0 { "pageview" } else { "submit" },
                reason: if i % 5 == 0 { "timestamp_in_future" } else { "schema_violation" },
                failed_at: minute(i),
                received_at: minute(i),
                outcome: if i == 7 { Some("still_invalid") } else { None },
            },
        )
        .await;
        all.push((i, id));
    }
    let expect = |keep: &dyn Fn(i64) -> bool| -> Vec<i64> {
        let mut ids: Vec<i64> = all.iter().filter(|(i, _)| keep(*i)).map(|(_, id)| *id).collect();
        ids.reverse();
        ids
    };
    let cases: Vec<(&str, ErrorFilter, Vec<i64>)> = vec![
        ("no filter", ErrorFilter::default(), expect(&|_| true)),
        (
            "reason",
            ErrorFilter { reason: "timestamp_in_future".into(), ..Default::default() },
            expect(&|i| i % 5 == 0),
        ),
        (
            "category",
            ErrorFilter { category: "form interaction".into(), ..Default::default() },
            expect(&|i| i % 4 >= 2),
        ),
        (
            "category and name",
            ErrorFilter {
                category: "page interaction".into(),
                name: "pageview".into(),
                ..Default::default()
            },
            expect(&|i| i % 4 < 2 && i % 3 == 0),
        ),
        (
            "application by name",
            ErrorFilter { application: "blog".into(), ..Default::default() },
            expect(&|i| i % 2 == 1),
        ),
        (
            "application by id",
            ErrorFilter { application: shop.to_string(), ..Default::default() },
            expect(&|i| i % 2 == 0),
        ),
        (
            "failed_at range",
            ErrorFilter {
                from: Some(ts(minute(5))),
                to: Some(ts(minute(9))),
                ..Default::default()
            },
            expect(&|i| (5..9).contains(&i)),
        ),
        (
            "replay outcome",
            ErrorFilter {
                replay_outcomes: vec![ReplayOutcome::StillInvalid.into()],
                ..Default::default()
            },
            expect(&|i| i == 7),
        ),
        (
            "not replayed and reason",
            ErrorFilter {
                reason: "schema_violation".into(),
                replay_outcomes: vec![ReplayOutcome::NotReplayed.into()],
                ..Default::default()
            },
            expect(&|i| i % 5 != 0 && i != 7),
        ),
    ];
    for (what, filter, expected) in cases {
        let mut listed = Vec::new();
        let mut page_token = String::new();
        let mut counts = None;
        loop {
            let request =
                ListErrorsRequest { filter: Some(filter.clone()), page_size: 3, page_token };
            let page = query.list_errors(authorized(request, &key)).await.unwrap().into_inner();
            listed.extend(page.errors.iter().map(|e| e.id));
            let page_counts: Vec<_> =
                page.counts.iter().map(|c| (c.reason.clone(), c.count)).collect();
            // Counts cover the whole filter, the same on every page.
            assert_eq!(counts.get_or_insert_with(|| page_counts.clone()), &page_counts, "{what}");
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        assert_eq!(listed, expected, "{what}");
        let total: i64 = counts.unwrap().iter().map(|(_, n)| n).sum();
        assert_eq!(total, expected.len() as i64, "{what}: counts");
    }
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_needs_a_key_with_the_read_role() {
    let db = TestDb::new().await;
    let (_, ingest_only) = create_key(&db.pool, "shop", &["ingest"]).await;
    let (_, reader) = create_key(&db.pool, "analyst", &["read"]).await;
    let pipeline = Pipeline::start_with_query(&db, 0, 0).await;
    let mut query = pipeline.query_client().await;

    for (key, expected) in [
        (None, Some(Code::Unauthenticated)),
        (Some("eye_0000"), Some(Code::Unauthenticated)),
        (Some(ingest_only.as_str()), Some(Code::PermissionDenied)),
        (Some(reader.as_str()), None),
    ] {
        let replay = ReplayErrorsRequest { error_ids: vec![1], ..Default::default() };
        let codes = [
            query
                .list_events(authorized_or(key, ListEventsRequest::default()))
                .await
                .err()
                .map(|s| s.code()),
            query
                .list_errors(authorized_or(key, ListErrorsRequest::default()))
                .await
                .err()
                .map(|s| s.code()),
            query.replay_errors(authorized_or(key, replay)).await.err().map(|s| s.code()),
            query
                .get_stats(authorized_or(key, GetStatsRequest::default()))
                .await
                .err()
                .map(|s| s.code()),
        ];
        for code in codes {
            assert_eq!(code, expected, "key {key:?}");
        }
        let session =
            GetSessionRequest { session_id: Uuid::new_v4().to_string(), ..Default::default() };
        let code = query.get_session(authorized_or(key, session)).await.unwrap_err().code();
        assert_eq!(code, expected.unwrap_or(Code::NotFound), "key {key:?}");
    }
    pipeline.stop().await;
}

fn authorized_or<T>(key: Option<&str>, message: T) -> tonic::Request<T> {
    match key {
        Some(key) => authorized(message, key),
        None => tonic::Request::new(message),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_arguments_name_the_field() {
    let db = TestDb::new().await;
    let (app, key) = create_key(&db.pool, "analyst", &["read"]).await;
    let session = Uuid::new_v4();
    for n in 0..3 {
        insert_event(&db.pool, app, session, "c", Utc::now() - chrono::Duration::seconds(n)).await;
    }
    let pipeline = Pipeline::start_with_query(&db, 0, 0).await;
    let mut query = pipeline.query_client().await;

    let list = |filter: EventFilter, page_size: i32, page_token: &str| ListEventsRequest {
        filter: Some(filter),
        page_size,
        page_token: page_token.into(),
    };
    let first =
        query.list_events(authorized(list(EventFilter::default(), 1, ""), &key)).await.unwrap();
    let token = first.into_inner().next_page_token;
    assert!(!token.is_empty());
    let (later, earlier) = (ts(Utc::now()), ts(Utc::now() - chrono::Duration::hours(1)));
    let filter = |f: fn(&mut EventFilter)| {
        let mut filter = EventFilter::default();
        f(&mut filter);
        filter
    };

    let event_cases: Vec<(&str, ListEventsRequest)> = vec![
        ("filter.session_id", list(filter(|f| f.session_id = "not-a-uuid".into()), 0, "")),
        ("filter.application", list(filter(|f| f.application = "no such app".into()), 0, "")),
        (
            "filter.from",
            list(EventFilter { from: Some(later), to: Some(earlier), ..Default::default() }, 0, ""),
        ),
        (
            "filter.to",
            list(
                EventFilter {
                    to: Some(prost_types::Timestamp { seconds: 0, nanos: -5 }),
                    ..Default::default()
                },
                0,
                "",
            ),
        ),
        ("filter.data_contains", list(filter(|f| f.data_contains = "[1, 2]".into()), 0, "")),
        ("filter.data_contains", list(filter(|f| f.data_contains = "{\"a\":".into()), 0, "")),
        ("filter.data_contains", list(filter(|f| f.data_contains = "\"text\"".into()), 0, "")),
        ("page_size", list(EventFilter::default(), 1_001, "")),
        ("page_size", list(EventFilter::default(), -1, "")),
        ("page_token", list(EventFilter::default(), 0, "garbage!")),
        ("page_token", list(EventFilter::default(), 0, "AAAA")),
        // A token of another filter.
        ("page_token", list(filter(|f| f.category = "c".into()), 1, &token)),
    ];
    for (field, request) in event_cases {
        let status = query.list_events(authorized(request.clone(), &key)).await.unwrap_err();
        assert_invalid(&status, field, &format!("{request:?}"));
    }

    let session_cases = vec![
        ("session_id", GetSessionRequest::default()),
        ("session_id", GetSessionRequest { session_id: "42".into(), ..Default::default() }),
        (
            "page_size",
            GetSessionRequest {
                session_id: session.to_string(),
                page_size: 5_000,
                ..Default::default()
            },
        ),
        // A ListEvents token is not a GetSession token.
        (
            "page_token",
            GetSessionRequest {
                session_id: session.to_string(),
                page_token: token.clone(),
                ..Default::default()
            },
        ),
    ];
    for (field, request) in session_cases {
        let status = query.get_session(authorized(request.clone(), &key)).await.unwrap_err();
        assert_invalid(&status, field, &format!("{request:?}"));
    }

    let errors = |filter: ErrorFilter, page_token: &str| ListErrorsRequest {
        filter: Some(filter),
        page_size: 0,
        page_token: page_token.into(),
    };
    let error_cases = vec![
        ("filter.reason", errors(ErrorFilter { reason: "bogus".into(), ..Default::default() }, "")),
        (
            "filter.replay_outcomes",
            errors(ErrorFilter { replay_outcomes: vec![99], ..Default::default() }, ""),
        ),
        (
            "filter.replay_outcomes",
            errors(ErrorFilter { replay_outcomes: vec![0], ..Default::default() }, ""),
        ),
        (
            "filter.application",
            errors(ErrorFilter { application: "nobody".into(), ..Default::default() }, ""),
        ),
        (
            "filter.from",
            errors(ErrorFilter { from: Some(later), to: Some(earlier), ..Default::default() }, ""),
        ),
        ("page_token", errors(ErrorFilter::default(), &token)),
        ("page_size", ListErrorsRequest { page_size: 1_001, ..Default::default() }),
    ];
    for (field, request) in error_cases {
        let status = query.list_errors(authorized(request.clone(), &key)).await.unwrap_err();
        assert_invalid(&status, field, &format!("{request:?}"));
    }

    let replay_cases = vec![
        ("error_ids", ReplayErrorsRequest::default()),
        (
            "error_ids",
            ReplayErrorsRequest { filter: Some(ErrorFilter::default()), ..Default::default() },
        ),
        ("error_ids", ReplayErrorsRequest { error_ids: vec![-1], ..Default::default() }),
        ("limit", ReplayErrorsRequest { error_ids: vec![1], limit: 10_001, ..Default::default() }),
        (
            "filter.reason",
            ReplayErrorsRequest {
                filter: Some(ErrorFilter { reason: "nope".into(), ..Default::default() }),
                ..Default::default()
            },
        ),
    ];
    for (field, request) in replay_cases {
        let status = query.replay_errors(authorized(request.clone(), &key)).await.unwrap_err();
        assert_invalid(&status, field, &format!("{request:?}"));
    }

    for window in [
        prost_types::Duration { seconds: -1, nanos: 0 },
        prost_types::Duration { seconds: 0, nanos: 0 },
        prost_types::Duration { seconds: 8 * 24 * 3_600, nanos: 0 },
    ] {
        let request = GetStatsRequest { window: Some(window) };
        let status = query.get_stats(authorized(request, &key)).await.unwrap_err();
        assert_invalid(&status, "window", &format!("{window:?}"));
    }
    assert_eq!(count(&db.pool, "SELECT count(*) FROM outbox").await, 0, "nothing replayed");
    pipeline.stop().await;
}

fn assert_invalid(status: &tonic::Status, field: &str, request: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{request}: {status:?}");
    assert!(
        status.message().starts_with(&format!("{field}: ")),
        "{request}: the message names {field}: {}",
        status.message()
    );
    for sql in ["SELECT", "WHERE", "$1", "error returned from database"] {
        assert!(!status.message().contains(sql), "no SQL: {}", status.message());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_report_depth_lag_and_recent_counts() {
    let db = TestDb::new().await;
    let (app, ingest_key) = create_key(&db.pool, "shop", &["ingest", "read"]).await;
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
    let validate = stage("validate");
    assert_eq!((validate.depth, validate.in_flight, validate.dead_letters), (1, 0, 0));
    assert!(validate.lag.unwrap().seconds >= 5, "{:?}", validate.lag);
    let write = stage("write");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_server_serves_health_and_reflection() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let db = TestDb::new().await;
    let pipeline = Pipeline::start_with_query(&db, 0, 0).await;
    let channel = tonic::transport::Endpoint::from_shared(pipeline.query_endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();

    eye_e2e::wait_until_serving(channel.clone(), "eye.v1.QueryService").await;

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses =
        reflection.server_reflection_info(tokio_stream::once(request)).await.unwrap().into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response: {response:?}");
    };
    let services: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(services.contains(&"eye.v1.QueryService"), "{services:?}");
    assert!(services.contains(&"grpc.health.v1.Health"), "{services:?}");
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_failures_reach_clients_without_sql() {
    let db = TestDb::new().await;
    let (_, key) = create_key(&db.pool, "analyst", &["read"]).await;
    let pipeline = Pipeline::start_with_query(&db, 0, 0).await;
    let mut query = pipeline.query_client().await;
    // A broken schema: every statement on `sessions` now fails in the database.
    sqlx::query("ALTER TABLE sessions RENAME TO sessions_gone").execute(&db.pool).await.unwrap();

    let request =
        GetSessionRequest { session_id: Uuid::new_v4().to_string(), ..Default::default() };
    let status = query.get_session(authorized(request, &key)).await.unwrap_err();
    assert_eq!(status.code(), Code::Internal);
    assert_eq!(status.message(), "the query failed on the server");
    pipeline.stop().await;
}
