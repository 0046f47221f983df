//! `eye-query-bench`: the read-path benchmark of The Eye.
//!
//! It loads a store of 10 million events spread over three months (several month partitions,
//! about 500,000 sessions of up to 1,000 events, 20 event types, realistic payloads) into a
//! database of its own, starts the real query service (`eye_query::Application`, in-process, on a
//! free port) and measures, through gRPC with a `read` key, one query kind after another:
//! - `session`: `GetSession` of a random session, every event (pages of 1,000);
//! - `session_large`: the same for sessions of 500 to 1,000 events, the worst case;
//! - `category_hour`: `ListEvents` of one category over a random hour, every page;
//! - `data_contains`: `ListEvents` with `data_contains = {"user_id": ...}` (a user's events, the
//!   operator's "what did this user do"), every page.
//!
//! Each measurement is the whole answer, all pages, as a client sees it. Kinds are interleaved
//! (one query of each in turn) after a warm-up, so caches favour none of them. It reports p50,
//! p95 and p99 per kind against the targets, and prints `EXPLAIN (ANALYZE, BUFFERS)` of one query
//! of each kind: the same SQL the service runs, planned for its actual values as the service
//! plans it (`plan_cache_mode = force_custom_plan`).
//!
//! The database (`eye_query_bench`, on `DATABASE_URL`'s server or a durable private server under
//! `target/eye-query-bench-pg`) is kept after the run; `--reuse` measures it again without
//! reloading. See [`eye_query_bench::load`] for how the events are made and loaded.
//!
//! Run `just query-bench`, or `cargo build --release -p eye-query-bench &&
//! target/release/eye-query-bench --help`.

use eye_query_bench::{
    load::{self, Loaded, Shape},
    mix::{self, Kind, Percentiles, Query, Sample},
};
use eye_test_support::harness;

use anyhow::bail;
use clap::Parser;
use eye_proto::v1::query_service_client::QueryServiceClient;
use eye_service::settings::Granularity;
use serde::Serialize;
use sqlx::PgConnection;
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use uuid::Uuid;

#[derive(Debug, Parser)]
#[command(about = "Read-path latency of The Eye over a large store")]
struct Args {
    /// Events in the store.
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// Days the events span, ending when they are loaded.
    #[arg(long, default_value_t = 90)]
    days: u32,
    /// Measured queries of each kind.
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// Unmeasured queries of each kind first (caches, connections, prepared statements).
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    /// Reuse the store of an earlier run with the same --events, --days and --seed instead of
    /// loading a new one (it is loaded if there is none).
    #[arg(long)]
    reuse: bool,
    /// Drop the benchmark database and exit.
    #[arg(long)]
    drop: bool,
    /// Name of the benchmark database.
    #[arg(long, default_value = "eye_query_bench")]
    database: String,
    /// Seed of the generated events and of the query parameters.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Skip the EXPLAIN (ANALYZE, BUFFERS) output.
    #[arg(long)]
    no_explain: bool,
    /// Print only the JSON summary (progress still goes to stderr).
    #[arg(long)]
    json: bool,
    /// Instead of the queries: export the store with `eye_export` (to a temporary folder) and
    /// compare with `COPY (SELECT ...) TO STDOUT` of the same rows in the same order.
    #[arg(long)]
    export: bool,
}

