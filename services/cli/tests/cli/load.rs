//! `eye load` (and so `eye-client`) as a real producer process, under real signals: SIGTERM of
//! the producer, kill -9 of ingest (`eye dev`), a Postgres restart, and kill -9 of the producer
//! with a spool. Every event whose `track` returned is stored exactly once.

use std::{
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use eye_cli::commands::load::seeded_id;
use eye_e2e::{Pipeline, create_key, db_with_key};
use eye_test_support::wait_for;
use rand::Rng;
use serde_json::Value;
use sqlx::PgPool;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, BufReader},
    process::{Child, Command},
    sync::Notify,
};
use uuid::Uuid;

use super::TempDir;

const TIMEOUT: Duration = Duration::from_secs(180);

/// A running `eye load`: its progress (from `--progress-every`) as it goes.
struct Producer {
    child: Child,
    progress: Arc<AtomicU64>,
    moved: Arc<Notify>,
}

impl Producer {
    fn spawn(endpoint: &str, key: &str, args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_eye"))
            .arg("load")
            .args(args)
            .env("EYE_ENDPOINT", endpoint)
            .env("EYE_API_KEY", key)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start eye load");
        let progress = Arc::new(AtomicU64::new(0));
        let moved = Arc::new(Notify::new());
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let (seen, notify) = (progress.clone(), moved.clone());
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let value: Option<Value> = serde_json::from_str(&line).ok();
                if let Some(n) = value.as_ref().and_then(|v| v["progress"].as_u64()) {
                    seen.store(n, Ordering::SeqCst);
                    notify.notify_waiters();
                }
            }
            notify.notify_waiters();
        });
        Self { child, progress, moved }
    }

    /// `eye load --events N --seed S`, reporting every 1,000 events.
    fn seeded(endpoint: &str, key: &str, events: u64, seed: u64) -> Self {
        let (events, seed) = (events.to_string(), seed.to_string());
        Self::spawn(
            endpoint,
            key,
            &["--events", &events, "--seed", &seed, "--progress-every", "1000"],
        )
    }

    /// [`seeded`](Self::seeded) at an offered `rate` (events/s): the load is still flowing for
    /// (events - tracked) / rate seconds after any progress report, so a fault injected then
    /// meets calls in flight.
    fn paced(endpoint: &str, key: &str, events: u64, seed: u64, rate: u64) -> Self {
        let (events, seed, rate) = (events.to_string(), seed.to_string(), rate.to_string());
        let args =
            ["--events", &events, "--seed", &seed, "--rate", &rate, "--progress-every", "1000"];
        Self::spawn(endpoint, key, &args)
    }

    /// Waits until at least `n` events were tracked (or the producer ended).
    async fn tracked_at_least(&self, n: u64) {
        tokio::time::timeout(TIMEOUT, async {
            loop {
                let moved = self.moved.notified();
                if self.progress.load(Ordering::SeqCst) >= n {
                    return;
                }
                moved.await;
            }
        })
        .await
        .expect("the producer makes progress");
    }

    /// Waits for the exit; the JSON summary it printed.
    async fn summary(mut self) -> Value {
        let mut stdout = String::new();
        self.child.stdout.take().unwrap().read_to_string(&mut stdout).await.unwrap();
        let status = tokio::time::timeout(TIMEOUT, self.child.wait()).await.unwrap().unwrap();
        assert!(status.success(), "eye load failed: {status}; stdout: {stdout}");
        let line = stdout.lines().last().expect("a summary line");
        let summary: Value = serde_json::from_str(line).expect("JSON summary");
        let n = |key: &str| summary[key].as_u64().unwrap_or_else(|| panic!("{key} in {summary}"));
        assert_eq!(
            n("tracked") + n("recovered"),
            n("accepted") + n("duplicate") + n("rejected") + n("dropped") + n("failed"),
            "every event accounted for: {summary}"
        );
        summary
    }
}

async fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill").args([signal, &pid.to_string()]).status().await.unwrap();
    assert!(status.success());
}

/// Waits until each of `ids` is stored, then checks each is stored exactly once and nothing
/// else is stored.
async fn stored_exactly_once(pool: &PgPool, ids: &[Uuid], others_allowed: i64) {
    let want = ids.len() as i64;
    let stored = || async {
        let (rows, distinct): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(DISTINCT event_id) FROM events WHERE event_id = ANY($1)",
        )
        .bind(ids)
        .fetch_one(pool)
        .await
        .unwrap();
        (rows, distinct)
    };
    wait_for(pool, TIMEOUT, "every tracked event stored", || async {
        (stored().await.0 >= want).then_some(())
    })
    .await;
    assert_eq!(stored().await, (want, want), "each tracked event exactly once");
    let (all, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT event_id) FROM events")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(all, distinct, "nothing stored twice");
    assert!(all - want <= others_allowed, "{} events stored that were never tracked", all - want);
}

fn ids(seed: u64, n: u64) -> Vec<Uuid> {
    (0..n).map(|i| seeded_id(seed, i)).collect()
}

fn count(summary: &Value, key: &str) -> u64 {
    summary[key].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_stopped_with_sigterm_delivers_everything_it_tracked() {
    let (db, _, key) = db_with_key("load", &["ingest"]).await;
    let pipeline = Pipeline::start(&db, 1, 1).await;
    let seed: u64 = rand::rng().random();
    let producer = Producer::seeded(&pipeline.endpoint(), &key, 100_000, seed);
    let at = rand::rng().random_range(2_000..60_000);
    producer.tracked_at_least(at).await;
    signal(producer.child.id().unwrap(), "-TERM").await;
    let summary = producer.summary().await;
    let tracked = count(&summary, "tracked");
    assert!((at..100_000).contains(&tracked), "stopped early: {summary}");
    assert_eq!(count(&summary, "failed") + count(&summary, "dropped"), 0, "{summary}");
    stored_exactly_once(&db.pool, &ids(seed, tracked), 0).await;
    pipeline.stop().await;
}

/// `eye dev` as a process on a port of its own against `database_url`, in a directory of its
/// own, killed and restarted at will.
struct Dev {
    home: TempDir,
    database_url: String,
    port: u16,
    child: Child,
}

impl Dev {
    async fn start(database_url: &str) -> Self {
        let (home, port) = (TempDir::new(), eye_test_support::free_port());
        let child = Self::spawn(&home, database_url, port).await;
        Self { home, database_url: database_url.to_owned(), port, child }
    }

    async fn spawn(home: &TempDir, database_url: &str, port: u16) -> Child {
        let port = port.to_string();
        let env = [
            ("DATABASE_URL", database_url),
            ("EYE__INGEST__PORT", port.as_str()),
            ("EYE__INGEST__HTTP_PORT", "0"),
            ("EYE__VALIDATOR__CONSUMER__POLL_INTERVAL_MS", "200"),
            ("EYE__WRITER__CONSUMER__POLL_INTERVAL_MS", "200"),
        ];
        super::start_dev(&home.0, &env).await.0
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// kill -9, then the same `eye dev` again on the same port.
    async fn kill_and_restart(&mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
        self.child = Self::spawn(&self.home, &self.database_url, self.port).await;
    }

    async fn stop(mut self) {
        signal(self.child.id().unwrap(), "-TERM").await;
        self.child.wait().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_killed_and_restarted_under_load_loses_nothing() {
    let (db, _, key) = db_with_key("load", &["ingest"]).await;
    let mut dev = Dev::start(&db.url).await;
    let (seed, events) = (rand::rng().random(), 50_000);
    let producer = Producer::paced(&dev.endpoint(), &key, events, seed, 10_000);
    producer.tracked_at_least(rand::rng().random_range(2_000..30_000)).await;
    // kill -9: answers in flight are lost; the client retries them with the same ids.
    dev.kill_and_restart().await;
    let summary = producer.summary().await;
    assert_eq!(count(&summary, "tracked"), events, "{summary}");
    assert_eq!(count(&summary, "failed") + count(&summary, "dropped"), 0, "{summary}");
    assert!(count(&summary, "retries") > 0, "the kill was felt: {summary}");
    stored_exactly_once(&db.pool, &ids(seed, events), 0).await;
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_under_load_loses_nothing() {
    // A server of its own: restarting the shared test server would disturb other tests.
    let dir = TempDir::new();
    let server = tokio::task::spawn_blocking({
        let base_dir = dir.0.join("pg");
        move || {
            local_postgres::LocalPostgres::ensure(&local_postgres::Options {
                fallback_key: base_dir.display().to_string(),
                base_dir,
                durable: false,
            })
        }
    })
    .await
    .unwrap()
    .expect("a private postgres");
    let url =
        eye_test_support::harness::create_database(server.url(), "eye_restart").await.unwrap();
    let pool = PgPool::connect(&url).await.unwrap();
    let (_, key) = create_key(&pool, "load", &["ingest"]).await;
    let dev = Dev::start(&url).await;
    let (seed, events) = (rand::rng().random(), 50_000);
    let producer = Producer::paced(&dev.endpoint(), &key, events, seed, 10_000);
    producer.tracked_at_least(rand::rng().random_range(2_000..30_000)).await;
    let restart = tokio::task::spawn_blocking(move || {
        server.pg_ctl(&["restart", "-m", "fast", "-w"]).expect("restart postgres");
        server
    });
    let server = restart.await.unwrap();
    // The restart happened while the load was still coming (calls in flight failed and were
    // retried, or waited in the pool for the server to come back: both are fine).
    let during = producer.progress.load(Ordering::SeqCst);
    assert!(during < events, "the load was still running at the restart ({during} tracked)");
    let summary = producer.summary().await;
    assert_eq!(count(&summary, "tracked"), events, "{summary}");
    assert_eq!(count(&summary, "failed") + count(&summary, "dropped"), 0, "{summary}");
    let pool = PgPool::connect(&url).await.unwrap();
    stored_exactly_once(&pool, &ids(seed, events), 0).await;
    dev.stop().await;
    pool.close().await;
    tokio::task::spawn_blocking(move || server.stop()).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spooling_producer_killed_with_kill_9_sends_the_rest_when_restarted() {
    let (db, _, key) = db_with_key("load", &["ingest"]).await;
    let pipeline = Pipeline::start(&db, 1, 1).await;
    let spool = TempDir::new();
    let spool_dir = spool.0.display().to_string();
    let seed: u64 = rand::rng().random();
    let seed_arg = seed.to_string();
    let producer = Producer::spawn(
        &pipeline.endpoint(),
        &key,
        &["--events", "20000", "--seed", &seed_arg, "--spool", &spool_dir, "--progress-every", "1"],
    );
    producer.tracked_at_least(rand::rng().random_range(500..15_000)).await;
    let mut child = producer.child;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    // Tracked for sure: what it reported before dying (`track` returned for each of those).
    let tracked = producer.progress.load(Ordering::SeqCst);

    let restarted = Producer::spawn(
        &pipeline.endpoint(),
        &key,
        &["--events", "0", "--seed", &seed_arg, "--spool", &spool_dir],
    );
    let summary = restarted.summary().await;
    assert_eq!(count(&summary, "failed") + count(&summary, "dropped"), 0, "{summary}");
    // One more may have been tracked between its last report and the kill.
    stored_exactly_once(&db.pool, &ids(seed, tracked), 1).await;
    let left = std::fs::read_dir(&spool.0).unwrap().count();
    assert_eq!(left, 0, "the restarted producer emptied the spool");
    pipeline.stop().await;
}
