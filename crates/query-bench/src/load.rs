//! Loading the store: millions of realistic events by `COPY`, straight into `events`, then the
//! `sessions` rows computed from them in SQL.
//!
//! # What the events look like
//! - Sessions of log-normal size (median about 7 events, mean about 20, at most 1,000), each
//!   starting at a uniformly random time of the window and lasting as long as its events (one
//!   every 20 s on average, exponentially spaced). One session in 20 is also seen by a second
//!   application, as happens when a shop and its app share a session.
//! - 20 event types in 6 categories with skewed frequencies (pageviews are 30 %, signups 0.5 %).
//! - Payloads of 80-200 bytes: `host`, `path`, `user_id` (one user per session, about 100 events
//!   per user on average) and a field or two by type (`product_id`, `query`, `form`, ...).
//!
//! # How it is loaded
//! Events are generated compactly, sorted by time and streamed in that order, as the writer
//! would have appended them, so each partition's heap is in time order. The indexes and the
//! primary key of `events` are dropped before the `COPY` and rebuilt after it from their own
//! definitions (read from the catalog, and checked identical afterwards): building an index over
//! 10 million rows takes seconds where maintaining it row by row takes most of an hour. Fresh
//! indexes are denser than grown ones (btree pages full rather than split, no GIN pending list),
//! which flatters reads slightly; everything else is what the pipeline produces. Then `VACUUM
//! (ANALYZE)`, as autovacuum would do after such inserts.

use std::{fmt::Write as _, time::Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Datelike, Timelike, Utc};
use eye_service::settings::Granularity;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

/// (category, name, relative frequency). The first three have schemas registered (schema_version
/// 1), like `eye dev`'s examples; the rest were stored without one.
pub const TYPES: [(&str, &str, f64); 20] = [
    ("page interaction", "pageview", 30.0),
    ("page interaction", "cta click", 8.0),
    ("form interaction", "submit", 3.0),
    ("page interaction", "scroll", 6.0),
    ("page interaction", "outbound click", 2.0),
    ("form interaction", "field focus", 4.0),
    ("form interaction", "validation error", 1.0),
    ("commerce", "product view", 10.0),
    ("commerce", "add to cart", 4.0),
    ("commerce", "remove from cart", 1.0),
    ("commerce", "checkout start", 1.5),
    ("commerce", "purchase", 0.8),
    ("search", "query", 5.0),
    ("search", "result click", 3.0),
    ("account", "login", 1.5),
    ("account", "logout", 0.7),
    ("account", "signup", 0.5),
    ("media", "play", 2.0),
    ("media", "pause", 1.5),
    ("media", "complete", 0.5),
];

/// The categories of [`TYPES`], each once.
pub fn categories() -> Vec<&'static str> {
    let mut categories: Vec<&str> = TYPES.iter().map(|(category, _, _)| *category).collect();
    categories.dedup();
    categories.sort_unstable();
    categories.dedup();
    categories
}

/// The applications sending events: (name, host, share of sessions).
pub const APPLICATIONS: [(&str, &str, f64); 3] =
    [("shop", "shop.example", 0.60), ("blog", "blog.example", 0.25), ("app", "app.example", 0.15)];

/// Largest session.
const MAX_SESSION_EVENTS: f64 = 1_000.0;
/// Log-normal session sizes: exp(N(MU, SIGMA)), mean about 20 once cut at 1,000.
const SIZE_MU: f64 = 1.9;
const SIZE_SIGMA: f64 = 1.5;
/// Mean seconds between two events of a session.
const MEAN_GAP_SECONDS: f64 = 20.0;
/// Average events per user.
const EVENTS_PER_USER: u64 = 100;

/// What to load.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub events: u64,
    /// Days the events span, ending when they are loaded ...
    pub days: u32,
    pub seed: u64,
    /// ... unless they start here instead (`eye-bench` fills the partition it writes into).
    pub start: Option<DateTime<Utc>>,
    /// The span of the `events` partitions made for them, as `store.partition` says it.
    pub partition: Granularity,
}

/// What was loaded, recorded in `query_bench_meta` so that `--reuse` can check it.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct Loaded {
    pub events: i64,
    pub sessions: i64,
    pub users: i64,
    pub days: i32,
    pub seed: i64,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub load_seconds: f64,
    pub copy_seconds: f64,
    pub index_seconds: f64,
    pub total_bytes: i64,
}

