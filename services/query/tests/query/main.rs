//! `eye.v1.QueryService` over real gRPC against the real pipeline: one file per RPC, plus what
//! every RPC shares (authentication, argument checking, health, failures without SQL).

mod get_session;
mod get_stats;
mod list_errors;
mod list_events;
mod replay_errors;
mod replica;
mod scoped;

use std::{collections::HashSet, time::Duration};

use chrono::{DateTime, Datelike, SubsecRound, Utc};
use eye_e2e::{
    Pipeline, authorized, count, create_key, db_with_key, event, register_example_schemas,
    register_schema,
};
use eye_proto::v1::{
    ErrorFilter, Event, EventBatch, EventFilter, EventStatus, GetSessionRequest, GetStatsRequest,
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

/// The query server alone on `db` (no validator, no writer), and a client of it.
async fn query_server(db: &TestDb) -> (Pipeline, Client) {
    let pipeline = Pipeline::start_with_query(db, 0, 0).await;
    let query = pipeline.query_client().await;
    (pipeline, query)
}

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

/// Six events sent through ingest by two applications (`shop` sent the first three, `blog` the
/// rest) into two sessions, one second apart; `a` holds events 0, 1, 2 and 5.
struct SixEvents {
    db: TestDb,
    pipeline: Pipeline,
    query: Client,
    /// A key with the `read` role.
    key: String,
    shop: Uuid,
    a: Uuid,
    sent: Vec<Event>,
    base: DateTime<Utc>,
}

impl SixEvents {
    async fn send() -> Self {
        let db = TestDb::new().await;
        register_example_schemas(&db.pool).await;
        let (shop, shop_key) = create_key(&db.pool, "shop", &["ingest"]).await;
        let (_, blog_key) = create_key(&db.pool, "blog", &["ingest"]).await;
        let (_, key) = create_key(&db.pool, "analyst", &["read", "admin"]).await;
        let pipeline = Pipeline::start_with_query(&db, 1, 1).await;
        let mut ingest = pipeline.client().await;
        let query = pipeline.query_client().await;

        // Two sessions; session `a` gets events from both applications.
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let base = Utc::now().trunc_subsecs(0) - chrono::Duration::minutes(10);
        let second = |n: i64| base + chrono::Duration::seconds(n);
        let page = |path: &str| json!({"host": "shop.example", "path": path});
        let sent = vec![
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
        let _ = b;
        Self { db, pipeline, query, key, shop, a, sent, base }
    }

    fn second(&self, n: i64) -> DateTime<Utc> {
        self.base + chrono::Duration::seconds(n)
    }

    fn expect(&self, indexes: &[usize]) -> Vec<String> {
        indexes.iter().map(|&i| self.sent[i].event_id.clone()).collect()
    }
}

fn authorized_or<T>(key: Option<&str>, message: T) -> tonic::Request<T> {
    match key {
        Some(key) => authorized(message, key),
        None => tonic::Request::new(message),
    }
}

/// `token` with its position's time moved to 100,000 BC (filter and kind untouched).
fn tampered(token: &str) -> String {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let mut bytes = URL_SAFE_NO_PAD.decode(token).unwrap();
    let micros: i64 = -100_000 * 365 * 24 * 3_600 * 1_000_000;
    bytes[10..18].copy_from_slice(&micros.to_be_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
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
async fn every_rpc_needs_a_key_with_the_read_role() {
    let (db, _, ingest_only) = db_with_key("shop", &["ingest"]).await;
    let (_, reader) = create_key(&db.pool, "analyst", &["read"]).await;
    let (pipeline, mut query) = query_server(&db).await;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_arguments_name_the_field() {
    let (db, app, key) = db_with_key("analyst", &["read", "admin"]).await;
    let session = Uuid::new_v4();
    for n in 0..3 {
        insert_event(&db.pool, app, session, "c", Utc::now() - chrono::Duration::seconds(n)).await;
    }
    let (pipeline, mut query) = query_server(&db).await;

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
        // Text Postgres cannot store, and filters longer than ingest accepts.
        ("filter.category", list(filter(|f| f.category = "page\0view".into()), 0, "")),
        ("filter.name", list(filter(|f| f.name = "n".repeat(256)), 0, "")),
        ("filter.application", list(filter(|f| f.application = "shop\0".into()), 0, "")),
        (
            "filter.data_contains",
            list(filter(|f| f.data_contains = r#"{"user": "a\u0000b"}"#.into()), 0, ""),
        ),
        // A token whose position was edited to a time no event can have.
        ("page_token", list(EventFilter::default(), 0, &tampered(&token))),
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
        (
            "filter.category",
            errors(ErrorFilter { category: "\0".into(), ..Default::default() }, ""),
        ),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_server_serves_health_and_reflection() {
    let db = TestDb::new().await;
    let pipeline = Pipeline::start_with_query(&db, 0, 0).await;
    let channel = pipeline.query_channel().await;

    eye_e2e::wait_until_serving(channel.clone(), "eye.v1.QueryService").await;
    let expected = eye_e2e::expected_services("eye.v1.QueryService");
    for v1alpha in [false, true] {
        let services = eye_e2e::reflected_services(channel.clone(), v1alpha).await;
        assert_eq!(services, expected, "v1alpha: {v1alpha}");
    }
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_failures_reach_clients_without_sql() {
    let (db, _, key) = db_with_key("analyst", &["read", "admin"]).await;
    let (pipeline, mut query) = query_server(&db).await;
    // A broken schema: every statement on `sessions` now fails in the database.
    sqlx::query("ALTER TABLE sessions RENAME TO sessions_gone").execute(&db.pool).await.unwrap();

    let request =
        GetSessionRequest { session_id: Uuid::new_v4().to_string(), ..Default::default() };
    let status = query.get_session(authorized(request, &key)).await.unwrap_err();
    assert_eq!(status.code(), Code::Internal);
    assert_eq!(status.message(), "the query failed on the server");
    pipeline.stop().await;
}
