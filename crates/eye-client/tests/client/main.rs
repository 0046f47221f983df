//! `EyeClient` against the real pipeline (in-process services on free ports, real gRPC, a fresh
//! database each): ids, batching, splitting, outcomes, bounds, refusals, and the spool.
//! Crashes with real processes (SIGTERM, kill -9 of ingest, of Postgres, of the producer) are
//! in `services/cli/tests/cli/load.rs`, through `eye load`.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use eye_client::{Client, Config, EyeClient, NewEvent, Outcome, OutcomeKind, Overflow};
use eye_e2e::{Pipeline, count, db_with_key};
use eye_test_support::{TestDb, wait_for};
use serde_json::json;
use uuid::Uuid;

const TIMEOUT: Duration = Duration::from_secs(60);

/// Every outcome the client reported.
type Outcomes = Arc<Mutex<Vec<Outcome>>>;

fn recording(config: &mut Config) -> Outcomes {
    let outcomes: Outcomes = Arc::default();
    let sink = outcomes.clone();
    config.on_outcome = Some(Arc::new(move |o: &Outcome| sink.lock().unwrap().push(o.clone())));
    outcomes
}

async fn stored(db: &TestDb, ids: &[Uuid]) -> (i64, i64) {
    sqlx::query_as("SELECT count(*), count(DISTINCT event_id) FROM events WHERE event_id = ANY($1)")
        .bind(ids)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

async fn wait_stored(db: &TestDb, ids: &[Uuid]) {
    let want = ids.len() as i64;
    wait_for(&db.pool, TIMEOUT, "events stored", || async {
        let (rows, _) = stored(db, ids).await;
        (rows >= want).then_some(())
    })
    .await;
    assert_eq!(stored(db, ids).await, (want, want), "each stored exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracked_events_are_stored_once_with_their_ids_and_session() {
    let (db, app, key) = db_with_key("shop", &["ingest"]).await;
    let pipeline = Pipeline::start(&db, 1, 1).await;
    let mut config = Config::new(pipeline.endpoint(), key);
    config.batch_events = 7;
    let outcomes = recording(&mut config);
    let client = EyeClient::start(config).unwrap();
    let mut ids = Vec::new();
    for i in 0..50 {
        let data = json!({"host": "shop.example", "path": format!("/{i}")});
        ids.push(client.track("page interaction", "pageview", &data).await.unwrap());
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "UUIDv7 ids, in tracking order");
    assert!(ids.iter().all(|id| id.get_version_num() == 7));
    client.flush().await.unwrap();
    let stats = client.stats();
    assert_eq!((stats.tracked, stats.accepted, stats.queued), (50, 50, 0), "{stats:?}");
    let session = client.session_id();
    wait_stored(&db, &ids).await;
    let sessions: Vec<(Uuid, Uuid)> =
        sqlx::query_as("SELECT DISTINCT session_id, application_id FROM events")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(sessions, [(session, app)]);
    let accepted: HashSet<Uuid> = outcomes
        .lock()
        .unwrap()
        .iter()
        .filter(|o| o.kind == OutcomeKind::Accepted)
        .map(|o| o.event_id)
        .collect();
    assert_eq!(accepted, ids.iter().copied().collect());
    let stats = client.shutdown(Duration::from_secs(5)).await;
    assert_eq!(stats.sent, 50, "one attempt each, in batches of 7");
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_id_counts_as_delivered_and_rejections_are_reported() {
    let (db, _, key) = db_with_key("shop", &["ingest"]).await;
    let pipeline = Pipeline::start(&db, 1, 1).await;
    // The first attempt's answer "was lost": the event is already there when the client sends.
    let id = Uuid::now_v7();
    let raw = Client::connect(pipeline.endpoint(), &key).await.unwrap();
    let mut first = eye_client::event("c", "n", "{}", Uuid::new_v4());
    first.event_id = id.to_string();
    raw.send(vec![first]).await.unwrap();

    let mut config = Config::new(pipeline.endpoint(), key);
    let outcomes = recording(&mut config);
    let client = EyeClient::start(config).unwrap();
    let mut again = NewEvent::new("c", "n", &json!({}));
    again.event_id = Some(id);
    client.track_event(again).await.unwrap();
    let bad = client.track("", "n", &json!({})).await.unwrap();
    client.flush().await.unwrap();
    let stats = client.shutdown(Duration::from_secs(5)).await;
    assert_eq!((stats.duplicate, stats.rejected, stats.failed), (1, 1, 0), "{stats:?}");
    let outcomes = outcomes.lock().unwrap().clone();
    assert!(outcomes.contains(&Outcome { event_id: id, kind: OutcomeKind::Duplicate }));
    let rejected = outcomes.iter().find(|o| o.event_id == bad).unwrap();
    assert!(
        matches!(&rejected.kind, OutcomeKind::Rejected(reason) if reason.starts_with("missing_category")),
        "{rejected:?}"
    );
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_over_the_server_limit_are_split_not_lost() {
    let (db, _, key) = db_with_key("shop", &["ingest"]).await;
    let pipeline = Pipeline::start(&db, 1, 1).await;
    let mut config = Config::new(pipeline.endpoint(), key);
    config.batch_events = 2_500; // the server takes 1,000 per call
    config.linger = Duration::from_secs(60);
    config.connect.gzip = true;
    let client = EyeClient::start(config).unwrap();
    let mut ids = Vec::new();
    for i in 0..2_500 {
        ids.push(client.track("c", "n", &json!({"i": i})).await.unwrap());
    }
    client.flush().await.unwrap();
    let stats = client.shutdown(Duration::from_secs(5)).await;
    assert_eq!((stats.accepted, stats.failed, stats.rejected), (2_500, 0, 0), "{stats:?}");
    assert!(stats.sent > 2_500, "the refused whole batch was sent once before the halves");
    wait_stored(&db, &ids).await;
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_fails_fast_and_is_counted() {
    let db = TestDb::new().await;
    let pipeline = Pipeline::start(&db, 0, 0).await;
    let mut config = Config::new(pipeline.endpoint(), format!("eye_{}", "0".repeat(64)));
    let outcomes = recording(&mut config);
    let client = EyeClient::start(config).unwrap();
    for _ in 0..3 {
        client.track("c", "n", &json!({})).await.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(10), client.flush()).await.unwrap().unwrap();
    let stats = client.shutdown(Duration::from_secs(1)).await;
    assert_eq!((stats.tracked, stats.failed, stats.retries), (3, 3, 0), "{stats:?}");
    let outcomes = outcomes.lock().unwrap().clone();
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(&o.kind, OutcomeKind::Failed(r) if r.starts_with("unauthenticated")))
    );
    assert_eq!(count(&db.pool, "SELECT count(*) FROM outbox").await, 0);
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_and_counts_and_nothing_is_unaccounted() {
    // Nothing listens there: every call fails and is retried until shutdown.
    let endpoint = format!("http://127.0.0.1:{}", eye_test_support::free_port());
    let mut config = Config::new(endpoint, "eye_test");
    config.max_queue_events = 10;
    config.overflow = Overflow::Drop;
    config.linger = Duration::from_millis(5);
    let client = EyeClient::start(config).unwrap();
    let mut dropped = 0;
    for _ in 0..25 {
        if client.track("c", "n", &json!({})).await.is_err() {
            dropped += 1;
        }
    }
    assert_eq!(dropped, 15);
    let stats = client.shutdown(Duration::from_millis(300)).await;
    assert_eq!(
        (stats.tracked, stats.dropped, stats.failed, stats.queued),
        (25, 15, 10, 0),
        "{stats:?}"
    );
    assert!(stats.retries > 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spool_keeps_what_was_not_delivered_for_the_next_client() {
    let (db, _, key) = db_with_key("shop", &["ingest"]).await;
    let spool = std::env::temp_dir().join(format!("eye-client-spool-{}", Uuid::new_v4()));
    // First run: the server is unreachable, so nothing is delivered before shutdown.
    let nowhere = format!("http://127.0.0.1:{}", eye_test_support::free_port());
    let mut config = Config::new(nowhere, key.clone());
    config.spool_dir = Some(spool.clone());
    let client = EyeClient::start(config).unwrap();
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(client.track("c", "n", &json!({"i": i})).await.unwrap());
    }
    let first = client.shutdown(Duration::from_millis(200)).await;
    assert_eq!((first.spooled, first.failed), (40, 40), "{first:?}");

    // Second run, same spool, a working server: the 40 go out with their ids.
    let pipeline = Pipeline::start(&db, 1, 1).await;
    let mut config = Config::new(pipeline.endpoint(), key);
    config.spool_dir = Some(spool.clone());
    let client = EyeClient::start(config).unwrap();
    client.flush().await.unwrap();
    let second = client.shutdown(Duration::from_secs(5)).await;
    assert_eq!((second.recovered, second.accepted, second.tracked), (40, 40, 0), "{second:?}");
    wait_stored(&db, &ids).await;
    let left: Vec<_> = std::fs::read_dir(&spool).unwrap().collect();
    assert!(left.is_empty(), "delivered segments are deleted: {left:?}");
    std::fs::remove_dir_all(&spool).unwrap();
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_endpoints_are_reached_over_tls_with_a_given_ca() {
    let (db, _, key) = db_with_key("shop", &["ingest"]).await;
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = std::env::temp_dir().join(format!("eye-client-tls-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, certified.cert.pem()).unwrap();
    std::fs::write(&key_file, certified.signing_key.serialize_pem()).unwrap();
    let mut settings = Pipeline::settings(&db);
    settings.tls.cert_file = Some(cert_file.clone());
    settings.tls.key_file = Some(key_file);
    let pipeline = Pipeline::start_with(settings, 1, 1, false).await;

    let mut config = Config::new(format!("https://localhost:{}", pipeline.ingest_port), key);
    config.connect.ca_certificate = Some(cert_file.display().to_string());
    let client = EyeClient::start(config).unwrap();
    let id = client.track("c", "n", &json!({"tls": true})).await.unwrap();
    client.flush().await.unwrap();
    let stats = client.shutdown(Duration::from_secs(5)).await;
    assert_eq!((stats.accepted, stats.failed), (1, 0), "{stats:?}");
    wait_stored(&db, &[id]).await;
    pipeline.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}
