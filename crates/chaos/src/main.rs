//! `eye-chaos`: the crash suite of The Eye, "nothing lost, nothing twice".
//!
//! It runs the real `eye-ingest`, `eye-validator` and `eye-writer` binaries as processes (one
//! ingest, `--workers` validators and writers) against a durable private Postgres that it controls
//! (`target/eye-chaos-pg`), in a fresh database. While `--senders` retrying clients push
//! `--events` events through ingest, it injects faults one at a time, drawn from a seeded RNG (the
//! seed is printed first, and `--seed` replays the sequence of faults):
//!
//! - `kill -9` of a validator, a writer or ingest, then a restart;
//! - `pg_ctl restart -m fast`, and `pg_terminate_backend` of every connection to the database;
//! - `SIGSTOP` of a validator or writer for longer than its lease (2 s), then `SIGCONT`: another
//!   instance takes its claim over, and its late ack must be fenced off.
//!
//! Kills and freezes wait (up to 3 s) for their target to be inside a transaction, seen in
//! `pg_stat_activity` by its `application_name`, so that they land on work in flight; freezes
//! wait for a moment before the hand-off's ack. Meanwhile the client abandons the first attempt
//! of one batch in twenty after a few milliseconds (a lost answer: the retry may be DUPLICATE),
//! poison rows are planted in the outbox (they must be dead-lettered), and one event in a hundred
//! breaks its schema (the validator must quarantine it).
//!
//! Then it stops the faults, lets the pipeline drain, and checks in SQL: every acknowledged valid
//! event stored exactly once, every acknowledged invalid one quarantined, nothing else stored,
//! the ingest ledger equal to the acknowledged events, session counts exact, the outbox empty, the
//! dead letters exactly the planted poison. Any violation exits non-zero (and keeps the database
//! and the service logs for inspection; `--keep` keeps them anyway).
//!
//! # Layout
//! - [`cluster`]: the services as processes, signals, supervision; the private Postgres.
//! - [`faults`]: the seeded fault schedule and its injection.
//! - [`load`]: the events and the retrying senders.
//! - [`poison`]: planting poison rows.
//! - [`verify`]: the final checks in SQL.
//!
//! Run `just chaos`, or `cargo build --release --bins && target/release/eye-chaos --help`.

mod cluster;
mod faults;
mod load;
mod poison;
mod verify;

use eye_service::auth::Role;
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Parser;
use rand::{SeedableRng, rngs::StdRng};
use serde::Serialize;
use sqlx::{Connection, PgConnection};
use tonic::transport::Channel;
use uuid::Uuid;

use crate::cluster::{Cluster, Postgres, connect_retry};

