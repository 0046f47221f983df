//! `eye-bench`: the end-to-end benchmark of The Eye.
//!
//! It runs the real `eye-ingest`, `eye-validator` and `eye-writer` binaries as processes against a
//! durable Postgres (fsync on) in a fresh database, drives load through gRPC, and reports:
//! acknowledged events/s, ack latency percentiles, end-to-end events/s (acknowledged -> stored),
//! the rate of a raw `COPY` of the same events into an identical table in the same run and the
//! ratio, peak RSS per service, and outbox table sizes before and after.
//!
//! Counts come from SQL over the store, never from estimates: the run fails if any acknowledged
//! event is missing or stored twice.
//!
//! # Scenarios
//! - `steady`: closed loop, `--concurrency` clients send as fast as acknowledgements allow.
//! - `latency`: open loop at `--rate` events/s; latency is measured from each batch's scheduled
//!   send time, so a slow server cannot hide its queueing (no coordinated omission).
//! - `drain`: only ingest runs while the load is sent; then validator and writer start and the
//!   backlog's drain rate is measured.
//! - `client`: the load goes through `eye load` (the `eye-client` library in a process of its
//!   own, `--concurrency` calls in flight, batches of `--batch`): its acknowledged rate and peak
//!   RSS, to compare with `steady`'s raw calls.
//! - `client-spool`: `client` with the durable spool on (fsync before `track` returns).
//! - `clients`: `steady`, `client` and `client-spool` in one run, each on a fresh database,
//!   with the ratios of the client's acknowledged rate to the raw one.
//! - `http`: `steady` over HTTP/JSON (`POST /v1/events`, `--concurrency` keep-alive
//!   connections, each batch encoded as JSON when sent, as a client would).
//! - `transports`: `steady` and `http` in one run, each on a fresh database, with the ratios of
//!   HTTP's end-to-end and acknowledged rates to gRPC's.
//! - `delivery`, `quota`, `latency-backlog`, `scale-out`: see [`Scenario`].
//! - `growth`: `steady` on stores already holding `--sizes` events (loaded by COPY with the query
//!   benchmark's loader), with the GIN index on `data` and without it.
//! - `mixed`: on a store of `--preload` events, the query benchmark's mix idle, ingest open loop
//!   alone, then both at once.
//!
//! `--preload N` loads a store before any scenario; `--sample-secs S` records the outbox's size,
//! dead rows and autovacuum runs and each service's RSS every S seconds (long runs).
//!
//! Run `just bench`, or `cargo build --release --bins && target/release/eye-bench --help`.

