//! The consumer loop: hand-off, poison isolation, wake-ups, shutdown.

use std::{sync::Arc, time::Duration};

use eye_test_support::{TestDb, wait_for};
use flush_event::{
    CHANNEL, Claimed, Handler, Headers, Outbox, OutboxConfig, Waker, flush_events,
    flush_events_unannounced, run_worker,
};
use prost::Message;
use sqlx::{PgConnection, PgPool};
use tokio::{sync::Notify, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{Job, config, dead_rows, enqueue, job, jobs, scalar};

/// Far shorter than the 60 s poll interval of [`config`]: what finishes within it was not polled.
const PROMPTLY: Duration = Duration::from_secs(10);

/// Records each job it is handed in `handled`, inside the hand-off transaction; fails a batch that
/// holds a poison job after writing the others, so only the rollback keeps their writes out.
struct Recorder;

impl Handler for Recorder {
    type Message = Job;
    type Error = String;

    async fn handle(&self, conn: &mut PgConnection, rows: &[Claimed<Job>]) -> Result<(), String> {
        for row in rows {
            sqlx::query("INSERT INTO handled (n) VALUES ($1)")
                .bind(row.body.n as i64)
                .execute(&mut *conn)
                .await
                .map_err(|e| e.to_string())?;
        }
        match rows.iter().find(|row| row.body.poison) {
            Some(row) => Err(format!("poison job {}", row.body.n)),
            None => Ok(()),
        }
    }
}

/// A [`Recorder`] that signals `entered` and then waits for `release` before doing its work.
struct Gated {
    entered: Notify,
    release: Notify,
}

impl Handler for Gated {
    type Message = Job;
    type Error = String;

    async fn handle(&self, conn: &mut PgConnection, rows: &[Claimed<Job>]) -> Result<(), String> {
        self.entered.notify_one();
        self.release.notified().await;
        Recorder.handle(conn, rows).await
    }
}

/// Forwards its jobs to stage `t` without the in-transaction wake-up, and wakes `t` after each
/// commit instead (as ingest and the validator do).
struct Forwarder;

impl Handler for Forwarder {
    type Message = Job;
    type Error = String;

    async fn handle(&self, conn: &mut PgConnection, rows: &[Claimed<Job>]) -> Result<(), String> {
        let headers = Headers::new();
        let jobs = rows.iter().map(|row| (&row.body, &headers));
        flush_events_unannounced(conn, "t", jobs).await.map_err(|e| e.to_string())?;
        Ok(())
    }

    fn wake_ups(&self) -> &[(&'static str, &'static str)] {
        &[(CHANNEL, "t")]
    }
}

/// Workers of one stage sharing a [`Waker`] and a shutdown token. Generic over the handler, so it
/// also checks at compile time that `run_worker` can be spawned for any [`Handler`] (its future
/// once needed `Handler::Error: Sync`).
struct Workers {
    shutdown: CancellationToken,
    handles: Vec<JoinHandle<()>>,
}

impl Workers {
    async fn start<H: Handler>(
        pool: &PgPool,
        config: OutboxConfig,
        handler: Arc<H>,
        count: usize,
    ) -> anyhow::Result<Self> {
        Self::start_on(pool, "s", config, handler, count).await
    }

    async fn start_on<H: Handler>(
        pool: &PgPool,
        stage: &str,
        config: OutboxConfig,
        handler: Arc<H>,
        count: usize,
    ) -> anyhow::Result<Self> {
        sqlx::query("CREATE TABLE IF NOT EXISTS handled (n bigint NOT NULL)").execute(pool).await?;
        let shutdown = CancellationToken::new();
        let waker = Waker::listen(pool, shutdown.clone());
        let outbox = Outbox::new(pool.clone(), stage, config);
        let handles = (0..count)
            .map(|_| {
                let worker =
                    run_worker(outbox.clone(), handler.clone(), waker.clone(), shutdown.clone());
                tokio::spawn(worker)
            })
            .collect();
        Ok(Self { shutdown, handles })
    }

    /// Cancels the workers and waits for every one of them to return.
    async fn stop(self) {
        self.shutdown.cancel();
        for handle in self.handles {
            tokio::time::timeout(PROMPTLY, handle)
                .await
                .expect("worker returns promptly once shut down")
                .expect("worker panicked");
        }
    }
}

/// The jobs handed off so far, sorted, duplicates kept.
async fn handled(pool: &PgPool) -> Vec<u64> {
    sqlx::query_scalar::<_, i64>("SELECT n FROM handled ORDER BY n")
        .fetch_all(pool)
        .await
        .expect("handled")
        .into_iter()
        .map(|n| n as u64)
        .collect()
}

/// Waits (at most `timeout`) until exactly `expected` have been handed off.
async fn wait_handled(pool: &PgPool, timeout: Duration, expected: &[u64]) {
    wait_for(pool, timeout, &format!("jobs {expected:?} handled"), || async move {
        (handled(pool).await == expected).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_hand_off_every_row_exactly_once() -> anyhow::Result<()> {
    let db = TestDb::new().await;
    let pool = &db.pool;
    enqueue(pool, "s", &jobs(0..300)).await?;
    let config = OutboxConfig { batch_size: 16, ..config() };
    let workers = Workers::start(pool, config, Arc::new(Recorder), 2).await?;

    wait_for(pool, Duration::from_secs(30), "outbox empty", || async move {
        (scalar(pool, "SELECT count(*) FROM outbox").await == 0).then_some(())
    })
    .await;
    workers.stop().await;
    assert_eq!(handled(pool).await, (0..300).collect::<Vec<_>>());
    assert_eq!(scalar(pool, "SELECT count(*) FROM outbox_dead_letters").await, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_row_is_retried_then_dead_lettered_and_its_batch_mates_handed_off_once()
-> anyhow::Result<()> {
    let db = TestDb::new().await;
    let pool = &db.pool;
    let mut all = jobs(0..40);
    all[17].poison = true;
    enqueue(pool, "s", &all).await?;
    let config = OutboxConfig {
        batch_size: 8,
        max_attempts: 3,
        backoff_base: Duration::from_millis(1),
        backoff_max: Duration::from_millis(4),
        poll_interval: Duration::from_millis(20),
        ..config()
    };
    let workers = Workers::start(pool, config, Arc::new(Recorder), 1).await?;

    wait_for(pool, Duration::from_secs(30), "outbox drained into handled + dead", || async move {
        let left = scalar(pool, "SELECT count(*) FROM outbox").await;
        let dead = scalar(pool, "SELECT count(*) FROM outbox_dead_letters").await;
        (left == 0 && dead == 1).then_some(())
    })
    .await;
    workers.stop().await;

    let expected: Vec<u64> = (0..40).filter(|&n| n != 17).collect();
    assert_eq!(handled(pool).await, expected, "each batch-mate exactly once, the poison never");
    let dead = dead_rows(pool).await?;
    assert_eq!(Job::decode(dead[0].body.as_slice())?, all[17]);
    assert_eq!((dead[0].attempts, dead[0].last_error.as_str()), (3, "poison job 17"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_wakes_an_idle_worker_long_before_its_poll_interval() -> anyhow::Result<()> {
    let db = TestDb::new().await;
    let pool = &db.pool;
    let workers = Workers::start(pool, config(), Arc::new(Recorder), 1).await?;
    // Once the first job is handled the worker has claimed and gone idle (a batch of 1 < 10)...
    enqueue(pool, "s", &[job(1)]).await?;
    wait_handled(pool, PROMPTLY, &[1]).await;

    // ... and only a wake-up brings it back before the 60 s poll.
    enqueue(pool, "s", &[job(2)]).await?;
    wait_handled(pool, PROMPTLY, &[1, 2]).await;
    workers.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_off_wakes_the_next_stage_after_its_commit() -> anyhow::Result<()> {
    let db = TestDb::new().await;
    let pool = &db.pool;
    let next = Workers::start_on(pool, "t", config(), Arc::new(Recorder), 1).await?;
    // Once it has handled a job, the next stage's worker is idle until woken or its 60 s poll.
    enqueue(pool, "t", &[job(1)]).await?;
    wait_handled(pool, PROMPTLY, &[1]).await;

    // Job 2 reaches `t` unannounced, in the forwarder's hand-off; only the wake-up it sends
    // after its commit brings the next stage's worker back in time.
    let forwarders = Workers::start_on(pool, "s", config(), Arc::new(Forwarder), 1).await?;
    enqueue(pool, "s", &[job(2)]).await?;
    wait_handled(pool, PROMPTLY, &[1, 2]).await;
    forwarders.stop().await;
    next.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_cut_short_by_a_dead_letter_still_counts_as_a_full_batch() -> anyhow::Result<()> {
    let db = TestDb::new().await;
    let pool = &db.pool;
    let config = OutboxConfig { batch_size: 2, ..config() };
    let workers = Workers::start(pool, config, Arc::new(Recorder), 1).await?;
    enqueue(pool, "s", &[job(0)]).await?;
    wait_handled(pool, PROMPTLY, &[0]).await;

    // One commit, one wake-up: an undecodable row, then two jobs. The first claim takes the bad
    // row and job 1, so only job 1 comes back; job 2 must not wait for the 60 s poll.
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO outbox (stage, body) VALUES ('s', '\\x0f')").execute(&mut *tx).await?;
    let headers = Headers::new();
    flush_events(&mut tx, "s", [(&job(1), &headers), (&job(2), &headers)]).await?;
    tx.commit().await?;

    wait_handled(pool, PROMPTLY, &[0, 1, 2]).await;
    workers.stop().await;
    assert_eq!(dead_rows(pool).await?.len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_an_idle_worker() -> anyhow::Result<()> {
    let db = TestDb::new().await;
    let pool = &db.pool;
    let workers = Workers::start(pool, config(), Arc::new(Recorder), 1).await?;
    // Handling a job proves the loop is running; it is then waiting on a 60 s poll interval.
    enqueue(pool, "s", &[job(1)]).await?;
    wait_handled(pool, PROMPTLY, &[1]).await;
    workers.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_batch_in_hand_first() -> anyhow::Result<()> {
    let db = TestDb::new().await;
    let pool = &db.pool;
    let handler = Arc::new(Gated { entered: Notify::new(), release: Notify::new() });
    let workers = Workers::start(pool, config(), handler.clone(), 1).await?;
    enqueue(pool, "s", &jobs(1..=3)).await?;

    tokio::time::timeout(PROMPTLY, handler.entered.notified()).await?;
    workers.shutdown.cancel();
    handler.release.notify_one();
    workers.stop().await;
    assert_eq!(handled(pool).await, [1, 2, 3]);
    assert_eq!(scalar(pool, "SELECT count(*) FROM outbox").await, 0, "batch acked");
    Ok(())
}

/// A [`Recorder`] that keeps what the worker reports of each batch.
#[derive(Default)]
struct Observed {
    reports: std::sync::Mutex<Vec<(String, usize, usize, usize)>>,
}

impl Handler for Observed {
    type Message = Job;
    type Error = String;

    async fn handle(&self, conn: &mut PgConnection, rows: &[Claimed<Job>]) -> Result<(), String> {
        Recorder.handle(conn, rows).await
    }

    fn observe(&self, batch: &flush_event::BatchReport<'_>) {
        let report = (batch.stage.to_owned(), batch.rows, batch.failed, batch.lease_lost);
        self.reports.lock().unwrap().push(report);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_claimed_batch_is_reported_with_its_failures() -> anyhow::Result<()> {
    let db = TestDb::new().await;
    let pool = &db.pool;
    let mut all = jobs(0..5);
    all[3].poison = true;
    enqueue(pool, "s", &all).await?;
    let handler = Arc::new(Observed::default());
    let workers = Workers::start(pool, config(), handler.clone(), 1).await?;

    // One batch of 5: it fails, its rows are handed off alone, the poison one fails alone (and
    // waits for a retry far beyond this test).
    let reports = wait_for(pool, PROMPTLY, "a batch report", || async {
        let reports = handler.reports.lock().unwrap().clone();
        (!reports.is_empty()).then_some(reports)
    })
    .await;
    workers.stop().await;
    assert_eq!(reports, [("s".to_owned(), 5, 1, 0)]);
    assert_eq!(handled(pool).await, [0, 1, 2, 4]);
    Ok(())
}

/// Fails its first `failures` hand-offs with a transient error (a lost connection), then works.
struct Flaky {
    failures: std::sync::atomic::AtomicUsize,
}

impl Handler for Flaky {
    type Message = Job;
    type Error = String;

    async fn handle(&self, conn: &mut PgConnection, rows: &[Claimed<Job>]) -> Result<(), String> {
        let left = self.failures.load(std::sync::atomic::Ordering::SeqCst);
        if left > 0 {
            self.failures.store(left - 1, std::sync::atomic::Ordering::SeqCst);
            return Err("connection reset".into());
        }
        Recorder.handle(conn, rows).await
    }

    fn is_transient(&self, error: &String) -> bool {
        error == "connection reset"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_neither_split_nor_charge_attempts() -> anyhow::Result<()> {
    let db = TestDb::new().await;
    // One attempt only: a failure charged as an attempt would dead-letter the rows at once.
    let config = OutboxConfig {
        max_attempts: 1,
        backoff_base: Duration::from_millis(10),
        poll_interval: Duration::from_millis(50),
        ..config()
    };
    enqueue(&db.pool, "s", &jobs(1..=4)).await?;
    let flaky = Arc::new(Flaky { failures: 3.into() });
    let workers = Workers::start(&db.pool, config, flaky, 1).await?;
    wait_handled(&db.pool, PROMPTLY, &[1, 2, 3, 4]).await;
    workers.stop().await;
    assert!(dead_rows(&db.pool).await?.is_empty(), "nothing dead-lettered");
    assert_eq!(scalar(&db.pool, "SELECT count(*) FROM outbox").await, 0);
    Ok(())
}