#[derive(Debug, Parser)]
#[command(about = "The crash suite of The Eye: real processes, real signals, exact verification")]
struct Args {
    /// Seed of the fault schedule (random if unset; printed either way).
    #[arg(long)]
    seed: Option<u64>,
    /// Length of the fault phase, in seconds.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Events to send (spread over the fault phase).
    #[arg(long, default_value_t = 100_000)]
    events: usize,
    /// Events per SendEvents request.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Concurrent senders.
    #[arg(long, default_value_t = 4)]
    senders: usize,
    /// Instances of the validator and of the writer (2 or more, so that a frozen one is taken over).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Poison rows to plant in the outbox (three kinds in turn; see `poison`).
    #[arg(long, default_value_t = 6)]
    poison: usize,
    /// Where the service binaries are.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Longest wait, after the fault phase, for the load to be acknowledged and the outbox to drain.
    #[arg(long, default_value_t = 180)]
    drain_timeout: u64,
    /// Keep the database and the service logs even when the run passes.
    #[arg(long)]
    keep: bool,
    /// Print only the JSON summary.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Default, Serialize)]
struct Report {
    seed: u64,
    duration_seconds: u64,
    events_sent: usize,
    batch: usize,
    senders: usize,
    workers: usize,
    requests: usize,
    /// First attempts abandoned on purpose (lost answers); their retries may be DUPLICATE.
    abandoned_requests: usize,
    acknowledged: usize,
    accepted: usize,
    duplicate_answers: usize,
    duplicate_first_send: usize,
    rejected: usize,
    misanswered: usize,
    failed_batches: usize,
    retries_by_code: BTreeMap<String, usize>,
    acknowledged_valid: usize,
    acknowledged_invalid: usize,
    store: verify::Store,
    poison_planted: usize,
    faults: faults::FaultCounts,
    faults_total: u32,
    /// Kills and freezes that caught their target inside a database transaction.
    faults_mid_transaction: u32,
    /// Hand-offs rolled back because the lease had been taken over (from the services' logs).
    fenced_acks: usize,
    unexpected_exits: Vec<cluster::UnexpectedExit>,
    panics: usize,
    drain_seconds: f64,
    total_seconds: f64,
    violations: Vec<String>,
    passed: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.batch == 0 || args.events == 0 || args.senders == 0 || args.workers == 0 {
        bail!("--events, --batch, --senders and --workers must be at least 1");
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    // First, so that a run that hangs or crashes can still be replayed.
    eprintln!("eye-chaos seed {seed}");

    let cwd = std::env::current_dir()?;
    let postgres = Postgres::ensure(cwd.join("target").join("eye-chaos-pg"))?;
    let database = Database::create(postgres.server.url(), seed).await?;
    let run_dir = cwd.join("target").join("eye-chaos-runs").join(&database.name);
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create {}", run_dir.display()))?;

    let report = run(&args, seed, &postgres, &database, &run_dir).await;
    let report = match report {
        Ok(report) => report,
        Err(error) => {
            eprintln!(
                "run failed: kept database {} and logs in {}",
                database.url,
                run_dir.display()
            );
            return Err(error);
        }
    };
    print_report(&report, args.json)?;
    if !report.passed {
        eprintln!(
            "kept for inspection: database {} (DATABASE_URL), service logs in {}",
            database.url,
            run_dir.display()
        );
        bail!("{} violation(s): {}", report.violations.len(), report.violations.join("; "));
    }
    if args.keep {
        eprintln!("kept: database {}, service logs in {}", database.url, run_dir.display());
    } else {
        database.drop(postgres.server.url()).await;
        let _ = std::fs::remove_dir_all(&run_dir);
    }
    Ok(())
}

async fn run(
    args: &Args,
    seed: u64,
    postgres: &Postgres,
    database: &Database,
    run_dir: &Path,
) -> anyhow::Result<Report> {
    let started = Instant::now();
    let mut report = Report {
        seed,
        duration_seconds: args.duration,
        events_sent: args.events,
        batch: args.batch,
        senders: args.senders,
        workers: args.workers,
        ..Default::default()
    };
    let load = Arc::new(load::Load::new(args.events, args.batch));
    let mut cluster =
        Cluster::start(&args.bin_dir, run_dir, &database.url, args.workers, started).await?;
    // On any error, and on Ctrl-C, the services are killed and reaped (a stopped one too) before
    // returning; the database and the logs are kept.
    let exercised = tokio::select! {
        result = exercise(args, seed, postgres, database, load, &mut cluster, &mut report) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    let (outcome, planted, drained) = match exercised {
        Ok(exercised) => exercised,
        Err(error) => {
            cluster.kill().await;
            return Err(error);
        }
    };

    report.requests = outcome.requests;
    report.abandoned_requests = outcome.abandoned;
    report.accepted = outcome.accepted;
    report.duplicate_answers = outcome.duplicate;
    report.duplicate_first_send = outcome.duplicate_first_send;
    report.rejected = outcome.rejected;
    report.misanswered = outcome.misanswered;
    report.failed_batches = outcome.failed_batches;
    report.acknowledged_valid = outcome.acked_valid.len();
    report.acknowledged_invalid = outcome.acked_invalid.len();
    report.acknowledged = report.acknowledged_valid + report.acknowledged_invalid;
    report.retries_by_code = outcome.retries;
    report.poison_planted = planted.markers.len();
    report.unexpected_exits = std::mem::take(&mut cluster.unexpected_exits);
    (report.fenced_acks, report.panics) = scan_logs(&cluster.logs());

    let mut conn = connect_retry(&database.url, Duration::from_secs(30)).await?;
    report.store =
        verify::store(&mut conn, &outcome.acked_valid, &outcome.acked_invalid, &planted).await?;
    let _ = conn.close().await;
    report.total_seconds = started.elapsed().as_secs_f64();
    report.violations = violations(&report, drained);
    report.passed = report.violations.is_empty();
    Ok(report)
}

/// Starts the load, the poison and the faults; after the fault phase, waits for the load to be
/// acknowledged and the pipeline to drain, then stops the services.
async fn exercise(
    args: &Args,
    seed: u64,
    postgres: &Postgres,
    database: &Database,
    load: Arc<load::Load>,
    cluster: &mut Cluster,
    report: &mut Report,
) -> anyhow::Result<(load::Outcome, poison::Planted, bool)> {
    let duration = Duration::from_secs(args.duration);
    wait_until_serving(cluster).await?;
    if !args.json {
        eprintln!(
            "{} events in batches of {} from {} senders over {} s; 1 ingest, {} validators, {} writers; \
             {} poison rows",
            args.events,
            args.batch,
            args.senders,
            args.duration,
            args.workers,
            args.workers,
            args.poison
        );
    }

    // One RNG for the fault schedule, one (derived) for the poison moments: the two schedules do
    // not shift each other.
    let mut rng = StdRng::seed_from_u64(seed);
    let poison_rng = StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
    let fault_started = Instant::now();
    let deadline = fault_started + duration + Duration::from_secs(args.drain_timeout);
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let plan = load::Plan {
        seed,
        endpoint: cluster.endpoint(),
        key: database.key.clone(),
        senders: args.senders,
        span: duration,
        deadline,
    };
    let mut sending = tokio::spawn(load::run(load.clone(), plan, acknowledged.clone()));
    let mut planting = tokio::spawn(poison::plant(
        database.url.clone(),
        database.application_id,
        args.poison,
        poison_rng,
        fault_started,
        duration,
    ));

    let injected =
        faults::run(cluster, postgres, &database.url, &mut rng, fault_started, duration, args.json)
            .await?;
    report.faults = injected.counts;
    report.faults_mid_transaction = injected.mid_transaction;
    report.faults_total = report.faults.values().sum();
    if !args.json {
        eprintln!(
            "[{:6.1}s] faults stopped; {} of {} events acknowledged so far",
            fault_started.elapsed().as_secs_f64(),
            acknowledged.load(Ordering::Relaxed),
            args.events
        );
    }

    // The load finishes and the poison is planted (both retry through the last faults' effects).
    let drain_started = Instant::now();
    let outcome = loop {
        tokio::select! {
            done = &mut sending => break done??,
            () = tokio::time::sleep(Duration::from_millis(100)) => cluster.supervise()?,
        }
    };
    let planted = loop {
        tokio::select! {
            done = &mut planting => break done??,
            () = tokio::time::sleep(Duration::from_millis(100)) => cluster.supervise()?,
        }
    };
    let drained = drain(cluster, &database.url, deadline, args.json).await?;
    report.drain_seconds = drain_started.elapsed().as_secs_f64();
    cluster.stop().await;
    Ok((outcome, planted, drained))
}

/// Waits until the outbox is empty, restarting services that die; false on timeout.
async fn drain(
    cluster: &mut Cluster,
    database_url: &str,
    deadline: Instant,
    quiet: bool,
) -> anyhow::Result<bool> {
    let mut conn = connect_retry(database_url, Duration::from_secs(30)).await?;
    let mut last_print = Instant::now();
    loop {
        cluster.supervise()?;
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM outbox").fetch_one(&mut conn).await?;
        if left == 0 {
            return Ok(true);
        }
        if Instant::now() > deadline {
            eprintln!("timed out draining: {left} outbox rows left");
            return Ok(false);
        }
        if !quiet && last_print.elapsed() > Duration::from_secs(5) {
            eprintln!("draining: {left} outbox rows left");
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every way the run can fail, in words.
fn violations(report: &Report, drained: bool) -> Vec<String> {
    let s = &report.store;
    let mut found = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            found.push(what);
        }
    };
    check(drained, "the outbox did not drain before the timeout (stuck pipeline)".into());
    check(s.lost == 0, format!("{} acknowledged events lost", s.lost));
    check(s.stored_twice == 0, format!("{} events stored twice", s.stored_twice));
    check(
        s.stored_unexpected == 0,
        format!("{} stored events were never acknowledged as valid", s.stored_unexpected),
    );
    check(
        s.quarantine_lost == 0,
        format!("{} acknowledged invalid events missing from event_errors", s.quarantine_lost),
    );
    check(
        s.quarantined == report.acknowledged_invalid as i64,
        format!(
            "{} rows in event_errors for {} invalid events",
            s.quarantined, report.acknowledged_invalid
        ),
    );
    check(
        s.ledger == report.acknowledged as i64,
        format!("ingest committed {} events, {} were acknowledged", s.ledger, report.acknowledged),
    );
    check(
        s.session_event_count == s.stored,
        format!("sessions count {} events, the store holds {}", s.session_event_count, s.stored),
    );
    check(s.outbox_left.is_empty(), format!("outbox not empty: {:?}", s.outbox_left));
    check(
        s.dead_letters_planted == report.poison_planted as i64 && s.dead_letters_repeated == 0,
        format!(
            "{} of {} planted poison rows dead-lettered ({} more than once)",
            s.dead_letters_planted, report.poison_planted, s.dead_letters_repeated
        ),
    );
    check(
        s.dead_letters_unexpected.is_empty(),
        format!(
            "{} dead letters that are not planted poison: {}",
            s.dead_letters_unexpected.len(),
            s.dead_letters_unexpected.join(" | ")
        ),
    );
    check(
        report.acknowledged + report.rejected + report.misanswered == report.events_sent
            && report.failed_batches == 0,
        format!("{} batches never acknowledged", report.failed_batches),
    );
    check(report.rejected == 0, format!("{} events rejected", report.rejected));
    check(report.misanswered == 0, format!("{} answers for the wrong event", report.misanswered));
    check(
        report.duplicate_first_send == 0,
        format!("{} events answered DUPLICATE on their first send", report.duplicate_first_send),
    );
    check(report.panics == 0, format!("{} panics in the service logs", report.panics));
    found
}

/// Counts fenced-off hand-offs and panics in the services' logs.
fn scan_logs(logs: &[PathBuf]) -> (usize, usize) {
    let (mut fenced, mut panics) = (0, 0);
    for log in logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        fenced += text.matches("lease lost; hand-off rolled back").count();
        panics += text.matches("panicked at").count();
    }
    (fenced, panics)
}

async fn wait_until_serving(cluster: &mut Cluster) -> anyhow::Result<()> {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        cluster.supervise()?;
        if let Ok(channel) = Channel::from_shared(cluster.endpoint())?.connect().await {
            let mut health = HealthClient::new(channel);
            let request = HealthCheckRequest { service: "eye.v1.IngestService".into() };
            if let Ok(response) = health.check(request).await
                && response.into_inner().status() == ServingStatus::Serving
            {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!(
                "ingest did not become SERVING within 60 s (logs in {})",
                cluster.run_dir().display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The run's fresh database, its application and API key.
struct Database {
    name: String,
    url: String,
    application_id: Uuid,
    key: String,
}

impl Database {
    async fn create(server: &str, seed: u64) -> anyhow::Result<Self> {
        let name = format!("eye_chaos_{seed}_{}", &Uuid::new_v4().simple().to_string()[..8]);
        let url = eye_test_support::harness::create_database(server, &name).await?;
        let mut conn = PgConnection::connect(&url).await?;

        let issued = eye_admin::apps::create(&mut conn, "chaos", &[Role::Ingest]).await?;
        let (application_id, key) = (issued.application_id, issued.key);
        // The shipped pageview schema, so that validation does its real work.
        let (category, type_name, file, text) = eye_admin::schemas::EXAMPLES[0];
        let schema = eye_admin::schemas::parse(file, text)?;
        eye_admin::schemas::put(&mut conn, category, type_name, &schema).await?;
        Ok(Self { name, url, application_id, key })
    }

    async fn drop(&self, server: &str) {
        let _ = eye_test_support::harness::drop_database(server, &self.name).await;
    }
}

fn print_report(report: &Report, json_only: bool) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(report)?);
    if json_only {
        return Ok(());
    }
    let s = &report.store;
    let faults: Vec<String> =
        report.faults.iter().filter(|(_, n)| **n > 0).map(|(k, n)| format!("{k} {n}")).collect();
    let retries: Vec<String> =
        report.retries_by_code.iter().map(|(k, n)| format!("{k} {n}")).collect();
    eprintln!();
    eprintln!("seed                {} (replay: --seed {})", report.seed, report.seed);
    eprintln!(
        "load                {} events sent in batches of {}, {} senders, {} requests \
         ({} abandoned answers; retries: {})",
        report.events_sent,
        report.batch,
        report.senders,
        report.requests,
        report.abandoned_requests,
        if retries.is_empty() { "none".into() } else { retries.join(", ") }
    );
    eprintln!(
        "acknowledged        {} ({} accepted, {} duplicate answers to retries); {} valid, {} invalid; \
         ingest ledger {}",
        report.acknowledged,
        report.accepted,
        report.duplicate_answers,
        report.acknowledged_valid,
        report.acknowledged_invalid,
        s.ledger
    );
    eprintln!(
        "stored              {} in events, {} stored twice, {} lost, {} unexpected",
        s.stored, s.stored_twice, s.lost, s.stored_unexpected
    );
    eprintln!(
        "quarantined         {} in event_errors ({} missing); sessions count {} events",
        s.quarantined, s.quarantine_lost, s.session_event_count
    );
    eprintln!(
        "outbox              {}; dead letters {} (planted poison {}, matched {}, other {})",
        if s.outbox_left.is_empty() { "empty".to_owned() } else { format!("{:?}", s.outbox_left) },
        s.dead_letters,
        report.poison_planted,
        s.dead_letters_planted,
        s.dead_letters_unexpected.len()
    );
    eprintln!(
        "faults              {} injected ({} kills/freezes mid-transaction): {}",
        report.faults_total,
        report.faults_mid_transaction,
        if faults.is_empty() { "none".into() } else { faults.join(", ") }
    );
    eprintln!(
        "fencing             {} late hand-offs fenced off (lease lost, rolled back)",
        report.fenced_acks
    );
    eprintln!(
        "services            {} unexpected exits, {} panics",
        report.unexpected_exits.len(),
        report.panics
    );
    eprintln!(
        "time                {:.1} s in all, {:.1} s to finish the load and drain after the faults",
        report.total_seconds, report.drain_seconds
    );
    if report.passed {
        eprintln!("result              PASSED: nothing lost, nothing twice");
    } else {
        eprintln!("result              FAILED");
        for violation in &report.violations {
            eprintln!("  - {violation}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use eye_service::pipeline::stage;

    use super::*;

    fn clean() -> Report {
        Report {
            events_sent: 1_000,
            acknowledged: 1_000,
            acknowledged_valid: 990,
            acknowledged_invalid: 10,
            poison_planted: 3,
            store: verify::Store {
                stored: 990,
                quarantined: 10,
                ledger: 1_000,
                session_event_count: 990,
                dead_letters: 3,
                dead_letters_planted: 3,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn a_clean_run_has_no_violations() {
        assert_eq!(violations(&clean(), true), Vec::<String>::new());
    }

    #[test]
    fn every_breach_is_a_violation() {
        let breaches: [fn(&mut Report); 8] = [
            |r| r.store.lost = 1,
            |r| r.store.stored_twice = 1,
            |r| r.store.stored_unexpected = 1,
            |r| r.store.outbox_left = vec![(stage::WRITE.into(), 1)],
            |r| r.store.dead_letters_planted = 2,
            |r| r.store.dead_letters_unexpected = vec!["row 7".into()],
            |r| r.store.session_event_count = 991,
            |r| r.failed_batches = 1,
        ];
        for breach in breaches {
            let mut report = clean();
            breach(&mut report);
            assert_eq!(violations(&report, true).len(), 1, "{report:?}");
        }
        assert_eq!(violations(&clean(), false).len(), 1, "a stuck pipeline is a violation");
    }
}