/// The load recorded in the database, if it is complete and of `shape`.
pub async fn existing(conn: &mut PgConnection, shape: Shape) -> anyhow::Result<Option<Loaded>> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('query_bench_meta') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await?;
    if !exists {
        return Ok(None);
    }
    let loaded: Option<Loaded> = sqlx::query_as(
        "SELECT events, sessions, users, days, seed, window_start, window_end, load_seconds, \
                copy_seconds, index_seconds, total_bytes FROM query_bench_meta",
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(loaded.filter(|l| {
        l.events == shape.events as i64
            && l.days == shape.days as i32
            && l.seed == shape.seed as i64
    }))
}

/// SplitMix64: a small, fast, seedable generator; good enough for synthetic data and
/// reproducible from `--seed`.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    fn normal(&mut self) -> f64 {
        // Box-Muller.
        let u = 1.0 - self.unit();
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    fn exponential(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }

    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for chunk in out.chunks_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes()[..chunk.len()]);
        }
        out
    }

    /// An index into `weights`, chosen in proportion to them (`cumulative` ends at 1).
    fn pick(&mut self, cumulative: &[f64]) -> usize {
        let x = self.unit();
        cumulative.iter().position(|c| x < *c).unwrap_or(cumulative.len() - 1)
    }
}

fn cumulative(weights: impl Iterator<Item = f64>) -> Vec<f64> {
    let weights: Vec<f64> = weights.collect();
    let total: f64 = weights.iter().sum();
    let mut sum = 0.0;
    weights
        .iter()
        .map(|w| {
            sum += w / total;
            sum
        })
        .collect()
}

/// A session: its id and its user (its applications are on its events).
struct Session {
    id: Uuid,
    user: u32,
}

/// An event before it is written out: 16 bytes, so 10 million fit in 160 MB for the sort.
#[derive(Clone, Copy)]
struct Compact {
    /// Microseconds since the Unix epoch.
    at: i64,
    session: u32,
    seq: u16,
    kind: u8,
    app: u8,
}

