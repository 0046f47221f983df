//! The producer outbox end to end, with real processes and real signals: a card service commits
//! (and rolls back) card changes with their events in the same transactions, two `eye-relay`
//! processes ship them while one of them is killed with `kill -9` at random moments and
//! restarted, and ingest is restarted once. Every committed change must be stored exactly once,
//! nothing of a rolled-back transaction at all, and the producer's outbox must end empty.

use std::{
    collections::{HashMap, HashSet},
    process::Stdio,
    time::Duration,
};

use card_service::Card;
use eye_e2e::{Pipeline, create_key};
use eye_test_support::{TestDb, wait_for};
use rand::{Rng, SeedableRng, rngs::StdRng};
use sqlx::{Connection, PgPool};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const CHANGES: usize = 20_000;
const TIMEOUT: Duration = Duration::from_secs(180);

/// A running `eye-relay` and its metrics port.
struct RelayProcess {
    child: Child,
    metrics_port: u16,
}

impl RelayProcess {
    /// SIGTERM, once it serves `/metrics` (from then on SIGTERM drains), and a clean exit.
    async fn terminate(mut self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.metrics_port)).await.is_err() {
            assert!(std::time::Instant::now() < deadline, "the relay never served /metrics");
            tokio::time::sleep(Duration::from_millis(20)).await; // polling a port, not a wait for work
        }
        kill(&self.child, "-TERM");
        let exit = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        assert!(exit.expect("drains in time").unwrap().success(), "SIGTERM is a clean exit");
    }
}

fn spawn_relay(source: &str, endpoint: &str, key: &str) -> RelayProcess {
    let metrics_port = eye_test_support::free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_eye-relay"))
        .env("EYE_RELAY_SOURCE", source)
        .env("EYE_ENDPOINT", endpoint)
        .env("EYE_API_KEY", key)
        .env("EYE__METRICS__HOST", "127.0.0.1")
        .env("EYE__METRICS__PORT", metrics_port.to_string())
        // Rows of a killed relay come back after the lease: short, so the test is too.
        .env("EYE__RELAY__CONSUMER__LEASE_MS", "2000")
        .env("EYE__RELAY__CONSUMER__POLL_INTERVAL_MS", "200")
        .env("EYE__RELAY__CONSUMER__BACKOFF_BASE_MS", "100")
        .env("EYE__RELAY__RETRY_BUDGET_MS", "1000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start eye-relay");
    RelayProcess { child, metrics_port }
}

/// Ingest in-process on `settings`' fixed port, until its token is cancelled.
async fn start_ingest(
    settings: &eye_service::Settings,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let app = eye_ingest::Application::build(settings.clone()).await.expect("build ingest");
    let stop = CancellationToken::new();
    let token = stop.clone();
    (stop, tokio::spawn(async move { app.run_until_stopped(token).await.expect("ingest") }))
}