#[derive(Debug, Serialize)]
struct KindReport {
    kind: Kind,
    queries: usize,
    rows_mean: f64,
    rows_max: usize,
    pages_max: usize,
    latency_ms: Percentiles,
    target_p95_ms: f64,
    met: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    store: Loaded,
    reused: bool,
    partitions: Vec<(String, i64)>,
    kinds: Vec<KindReport>,
    plans: Vec<(Kind, String)>,
    machine: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.queries == 0 {
        bail!("--queries must be at least 1");
    }
    if !args.database.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        bail!("--database must be letters, digits and underscores");
    }
    let server = harness::durable_server_url("eye-query-bench-pg")?;
    if args.drop {
        harness::drop_database(&server, &args.database).await?;
        eprintln!("dropped {}", args.database);
        return Ok(());
    }
    let url = eye_test_support::database_url(&server, &args.database);
    let shape = Shape {
        events: args.events,
        days: args.days,
        seed: args.seed,
        start: None,
        partition: Granularity::Month,
    };
    let (store, reused) = prepare(&args, &server, &url, shape).await?;

    if args.export {
        return export_bench(&url, store.events as u64).await;
    }
    let mut conn = load::connect(&url).await?;
    let partitions: Vec<(String, i64)> = sqlx::query_as(
        "SELECT c.relname::text, c.reltuples::bigint FROM pg_inherits i \
         JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'events'::regclass ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await?;
    let key = mix::read_key(&mut conn).await?;
    let plan = mix::plan_queries(&mut conn, args.queries + args.warmup, args.seed, &store).await?;

    // The real query service, in-process, on a free port.
    let mut settings = eye_service::Settings::default();
    settings.database.url = Some(url.clone().into());
    settings.query.host = "127.0.0.1".into();
    settings.query.port = 0;
    settings.query.http_port = 0;
    let app = eye_query::Application::build(settings).await?;
    let endpoint = format!("http://127.0.0.1:{}", app.port());
    let shutdown = CancellationToken::new();
    let server_task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let channel = Channel::from_shared(endpoint)?.connect().await?;
    let client = QueryServiceClient::new(channel);

    eprintln!(
        "measuring {} queries of each kind after {} warm-up queries",
        args.queries, args.warmup
    );
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); Kind::ALL.len()];
    for round in 0..args.warmup + args.queries {
        let asked = mix::ask_round(&client, &key, &plan, round).await?;
        if round >= args.warmup {
            for (kind, sample) in samples.iter_mut().zip(asked) {
                kind.push(sample);
            }
        }
    }
    shutdown.cancel();
    server_task.await??;

    let kinds: Vec<KindReport> = Kind::ALL
        .iter()
        .zip(samples)
        .map(|(kind, samples)| {
            let rows: Vec<usize> = samples.iter().map(|s| s.rows).collect();
            let latency_ms = Percentiles::of(samples.iter().map(|s| s.ms).collect());
            KindReport {
                kind: *kind,
                queries: samples.len(),
                rows_mean: rows.iter().sum::<usize>() as f64 / rows.len().max(1) as f64,
                rows_max: rows.iter().copied().max().unwrap_or(0),
                pages_max: samples.iter().map(|s| s.pages).max().unwrap_or(0),
                met: latency_ms.p95 <= kind.target_ms(),
                latency_ms,
                target_p95_ms: kind.target_ms(),
            }
        })
        .collect();

    let mut plans = Vec::new();
    if !args.no_explain {
        sqlx::query("SET plan_cache_mode = force_custom_plan").execute(&mut conn).await?;
        for (kind, queries) in Kind::ALL.iter().zip(&plan) {
            plans.push((*kind, explain(&mut conn, &queries[0]).await?));
        }
    }
    let report = Report { store, reused, partitions, kinds, plans, machine: harness::machine() };
    print_report(&report, args.json)?;
    Ok(())
}