/// Loads `shape` into the freshly migrated database `conn` is connected to.
pub async fn load(conn: &mut PgConnection, shape: Shape) -> anyhow::Result<Loaded> {
    let started = Instant::now();
    let window_end = Utc::now().with_nanosecond(0).expect("valid");
    let window_start =
        shape.start.unwrap_or(window_end - chrono::Duration::days(i64::from(shape.days)));
    sqlx::query("SET maintenance_work_mem = '1GB'").execute(&mut *conn).await?;
    sqlx::query("SET work_mem = '256MB'").execute(&mut *conn).await?;

    eprintln!("generating {} events over {} days", shape.events, shape.days);
    let (sessions, mut events, users) = generate(shape, window_start, window_end);
    events.sort_unstable_by_key(|e| (e.at, e.session, e.seq));

    // The partitions the window touches, as the writer's upkeep would have made them.
    let mut at = shape.partition.start_of(window_start);
    while at < window_end {
        sqlx::query("SELECT eye_ensure_partition('events', $1, $2)")
            .bind(at)
            .bind(shape.partition.as_str())
            .execute(&mut *conn)
            .await?;
        at = shape.partition.add(at, 1).expect("a partition within the calendar");
    }

    let applications = applications(conn).await?;
    let indexes = drop_indexes(conn).await?;

    eprintln!("copying {} events", events.len());
    let copy_started = Instant::now();
    copy_events(conn, &sessions, &events, &applications).await?;
    let copy_seconds = copy_started.elapsed().as_secs_f64();
    eprintln!("copied in {copy_seconds:.1} s ({:.0} rows/s)", events.len() as f64 / copy_seconds);
    drop(events);

    let index_started = Instant::now();
    rebuild_indexes(conn, &indexes).await?;
    let index_seconds = index_started.elapsed().as_secs_f64();

    eprintln!("computing sessions");
    let step = Instant::now();
    let session_rows = sqlx::query(
        "INSERT INTO sessions (session_id, first_seen_at, last_seen_at, event_count, \
                               application_ids, updated_at) \
         SELECT session_id, min(occurred_at), max(occurred_at), count(*), \
                array_agg(DISTINCT application_id), max(stored_at) \
         FROM events GROUP BY session_id",
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    eprintln!("{session_rows} sessions in {:.1} s", step.elapsed().as_secs_f64());
    if session_rows != sessions.len() as u64 {
        bail!("{} sessions generated but {session_rows} computed", sessions.len());
    }

    eprintln!("vacuum (analyze)");
    let step = Instant::now();
    for table in ["events", "sessions", "applications"] {
        sqlx::query(&format!("VACUUM (ANALYZE) {table}")).execute(&mut *conn).await?;
    }
    eprintln!("vacuumed in {:.1} s", step.elapsed().as_secs_f64());

    let total_bytes: i64 = sqlx::query_scalar(
        "SELECT sum(pg_total_relation_size(inhrelid))::bigint FROM pg_inherits \
         WHERE inhparent = 'events'::regclass",
    )
    .fetch_one(&mut *conn)
    .await?;
    let loaded = Loaded {
        events: shape.events as i64,
        sessions: session_rows as i64,
        users: i64::from(users),
        days: shape.days as i32,
        seed: shape.seed as i64,
        window_start,
        window_end,
        load_seconds: started.elapsed().as_secs_f64(),
        copy_seconds,
        index_seconds,
        total_bytes,
    };
    sqlx::query(
        "CREATE TABLE query_bench_meta (events bigint, sessions bigint, users bigint, days int, \
             seed bigint, window_start timestamptz, window_end timestamptz, \
             load_seconds float8, copy_seconds float8, index_seconds float8, total_bytes bigint)",
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO query_bench_meta VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(loaded.events)
    .bind(loaded.sessions)
    .bind(loaded.users)
    .bind(loaded.days)
    .bind(loaded.seed)
    .bind(loaded.window_start)
    .bind(loaded.window_end)
    .bind(loaded.load_seconds)
    .bind(loaded.copy_seconds)
    .bind(loaded.index_seconds)
    .bind(loaded.total_bytes)
    .execute(&mut *conn)
    .await?;
    Ok(loaded)
}

/// Sessions and their events (unsorted), and the number of users.
fn generate(
    shape: Shape,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> (Vec<Session>, Vec<Compact>, u32) {
    let mut rng = Rng::new(shape.seed);
    let users = (shape.events / EVENTS_PER_USER).max(1) as u32;
    let types = cumulative(TYPES.iter().map(|(_, _, weight)| *weight));
    let apps = cumulative(APPLICATIONS.iter().map(|(_, _, share)| *share));
    let span_micros = (end - start).num_microseconds().expect("a window of days");
    let mut sessions = Vec::new();
    let mut events = Vec::with_capacity(shape.events as usize);
    while (events.len() as u64) < shape.events {
        let size =
            (SIZE_MU + SIZE_SIGMA * rng.normal()).exp().clamp(1.0, MAX_SESSION_EVENTS) as u64;
        let size = size.min(shape.events - events.len() as u64) as u16;
        let index = sessions.len() as u32;
        let app = rng.pick(&apps) as u8;
        // One session in 20 is also seen by a second application.
        let second_app = (rng.below(20) == 0).then(|| (app + 1) % APPLICATIONS.len() as u8);
        sessions.push(Session {
            id: uuid::Builder::from_random_bytes(rng.bytes()).into_uuid(),
            user: rng.below(u64::from(users)) as u32,
        });
        // Gaps first, so that the session fits in the window wherever it starts.
        let gaps: Vec<i64> = (0..size)
            .map(|i| if i == 0 { 0 } else { (rng.exponential(MEAN_GAP_SECONDS) * 1e6) as i64 })
            .collect();
        let duration: i64 = gaps.iter().sum();
        let latest_start = (span_micros - duration - 1).max(0);
        let mut at = start.timestamp_micros() + rng.below(latest_start as u64 + 1) as i64;
        for (seq, gap) in gaps.into_iter().enumerate() {
            at += gap;
            let app = match second_app {
                Some(second) if rng.below(5) == 0 => second,
                _ => app,
            };
            events.push(Compact {
                at,
                session: index,
                seq: seq as u16,
                kind: rng.pick(&types) as u8,
                app,
            });
        }
    }
    (sessions, events, users)
}

/// The benchmark's applications (inserted if missing); their ids, in [`APPLICATIONS`] order.
async fn applications(conn: &mut PgConnection) -> anyhow::Result<Vec<Uuid>> {
    let mut ids = Vec::new();
    for (name, _, _) in APPLICATIONS {
        ids.push(eye_admin::apps::ensure(&mut *conn, name).await?);
    }
    Ok(ids)
}

/// The definitions of `events`' primary key and indexes, as the migrations made them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Indexes {
    primary_key: (String, String),
    /// (name, CREATE INDEX statement), sorted by name.
    indexes: Vec<(String, String)>,
}

async fn index_definitions(conn: &mut PgConnection) -> anyhow::Result<Indexes> {
    let primary_key: (String, String) = sqlx::query_as(
        "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint \
         WHERE conrelid = 'events'::regclass AND contype = 'p'",
    )
    .fetch_one(&mut *conn)
    .await
    .context("events has no primary key")?;
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, pg_get_indexdef(i.indexrelid) FROM pg_index i \
         JOIN pg_class c ON c.oid = i.indexrelid \
         WHERE i.indrelid = 'events'::regclass \
           AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid) \
         ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(Indexes { primary_key, indexes })
}

async fn drop_indexes(conn: &mut PgConnection) -> anyhow::Result<Indexes> {
    let definitions = index_definitions(conn).await?;
    for (name, _) in &definitions.indexes {
        sqlx::query(&format!(r#"DROP INDEX "{name}""#)).execute(&mut *conn).await?;
    }
    let (name, _) = &definitions.primary_key;
    sqlx::query(&format!(r#"ALTER TABLE events DROP CONSTRAINT "{name}""#))
        .execute(&mut *conn)
        .await?;
    Ok(definitions)
}

async fn rebuild_indexes(conn: &mut PgConnection, definitions: &Indexes) -> anyhow::Result<()> {
    let (name, definition) = &definitions.primary_key;
    let step = Instant::now();
    sqlx::query(&format!(r#"ALTER TABLE events ADD CONSTRAINT "{name}" {definition}"#))
        .execute(&mut *conn)
        .await?;
    eprintln!("index {name}: {:.1} s", step.elapsed().as_secs_f64());
    for (name, definition) in &definitions.indexes {
        let step = Instant::now();
        // The parent's definition reads `ON ONLY events`, which would not build the partitions'.
        let statement = definition.replacen(" ON ONLY ", " ON ", 1);
        sqlx::query(&statement).execute(&mut *conn).await?;
        eprintln!("index {name}: {:.1} s", step.elapsed().as_secs_f64());
    }
    let rebuilt = index_definitions(conn).await?;
    if rebuilt != *definitions {
        bail!("rebuilt indexes differ from the migrations':\n{rebuilt:?}\n{definitions:?}");
    }
    Ok(())
}

async fn copy_events(
    conn: &mut PgConnection,
    sessions: &[Session],
    events: &[Compact],
    applications: &[Uuid],
) -> anyhow::Result<()> {
    let mut copy = conn
        .copy_in_raw(
            "COPY events (application_id, event_id, session_id, category, name, data, \
             occurred_at, received_at, stored_at, schema_version) FROM STDIN",
        )
        .await?;
    let applications: Vec<String> = applications.iter().map(Uuid::to_string).collect();
    let mut buffer = String::with_capacity(1 << 20);
    let mut rng = Rng::new(0);
    for (n, event) in events.iter().enumerate() {
        let session = &sessions[event.session as usize];
        // Per-event randomness that does not depend on the order events are written in.
        rng.0 = (u64::from(event.session) << 16 | u64::from(event.seq)) ^ 0x5eed_5eed;
        let (category, name, _) = TYPES[event.kind as usize];
        let (_, host, _) = APPLICATIONS[event.app as usize];
        let millis = (event.at / 1_000) as u64;
        let event_id = uuid::Builder::from_unix_timestamp_millis(millis, &rng.bytes()).into_uuid();
        let received = event.at + 20_000 + rng.below(400_000) as i64;
        let stored = received + 100_000 + rng.below(1_900_000) as i64;
        buffer.push_str(&applications[event.app as usize]);
        buffer.push('\t');
        let _ = write!(buffer, "{event_id}\t{}\t{category}\t{name}\t", session.id);
        payload(&mut buffer, &mut rng, event.kind, host, session.user);
        buffer.push('\t');
        timestamp(&mut buffer, event.at);
        buffer.push('\t');
        timestamp(&mut buffer, received);
        buffer.push('\t');
        timestamp(&mut buffer, stored);
        buffer.push_str(if event.kind < 3 { "\t1\n" } else { "\t\\N\n" });
        if buffer.len() > (1 << 20) - 4096 {
            copy.send(std::mem::take(&mut buffer).into_bytes()).await?;
            buffer.reserve(1 << 20);
        }
        if n > 0 && n % 1_000_000 == 0 {
            eprintln!("  {n} rows");
        }
    }
    copy.send(buffer.into_bytes()).await?;
    copy.finish().await?;
    Ok(())
}

const SEARCHES: [&str; 8] =
    ["red shoes", "rain jacket", "gift card", "usb-c cable", "desk lamp", "tent", "socks", "mug"];
const FORMS: [&str; 4] = ["signup", "newsletter", "contact", "checkout"];
const ELEMENTS: [&str; 5] = ["buy-now", "hero-banner", "add-to-cart", "subscribe", "learn-more"];

/// A payload of type `kind`, as JSON text (no characters `COPY` would need escaped).
fn payload(out: &mut String, rng: &mut Rng, kind: u8, host: &str, user: u32) {
    let product = rng.below(5_000);
    let path = match kind {
        7..=9 => format!("/p/{product}"),
        10 | 11 => "/checkout".to_owned(),
        12 | 13 => "/search".to_owned(),
        14..=16 => "/account".to_owned(),
        _ => match rng.below(4) {
            0 => "/".to_owned(),
            1 => format!("/blog/{}", rng.below(800)),
            2 => "/cart".to_owned(),
            _ => format!("/p/{product}"),
        },
    };
    let _ = write!(out, r#"{{"host": "{host}", "path": "{path}", "user_id": "u{user:07}""#);
    let _ = match kind {
        0 => write!(
            out,
            r#", "referrer": "{}", "duration_ms": {}"#,
            ["", "search", "social", "email"][rng.below(4) as usize],
            rng.below(60_000)
        ),
        1 | 4 => write!(out, r#", "element": "{}""#, ELEMENTS[rng.below(5) as usize]),
        2 | 5 | 6 => write!(
            out,
            r#", "form": {{"id": "{}", "fields": {}}}"#,
            FORMS[rng.below(4) as usize],
            1 + rng.below(8)
        ),
        3 => write!(out, r#", "depth": {}"#, rng.below(101)),
        7..=9 => write!(
            out,
            r#", "product_id": "p{product}", "price": {}.{:02}"#,
            1 + rng.below(300),
            rng.below(100)
        ),
        11 => write!(
            out,
            r#", "order_id": "o{}", "total": {}.{:02}"#,
            rng.below(1 << 40),
            5 + rng.below(900),
            rng.below(100)
        ),
        12 | 13 => write!(out, r#", "query": "{}""#, SEARCHES[rng.below(8) as usize]),
        17..=19 => write!(
            out,
            r#", "media_id": "m{}", "position_s": {}"#,
            rng.below(300),
            rng.below(1_800)
        ),
        _ => Ok(()),
    };
    out.push('}');
}

/// `2026-01-31 12:00:00.123456+00`, which `timestamptz` reads.
fn timestamp(out: &mut String, micros: i64) {
    let at = DateTime::from_timestamp_micros(micros).expect("in range");
    let _ = write!(
        out,
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}+00",
        at.year(),
        at.month(),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.timestamp_subsec_micros()
    );
}

/// Connects to `url`, checking the server answers.
pub async fn connect(url: &str) -> anyhow::Result<PgConnection> {
    PgConnection::connect(url).await.with_context(|| format!("cannot connect to {url}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_realistic() {
        let end = Utc::now();
        let start = end - chrono::Duration::days(90);
        let (sessions, events, users) = generate(
            Shape {
                events: 200_000,
                days: 90,
                seed: 7,
                start: None,
                partition: Granularity::Month,
            },
            start,
            end,
        );
        assert_eq!(events.len(), 200_000);
        let mean = events.len() as f64 / sessions.len() as f64;
        assert!((12.0..30.0).contains(&mean), "mean session size {mean}");
        assert_eq!(users, 2_000);
        let (first, last) = (start.timestamp_micros(), end.timestamp_micros());
        assert!(events.iter().all(|e| (first..last).contains(&e.at)));
    }

    #[test]
    fn payloads_are_json_objects() {
        let mut rng = Rng::new(1);
        for kind in 0..TYPES.len() as u8 {
            let mut out = String::new();
            payload(&mut out, &mut rng, kind, "shop.example", 42);
            let json: serde_json::Value = serde_json::from_str(&out).expect(&out);
            assert_eq!(json["user_id"], "u0000042", "{out}");
            assert!(!out.contains(['\t', '\n', '\\']));
        }
    }

    #[test]
    fn timestamps_are_postgres_literals() {
        let mut out = String::new();
        timestamp(&mut out, 1_700_000_000_123_456);
        assert_eq!(out, "2023-11-14 22:13:20.123456+00");
    }
}