/// The producer: `CHANGES` card changes over 500 cards, in transactions of 1 to 8 changes, one
/// in 20 rolled back. Returns the event ids of the committed and of the rolled-back changes.
async fn produce(url: String, seed: u64) -> (Vec<Uuid>, Vec<Uuid>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let (mut committed, mut rolled_back) = (Vec::new(), Vec::new());
    while committed.len() + rolled_back.len() < CHANGES {
        let mut tx = conn.begin().await.unwrap();
        let mut ids = Vec::new();
        for _ in 0..rng.random_range(1..=8) {
            let card = Card {
                id: rng.random_range(1..=500),
                holder: format!("holder {}", rng.random_range(0..100)),
                credit_limit: rng.random_range(1..50) * 100,
                status: "active".into(),
            };
            ids.push(card_service::change_card(&mut tx, &card).await.unwrap());
        }
        if rng.random_range(0..20) == 0 {
            tx.rollback().await.unwrap();
            rolled_back.extend(ids);
        } else {
            tx.commit().await.unwrap();
            committed.extend(ids);
        }
    }
    (committed, rolled_back)
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

fn kill(child: &Child, signal: &str) {
    eye_test_support::signal(child.id(), signal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_committed_change_is_stored_once_while_relays_are_killed_and_ingest_restarts() {
    let eye = TestDb::new().await;
    let (_, key) = create_key(&eye.pool, "cards", &["ingest"]).await;
    let producer = TestDb::new().await;
    assert_eq!(flush_event::install::install(&producer.url, "eye").await.unwrap(), 2);
    assert_eq!(flush_event::install::install(&producer.url, "eye").await.unwrap(), 0, "idempotent");
    sqlx::raw_sql(card_service::SCHEMA_SQL).execute(&producer.pool).await.unwrap();

    // The Eye: validator and writer, and ingest on a port of its own that survives a restart.
    let workers = Pipeline::start(&eye, 1, 1).await;
    let mut settings = Pipeline::settings(&eye);
    settings.ingest.port = eye_test_support::free_port();
    let endpoint = format!("http://127.0.0.1:{}", settings.ingest.port);
    let (mut stop_ingest, mut ingest) = start_ingest(&settings).await;

    let seed = rand::random::<u64>();
    eprintln!("seed {seed}");
    let producing = tokio::spawn(produce(producer.url.clone(), seed));
    let mut relays =
        [spawn_relay(&producer.url, &endpoint, &key), spawn_relay(&producer.url, &endpoint, &key)];
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut kills, mut restarted_ingest) = (0, false);
    while !producing.is_finished() {
        // A moment of traffic, then kill -9 one relay at random and start it again.
        let moment = Duration::from_millis(rng.random_range(200..1200));
        tokio::time::sleep(moment).await; // chaos timing, not synchronisation
        let victim = rng.random_range(0..relays.len());
        kill(&relays[victim].child, "-KILL");
        relays[victim].child.wait().await.unwrap();
        relays[victim] = spawn_relay(&producer.url, &endpoint, &key);
        kills += 1;
        let shipped = count(&eye.pool, "SELECT count(*) FROM idempotency_keys").await;
        if !restarted_ingest && shipped > (CHANGES / 3) as i64 {
            stop_ingest.cancel();
            ingest.await.unwrap();
            (stop_ingest, ingest) = start_ingest(&settings).await;
            restarted_ingest = true;
        }
    }
    let (committed, rolled_back) = producing.await.unwrap();
    assert!(kills >= 3, "the relays were killed while shipping ({kills} times)");

    wait_for(&producer.pool, TIMEOUT, "the producer's outbox to empty", || async {
        (count(&producer.pool, "SELECT count(*) FROM eye.outbox").await == 0).then_some(())
    })
    .await;
    let committed_count = committed.len() as i64;
    wait_for(&eye.pool, TIMEOUT, "every committed change stored", || async {
        let stored = count(&eye.pool, "SELECT count(*) FROM events").await;
        (stored >= committed_count && count(&eye.pool, "SELECT count(*) FROM outbox").await == 0)
            .then_some(())
    })
    .await;
    assert!(restarted_ingest, "ingest was restarted once");

    // SIGTERM drains: each relay exits cleanly.
    for relay in relays {
        relay.terminate().await;
    }

    let stored: Vec<(Uuid, Uuid)> = sqlx::query_as("SELECT event_id, session_id FROM events")
        .fetch_all(&eye.pool)
        .await
        .unwrap();
    let stored_ids: HashSet<Uuid> = stored.iter().map(|(id, _)| *id).collect();
    assert_eq!(stored_ids.len(), stored.len(), "no event stored twice");
    let committed_ids: HashSet<Uuid> = committed.iter().copied().collect();
    assert_eq!(stored_ids, committed_ids, "exactly the committed changes are stored");
    assert!(rolled_back.iter().all(|id| !stored_ids.contains(id)), "nothing rolled back leaks");
    assert!(!rolled_back.is_empty());
    assert_eq!(
        count(&producer.pool, "SELECT count(*) FROM eye.outbox_dead_letters").await,
        0,
        "nothing was refused"
    );

    // A card's changes are one session, in the order they were made.
    let card: i64 = sqlx::query_scalar(
        "SELECT card_id FROM card_changes GROUP BY card_id ORDER BY count(*) DESC LIMIT 1",
    )
    .fetch_one(&producer.pool)
    .await
    .unwrap();
    let made: Vec<Uuid> = sqlx::query_scalar(
        "SELECT event_id FROM card_changes WHERE card_id = $1 ORDER BY changed_at, event_id",
    )
    .bind(card)
    .fetch_all(&producer.pool)
    .await
    .unwrap();
    let session = eye_client::record_session_id("card", &card.to_string());
    let history: Vec<Uuid> = sqlx::query_scalar(
        "SELECT event_id FROM events WHERE session_id = $1 ORDER BY occurred_at, event_id",
    )
    .bind(session)
    .fetch_all(&eye.pool)
    .await
    .unwrap();
    assert!(
        made.len() > 10 && history == made,
        "card {card}: {} changes, {} in its session",
        made.len(),
        history.len()
    );
    let by_session: HashMap<Uuid, usize> = stored.iter().fold(HashMap::new(), |mut map, (_, s)| {
        *map.entry(*s).or_default() += 1;
        map
    });
    assert!(by_session.len() <= 500, "one session per card");

    stop_ingest.cancel();
    ingest.await.unwrap();
    workers.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_event_is_dead_lettered_in_the_producers_outbox_with_its_reason() {
    let eye = TestDb::new().await;
    let (_, key) = create_key(&eye.pool, "cards", &["ingest"]).await;
    let producer = TestDb::new().await;
    flush_event::install::install(&producer.url, "eye").await.unwrap();
    let pipeline = Pipeline::start(&eye, 0, 0).await;

    let good = card_service::card_event(
        &Card { id: 1, holder: "a".into(), credit_limit: 1, status: "active".into() },
        "created",
        chrono::Utc::now(),
    );
    let mut bad = good.clone();
    bad.event_id = Uuid::now_v7().to_string();
    bad.session_id = "not a uuid".into();
    let mut tx = producer.pool.begin().await.unwrap();
    let headers = flush_event::Headers::new();
    flush_event::flush_events_in(&mut tx, "eye", "eye", [(&good, &headers), (&bad, &headers)])
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let relay = spawn_relay(&producer.url, &pipeline.endpoint(), &key);
    wait_for(&producer.pool, TIMEOUT, "the outbox to empty", || async {
        (count(&producer.pool, "SELECT count(*) FROM eye.outbox").await == 0).then_some(())
    })
    .await;
    relay.terminate().await;
    assert_eq!(count(&eye.pool, "SELECT count(*) FROM idempotency_keys").await, 1);

    // `eye dlq list` of the producer's outbox shows it, with the reason.
    let dead = eye_admin::dead_letters::list(
        &PgPool::connect_with(
            flush_event::install::options_in_schema(&producer.url, "eye").unwrap(),
        )
        .await
        .unwrap(),
        Some("eye"),
        10,
    )
    .await
    .unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].last_error.contains("invalid_session_id"), "{}", dead[0].last_error);
    pipeline.stop().await;
}
