//! The query benchmark's mix: four kinds of question an analyst or an operator asks, their
//! parameters drawn from a loaded store, each run to its last page through `QueryService` as a
//! client sees it. `eye-query-bench` measures them on an idle store; `eye-bench --scenario mixed`
//! measures them again while ingest runs, and ingest's ack latency while they run.

use anyhow::bail;
use chrono::{DateTime, Utc};
use eye_proto::v1::{
    EventFilter, GetSessionRequest, ListEventsRequest, query_service_client::QueryServiceClient,
};
use eye_service::auth::Role;
use serde::Serialize;
use sqlx::PgConnection;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::load::{self, Loaded, Rng};

/// The questions measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Session,
    SessionLarge,
    CategoryHour,
    DataContains,
}

impl Kind {
    pub const ALL: [Kind; 4] =
        [Kind::Session, Kind::SessionLarge, Kind::CategoryHour, Kind::DataContains];

    pub fn label(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::SessionLarge => "session_large",
            Self::CategoryHour => "category_hour",
            Self::DataContains => "data_contains",
        }
    }

    /// The p95 target, in milliseconds.
    pub fn target_ms(self) -> f64 {
        match self {
            Self::Session | Self::SessionLarge | Self::CategoryHour => 50.0,
            Self::DataContains => 200.0,
        }
    }
}

/// One query, with its parameters.
#[derive(Debug, Clone)]
pub enum Query {
    Session(Uuid),
    CategoryHour { category: &'static str, from: DateTime<Utc> },
    DataContains(String),
}

/// Most events per page, as the service allows.
pub const PAGE_SIZE: i32 = 1_000;

#[derive(Debug, Default, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(mut samples: Vec<f64>) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        Self { p50: at(0.50), p95: at(0.95), p99: at(0.99), max: at(1.0) }
    }
}

/// A key for the benchmark's reader: `read` and `admin`, an operator who reads every application
/// (a `read` key alone reads its own application's events, none of the store's).
pub async fn read_key(conn: &mut PgConnection) -> anyhow::Result<String> {
    let roles = [Role::Read, Role::Admin];
    let issued = eye_admin::apps::ensure_and_issue_key(conn, "bench-reader", &roles).await?;
    Ok(issued.key)
}

/// The parameters of `queries` questions of each kind, per kind in [`Kind::ALL`] order, drawn
/// from the store (seeded: reruns ask the same questions).
pub async fn plan_queries(
    conn: &mut PgConnection,
    queries: usize,
    seed: u64,
    store: &Loaded,
) -> anyhow::Result<Vec<Vec<Query>>> {
    let n = queries as i64;
    let mut rng = Rng::new(seed ^ 0x0071_7565_7279);
    // Postgres' random(), seeded, so that reruns ask the same questions.
    sqlx::query("SELECT setseed($1)")
        .bind((seed % 1_000) as f64 / 1_000.0)
        .execute(&mut *conn)
        .await?;
    let sessions: Vec<Uuid> =
        sqlx::query_scalar("SELECT session_id FROM sessions ORDER BY random() LIMIT $1")
            .bind(n)
            .fetch_all(&mut *conn)
            .await?;
    let large: Vec<Uuid> = sqlx::query_scalar(
        "SELECT session_id FROM sessions WHERE event_count BETWEEN 500 AND 1000 \
         ORDER BY random() LIMIT $1",
    )
    .bind(n)
    .fetch_all(&mut *conn)
    .await?;
    // Users of random events: the user an operator looks up is usually one that is active.
    let users: Vec<String> = sqlx::query_scalar(
        "SELECT data->>'user_id' FROM events TABLESAMPLE SYSTEM (0.05) REPEATABLE (7) \
         ORDER BY random() LIMIT $1",
    )
    .bind(n)
    .fetch_all(&mut *conn)
    .await?;
    if sessions.is_empty() || large.is_empty() || users.is_empty() {
        bail!("the store is too small to draw queries from (no sessions of 500+ events?)");
    }
    let categories = load::categories();
    let span = (store.window_end - store.window_start).num_seconds() - 3_600;
    let hours = (0..n)
        .map(|_| Query::CategoryHour {
            category: categories[rng.below(categories.len() as u64) as usize],
            from: store.window_start + chrono::Duration::seconds(rng.below(span as u64) as i64),
        })
        .collect();
    Ok(vec![
        sessions.into_iter().map(Query::Session).collect(),
        large.into_iter().map(Query::Session).collect(),
        hours,
        users
            .into_iter()
            .map(|user| Query::DataContains(serde_json::json!({ "user_id": user }).to_string()))
            .collect(),
    ])
}

pub fn authorized<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {key}").parse().expect("ascii"));
    request
}

pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: at.timestamp(), nanos: at.timestamp_subsec_nanos() as i32 }
}

/// Runs `query` to its last page; returns (events, pages).
pub async fn run_query(
    client: &QueryServiceClient<Channel>,
    key: &str,
    query: &Query,
) -> anyhow::Result<(usize, usize)> {
    let mut client = client.clone();
    let (mut rows, mut pages) = (0, 0);
    let mut page_token = String::new();
    loop {
        let next = match query {
            Query::Session(id) => {
                let request = GetSessionRequest {
                    session_id: id.to_string(),
                    page_size: PAGE_SIZE,
                    page_token,
                };
                let page = client.get_session(authorized(request, key)).await?.into_inner();
                rows += page.events.len();
                page.next_page_token
            }
            Query::CategoryHour { .. } | Query::DataContains(_) => {
                let request = ListEventsRequest {
                    filter: Some(filter(query)),
                    page_size: PAGE_SIZE,
                    page_token,
                };
                let page = client.list_events(authorized(request, key)).await?.into_inner();
                rows += page.events.len();
                page.next_page_token
            }
        };
        pages += 1;
        if next.is_empty() {
            return Ok((rows, pages));
        }
        page_token = next;
    }
}

pub fn filter(query: &Query) -> EventFilter {
    match query {
        Query::Session(id) => EventFilter { session_id: id.to_string(), ..EventFilter::default() },
        Query::CategoryHour { category, from } => EventFilter {
            category: (*category).to_owned(),
            from: Some(timestamp(*from)),
            to: Some(timestamp(*from + chrono::Duration::hours(1))),
            ..EventFilter::default()
        },
        Query::DataContains(json) => {
            EventFilter { data_contains: json.clone(), ..EventFilter::default() }
        }
    }
}

/// One measured question: its latency, and the events and pages it read.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub ms: f64,
    pub rows: usize,
    pub pages: usize,
}

/// Round `round` of `plan`: one question of each kind in turn (so caches favour none), a sample
/// of each, in [`Kind::ALL`] order.
pub async fn ask_round(
    client: &QueryServiceClient<Channel>,
    key: &str,
    plan: &[Vec<Query>],
    round: usize,
) -> anyhow::Result<Vec<Sample>> {
    let mut samples = Vec::with_capacity(plan.len());
    for queries in plan {
        let query = &queries[round % queries.len()];
        let started = std::time::Instant::now();
        let (rows, pages) = run_query(client, key, query).await?;
        samples.push(Sample { ms: started.elapsed().as_secs_f64() * 1_000.0, rows, pages });
    }
    Ok(samples)
}