/// The store to measure: the one loaded before (`--reuse`), or a new one.
async fn prepare(
    args: &Args,
    server: &str,
    url: &str,
    shape: Shape,
) -> anyhow::Result<(Loaded, bool)> {
    if args.reuse && database_exists(server, &args.database).await? {
        let mut conn = load::connect(url).await?;
        // A migration added since the load applies to the loaded store, as in production.
        eye_service::database::MIGRATOR.run(&mut conn).await?;
        if let Some(loaded) = load::existing(&mut conn, shape).await? {
            eprintln!(
                "reusing {} ({} events, loaded in {:.0} s)",
                args.database, loaded.events, loaded.load_seconds
            );
            return Ok((loaded, true));
        }
        eprintln!("{} holds no complete store of this shape; loading one", args.database);
    }
    harness::drop_database(server, &args.database).await?;
    let mut admin = load::connect(server).await?;
    sqlx::query(&format!(r#"CREATE DATABASE "{}""#, args.database)).execute(&mut admin).await?;
    let mut conn = load::connect(url).await?;
    eye_service::database::MIGRATOR.run(&mut conn).await?;
    let loaded = load::load(&mut conn, shape).await?;
    Ok((loaded, false))
}

/// The export against a raw COPY of the same rows, and the files against the table.
async fn export_bench(url: &str, events: u64) -> anyhow::Result<()> {
    use eye_export::{Destination, Exporter, Kind, Options};
    let dir = std::env::temp_dir().join(format!("eye-export-bench-{}", Uuid::new_v4().simple()));
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(url).await?;
    let exporter =
        Exporter::new(pool.clone(), Destination::parse(dir.to_str().unwrap())?, Options::default());
    eprintln!("exporting {events} events to {}", dir.display());
    let summary = exporter.export(Kind::Events, &|_, _| {}).await?;
    // The same rows, columns and order, as COPY writes them (text), read to the end.
    let mut conn = load::connect(url).await?;
    let started = Instant::now();
    let mut copy = conn
        .copy_out_raw(
            "COPY (SELECT application_id, event_id, session_id, category, name, data, occurred_at, \
             received_at, stored_at, schema_version FROM events \
             ORDER BY date_trunc('hour', occurred_at), occurred_at, application_id, event_id) TO STDOUT",
        )
        .await?;
    let mut copy_bytes = 0u64;
    while let Some(chunk) = futures::TryStreamExt::try_next(&mut copy).await? {
        copy_bytes += chunk.len() as u64;
    }
    drop(copy);
    let copy_seconds = started.elapsed().as_secs_f64();
    let (heap, total): (i64, i64) = sqlx::query_as(
        "SELECT sum(pg_relation_size(c.oid))::int8, sum(pg_total_relation_size(c.oid))::int8 \
         FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'events'::regclass",
    )
    .fetch_one(&mut conn)
    .await?;
    let report = serde_json::json!({
        "events": events,
        "export": {"hours": summary.hours, "files": summary.files, "rows": summary.rows,
                   "bytes": summary.bytes, "seconds": summary.seconds,
                   "rows_per_second": summary.rows as f64 / summary.seconds,
                   "input_mb_per_second": heap as f64 / 1e6 / summary.seconds,
                   "output_mb_per_second": summary.bytes as f64 / 1e6 / summary.seconds},
        "copy_to": {"bytes": copy_bytes, "seconds": copy_seconds,
                    "rows_per_second": summary.rows as f64 / copy_seconds},
        "export_to_copy": copy_seconds / summary.seconds,
        "table_heap_bytes": heap,
        "table_with_indexes_bytes": total,
        "files_to_heap": summary.bytes as f64 / heap as f64,
        "files_to_table_with_indexes": summary.bytes as f64 / total as f64,
        "machine": harness::machine(),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A fresh key with the `read` role for the application `bench-reader`.
/// The columns `eye_query::queries::list_events` selects.
const COLUMNS: &str = "SELECT application_id, event_id, session_id, category, name, \
                       data::text AS data, occurred_at, received_at, stored_at, schema_version \
                       FROM events WHERE true";

/// `EXPLAIN (ANALYZE, BUFFERS)` of the first page of `query`, in the SQL the service builds for
/// it (`eye_query::queries::list_events`, first page, `LIMIT page_size + 1`).
async fn explain(conn: &mut PgConnection, query: &Query) -> anyhow::Result<String> {
    let limit = i64::from(mix::PAGE_SIZE) + 1;
    let order = " ORDER BY occurred_at, event_id LIMIT $";
    let prefix = "EXPLAIN (ANALYZE, BUFFERS) ";
    let lines: Vec<String> = match query {
        Query::Session(id) => {
            let sql = format!("{prefix}{COLUMNS} AND session_id = $1{order}2");
            sqlx::query_scalar(&sql).bind(id).bind(limit).fetch_all(&mut *conn).await?
        }
        Query::CategoryHour { category, from } => {
            let sql = format!(
                "{prefix}{COLUMNS} AND category = $1 AND occurred_at >= $2 AND occurred_at < $3{order}4"
            );
            sqlx::query_scalar(&sql)
                .bind(*category)
                .bind(*from)
                .bind(*from + chrono::Duration::hours(1))
                .bind(limit)
                .fetch_all(&mut *conn)
                .await?
        }
        Query::DataContains(json) => {
            let sql = format!("{prefix}{COLUMNS} AND data @> $1::jsonb{order}2");
            let json: serde_json::Value = serde_json::from_str(json)?;
            sqlx::query_scalar(&sql).bind(json).bind(limit).fetch_all(&mut *conn).await?
        }
    };
    let parameters = match query {
        Query::Session(id) => format!("session_id = {id}"),
        Query::CategoryHour { category, from } => {
            format!("category = {category:?}, from {}", from.to_rfc3339())
        }
        Query::DataContains(json) => format!("data @> {json}"),
    };
    Ok(format!("-- {parameters}\n{}", lines.join("\n")))
}

async fn database_exists(server: &str, name: &str) -> anyhow::Result<bool> {
    let mut admin = load::connect(server).await?;
    Ok(sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut admin)
        .await?)
}

fn print_report(report: &Report, json_only: bool) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(report)?);
    if json_only {
        return Ok(());
    }
    let store = &report.store;
    eprintln!();
    eprintln!(
        "store               {} events, {} sessions, {} users, {} days ({} to {}), {:.1} GB",
        store.events,
        store.sessions,
        store.users,
        store.days,
        store.window_start.format("%Y-%m-%d"),
        store.window_end.format("%Y-%m-%d"),
        store.total_bytes as f64 / 1e9
    );
    eprintln!(
        "load                {:.0} s (COPY {:.0} s, {:.0} rows/s; indexes {:.0} s){}",
        store.load_seconds,
        store.copy_seconds,
        store.events as f64 / store.copy_seconds,
        store.index_seconds,
        if report.reused { "; reused" } else { "" }
    );
    let partitions: Vec<String> =
        report.partitions.iter().map(|(name, rows)| format!("{name} ({rows})")).collect();
    eprintln!("partitions          {}", partitions.join(", "));
    eprintln!();
    eprintln!(
        "{:<15} {:>7} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10}",
        "kind",
        "queries",
        "rows mean",
        "rows max",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "target p95"
    );
    for kind in &report.kinds {
        let l = &kind.latency_ms;
        eprintln!(
            "{:<15} {:>7} {:>10.1} {:>8} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>7.0} {}",
            kind.kind.label(),
            kind.queries,
            kind.rows_mean,
            kind.rows_max,
            l.p50,
            l.p95,
            l.p99,
            l.max,
            kind.target_p95_ms,
            if kind.met { "ok" } else { "MISSED" }
        );
    }
    eprintln!("machine             {}", report.machine);
    for (kind, plan) in &report.plans {
        eprintln!();
        eprintln!("== {} ==", kind.label());
        eprintln!("{plan}");
    }
    Ok(())
}
