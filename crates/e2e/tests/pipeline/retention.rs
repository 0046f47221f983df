//! The store's upkeep (`eye_admin::maintenance`): retention drops exactly the expired
//! partitions while ingest runs, and the sessions, quarantine and dead letters follow; the
//! idempotency ledger stays bounded by the dedup window, and what catches a retry older than the
//! window is the store's own key.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use eye_admin::maintenance::{self, Policy, Report};
use eye_e2e::{Pipeline, count, db_with_key, event, transport::Transport};
use eye_proto::v1::{EventStatus, SendEventsRequest};
use eye_service::settings::{Granularity, Retention};
use eye_test_support::wait_for;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

const TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the upkeep until this run is the one holding the lock (a writer's own round may hold it
/// for a moment).
async fn run_upkeep(pool: &PgPool, policy: &Policy, now: DateTime<Utc>) -> Report {
    loop {
        let report = maintenance::run(pool, policy, now).await.expect("upkeep");
        if report.ran {
            return report;
        }
        tokio::task::yield_now().await;
    }
}

async fn partitions(pool: &PgPool, parent: &str) -> Vec<(String, Option<DateTime<Utc>>)> {
    sqlx::query_as(
        "SELECT partition::text, upper_bound FROM eye_partitions($1::regclass) ORDER BY upper_bound",
    )
    .bind(parent)
    .fetch_all(pool)
    .await
    .unwrap()
}

fn settings(db: &eye_test_support::TestDb) -> eye_service::Settings {
    let mut settings = Pipeline::settings(db);
    // The writers' own rounds run once, at start; the test runs the rest itself.
    settings.store.maintenance_interval_ms = 3_600_000;
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_exactly_the_expired_partitions_while_ingest_runs() {
    let (db, _, key) = db_with_key("shop", &["ingest"]).await;
    let pipeline = Arc::new(Pipeline::start_with(settings(&db), 1, 1, false).await);
    let now = Utc::now();
    let days = |n: i64| now - chrono::Duration::days(n);
    // `gone` happened only long ago; `kept` spans old and recent partitions.
    let (gone, kept) = (Uuid::new_v4(), Uuid::new_v4());
    let mut events = vec![event(gone, "c", "n", json!({}), days(200))];
    for n in [100, 40, 1, 0] {
        events.push(event(kept, "c", "n", json!({}), days(n)));
    }
    // And one that breaks the timestamp rules, quarantined.
    events.push(event(kept, "c", "n", json!({}), now + chrono::Duration::hours(3)));
    let results = pipeline
        .send(Transport::Grpc, Some(&key), &SendEventsRequest { events, sent_at: None })
        .await
        .unwrap();
    assert!(results.iter().all(|r| r.status() == EventStatus::Accepted));
    wait_for(&db.pool, TIMEOUT, "5 stored, 1 quarantined", || async {
        let stored = count(&db.pool, "SELECT count(*) FROM events").await;
        let errors = count(&db.pool, "SELECT count(*) FROM event_errors").await;
        (stored == 5 && errors == 1).then_some(())
    })
    .await;
    // An old quarantined event and an old dead letter, beside fresh ones.
    sqlx::query(
        "INSERT INTO event_errors (application_id, event_id, session_id, category, name, data, \
                                   occurred_at, received_at, reason, message, failed_at) \
         SELECT application_id, gen_random_uuid(), session_id, category, name, data, occurred_at, \
                received_at, reason, message, now() - interval '120 days' FROM event_errors",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    for dead_at in ["now() - interval '120 days'", "now()"] {
        sqlx::query(&format!(
            "INSERT INTO outbox_dead_letters (id, stage, body, headers, attempts, created_at, \
                                              dead_at, last_error) \
             VALUES ((random() * 1e9)::bigint, 'write', '\\x', '{{}}', 5, now(), {dead_at}, 'x')"
        ))
        .execute(&db.pool)
        .await
        .unwrap();
    }

    // Ingest keeps running throughout the drop.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let load = {
        let (pipeline, key, stop, sent) =
            (pipeline.clone(), key.clone(), stop.clone(), sent.clone());
        tokio::spawn(async move {
            let session = Uuid::new_v4();
            while !stop.load(Ordering::Relaxed) {
                let batch = SendEventsRequest {
                    events: (0..50)
                        .map(|_| event(session, "c", "load", json!({}), Utc::now()))
                        .collect(),
                    sent_at: None,
                };
                let results = pipeline.send(Transport::Grpc, Some(&key), &batch).await.unwrap();
                assert!(results.iter().all(|r| r.status() == EventStatus::Accepted));
                sent.fetch_add(50, Ordering::Relaxed);
            }
        })
    };
    wait_for(&db.pool, TIMEOUT, "the load to be stored", || async {
        (count(&db.pool, "SELECT count(*) FROM events WHERE name = 'load'").await > 0).then_some(())
    })
    .await;

    let policy = Policy {
        retention: Some(Retention::Days(90)),
        granularity: Granularity::Month,
        dedup_window_days: 7,
    };
    let cutoff = days(90);
    let before = partitions(&db.pool, "events").await;
    let expired: Vec<String> = before
        .iter()
        .filter(|(_, upper)| upper.is_some_and(|upper| upper <= cutoff))
        .map(|(name, _)| name.clone())
        .collect();
    let report = run_upkeep(&db.pool, &policy, now).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();

    println!("upkeep: {report:?}");
    assert_eq!(report.dropped_partitions, expired, "exactly the expired partitions");
    assert!(!expired.is_empty(), "the partition of 200 days ago expired: {before:?}");
    let after = partitions(&db.pool, "events").await;
    assert_eq!(after.len(), before.len() - expired.len(), "{after:?}");
    assert!(after.iter().all(|(name, _)| !expired.contains(name)));
    // Every event newer than the dropped partitions is still there, and all of the load.
    let boundary = before
        .iter()
        .filter(|(name, _)| expired.contains(name))
        .filter_map(|(_, u)| *u)
        .max()
        .unwrap();
    let kept_events: Vec<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT occurred_at FROM events WHERE session_id = $1 ORDER BY occurred_at",
    )
    .bind(kept)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let expected_kept: Vec<i64> =
        [100, 40, 1, 0].into_iter().filter(|n| days(*n) >= boundary).collect();
    assert_eq!(kept_events.len(), expected_kept.len(), "{kept_events:?}");
    let older: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE occurred_at < $1")
        .bind(boundary)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(older, 0);
    let sent = sent.load(Ordering::Relaxed) as i64;
    wait_for(&db.pool, TIMEOUT, "all of the load stored", || async {
        (count(&db.pool, "SELECT count(*) FROM events WHERE name = 'load'").await == sent)
            .then_some(())
    })
    .await;

    // Sessions follow: `gone` has no events left, `kept` counts what is left.
    assert_eq!(
        count(&db.pool, &format!("SELECT count(*) FROM sessions WHERE session_id = '{gone}'"))
            .await,
        0
    );
    let (event_count, first): (i64, DateTime<Utc>) =
        sqlx::query_as("SELECT event_count, first_seen_at FROM sessions WHERE session_id = $1")
            .bind(kept)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!((event_count, first), (kept_events.len() as i64, kept_events[0]));
    assert!(report.sessions_removed >= 1, "{report:?}");
    // The old quarantined event and dead letter are gone, the fresh ones kept.
    assert_eq!((report.errors_deleted, report.dead_letters_deleted), (1, 1));
    assert_eq!(count(&db.pool, "SELECT count(*) FROM event_errors").await, 1);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM outbox_dead_letters").await, 1);

    // A second run has nothing left to drop.
    let again = run_upkeep(&db.pool, &policy, now).await;
    assert!(again.dropped_partitions.is_empty(), "{again:?}");
    Arc::into_inner(pipeline).expect("the load is done").stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn day_partitions_can_follow_month_partitions() {
    let (db, _, _) = db_with_key("shop", &["ingest"]).await;
    let now = Utc::now();
    sqlx::query("SELECT eye_ensure_partition('events', $1, 'month')")
        .bind(now)
        .execute(&db.pool)
        .await
        .unwrap();
    // A day inside this month is covered by the month; a day of another month gets its own.
    let same: String = sqlx::query_scalar("SELECT eye_ensure_partition('events', $1, 'day')::text")
        .bind(now)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(same, format!("events_p{}", now.format("%Y%m")));
    let later = now + chrono::Duration::days(62);
    let day: String = sqlx::query_scalar("SELECT eye_ensure_partition('events', $1, 'day')::text")
        .bind(later)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(day, format!("events_p{}", later.format("%Y%m%d")));
    // And a month partition around an existing day partition fills the gaps only.
    let before_day = later - chrono::Duration::days(1);
    let gap: String =
        sqlx::query_scalar("SELECT eye_ensure_partition('events', $1, 'month')::text")
            .bind(before_day)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let gap: (Option<DateTime<Utc>>, Option<DateTime<Utc>>) = sqlx::query_as(
        "SELECT lower_bound, upper_bound FROM eye_partitions('events') WHERE partition = $1::regclass",
    )
    .bind(gap)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let day_start = later.date_naive().and_hms_opt(0, 0, 0).unwrap().and_utc();
    assert_eq!(gap.1, Some(day_start), "ends where the day partition begins");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_stays_bounded_and_the_store_key_catches_an_old_retry() {
    let (db, app, key) = db_with_key("shop", &["ingest"]).await;
    let policy = Policy { retention: None, granularity: Granularity::Month, dedup_window_days: 7 };

    // A simulated month: each day, 1,000 ids accepted into that day's slice (7 days long, as the
    // window), then that day's upkeep. The ledger holds the current and the previous slice: never
    // more than two windows of ids, never less than one once a window has passed. (Before the
    // pipeline starts: its writer's upkeep lives in real time.)
    let start = Utc::now() - chrono::Duration::days(30);
    let mut sizes = Vec::new();
    for day in 0..30 {
        let at = start + chrono::Duration::days(day);
        sqlx::query("SELECT eye_ensure_partition('idempotency_keys', $1, '7 days')")
            .bind(at)
            .execute(&db.pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO idempotency_keys (application_id, event_id, slice, accepted_at) \
             SELECT $1, gen_random_uuid(), eye_ledger_slice(7, $2), $2 FROM generate_series(1, 1000)",
        )
        .bind(app)
        .bind(at)
        .execute(&db.pool)
        .await
        .unwrap();
        run_upkeep(&db.pool, &policy, at).await;
        sizes.push(count(&db.pool, "SELECT count(*) FROM idempotency_keys").await);
    }
    println!("ledger rows after each simulated day: {sizes:?}");
    assert!(sizes.iter().all(|&size| size <= 14 * 1000), "at most two windows: {sizes:?}");
    assert!(sizes[7..].iter().all(|&size| size >= 7 * 1000), "at least one window: {sizes:?}");
    assert_eq!(sizes[0], 1_000);
    let pipeline = Pipeline::start_with(settings(&db), 1, 1, false).await;

    // An event accepted today, then remembered no longer (its slice moved out of the window and
    // dropped, as two weeks of upkeep would).
    let session = Uuid::new_v4();
    let sent = event(session, "c", "n", json!({}), Utc::now());
    let retry = SendEventsRequest { events: vec![sent.clone()], sent_at: None };
    let first = pipeline.send(Transport::Grpc, Some(&key), &retry).await.unwrap();
    assert_eq!(first[0].status(), EventStatus::Accepted);
    let again = pipeline.send(Transport::Grpc, Some(&key), &retry).await.unwrap();
    assert_eq!(again[0].status(), EventStatus::Duplicate, "within the window");
    wait_for(&db.pool, TIMEOUT, "the event stored", || async {
        (count(&db.pool, "SELECT count(*) FROM events").await == 1).then_some(())
    })
    .await;
    let old = Utc::now() - chrono::Duration::days(20);
    sqlx::query("SELECT eye_ensure_partition('idempotency_keys', $1, '7 days')")
        .bind(old)
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE idempotency_keys SET slice = eye_ledger_slice(7, $1) WHERE event_id = $2::uuid",
    )
    .bind(old)
    .bind(&sent.event_id)
    .execute(&db.pool)
    .await
    .unwrap();
    run_upkeep(&db.pool, &policy, Utc::now()).await;
    assert_eq!(
        count(
            &db.pool,
            &format!("SELECT count(*) FROM idempotency_keys WHERE event_id = '{}'", sent.event_id)
        )
        .await,
        0,
        "forgotten"
    );

    // Past the window, ingest answers ACCEPTED again; the store's key (application, event id,
    // timestamp) still stores the retry once, since a retry keeps its timestamp.
    let late = pipeline.send(Transport::Grpc, Some(&key), &retry).await.unwrap();
    assert_eq!(late[0].status(), EventStatus::Accepted);
    // An id reused with another timestamp past the window is, honestly, another event.
    let mut reused = sent.clone();
    reused.timestamp =
        Some(prost_types::Timestamp { seconds: reused.timestamp.unwrap().seconds - 60, nanos: 0 });
    let reused = SendEventsRequest { events: vec![reused], sent_at: None };
    // (Within the window it is a duplicate: the late retry put the id back into today's slice.)
    let within = pipeline.send(Transport::Grpc, Some(&key), &reused).await.unwrap();
    assert_eq!(within[0].status(), EventStatus::Duplicate);
    sqlx::query("DELETE FROM idempotency_keys WHERE event_id = $1::uuid")
        .bind(&sent.event_id)
        .execute(&db.pool)
        .await
        .unwrap();
    let past = pipeline.send(Transport::Grpc, Some(&key), &reused).await.unwrap();
    assert_eq!(past[0].status(), EventStatus::Accepted);
    wait_for(&db.pool, TIMEOUT, "the late retry written (once) and the reuse stored", || async {
        let pending = count(&db.pool, "SELECT count(*) FROM outbox").await;
        let stored = count(
            &db.pool,
            &format!("SELECT count(*) FROM events WHERE event_id = '{}'", sent.event_id),
        )
        .await;
        (pending == 0 && stored == 2).then_some(())
    })
    .await;
    let times: Vec<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT occurred_at FROM events WHERE event_id = $1::uuid ORDER BY occurred_at",
    )
    .bind(&sent.event_id)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(times.len(), 2, "the same-timestamp retry stored once, the reuse once: {times:?}");
    pipeline.stop().await;
}
