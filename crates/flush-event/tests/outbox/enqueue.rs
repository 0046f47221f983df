//! Enqueueing inside the caller's transaction.

use std::time::Duration;

use eye_test_support::TestDb;
use flush_event::{
    CHANNEL, Headers, Outbox, flush_event, flush_events, flush_events_unannounced, wake,
};
use sqlx::postgres::PgListener;

use crate::{Job, config, job, scalar};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn traced() -> Headers {
    Headers::from([
        ("traceparent".to_owned(), TRACEPARENT.to_owned()),
        ("tracestate".to_owned(), "eye=1".to_owned()),
    ])
}

#[tokio::test]
async fn rolled_back_transaction_queues_nothing() -> anyhow::Result<()> {
    let db = TestDb::new().await;
    let mut tx = db.pool.begin().await?;
    flush_event(&mut tx, "orders", &job(1), &traced()).await?;
    let written = flush_events(&mut tx, "orders", [(&job(2), &traced())]).await?;
    assert_eq!(written, 1);
    tx.rollback().await?;

    assert_eq!(scalar(&db.pool, "SELECT count(*) FROM outbox").await, 0);
    assert!(Outbox::new(db.pool.clone(), "orders", config()).claim::<Job>().await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn committed_rows_appear_on_commit_with_their_headers() -> anyhow::Result<()> {
    let db = TestDb::new().await;
    let untraced = Headers::new();
    let mut tx = db.pool.begin().await?;
    flush_event(&mut tx, "orders", &job(1), &traced()).await?;
    let written =
        flush_events(&mut tx, "orders", [(&job(2), &untraced), (&job(3), &traced())]).await?;
    assert_eq!(written, 2);
    assert_eq!(flush_events::<Job>(&mut tx, "orders", []).await?, 0);
    // Not visible outside the transaction until it commits.
    assert_eq!(scalar(&db.pool, "SELECT count(*) FROM outbox").await, 0);
    tx.commit().await?;

    let stored: Vec<serde_json::Value> =
        sqlx::query_scalar("SELECT headers FROM outbox ORDER BY id").fetch_all(&db.pool).await?;
    assert_eq!(stored[0]["traceparent"], TRACEPARENT);
    assert_eq!(stored[1], serde_json::json!({}));

    let claimed = Outbox::new(db.pool.clone(), "orders", config()).claim::<Job>().await?;
    let got: Vec<(u64, Headers)> = claimed.into_iter().map(|c| (c.body.n, c.headers)).collect();
    assert_eq!(got, [(1, traced()), (2, untraced), (3, traced())]);
    Ok(())
}

#[tokio::test]
async fn commit_notifies_the_stage_once_and_rollback_not_at_all() -> anyhow::Result<()> {
    let db = TestDb::new().await;
    let mut listener = PgListener::connect_with(&db.pool).await?;
    listener.listen(CHANNEL).await?;
    let many = [job(1), job(2), job(3)];
    let headers = Headers::new();

    let mut tx = db.pool.begin().await?;
    flush_event(&mut tx, "rolled-back", &job(0), &headers).await?;
    tx.rollback().await?;
    for stage in ["first", "second"] {
        let mut tx = db.pool.begin().await?;
        flush_events(&mut tx, stage, many.iter().map(|job| (job, &headers))).await?;
        flush_event(&mut tx, stage, &job(4), &headers).await?;
        tx.commit().await?;
    }

    // Notifications arrive in commit order: the rolled-back one never, each commit's just once.
    for expected in ["first", "second"] {
        let notification = tokio::time::timeout(Duration::from_secs(10), listener.recv())
            .await
            .expect("a notification within 10 s")?;
        assert_eq!(notification.payload(), expected);
    }
    Ok(())
}

#[tokio::test]
async fn unannounced_rows_are_enqueued_without_a_notification_until_woken() -> anyhow::Result<()> {
    let db = TestDb::new().await;
    let mut listener = PgListener::connect_with(&db.pool).await?;
    listener.listen(CHANNEL).await?;
    let headers = Headers::new();

    let mut tx = db.pool.begin().await?;
    let jobs = [job(1), job(2)];
    let enqueued =
        flush_events_unannounced(&mut tx, "quiet", jobs.iter().map(|job| (job, &headers))).await?;
    tx.commit().await?;
    assert_eq!(enqueued, 2);
    let rows = scalar(&db.pool, "SELECT count(*) FROM outbox WHERE stage = 'quiet'").await;
    assert_eq!(rows, 2);
    // Then an announced commit and the wake-up: notifications arrive in commit order, so the
    // quiet commit, which came first, would have been received first had it sent one.
    let mut tx = db.pool.begin().await?;
    flush_event(&mut tx, "loud", &job(3), &headers).await?;
    tx.commit().await?;
    wake(&db.pool, "quiet").await?;
    for expected in ["loud", "quiet"] {
        let notification = tokio::time::timeout(Duration::from_secs(10), listener.recv())
            .await
            .expect("a notification within 10 s")?;
        assert_eq!(notification.payload(), expected);
    }
    Ok(())
}
