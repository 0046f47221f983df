//! Claiming under a lease, and what a claim dead-letters instead of returning.

use std::collections::BTreeSet;

use chrono::TimeDelta;
use eye_test_support::TestDb;
use flush_event::{Outbox, OutboxConfig};

use crate::{
    Job, config, db_now, dead_rows, enqueue, job, jobs, make_visible, outbox_rows, scalar,
};

#[tokio::test]
async fn claim_takes_the_oldest_visible_rows_up_to_batch_size_under_a_lease() -> anyhow::Result<()>
{
    let db = TestDb::new().await;
    enqueue(&db.pool, "s", &jobs(1..=5)).await?;
    enqueue(&db.pool, "other", &jobs([99])).await?;
    let config = OutboxConfig { batch_size: 3, ..config() };
    let outbox = Outbox::new(db.pool.clone(), "s", config.clone());

    let before = db_now(&db.pool).await?;
    let first = outbox.claim::<Job>().await?;
    let after = db_now(&db.pool).await?;
    assert_eq!(first.iter().map(|c| c.body.n).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(first.iter().all(|c| c.attempts == 1 && c.fence == 1), "{first:?}");

    let lease = TimeDelta::from_std(config.lease)?;
    let rows = outbox_rows(&db.pool, "s").await?;
    for row in &rows[..3] {
        assert_eq!((row.attempts, row.fence), (1, 1));
        assert!(
            row.visible_at >= before + lease && row.visible_at <= after + lease,
            "lease of {row:?} not in [{before} + {lease}, {after} + {lease}]"
        );
    }
    assert!(rows[3..].iter().all(|row| row.attempts == 0 && row.fence == 0), "{rows:?}");

    // Claimed rows are hidden; the rest come next; then nothing is left to claim.
    let second = outbox.claim::<Job>().await?;
    assert_eq!(second.iter().map(|c| c.body.n).collect::<Vec<_>>(), [4, 5]);
    assert!(outbox.claim::<Job>().await?.is_empty());
    // Another stage's rows were never touched.
    let other = outbox_rows(&db.pool, "other").await?;
    assert_eq!((other.len(), other[0].attempts), (1, 0));

    // Once a lease runs out, the next claim takes the row again with a new fence.
    make_visible(&db.pool, &[first[0].id]).await?;
    let again = outbox.claim::<Job>().await?;
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].attempts, again[0].fence), (first[0].id, 2, 2));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_take_disjoint_batches_that_cover_every_row() -> anyhow::Result<()> {
    const ROWS: u64 = 500;
    let db = TestDb::new().await;
    enqueue(&db.pool, "s", &jobs(0..ROWS)).await?;
    let outbox = Outbox::new(db.pool.clone(), "s", OutboxConfig { batch_size: 7, ..config() });

    let claimers: Vec<_> = (0..2)
        .map(|_| {
            let outbox = outbox.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let batch = outbox.claim::<Job>().await?;
                    assert!(batch.len() <= 7, "a claim took {} rows", batch.len());
                    if batch.is_empty() {
                        return anyhow::Ok(mine);
                    }
                    mine.extend(batch.into_iter().map(|c| c.body.n));
                }
            })
        })
        .collect();
    let mut claimed = Vec::new();
    for claimer in claimers {
        claimed.push(claimer.await??);
    }

    let (a, b): (BTreeSet<u64>, BTreeSet<u64>) =
        (claimed[0].iter().copied().collect(), claimed[1].iter().copied().collect());
    assert_eq!(a.len() + b.len(), claimed[0].len() + claimed[1].len(), "a claimer got a row twice");
    assert!(a.is_disjoint(&b), "both claimed {:?}", a.intersection(&b).collect::<Vec<_>>());
    assert_eq!(a.union(&b).copied().collect::<BTreeSet<_>>(), (0..ROWS).collect());
    assert_eq!(
        scalar(&db.pool, "SELECT count(*) FROM outbox WHERE attempts <> 1 OR fence <> 1").await,
        0,
        "every row claimed exactly once"
    );
    Ok(())
}

#[tokio::test]
async fn undecodable_body_is_dead_lettered_by_claim_without_blocking_the_rest() -> anyhow::Result<()>
{
    let db = TestDb::new().await;
    enqueue(&db.pool, "s", &[job(1)]).await?;
    // Field 1 with wire type 7, which does not exist: no message decodes from this.
    let bad: i64 =
        sqlx::query_scalar("INSERT INTO outbox (stage, body) VALUES ('s', '\\x0f') RETURNING id")
            .fetch_one(&db.pool)
            .await?;
    enqueue(&db.pool, "s", &[job(2)]).await?;

    let claimed = Outbox::new(db.pool.clone(), "s", config()).claim::<Job>().await?;
    assert_eq!(claimed.iter().map(|c| c.body.n).collect::<Vec<_>>(), [1, 2]);

    let dead = dead_rows(&db.pool).await?;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!((dead[0].id, dead[0].stage.as_str(), dead[0].attempts), (bad, "s", 1));
    assert_eq!(dead[0].body, [0x0f]);
    assert!(dead[0].last_error.starts_with("undecodable body"), "{}", dead[0].last_error);
    let left: Vec<i64> = outbox_rows(&db.pool, "s").await?.iter().map(|r| r.id).collect();
    assert!(!left.contains(&bad) && left.len() == 2, "{left:?}");
    Ok(())
}

#[tokio::test]
async fn row_abandoned_max_attempts_times_is_dead_lettered_by_claim() -> anyhow::Result<()> {
    let db = TestDb::new().await;
    let config = config();
    let outbox = Outbox::new(db.pool.clone(), "s", config.clone());
    enqueue(&db.pool, "s", &[job(1)]).await?;

    // The first consumer fails and records an error; the next ones die without a word.
    for attempt in 1..=config.max_attempts {
        let claimed = outbox.claim::<Job>().await?;
        assert_eq!(claimed.len(), 1, "claim {attempt}");
        assert_eq!(claimed[0].attempts, attempt);
        if attempt == 1 {
            outbox.retry(&claimed[0], "connection reset").await?;
        }
        make_visible(&db.pool, &[claimed[0].id]).await?;
    }
    enqueue(&db.pool, "s", &[job(2)]).await?;

    let claimed = outbox.claim::<Job>().await?;
    assert_eq!(claimed.iter().map(|c| c.body.n).collect::<Vec<_>>(), [2]);
    let dead = dead_rows(&db.pool).await?;
    assert_eq!(dead.len(), 1, "{dead:?}");
    // `attempts` counts claims, the one that dead-lettered the row included.
    assert_eq!(dead[0].attempts, config.max_attempts + 1);
    assert!(
        dead[0].last_error.contains("abandoned") && dead[0].last_error.contains("connection reset"),
        "{}",
        dead[0].last_error
    );
    assert_eq!(outbox_rows(&db.pool, "s").await?.len(), 1);
    Ok(())
}