use eye_cli::commands::load::seeded_id;
use eye_query_bench::{
    load::{Loaded, Shape},
    mix::{self, Kind, Percentiles, Sample},
};
use eye_service::{auth::Role, settings::Granularity};
use eye_test_support::harness;
use std::{
    collections::HashMap,
    path::PathBuf,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use chrono::Utc;
use clap::{Parser, ValueEnum};
use eye_admin::subscriptions::{Destination, Filter, NewSubscription};
use eye_proto::v1::{
    Event, EventStatus, SendEventsRequest, ingest_service_client::IngestServiceClient,
    query_service_client::QueryServiceClient,
};
use serde::Serialize;
use sqlx::{Connection, PgConnection};
use tokio::process::{Child, Command};
use tonic::transport::Channel;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
enum Scenario {
    Steady,
    Latency,
    Drain,
    Client,
    ClientSpool,
    Clients,
    Http,
    Transports,
    /// Writer throughput with 0, 1 and 10 subscriptions, and delivery rates to a local webhook
    /// receiver and to NATS JetStream (a nats-server started by the benchmark).
    Delivery,
    /// One application sends open loop at `--rate`, alone and then while another floods ingest
    /// closed loop over its quota (`--quota`): the first one's ack latency in both phases.
    Quota,
    /// Ack latency at `--rate` open loop, alone (the `latency` scenario), then while the validator
    /// and the writer drain a backlog of `--backlog` events enqueued before they started.
    LatencyBacklog,
    /// The steady run with one ingest, validator and writer, then with two of each against the
    /// same Postgres (the load spread over both ingests): throughput as a ratio, nothing lost.
    ScaleOut,
    /// The steady run on a store already holding each of `--sizes` events (loaded by COPY into
    /// the partition the run writes into), with the GIN index on `data` and then without it:
    /// end-to-end rates as ratios to the empty store's.
    Growth,
    /// On a store of `--preload` events: the query benchmark's mix idle, ingest open loop at
    /// `--rate` alone, then both at once: ack latency with and without the queries, query
    /// latency with and without the ingest.
    Mixed,
}

#[derive(Debug, Clone, Parser)]
#[command(about = "End-to-end benchmark of The Eye")]
struct Args {
    #[arg(long, value_enum, default_value = "steady")]
    scenario: Scenario,
    /// Total events to send.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Concurrent requests in flight (closed loop).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Events per SendEvents request.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Offered load in events/s (latency scenario).
    #[arg(long, default_value_t = 5_000)]
    rate: usize,
    /// Approximate payload size in bytes.
    #[arg(long, default_value_t = 200)]
    payload_bytes: usize,
    /// Tasks tracking at once in `eye load` with the spool (`client-spool`): concurrent tracks
    /// share fsyncs. (`client` tracks from one task.)
    #[arg(long, default_value_t = 16)]
    producers: usize,
    /// Where the service binaries are.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Skip the raw COPY baseline.
    #[arg(long)]
    no_copy: bool,
    /// Longest wait for the store to catch up after the load.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
    /// Print only the JSON summary.
    #[arg(long)]
    json: bool,
    /// Subscriptions matching every event, created before the load (their destination: see
    /// `--deliver-to`; without it, nothing delivers them and the writer's cost alone is measured).
    #[arg(long, default_value_t = 0)]
    subscriptions: usize,
    /// After the store caught up, run eye-delivery and time delivery to this destination
    /// (`http://...` a webhook, `nats://...` JetStream).
    #[arg(long)]
    deliver_to: Option<String>,
    /// Instances of each of ingest, validator and writer (the load goes round robin over the
    /// ingests).
    #[arg(long, default_value_t = 1)]
    instances: usize,
    /// Events waiting in the outbox when the drain starts (the latency-backlog scenario).
    #[arg(long, default_value_t = 1_000_000)]
    backlog: usize,
    /// The flooding application's quota, events/s (the quota scenario).
    #[arg(long, default_value_t = 2_000.0)]
    quota: f64,
    /// nats-server binary (the delivery scenario).
    #[arg(long, default_value = "nats-server")]
    nats_server: String,
    /// Events loaded by COPY (the query benchmark's loader) before the run starts.
    #[arg(long, default_value_t = 0)]
    preload: u64,
    /// Days the preloaded events span, ending now; 0: from the start of the current partition,
    /// i.e. all in the partition the run writes into.
    #[arg(long, default_value_t = 0)]
    preload_days: u32,
    /// The span of the store's `events` partitions (`store.partition`: day or month), for the
    /// preload and the services.
    #[arg(long, default_value = "month", value_parser = parse_granularity)]
    partition: Granularity,
    /// Store sizes of the growth scenario.
    #[arg(long, value_delimiter = ',', default_value = "0,10000000")]
    sizes: Vec<u64>,
    /// Measured rounds of the query mix on the idle store (mixed scenario; one round asks one
    /// question of each kind).
    #[arg(long, default_value_t = 100)]
    queries: usize,
    /// Every this many seconds, record the outbox's size, live and dead rows and autovacuum
    /// runs, and each service's RSS (0: never). For long runs: `--scenario latency` for 30 min.
    #[arg(long, default_value_t = 0)]
    sample_secs: u64,
}

/// The `latency-backlog` scenario.
#[derive(Debug, Serialize)]
struct BacklogComparison {
    offered_rate: usize,
    backlog: usize,
    alone_ms: Percentiles,
    draining_ms: Percentiles,
    /// What ingest's connections waited on in Postgres, alone and while the backlog drains.
    alone_ingest_waits: Waits,
    draining_ingest_waits: Waits,
    /// p99 ack latency while a backlog drains over alone (target: p99 at most 25 ms in both).
    p99_draining_to_alone: f64,
    /// From the consumers' start until the backlog and the measured load were all stored.
    drain_seconds: f64,
    failed_requests: usize,
    machine: String,
}

struct Draining {
    ack_ms: Percentiles,
    ingest_waits: Waits,
    drain_seconds: f64,
    failed: usize,
}

/// Enqueues `--backlog` events with ingest alone, starts a validator and a writer, and measures
/// ack latency at `--rate` while they drain it.
async fn backlog_run(args: &Args, db: &Database) -> anyhow::Result<Draining> {
    let mut conn = PgConnection::connect(&db.url).await?;
    let (key, _) = create_key(&mut conn).await?;
    register_schema(&mut conn).await?;
    let (port, http_port) = (free_port()?, free_port()?);
    let mut services = vec![spawn(args, "eye-ingest", &db.url, port, http_port)?];
    let endpoint = format!("http://127.0.0.1:{port}");
    wait_until_serving(&endpoint, INGEST).await?;
    let channels = connect(&endpoint, 4).await?;
    // The backlog, as fast as ingest takes it (past ingest's back-pressure bound, it waits).
    let backlog = Args { events: args.backlog, batch: 500, ..args.clone() };
    let filled = closed_loop(&backlog, &key, Arc::new(make_batches(&backlog)), &channels).await;
    let started = Instant::now();
    services.push(spawn(args, "eye-validator", &db.url, port, http_port)?);
    services.push(spawn(args, "eye-writer", &db.url, port, http_port)?);
    let (measured, ingest_waits) =
        sampled_open_loop(args, &key, Arc::new(make_batches(args)), &channels, &db.url).await?;
    drained(&mut conn, Instant::now() + Duration::from_secs(args.timeout_secs), &mut 0).await?;
    let drain_seconds = started.elapsed().as_secs_f64();
    for service in &mut services {
        service.stop().await;
    }
    Ok(Draining {
        ack_ms: Percentiles::of(measured.latencies_ms),
        ingest_waits,
        drain_seconds,
        failed: filled.failed + measured.failed,
    })
}

/// The `scale-out` scenario.
#[derive(Debug, Serialize)]
struct ScaleOutComparison {
    one: Report,
    two: Report,
    /// End-to-end events/s with two of each over one of each.
    two_to_one_end_to_end: f64,
    two_to_one_acknowledged: f64,
}

/// The `quota` scenario.
#[derive(Debug, Serialize)]
struct QuotaComparison {
    /// The quiet application's offered rate, events/s (open loop).
    offered_rate: usize,
    /// The flooding application's quota, events/s.
    quota: f64,
    quiet_alone_ms: Percentiles,
    quiet_flooded_ms: Percentiles,
    /// The quiet application's p99 ack latency while flooded over alone (target: at most 2).
    p99_flooded_to_alone: f64,
    /// What the flood got through (events/s accepted) and how often it was refused.
    flood_accepted_per_second: f64,
    flood_refused_requests: usize,
    quiet_failed_requests: usize,
    machine: String,
}

/// The `clients` scenario: three runs and their ratios.
#[derive(Debug, Serialize)]
struct Comparison {
    raw: Report,
    client: Report,
    client_spool: Report,
    /// Acknowledged events/s through `eye-client` over raw calls' (target: at least 0.9).
    client_to_raw: f64,
    /// The same with the spool on.
    client_spool_to_raw: f64,
}

/// The `transports` scenario: gRPC and HTTP, and their ratios.
#[derive(Debug, Serialize)]
struct TransportComparison {
    grpc: Report,
    http: Report,
    /// End-to-end events/s (acknowledged -> stored) over HTTP to over gRPC (target: 0.7).
    http_to_grpc_end_to_end: f64,
    /// Acknowledged events/s over HTTP to over gRPC.
    http_to_grpc_acknowledged: f64,
}

#[derive(Debug, Default, Serialize)]
struct Report {
    scenario: Option<Scenario>,
    events_sent: usize,
    batch: usize,
    concurrency: usize,
    offered_rate: Option<usize>,
    payload_bytes: usize,
    acknowledged: usize,
    rejected: usize,
    duplicate: usize,
    failed_requests: usize,
    ack_seconds: f64,
    acknowledged_per_second: f64,
    ack_latency_ms: Percentiles,
    /// Open loop: what ingest's connections waited on in Postgres (`WaitSampler`).
    ingest_waits: Waits,
    end_to_end_seconds: f64,
    end_to_end_per_second: f64,
    stored: i64,
    missing: i64,
    stored_twice: i64,
    copy_per_second: Option<f64>,
    ratio_to_copy: Option<f64>,
    peak_rss_mb: Vec<(String, f64)>,
    outbox_bytes_before: i64,
    outbox_bytes_peak: i64,
    outbox_bytes_after: i64,
    /// Subscriptions matching every event during the run.
    subscriptions: usize,
    /// Instances of each of ingest, validator and writer.
    instances: usize,
    /// Events/s delivered (all subscriptions together), from eye-delivery's start to the last
    /// acknowledged delivery, when `--deliver-to` was given.
    delivered_per_second: Option<f64>,
    /// Events in the store before the run (`--preload`).
    preloaded: u64,
    /// Every `--sample-secs` during the run.
    samples: Vec<OutboxSample>,
    machine: String,
}

/// The `delivery` scenario.
#[derive(Debug, Serialize)]
struct DeliveryComparison {
    none: Report,
    one: Report,
    ten: Report,
    nats: Option<Report>,
    /// The writer's end-to-end events/s with 1 and 10 subscriptions over none's.
    writer_1_to_0: f64,
    writer_10_to_0: f64,
    webhook_delivered_per_second: Option<f64>,
    nats_delivered_per_second: Option<f64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.batch == 0 || args.events == 0 || args.concurrency == 0 {
        bail!("--events, --batch and --concurrency must be at least 1");
    }
    let server = harness::durable_server_url("eye-bench-pg")?;
    if args.scenario == Scenario::Transports {
        let (grpc, http, end_to_end, acknowledged) =
            two_runs((&args, Scenario::Steady), (&args, Scenario::Http), &server).await?;
        let comparison = TransportComparison {
            http_to_grpc_end_to_end: end_to_end,
            http_to_grpc_acknowledged: acknowledged,
            grpc,
            http,
        };
        println!("{}", serde_json::to_string_pretty(&comparison)?);
        check(&comparison.grpc)?;
        return check(&comparison.http);
    }
    if args.scenario == Scenario::Delivery {
        return delivery_scenario(&args, &server).await;
    }
    if args.scenario == Scenario::Quota {
        return quota_scenario(&args, &server).await;
    }
    if args.scenario == Scenario::LatencyBacklog {
        let alone = run_once(&args, &server, Scenario::Latency).await?;
        check(&alone)?;
        let db = fresh_database(&server).await?;
        let draining = backlog_run(&args, &db).await;
        let _ = harness::drop_database(&server, &db.name).await;
        let draining = draining?;
        let comparison = BacklogComparison {
            offered_rate: args.rate,
            backlog: args.backlog,
            p99_draining_to_alone: draining.ack_ms.p99 / alone.ack_latency_ms.p99,
            alone_ms: alone.ack_latency_ms,
            draining_ms: draining.ack_ms,
            alone_ingest_waits: alone.ingest_waits,
            draining_ingest_waits: draining.ingest_waits,
            drain_seconds: draining.drain_seconds,
            failed_requests: draining.failed,
            machine: harness::machine(),
        };
        println!("{}", serde_json::to_string_pretty(&comparison)?);
        return Ok(());
    }
    if args.scenario == Scenario::Growth {
        return growth_scenario(&args, &server).await;
    }
    if args.scenario == Scenario::Mixed {
        return mixed_scenario(&args, &server).await;
    }
    if args.scenario == Scenario::ScaleOut {
        let (one, two) = (Args { instances: 1, ..args.clone() }, Args { instances: 2, ..args });
        let (one, two, end_to_end, acknowledged) =
            two_runs((&one, Scenario::Steady), (&two, Scenario::Steady), &server).await?;
        let comparison = ScaleOutComparison {
            two_to_one_end_to_end: end_to_end,
            two_to_one_acknowledged: acknowledged,
            one,
            two,
        };
        println!("{}", serde_json::to_string_pretty(&comparison)?);
        check(&comparison.one)?;
        return check(&comparison.two);
    }
    if args.scenario != Scenario::Clients {
        let report = run_once(&args, &server, args.scenario).await?;
        print_report(&report, args.json)?;
        return check(&report);
    }
    let raw = run_once(&args, &server, Scenario::Steady).await?;
    let client = run_once(&args, &server, Scenario::Client).await?;
    let client_spool = run_once(&args, &server, Scenario::ClientSpool).await?;
    let comparison = Comparison {
        client_to_raw: client.acknowledged_per_second / raw.acknowledged_per_second,
        client_spool_to_raw: client_spool.acknowledged_per_second / raw.acknowledged_per_second,
        raw,
        client,
        client_spool,
    };
    println!("{}", serde_json::to_string_pretty(&comparison)?);
    for report in [&comparison.raw, &comparison.client, &comparison.client_spool] {
        check(report)?;
    }
    Ok(())
}

/// One scenario on a fresh database, dropped afterwards.
/// Two runs on fresh databases, and the second's end-to-end and acknowledged rates over the
/// first's.
async fn two_runs(
    (first_args, first): (&Args, Scenario),
    (second_args, second): (&Args, Scenario),
    server: &str,
) -> anyhow::Result<(Report, Report, f64, f64)> {
    let a = run_once(first_args, server, first).await?;
    let b = run_once(second_args, server, second).await?;
    let end_to_end = b.end_to_end_per_second / a.end_to_end_per_second;
    let acknowledged = b.acknowledged_per_second / a.acknowledged_per_second;
    Ok((a, b, end_to_end, acknowledged))
}

async fn quota_scenario(args: &Args, server: &str) -> anyhow::Result<()> {
    let db = fresh_database(server).await?;
    let result = quota_run(args, &db).await;
    let _ = harness::drop_database(server, &db.name).await;
    let comparison = result?;
    println!("{}", serde_json::to_string(&comparison)?);
    if !args.json {
        println!("{}", serde_json::to_string_pretty(&comparison)?);
    }
    Ok(())
}

async fn quota_run(args: &Args, db: &Database) -> anyhow::Result<QuotaComparison> {
    let mut conn = PgConnection::connect(&db.url).await?;
    let (quiet, _) = create_key(&mut conn).await?;
    let noisy = eye_admin::apps::create(&mut conn, "noisy", &[Role::Ingest]).await?.key;
    eye_admin::apps::set_quota(&mut conn, "noisy", Some(args.quota), Some(args.quota)).await?;
    register_schema(&mut conn).await?;
    let (port, http_port) = (free_port()?, free_port()?);
    let mut services = vec![
        spawn(args, "eye-ingest", &db.url, port, http_port)?,
        spawn(args, "eye-validator", &db.url, port, http_port)?,
        spawn(args, "eye-writer", &db.url, port, http_port)?,
    ];
    let endpoint = format!("http://127.0.0.1:{port}");
    wait_until_serving(&endpoint, INGEST).await?;
    let channels = connect(&endpoint, 4).await?;

    let alone = open_loop(args, &quiet, Arc::new(make_batches(args)), &channels).await;
    // The flood: closed loop, fresh events each request, until the second phase is done.
    let stop = Arc::new(AtomicBool::new(false));
    let mut flood = tokio::task::JoinSet::new();
    let flood_started = Instant::now();
    for worker in 0..args.concurrency {
        let mut client = IngestServiceClient::new(channels[worker % channels.len()].clone());
        let (stop, key) = (stop.clone(), noisy.clone());
        let one = Args { events: args.batch, ..args.clone() };
        flood.spawn(async move {
            let (mut accepted, mut refused) = (0usize, 0usize);
            while !stop.load(Ordering::Relaxed) {
                let batch = make_batches(&one).remove(0);
                match client.send_events(authorized(batch, &key)).await {
                    Ok(answer) => accepted += answer.into_inner().results.len(),
                    Err(status) if status.code() == tonic::Code::ResourceExhausted => refused += 1,
                    Err(status) => eprintln!("flood: {:?} {}", status.code(), status.message()),
                }
            }
            (accepted, refused)
        });
    }
    let flooded = open_loop(args, &quiet, Arc::new(make_batches(args)), &channels).await;
    stop.store(true, Ordering::Relaxed);
    let (mut flood_accepted, mut flood_refused) = (0, 0);
    while let Some(done) = flood.join_next().await {
        let (accepted, refused) = done.expect("flood task");
        flood_accepted += accepted;
        flood_refused += refused;
    }
    let flood_seconds = flood_started.elapsed().as_secs_f64();
    for service in &mut services {
        service.stop().await;
    }
    let (quiet_alone_ms, quiet_flooded_ms) =
        (Percentiles::of(alone.latencies_ms), Percentiles::of(flooded.latencies_ms));
    Ok(QuotaComparison {
        offered_rate: args.rate,
        quota: args.quota,
        p99_flooded_to_alone: quiet_flooded_ms.p99 / quiet_alone_ms.p99,
        quiet_alone_ms,
        quiet_flooded_ms,
        flood_accepted_per_second: flood_accepted as f64 / flood_seconds,
        flood_refused_requests: flood_refused,
        quiet_failed_requests: alone.failed + flooded.failed,
        machine: harness::machine(),
    })
}

async fn run_once(args: &Args, server: &str, scenario: Scenario) -> anyhow::Result<Report> {
    let db = fresh_database(server).await?;
    let report = async {
        if args.preload > 0 {
            preload(args, &db, args.preload).await?;
        }
        let mut report = run(args, &db, scenario).await?;
        report.preloaded = args.preload;
        anyhow::Ok(report)
    }
    .await;
    let _ = harness::drop_database(server, &db.name).await;
    report
}

fn check(report: &Report) -> anyhow::Result<()> {
    if report.missing != 0 || report.stored_twice != 0 || report.failed_requests != 0 {
        bail!(
            "verification failed: {} missing, {} stored twice, {} failed requests",
            report.missing,
            report.stored_twice,
            report.failed_requests
        );
    }
    Ok(())
}

async fn run(args: &Args, db: &Database, scenario: Scenario) -> anyhow::Result<Report> {
    let mut conn = PgConnection::connect(&db.url).await?;
    let (key, application) = create_key(&mut conn).await?;
    register_schema(&mut conn).await?;
    let mut report = Report {
        scenario: Some(scenario),
        events_sent: args.events,
        batch: args.batch,
        concurrency: args.concurrency,
        offered_rate: (scenario == Scenario::Latency).then_some(args.rate),
        payload_bytes: args.payload_bytes,
        machine: harness::machine(),
        ..Default::default()
    };
    report.outbox_bytes_before = outbox_bytes(&mut conn).await?;
    report.subscriptions = args.subscriptions;
    report.instances = args.instances.max(1);
    for i in 0..args.subscriptions {
        let destination = match args.deliver_to.as_deref() {
            Some(url) if url.starts_with("nats") => Destination::Nats(url.into()),
            Some(url) => Destination::Webhook(url.into()),
            None => Destination::Webhook("http://127.0.0.1:9/unused".into()),
        };
        let new = NewSubscription {
            name: format!("bench-{i}"),
            destination,
            filter: Filter::default(),
            from: None,
            ordered: false,
        };
        eye_admin::subscriptions::create(&mut conn, &new).await?;
    }

    let (port, http_port) = (free_port()?, free_port()?);
    let mut services = vec![spawn(args, "eye-ingest", &db.url, port, http_port)?];
    let mut more_ingests = Vec::new();
    for _ in 1..args.instances.max(1) {
        let (port, http_port) = (free_port()?, free_port()?);
        services.push(spawn(args, "eye-ingest", &db.url, port, http_port)?);
        more_ingests.push(format!("http://127.0.0.1:{port}"));
    }
    if scenario != Scenario::Drain {
        for _ in 0..args.instances.max(1) {
            services.push(spawn(args, "eye-validator", &db.url, port, http_port)?);
            services.push(spawn(args, "eye-writer", &db.url, port, http_port)?);
        }
    }
    let endpoint = format!("http://127.0.0.1:{port}");
    wait_until_serving(&endpoint, INGEST).await?;
    for endpoint in &more_ingests {
        wait_until_serving(endpoint, INGEST).await?;
    }
    let sampler = Sampler::start(args, &db.url, &services);

    let seed = rand::random::<u64>();
    let batches = Arc::new(match scenario {
        Scenario::Client | Scenario::ClientSpool => seeded_batches(args, seed),
        _ => make_batches(args),
    });
    let mut channels = connect(&endpoint, args.concurrency.min(4)).await?;
    for endpoint in &more_ingests {
        channels.extend(connect(endpoint, args.concurrency.min(4)).await?);
    }
    let started = Instant::now();
    let outcome = match scenario {
        Scenario::Latency => {
            let (outcome, waits) =
                sampled_open_loop(args, &key, batches.clone(), &channels, &db.url).await?;
            report.ingest_waits = waits;
            outcome
        }
        Scenario::Client | Scenario::ClientSpool => {
            let (outcome, rss) =
                client_load(args, &key, &endpoint, seed, scenario == Scenario::ClientSpool).await?;
            report.peak_rss_mb.push(("eye load".into(), rss));
            outcome
        }
        Scenario::Http => {
            let url = format!("http://127.0.0.1:{http_port}/v1/events");
            http_closed_loop(args, &key, batches.clone(), &url).await
        }
        _ => closed_loop(args, &key, batches.clone(), &channels).await,
    };
    report.ack_seconds = started.elapsed().as_secs_f64();
    report.acknowledged = outcome.accepted + outcome.duplicate;
    report.rejected = outcome.rejected;
    report.duplicate = outcome.duplicate;
    report.failed_requests = outcome.failed;
    report.acknowledged_per_second = report.acknowledged as f64 / report.ack_seconds;
    report.ack_latency_ms = Percentiles::of(outcome.latencies_ms);

    let drain_started = Instant::now();
    if scenario == Scenario::Drain {
        report.outbox_bytes_peak = outbox_bytes(&mut conn).await?;
        services.push(spawn(args, "eye-validator", &db.url, port, http_port)?);
        services.push(spawn(args, "eye-writer", &db.url, port, http_port)?);
    }
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let mut peak = report.outbox_bytes_peak;
    drained(&mut conn, deadline, &mut peak).await?;
    if scenario != Scenario::Drain {
        report.outbox_bytes_peak = peak;
    }
    let (e2e_start, e2e_end) = if scenario == Scenario::Drain {
        (drain_started, Instant::now())
    } else {
        (started, Instant::now())
    };
    report.end_to_end_seconds = (e2e_end - e2e_start).as_secs_f64();

    if args.deliver_to.is_some() && args.subscriptions > 0 {
        let started = Instant::now();
        services.push(spawn(args, "eye-delivery", &db.url, port, http_port)?);
        let want = report.acknowledged as i64 * args.subscriptions as i64;
        loop {
            let delivered: i64 =
                sqlx::query_scalar("SELECT coalesce(sum(delivered), 0)::int8 FROM subscriptions")
                    .fetch_one(&mut conn)
                    .await?;
            if delivered >= want {
                break;
            }
            if Instant::now() > deadline + Duration::from_secs(args.timeout_secs) {
                eprintln!("timed out: {delivered} of {want} delivered");
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        report.delivered_per_second = Some(want as f64 / started.elapsed().as_secs_f64());
    }
    if let Some(sampler) = sampler {
        report.samples = sampler.stop().await?;
        let sampled = report.samples.iter().map(|s| s.outbox_bytes).max().unwrap_or(0);
        report.outbox_bytes_peak = report.outbox_bytes_peak.max(sampled);
    }
    report.peak_rss_mb = stop_all(&mut services).await;

    verify(&mut conn, application, &batches, &mut report).await?;
    report.end_to_end_per_second = report.stored as f64 / report.end_to_end_seconds;
    sqlx::query("VACUUM outbox").execute(&mut conn).await?;
    report.outbox_bytes_after = outbox_bytes(&mut conn).await?;

    if !args.no_copy {
        let rate = copy_baseline(&mut conn, &batches).await?;
        report.copy_per_second = Some(rate);
        report.ratio_to_copy = Some(report.end_to_end_per_second / rate);
    }
    Ok(report)
}

/// Loads `events` into `db` with the query benchmark's loader, in `--preload-days`' window, then
/// checkpoints, so that the run does not pay for the load's dirty pages.
async fn preload(args: &Args, db: &Database, events: u64) -> anyhow::Result<Loaded> {
    let mut conn = PgConnection::connect(&db.url).await?;
    let now = Utc::now();
    // In a partition's first two hours, two hours back (partly into the previous one).
    let start = (args.preload_days == 0)
        .then(|| args.partition.start_of(now).min(now - chrono::Duration::hours(2)));
    let shape = Shape {
        events,
        days: args.preload_days.max(1),
        seed: 42,
        start,
        partition: args.partition,
    };
    let loaded = eye_query_bench::load::load(&mut conn, shape).await?;
    sqlx::query("CHECKPOINT").execute(&mut conn).await?;
    Ok(loaded)
}

/// One run of the `growth` scenario.
#[derive(Debug, Serialize)]
struct GrowthRun {
    preloaded: u64,
    gin: bool,
    /// The store's events partitions with their indexes before the run, bytes.
    store_bytes: i64,
    /// Of which the partition the run writes into (its indexes are the ones each insert grows).
    written_partition_bytes: i64,
    end_to_end_per_second: f64,
    acknowledged_per_second: f64,
    /// Over the empty store's rate with the same index set (when `--sizes` includes 0).
    to_empty: Option<f64>,
    peak_rss_mb: Vec<(String, f64)>,
}

/// The `growth` scenario: for each size, a fresh store holding that many events, the steady run
/// with the GIN index and again after dropping it.
async fn growth_scenario(args: &Args, server: &str) -> anyhow::Result<()> {
    let steady = Args { no_copy: true, ..args.clone() };
    let mut runs: Vec<GrowthRun> = Vec::new();
    for &size in &args.sizes {
        let db = fresh_database(server).await?;
        let result = async {
            let store_bytes = match size {
                0 => 0,
                _ => preload(args, &db, size).await?.total_bytes,
            };
            let mut conn = PgConnection::connect(&db.url).await?;
            // Before the services start: the partition of now, made here if the preload did not.
            let written_partition_bytes: i64 = sqlx::query_scalar(
                "SELECT pg_total_relation_size(eye_ensure_partition('events', now(), $1))",
            )
            .bind(args.partition.as_str())
            .fetch_one(&mut conn)
            .await?;
            let mut pair = Vec::new();
            for gin in [true, false] {
                if !gin {
                    sqlx::query("DROP INDEX events_data").execute(&mut conn).await?;
                    sqlx::query("CHECKPOINT").execute(&mut conn).await?;
                }
                let report = run(&steady, &db, Scenario::Steady).await?;
                check(&report)?;
                eprintln!(
                    "{size} events, GIN {}: {:.0} events/s end to end",
                    if gin { "on" } else { "off" },
                    report.end_to_end_per_second
                );
                pair.push(GrowthRun {
                    preloaded: size,
                    gin,
                    store_bytes,
                    written_partition_bytes,
                    end_to_end_per_second: report.end_to_end_per_second,
                    acknowledged_per_second: report.acknowledged_per_second,
                    to_empty: None,
                    peak_rss_mb: report.peak_rss_mb,
                });
            }
            anyhow::Ok(pair)
        }
        .await;
        let _ = harness::drop_database(server, &db.name).await;
        runs.extend(result?);
    }
    let empty = |gin: bool| {
        runs.iter().find(|r| r.preloaded == 0 && r.gin == gin).map(|r| r.end_to_end_per_second)
    };
    let (with_gin, without_gin) = (empty(true), empty(false));
    for run in &mut runs {
        let empty = if run.gin { with_gin } else { without_gin };
        run.to_empty = empty.map(|rate| run.end_to_end_per_second / rate);
    }
    println!("{}", serde_json::to_string_pretty(&runs)?);
    eprintln!(
        "{:>12} {:>4} {:>9} {:>11} {:>12} {:>12} {:>9}",
        "preloaded", "GIN", "store GB", "written GB", "e2e/s", "acked/s", "to empty"
    );
    for run in &runs {
        eprintln!(
            "{:>12} {:>4} {:>9.1} {:>11.2} {:>12.0} {:>12.0} {:>9}",
            run.preloaded,
            if run.gin { "on" } else { "off" },
            run.store_bytes as f64 / 1e9,
            run.written_partition_bytes as f64 / 1e9,
            run.end_to_end_per_second,
            run.acknowledged_per_second,
            run.to_empty.map_or("-".into(), |r| format!("{r:.2}"))
        );
    }
    Ok(())
}

/// The `mixed` scenario.
#[derive(Debug, Serialize)]
struct MixedComparison {
    preloaded: u64,
    offered_rate: usize,
    ack_alone_ms: Percentiles,
    ack_with_queries_ms: Percentiles,
    /// What ingest's connections waited on in Postgres, alone and beside the queries.
    ingest_waits_alone: Waits,
    ingest_waits_with_queries: Waits,
    /// Ack p99 while the queries run over alone (target: p99 at most 25 ms in both).
    ack_p99_with_queries_to_alone: f64,
    queries: Vec<KindUnderIngest>,
    peak_rss_mb: Vec<(String, f64)>,
    missing: i64,
    stored_twice: i64,
    failed_requests: usize,
    machine: String,
}

/// One kind of the query mix on the idle store and while ingest runs.
#[derive(Debug, Serialize)]
struct KindUnderIngest {
    kind: Kind,
    idle_ms: Percentiles,
    under_ingest_ms: Percentiles,
    /// Rounds measured while ingest ran.
    under_ingest_queries: usize,
    /// p95 under ingest over idle (target: at most 2).
    p95_to_idle: f64,
}

/// Warm-up rounds of the query mix before the idle measurement.
const QUERY_WARMUP: usize = 20;

async fn mixed_scenario(args: &Args, server: &str) -> anyhow::Result<()> {
    if args.preload == 0 {
        bail!("the mixed scenario needs a store: --preload N (the query benchmark's: 10000000)");
    }
    let db = fresh_database(server).await?;
    let result = mixed_run(args, &db).await;
    let _ = harness::drop_database(server, &db.name).await;
    let comparison = result?;
    println!("{}", serde_json::to_string_pretty(&comparison)?);
    let (a, b) = (&comparison.ack_alone_ms, &comparison.ack_with_queries_ms);
    eprintln!(
        "ack at {}/s: alone p50 {:.1} p99 {:.1} ms; with queries p50 {:.1} p99 {:.1} ms",
        comparison.offered_rate, a.p50, a.p99, b.p50, b.p99
    );
    for kind in &comparison.queries {
        eprintln!(
            "{:<15} p95 idle {:>7.1} ms, under ingest {:>7.1} ms ({} rounds): {:.2}x",
            kind.kind.label(),
            kind.idle_ms.p95,
            kind.under_ingest_ms.p95,
            kind.under_ingest_queries,
            kind.p95_to_idle
        );
    }
    if comparison.missing != 0 || comparison.stored_twice != 0 || comparison.failed_requests != 0 {
        bail!(
            "verification failed: {} missing, {} stored twice, {} failed requests",
            comparison.missing,
            comparison.stored_twice,
            comparison.failed_requests
        );
    }
    Ok(())
}

async fn mixed_run(args: &Args, db: &Database) -> anyhow::Result<MixedComparison> {
    let store = preload(args, db, args.preload).await?;
    let mut conn = PgConnection::connect(&db.url).await?;
    let (key, application) = create_key(&mut conn).await?;
    register_schema(&mut conn).await?;
    let read_key = mix::read_key(&mut conn).await?;
    let plan =
        Arc::new(mix::plan_queries(&mut conn, QUERY_WARMUP + args.queries, 42, &store).await?);

    let (port, http_port, query_port) = (free_port()?, free_port()?, free_port()?);
    let mut services = vec![
        spawn(args, "eye-ingest", &db.url, port, http_port)?,
        spawn(args, "eye-validator", &db.url, port, http_port)?,
        spawn(args, "eye-writer", &db.url, port, http_port)?,
        spawn(args, "eye-query", &db.url, query_port, free_port()?)?,
    ];
    let (endpoint, query_endpoint) =
        (format!("http://127.0.0.1:{port}"), format!("http://127.0.0.1:{query_port}"));
    wait_until_serving(&endpoint, INGEST).await?;
    wait_until_serving(&query_endpoint, QUERY).await?;
    let queries = QueryServiceClient::new(Channel::from_shared(query_endpoint)?.connect().await?);
    let channels = connect(&endpoint, 4).await?;
    let deadline = || Instant::now() + Duration::from_secs(args.timeout_secs);

    // The mix on the idle store.
    let mut idle = vec![Vec::new(); plan.len()];
    for round in 0..QUERY_WARMUP + args.queries {
        let asked = mix::ask_round(&queries, &read_key, &plan, round).await?;
        if round >= QUERY_WARMUP {
            idle.iter_mut().zip(asked).for_each(|(kind, sample)| kind.push(sample));
        }
    }
    // Ingest alone.
    let alone_batches = Arc::new(make_batches(args));
    let (alone, alone_waits) =
        sampled_open_loop(args, &key, alone_batches.clone(), &channels, &db.url).await?;
    drained(&mut conn, deadline(), &mut 0).await?;
    // Both: one reader asking round after round for as long as the load lasts.
    let stop = Arc::new(AtomicBool::new(false));
    let asker = tokio::spawn({
        let (queries, read_key, plan, stop) =
            (queries.clone(), read_key.clone(), plan.clone(), stop.clone());
        async move {
            let mut busy: Vec<Vec<Sample>> = vec![Vec::new(); plan.len()];
            let mut round = 0;
            while !stop.load(Ordering::Relaxed) {
                let asked = mix::ask_round(&queries, &read_key, &plan, round).await?;
                busy.iter_mut().zip(asked).for_each(|(kind, sample)| kind.push(sample));
                round += 1;
            }
            anyhow::Ok(busy)
        }
    });
    let together_batches = Arc::new(make_batches(args));
    let (together, together_waits) =
        sampled_open_loop(args, &key, together_batches.clone(), &channels, &db.url).await?;
    stop.store(true, Ordering::Relaxed);
    let busy = asker.await??;
    drained(&mut conn, deadline(), &mut 0).await?;
    let peak_rss_mb = stop_all(&mut services).await;

    let mut report = Report::default();
    let sent: Vec<SendEventsRequest> =
        alone_batches.iter().chain(together_batches.iter()).cloned().collect();
    verify(&mut conn, application, &sent, &mut report).await?;
    let ms = |samples: &[Sample]| Percentiles::of(samples.iter().map(|s| s.ms).collect());
    let kinds = Kind::ALL.iter().zip(idle.iter().zip(&busy));
    let ack_alone_ms = Percentiles::of(alone.latencies_ms);
    let ack_with_queries_ms = Percentiles::of(together.latencies_ms);
    Ok(MixedComparison {
        preloaded: args.preload,
        offered_rate: args.rate,
        ack_p99_with_queries_to_alone: ack_with_queries_ms.p99 / ack_alone_ms.p99,
        ack_alone_ms,
        ack_with_queries_ms,
        ingest_waits_alone: alone_waits,
        ingest_waits_with_queries: together_waits,
        queries: kinds
            .map(|(kind, (idle, busy))| {
                let (idle_ms, under_ingest_ms) = (ms(idle), ms(busy));
                KindUnderIngest {
                    kind: *kind,
                    p95_to_idle: under_ingest_ms.p95 / idle_ms.p95,
                    idle_ms,
                    under_ingest_ms,
                    under_ingest_queries: busy.len(),
                }
            })
            .collect(),
        peak_rss_mb,
        missing: report.missing,
        stored_twice: report.stored_twice,
        failed_requests: alone.failed + together.failed,
        machine: harness::machine(),
    })
}

/// The `delivery` scenario: the writer with 0, 1 and 10 subscriptions (the one delivered to a
/// local webhook receiver afterwards), and 1 subscription delivered to NATS JetStream.
async fn delivery_scenario(args: &Args, server: &str) -> anyhow::Result<()> {
    let receiver = webhook_receiver().await?;
    let with = |subscriptions: usize, deliver_to: Option<String>| Args {
        subscriptions,
        deliver_to,
        scenario: Scenario::Steady,
        ..args.clone()
    };
    let none = run_once(&with(0, None), server, Scenario::Steady).await?;
    let one = run_once(&with(1, Some(receiver)), server, Scenario::Steady).await?;
    let ten = run_once(&with(10, None), server, Scenario::Steady).await?;
    let nats = match NatsServer::start(&args.nats_server) {
        Ok(nats) => {
            let jetstream = eye_delivery::nats::Nats::connect(&nats.url, Duration::from_secs(10))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let deadline = Instant::now() + Duration::from_secs(30);
            while let Err(error) = jetstream.create_stream(1).await {
                if Instant::now() > deadline {
                    bail!("JetStream did not start: {error}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let report =
                run_once(&with(1, Some(nats.url.clone())), server, Scenario::Steady).await?;
            drop(nats);
            Some(report)
        }
        Err(error) => {
            eprintln!("no NATS run: cannot start {}: {error}", args.nats_server);
            None
        }
    };
    let comparison = DeliveryComparison {
        writer_1_to_0: one.end_to_end_per_second / none.end_to_end_per_second,
        writer_10_to_0: ten.end_to_end_per_second / none.end_to_end_per_second,
        webhook_delivered_per_second: one.delivered_per_second,
        nats_delivered_per_second: nats.as_ref().and_then(|r| r.delivered_per_second),
        none,
        one,
        ten,
        nats,
    };
    println!("{}", serde_json::to_string_pretty(&comparison)?);
    for report in [&comparison.none, &comparison.one, &comparison.ten] {
        check(report)?;
    }
    Ok(())
}

/// A webhook receiver answering 200 to every POST, on a free port; returns its URL.
async fn webhook_receiver() -> anyhow::Result<String> {
    // It reads the body: a server answering before it has, closes the connection under the
    // sender's feet.
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(|_body: axum::body::Bytes| async { "ok" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(url)
}

/// A JetStream nats-server on a free port with a store of its own, killed on drop.
struct NatsServer {
    url: String,
    child: std::process::Child,
    dir: PathBuf,
}

impl NatsServer {
    fn start(binary: &str) -> anyhow::Result<Self> {
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!("eye-bench-nats-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        let child = std::process::Command::new(binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        Ok(Self { url: format!("nats://127.0.0.1:{port}"), child, dir })
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Every acknowledged event stored exactly once, checked in SQL against the ids that were sent.
async fn verify(
    conn: &mut PgConnection,
    application: Uuid,
    batches: &[SendEventsRequest],
    report: &mut Report,
) -> anyhow::Result<()> {
    sqlx::query("DROP TABLE IF EXISTS sent").execute(&mut *conn).await?;
    sqlx::query("CREATE TEMP TABLE sent (event_id uuid PRIMARY KEY)").execute(&mut *conn).await?;
    let mut copy = conn.copy_in_raw("COPY sent (event_id) FROM STDIN").await?;
    let mut buffer = String::with_capacity(64 * 1024);
    for event in batches.iter().flat_map(|b| &b.events) {
        buffer.push_str(&event.event_id);
        buffer.push('\n');
        if buffer.len() > 60_000 {
            copy.send(std::mem::take(&mut buffer).into_bytes()).await?;
        }
    }
    copy.send(buffer.into_bytes()).await?;
    copy.finish().await?;
    sqlx::query("ANALYZE sent").execute(&mut *conn).await?;
    // This run's events only, found through the primary key (the store may hold millions more,
    // of other applications and earlier runs).
    let (sent, rows, distinct): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM sent), count(*), count(DISTINCT e.event_id) \
         FROM sent s JOIN events e ON e.application_id = $1 AND e.event_id = s.event_id",
    )
    .bind(application)
    .fetch_one(&mut *conn)
    .await?;
    report.stored = distinct;
    report.missing = sent - distinct;
    report.stored_twice = rows - distinct;
    Ok(())
}

/// The rate of a raw COPY of the same events into an identical, empty `events` table.
async fn copy_baseline(
    conn: &mut PgConnection,
    batches: &[SendEventsRequest],
) -> anyhow::Result<f64> {
    sqlx::query(
        "CREATE TABLE copy_events (LIKE events INCLUDING ALL) PARTITION BY RANGE (occurred_at)",
    )
    .execute(&mut *conn)
    .await?;
    // The same month partitions as `events`.
    let partitions: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i \
         JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'events'::regclass",
    )
    .fetch_all(&mut *conn)
    .await?;
    for (name, bound) in partitions {
        sqlx::query(&format!("CREATE TABLE copy_{name} PARTITION OF copy_events {bound}"))
            .execute(&mut *conn)
            .await?;
    }
    let app = Uuid::new_v4().to_string();
    let received = Utc::now().to_rfc3339();
    let started = Instant::now();
    let mut copy = conn
        .copy_in_raw(
            "COPY copy_events (application_id, event_id, session_id, category, name, data, \
             occurred_at, received_at, schema_version) FROM STDIN",
        )
        .await?;
    let mut buffer = String::with_capacity(256 * 1024);
    let mut rows = 0usize;
    for event in batches.iter().flat_map(|b| &b.events) {
        let at = event.timestamp.as_ref().expect("timestamp");
        let occurred = chrono::DateTime::from_timestamp(at.seconds, at.nanos as u32).expect("time");
        for field in [
            app.as_str(),
            &event.event_id,
            &event.session_id,
            &event.category,
            &event.name,
            &copy_escape(&event.data_json),
            &occurred.to_rfc3339(),
            &received,
        ] {
            buffer.push_str(field);
            buffer.push('\t');
        }
        buffer.push_str("1\n");
        rows += 1;
        if buffer.len() > 240_000 {
            copy.send(std::mem::take(&mut buffer).into_bytes()).await?;
        }
    }
    copy.send(buffer.into_bytes()).await?;
    copy.finish().await?;
    Ok(rows as f64 / started.elapsed().as_secs_f64())
}

fn copy_escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\t', "\\t").replace('\n', "\\n").replace('\r', "\\r")
}

#[derive(Default)]
struct Outcome {
    accepted: usize,
    rejected: usize,
    duplicate: usize,
    failed: usize,
    latencies_ms: Vec<f64>,
}

impl Outcome {
    fn merge(&mut self, other: Outcome) {
        self.accepted += other.accepted;
        self.rejected += other.rejected;
        self.duplicate += other.duplicate;
        self.failed += other.failed;
        self.latencies_ms.extend(other.latencies_ms);
    }

    fn record(
        &mut self,
        result: Result<tonic::Response<eye_proto::v1::SendEventsResponse>, tonic::Status>,
        latency: Duration,
    ) {
        self.latencies_ms.push(latency.as_secs_f64() * 1000.0);
        match result {
            Ok(response) => {
                for result in response.into_inner().results {
                    match result.status() {
                        EventStatus::Accepted => self.accepted += 1,
                        EventStatus::Duplicate => self.duplicate += 1,
                        _ => self.rejected += 1,
                    }
                }
            }
            Err(status) => {
                eprintln!("request failed: {:?} {}", status.code(), status.message());
                self.failed += 1;
            }
        }
    }
}

async fn closed_loop(
    args: &Args,
    key: &str,
    batches: Arc<Vec<SendEventsRequest>>,
    channels: &[Channel],
) -> Outcome {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..args.concurrency {
        let mut client = IngestServiceClient::new(channels[worker % channels.len()].clone());
        let (next, batches, key) = (next.clone(), batches.clone(), key.to_owned());
        tasks.spawn(async move {
            let mut outcome = Outcome::default();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(batch) = batches.get(index) else { return outcome };
                let started = Instant::now();
                let result = client.send_events(authorized(batch.clone(), &key)).await;
                outcome.record(result, started.elapsed());
            }
        });
    }
    let mut outcome = Outcome::default();
    while let Some(done) = tasks.join_next().await {
        outcome.merge(done.expect("load task"));
    }
    outcome
}

/// [`closed_loop`] over HTTP/JSON.
async fn http_closed_loop(
    args: &Args,
    key: &str,
    batches: Arc<Vec<SendEventsRequest>>,
    url: &str,
) -> Outcome {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .tcp_nodelay(true)
        .build()
        .expect("an HTTP client");
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (client, next, batches) = (client.clone(), next.clone(), batches.clone());
        let (key, url) = (key.to_owned(), url.to_owned());
        tasks.spawn(async move {
            let mut outcome = Outcome::default();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(batch) = batches.get(index) else { return outcome };
                let started = Instant::now();
                let body = eye_e2e::transport::http_body(batch);
                let sent = client.post(&url).bearer_auth(&key).body(body).send().await;
                let answer = match sent {
                    Ok(response) if response.status().is_success() => {
                        response.json::<serde_json::Value>().await.map_err(|e| e.to_string())
                    }
                    Ok(response) => Err(format!("HTTP {}", response.status())),
                    Err(error) => Err(error.to_string()),
                };
                outcome.latencies_ms.push(started.elapsed().as_secs_f64() * 1000.0);
                match answer {
                    Ok(body) => {
                        for result in body["results"].as_array().into_iter().flatten() {
                            match result["status"].as_str() {
                                Some("ACCEPTED") => outcome.accepted += 1,
                                Some("DUPLICATE") => outcome.duplicate += 1,
                                _ => outcome.rejected += 1,
                            }
                        }
                    }
                    Err(error) => {
                        eprintln!("request failed: {error}");
                        outcome.failed += 1;
                    }
                }
            }
        });
    }
    let mut outcome = Outcome::default();
    while let Some(done) = tasks.join_next().await {
        outcome.merge(done.expect("load task"));
    }
    outcome
}

/// [`open_loop`] with a [`WaitSampler`] on ingest's connections for its duration.
async fn sampled_open_loop(
    args: &Args,
    key: &str,
    batches: Arc<Vec<SendEventsRequest>>,
    channels: &[Channel],
    url: &str,
) -> anyhow::Result<(Outcome, Waits)> {
    let waits = WaitSampler::start(url, "eye-ingest").await?;
    let outcome = open_loop(args, key, batches, channels).await;
    Ok((outcome, waits.stop().await?))
}

async fn open_loop(
    args: &Args,
    key: &str,
    batches: Arc<Vec<SendEventsRequest>>,
    channels: &[Channel],
) -> Outcome {
    let interval = Duration::from_secs_f64(args.batch as f64 / args.rate as f64);
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (index, batch) in batches.iter().enumerate() {
        let scheduled = start + interval * index as u32;
        tokio::time::sleep_until(scheduled).await;
        let mut client = IngestServiceClient::new(channels[index % channels.len()].clone());
        let request = authorized(batch.clone(), key);
        tasks.spawn(async move {
            let result = client.send_events(request).await;
            (result, scheduled.elapsed())
        });
    }
    let mut outcome = Outcome::default();
    while let Some(done) = tasks.join_next().await {
        let (result, latency) = done.expect("load task");
        outcome.record(result, latency);
    }
    outcome
}

fn authorized(batch: SendEventsRequest, key: &str) -> tonic::Request<SendEventsRequest> {
    let mut request = tonic::Request::new(batch);
    request.metadata_mut().insert("authorization", format!("Bearer {key}").parse().expect("ascii"));
    request
}

/// The ids `eye load --seed seed` sends, for the verification (the events themselves are made by
/// `eye load`, like `make_batches`' but with seeded ids).
fn seeded_batches(args: &Args, seed: u64) -> Vec<SendEventsRequest> {
    let events: Vec<Event> = (0..args.events as u64)
        .map(|i| Event { event_id: seeded_id(seed, i).to_string(), ..Event::default() })
        .collect();
    vec![SendEventsRequest { events, sent_at: None }]
}

/// Runs `eye load` (from `--bin-dir`) for the whole load; its outcome and peak RSS.
async fn client_load(
    args: &Args,
    key: &str,
    endpoint: &str,
    seed: u64,
    spool: bool,
) -> anyhow::Result<(Outcome, f64)> {
    let spool_dir = std::env::temp_dir().join(format!("eye-bench-spool-{}", Uuid::new_v4()));
    let mut command = Command::new(args.bin_dir.join("eye"));
    command
        .arg("load")
        .args(["--events", &args.events.to_string(), "--seed", &seed.to_string()])
        .args(["--batch", &args.batch.to_string(), "--concurrency", &args.concurrency.to_string()])
        // One producer, as a plain program tracks; the spool's group fsync needs concurrent
        // tracks to share fsyncs, as a busy service has.
        .args(["--producers", &if spool { args.producers } else { 1 }.to_string()])
        .args(["--payload-bytes", &args.payload_bytes.to_string()])
        .env("EYE_ENDPOINT", endpoint)
        .env("EYE_API_KEY", key)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    if spool {
        command.arg("--spool").arg(&spool_dir);
    }
    let mut child = command.spawn().context("cannot start eye load (build the `eye` binary)")?;
    let pid = child.id().unwrap_or_default();
    let mut stdout = child.stdout.take().expect("piped");
    let output = tokio::spawn(async move {
        let mut text = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut text).await.map(|_| text)
    });
    // VmHWM only grows: the last reading before the exit is the peak.
    let mut rss = 0.0f64;
    let status = loop {
        rss = rss.max(status_mb(pid, "VmHWM:"));
        tokio::select! {
            status = child.wait() => break status?,
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    };
    let _ = std::fs::remove_dir_all(&spool_dir);
    let text = output.await??;
    if !status.success() {
        bail!("eye load failed: {status}");
    }
    let summary: serde_json::Value = serde_json::from_str(text.lines().last().unwrap_or_default())
        .context("eye load's summary")?;
    let n = |key: &str| summary[key].as_u64().unwrap_or_default() as usize;
    let outcome = Outcome {
        accepted: n("accepted"),
        duplicate: n("duplicate"),
        rejected: n("rejected"),
        failed: n("failed") + n("dropped"),
        latencies_ms: Vec::new(),
    };
    Ok((outcome, rss))
}

/// The events, built before the clock starts: 20 events per session, pageviews of the last hour.
fn make_batches(args: &Args) -> Vec<SendEventsRequest> {
    let now = Utc::now();
    let pad = "x".repeat(args.payload_bytes.saturating_sub(60));
    let mut session = Uuid::new_v4();
    let events: Vec<Event> = (0..args.events)
        .map(|i| {
            if i % 20 == 0 {
                session = Uuid::new_v4();
            }
            let at = now - chrono::Duration::milliseconds((args.events - i) as i64 % 3_600_000);
            Event {
                event_id: Uuid::now_v7().to_string(),
                session_id: session.to_string(),
                category: "page interaction".into(),
                name: "pageview".into(),
                data_json: format!(r#"{{"host":"shop.example","path":"/p/{i}","pad":"{pad}"}}"#),
                timestamp: Some(prost_types::Timestamp {
                    seconds: at.timestamp(),
                    nanos: at.timestamp_subsec_nanos() as i32,
                }),
            }
        })
        .collect();
    events
        .chunks(args.batch)
        .map(|chunk| SendEventsRequest { events: chunk.to_vec(), sent_at: None })
        .collect()
}

async fn connect(endpoint: &str, count: usize) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(count);
    for _ in 0..count {
        channels.push(Channel::from_shared(endpoint.to_owned())?.connect().await?);
    }
    Ok(channels)
}

const INGEST: &str = "eye.v1.IngestService";
const QUERY: &str = "eye.v1.QueryService";

/// Waits until `service` at `endpoint` answers SERVING to a health check.
async fn wait_until_serving(endpoint: &str, service: &str) -> anyhow::Result<()> {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(channel) = Channel::from_shared(endpoint.to_owned())?.connect().await {
            let mut health = HealthClient::new(channel);
            let request = HealthCheckRequest { service: service.into() };
            if let Ok(response) = health.check(request).await
                && response.into_inner().status() == ServingStatus::Serving
            {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("{service} did not become SERVING within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Service {
    name: &'static str,
    child: Child,
}

impl Service {
    async fn stop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}

fn parse_granularity(value: &str) -> Result<Granularity, String> {
    match value {
        "day" => Ok(Granularity::Day),
        "month" => Ok(Granularity::Month),
        other => Err(format!("day or month, not {other:?}")),
    }
}

fn spawn(
    args: &Args,
    name: &'static str,
    database_url: &str,
    port: u16,
    http_port: u16,
) -> anyhow::Result<Service> {
    let path = args.bin_dir.join(name);
    let child = Command::new(&path)
        // Named in `pg_stat_activity`, for `WaitSampler`.
        .env("DATABASE_URL", eye_test_support::with_application_name(database_url, name))
        .env("EYE__INGEST__HOST", "127.0.0.1")
        .env("EYE__INGEST__PORT", port.to_string())
        .env("EYE__INGEST__HTTP_PORT", http_port.to_string())
        // The same ports for the query service, when `name` is eye-query.
        .env("EYE__QUERY__HOST", "127.0.0.1")
        .env("EYE__QUERY__PORT", port.to_string())
        .env("EYE__QUERY__HTTP_PORT", http_port.to_string())
        // Several services on one host: each its own free metrics port.
        .env("EYE__METRICS__HOST", "127.0.0.1")
        .env("EYE__METRICS__PORT", "0")
        .env("EYE__STORE__PARTITION", args.partition.as_str())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!("cannot start {} (build with `cargo build --release --bins`)", path.display())
        })?;
    Ok(Service { name, child })
}

/// Stops every service; the peak resident set size (VmHWM) of each, in MB, read just before.
async fn stop_all(services: &mut [Service]) -> Vec<(String, f64)> {
    let mut peaks = Vec::new();
    for service in services.iter() {
        let rss = service.child.id().map_or(0.0, |pid| status_mb(pid, "VmHWM:"));
        peaks.push((service.name.to_owned(), rss));
    }
    for service in services {
        service.stop().await;
    }
    peaks
}

/// A size of a running process from /proc (`VmHWM:` the peak resident set, `VmRSS:` the
/// current one), in MB.
fn status_mb(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn outbox_bytes(conn: &mut PgConnection) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT pg_total_relation_size('outbox')").fetch_one(conn).await?)
}

/// An ingest key of the application `bench` (created if missing), and its id.
async fn create_key(conn: &mut PgConnection) -> anyhow::Result<(String, Uuid)> {
    let issued = eye_admin::apps::ensure_and_issue_key(conn, "bench", &[Role::Ingest]).await?;
    Ok((issued.key, issued.application_id))
}

/// Waits until no event is left in the pipeline's stages (every acknowledged one is stored,
/// quarantined or dead-lettered), or `deadline`; `peak` tracks the outbox's size meanwhile.
async fn drained(conn: &mut PgConnection, deadline: Instant, peak: &mut i64) -> anyhow::Result<()> {
    loop {
        *peak = (*peak).max(outbox_bytes(conn).await?);
        let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE stage = ANY($1)")
            .bind(eye_service::pipeline::stage::ALL)
            .fetch_one(&mut *conn)
            .await?;
        if pending == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out with {pending} events still in the outbox");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The outbox and the services, every `--sample-secs` (the `samples` of a report).
#[derive(Debug, Serialize)]
struct OutboxSample {
    seconds: f64,
    outbox_bytes: i64,
    live_rows: i64,
    dead_rows: i64,
    /// Autovacuum runs on the outbox so far (the database is fresh).
    autovacuums: i64,
    /// Current resident set of each service, MB.
    rss_mb: Vec<(String, f64)>,
}

struct Sampler {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<Vec<OutboxSample>>>,
}

impl Sampler {
    fn start(args: &Args, url: &str, services: &[Service]) -> Option<Self> {
        if args.sample_secs == 0 {
            return None;
        }
        let pids: Vec<(&'static str, u32)> =
            services.iter().filter_map(|s| Some((s.name, s.child.id()?))).collect();
        let (url, every) = (url.to_owned(), Duration::from_secs(args.sample_secs));
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut conn = PgConnection::connect(&url).await?;
            let (started, mut samples) = (Instant::now(), Vec::new());
            let mut ticks = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = &mut stopped => return Ok(samples),
                }
                let (live_rows, dead_rows, autovacuums): (i64, i64, i64) = sqlx::query_as(
                    "SELECT n_live_tup, n_dead_tup, autovacuum_count FROM pg_stat_user_tables \
                     WHERE relid = 'outbox'::regclass",
                )
                .fetch_one(&mut conn)
                .await?;
                samples.push(OutboxSample {
                    seconds: started.elapsed().as_secs_f64(),
                    outbox_bytes: outbox_bytes(&mut conn).await?,
                    live_rows,
                    dead_rows,
                    autovacuums,
                    rss_mb: pids
                        .iter()
                        .map(|(name, pid)| ((*name).to_owned(), status_mb(*pid, "VmRSS:")))
                        .collect(),
                });
            }
        });
        Some(Self { stop, task })
    }

    async fn stop(self) -> anyhow::Result<Vec<OutboxSample>> {
        let _ = self.stop.send(());
        self.task.await?
    }
}

/// [`WaitSampler`]'s result: connections seen in a statement, and the share of each wait event.
#[derive(Debug, Default, Serialize)]
struct Waits {
    samples: u64,
    shares: Vec<(String, f64)>,
}

/// What one service's Postgres connections wait on while they are in a statement, sampled from
/// `pg_stat_activity` every 10 ms: the share of samples per wait event, largest first. `CPU`:
/// no wait event, i.e. running or waiting for a core. For ingest, that is where an
/// acknowledgement's time in Postgres goes (the outbox insert and its commit's WAL flush).
struct WaitSampler {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<Waits>>,
}

impl WaitSampler {
    async fn start(url: &str, service: &'static str) -> anyhow::Result<Self> {
        let mut conn = PgConnection::connect(url).await?;
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut counts: HashMap<String, u64> = HashMap::new();
            let mut ticks = tokio::time::interval(Duration::from_millis(10));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = &mut stopped => break,
                }
                let waits: Vec<String> = sqlx::query_scalar(
                    "SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU') \
                     FROM pg_stat_activity WHERE application_name = $1 AND state = 'active'",
                )
                .bind(service)
                .fetch_all(&mut conn)
                .await?;
                for wait in waits {
                    *counts.entry(wait).or_default() += 1;
                }
            }
            let samples = counts.values().sum::<u64>();
            let mut shares: Vec<(String, f64)> = (counts.into_iter())
                .map(|(wait, n)| (wait, n as f64 / samples.max(1) as f64))
                .collect();
            shares.sort_by(|a, b| b.1.total_cmp(&a.1));
            Ok(Waits { samples, shares })
        });
        Ok(Self { stop, task })
    }

    async fn stop(self) -> anyhow::Result<Waits> {
        let _ = self.stop.send(());
        self.task.await?
    }
}

