//! Reads off the primary: the query service reads from a real streaming replica
//! (`EYE__QUERY__DATABASE_URL`; a second server made with `pg_basebackup -R`, replicating over
//! the wire), takes its writes (replays) to the primary, and reports the replica's lag in
//! `GetStats` and in `eye_query_replica_lag_seconds`.

use local_postgres::{LocalPostgres, Options};
use sqlx::{Connection, PgConnection};

use super::*;

fn options(root: &std::path::Path, name: &str) -> Options {
    Options {
        base_dir: root.join(name),
        fallback_key: format!("{}#{name}", root.display()),
        durable: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_service_reads_from_a_streaming_replica_and_reports_its_lag() {
    let root = std::env::temp_dir().join(format!("eye-replica-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&root).unwrap();
    let primary = {
        let options = options(&root, "primary");
        tokio::task::spawn_blocking(move || LocalPostgres::ensure(&options)).await.unwrap().unwrap()
    };
    let mut admin = PgConnection::connect(primary.url()).await.unwrap();
    sqlx::query("CREATE DATABASE eye").execute(&mut admin).await.unwrap();
    let on_eye = |server: &LocalPostgres| {
        format!("{}/eye", server.url().rsplit_once('/').expect("a database path").0)
    };
    let url = on_eye(&primary);
    let pool = PgPool::connect(&url).await.unwrap();
    eye_service::database::migrate(&pool).await.unwrap();
    let (_, key) = create_key(&pool, "shop", &["ingest", "read", "admin"]).await;
    let replica = {
        let (primary, options) = (primary.clone(), options(&root, "replica"));
        tokio::task::spawn_blocking(move || primary.start_replica(&options)).await.unwrap().unwrap()
    };
    let replica_url = on_eye(&replica);
    let mut on_replica = PgConnection::connect(&replica_url).await.unwrap();
    let standby: bool =
        sqlx::query_scalar("SELECT pg_is_in_recovery()").fetch_one(&mut on_replica).await.unwrap();
    assert!(standby, "a real standby");

    let mut settings = eye_service::Settings::default();
    settings.database.url = Some(url.clone().into());
    for host in [&mut settings.ingest.host, &mut settings.query.host, &mut settings.metrics.host] {
        *host = "127.0.0.1".into();
    }
    (settings.ingest.port, settings.ingest.http_port) = (0, 0);
    (settings.query.port, settings.query.http_port, settings.metrics.port) = (0, 0, 0);
    settings.validator.consumer.poll_interval_ms = 200;
    settings.writer.consumer.poll_interval_ms = 200;
    let pipeline = Pipeline::start_each(
        |service| {
            let mut settings = settings.clone();
            if service == "query" {
                settings.query.database_url = Some(replica_url.clone().into());
            }
            settings
        },
        1,
        1,
        true,
    )
    .await;

    let session = Uuid::new_v4();
    let events = vec![
        event(session, "c", "n", json!({"i": 1}), Utc::now()),
        event(session, "c", "n", json!({"i": 2}), Utc::now()),
        // Quarantined (from the future): something to replay.
        event(session, "c", "n", json!({"i": 3}), Utc::now() + chrono::Duration::hours(2)),
    ];
    let sent = SendEventsRequest { events, sent_at: None };
    pipeline.send(eye_e2e::transport::Transport::Grpc, Some(&key), &sent).await.unwrap();
    let mut client = pipeline.query_client().await;
    // What the primary stored reaches the replica, and the query service reads it there.
    let errors = wait_for(&pool, TIMEOUT, "the events and the error on the replica", || {
        let (mut client, key) = (client.clone(), key.clone());
        async move {
            let listed = list_all(&mut client, &key, EventFilter::default(), 10).await;
            let errors = client
                .list_errors(authorized(ListErrorsRequest::default(), &key))
                .await
                .unwrap()
                .into_inner()
                .errors;
            (listed.len() == 2 && errors.len() == 1).then_some(errors)
        }
    })
    .await;
    let replicated: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&mut on_replica).await.unwrap();
    assert_eq!(replicated, 2);

    // A write goes to the primary (the replica is read-only: it would fail there).
    let replay = ReplayErrorsRequest { error_ids: vec![errors[0].id], ..Default::default() };
    let replayed = client.replay_errors(authorized(replay, &key)).await.unwrap().into_inner();
    assert_eq!(replayed.replayed, 1);

    let stats =
        client.get_stats(authorized(GetStatsRequest::default(), &key)).await.unwrap().into_inner();
    let lag = stats.replica_lag.expect("the replica's lag");
    assert!(lag.seconds < 60, "{lag:?}");
    let (_, exposition) = eye_e2e::scrape_metrics(pipeline.metrics_port("query")).await;
    assert!(
        exposition.lines().any(|line| line.starts_with("eye_query_replica_lag_seconds ")),
        "{exposition}"
    );
    pipeline.stop().await;
    drop((on_replica, admin));
    pool.close().await;
    replica.stop().unwrap();
    primary.stop().unwrap();
    let _ = std::fs::remove_dir_all(&root);
}