/// The shipped pageview schema, so that validation does its real work.
async fn register_schema(conn: &mut PgConnection) -> anyhow::Result<()> {
    let (category, name, file, text) = eye_admin::schemas::EXAMPLES[0];
    let schema = eye_admin::schemas::parse(file, text)?;
    eye_admin::schemas::put(conn, category, name, &schema).await?;
    Ok(())
}

struct Database {
    name: String,
    url: String,
}

async fn fresh_database(server: &str) -> anyhow::Result<Database> {
    let name = format!("eye_bench_{}", Uuid::new_v4().simple());
    let url = harness::create_database(server, &name).await?;
    Ok(Database { name, url })
}

fn print_report(report: &Report, json_only: bool) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(report)?);
    if json_only {
        return Ok(());
    }
    let l = &report.ack_latency_ms;
    eprintln!();
    eprintln!(
        "scenario            {:?} ({} events, batch {}, concurrency {})",
        report.scenario.unwrap_or(Scenario::Steady),
        report.events_sent,
        report.batch,
        report.concurrency
    );
    eprintln!(
        "acknowledged        {} ({:.0}/s), rejected {}, duplicate {}, failed requests {}",
        report.acknowledged,
        report.acknowledged_per_second,
        report.rejected,
        report.duplicate,
        report.failed_requests
    );
    eprintln!(
        "ack latency ms      p50 {:.1}  p95 {:.1}  p99 {:.1}  max {:.1}",
        l.p50, l.p95, l.p99, l.max
    );
    eprintln!(
        "end to end          {:.0} events/s ({} stored in {:.2} s)",
        report.end_to_end_per_second, report.stored, report.end_to_end_seconds
    );
    eprintln!(
        "verification        missing {}, stored twice {}",
        report.missing, report.stored_twice
    );
    if let (Some(copy), Some(ratio)) = (report.copy_per_second, report.ratio_to_copy) {
        eprintln!("raw COPY            {copy:.0} events/s; ratio {ratio:.2}");
    }
    for (name, rss) in &report.peak_rss_mb {
        eprintln!("peak RSS            {name}: {rss:.1} MB");
    }
    eprintln!(
        "outbox bytes        before {}  peak {}  after {}",
        report.outbox_bytes_before, report.outbox_bytes_peak, report.outbox_bytes_after
    );
    eprintln!("machine             {}", report.machine);
    Ok(())
}
