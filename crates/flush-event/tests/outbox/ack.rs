//! Acking by hand-off, fenced by the claim's token.

use eye_test_support::TestDb;
use flush_event::{Error, Outbox, RetryOutcome};

use crate::{Job, config, enqueue, jobs, make_visible, outbox_rows, scalar};

#[tokio::test]
async fn ack_deletes_the_claimed_rows_when_its_transaction_commits() -> anyhow::Result<()> {
    let db = TestDb::new().await;
    enqueue(&db.pool, "s", &jobs(1..=3)).await?;
    let outbox = Outbox::new(db.pool.clone(), "s", config());
    let claimed = outbox.claim::<Job>().await?;
    assert_eq!(claimed.len(), 3);

    // A hand-off that rolls back acks nothing.
    let mut tx = db.pool.begin().await?;
    outbox.ack(&mut tx, &claimed).await?;
    tx.rollback().await?;
    assert_eq!(outbox_rows(&db.pool, "s").await?.len(), 3);

    let mut tx = db.pool.begin().await?;
    outbox.ack(&mut tx, &claimed[..2]).await?;
    assert_eq!(scalar(&db.pool, "SELECT count(*) FROM outbox").await, 3, "deleted before commit");
    tx.commit().await?;
    let left = outbox_rows(&db.pool, "s").await?;
    assert_eq!(left.iter().map(|r| r.id).collect::<Vec<_>>(), [claimed[2].id]);
    Ok(())
}

#[tokio::test]
async fn stale_fence_loses_the_lease_and_the_new_claimant_acks() -> anyhow::Result<()> {
    let db = TestDb::new().await;
    enqueue(&db.pool, "s", &jobs(1..=2)).await?;
    let outbox = Outbox::new(db.pool.clone(), "s", config());
    let old = outbox.claim::<Job>().await?;
    assert_eq!(old.len(), 2);

    // The old claim's lease on the first row runs out and another consumer takes it over.
    make_visible(&db.pool, &[old[0].id]).await?;
    let new = outbox.claim::<Job>().await?;
    assert_eq!(new.len(), 1);
    assert_eq!((new[0].id, new[0].fence), (old[0].id, old[0].fence + 1));

    // The old consumer's hand-off must fail and roll back: nothing is deleted.
    let mut tx = db.pool.begin().await?;
    match outbox.ack(&mut tx, &old).await {
        Err(Error::LeaseLost { expected: 2, matched: 1 }) => {}
        other => panic!("expected LeaseLost {{ 2, 1 }}, got {other:?}"),
    }
    tx.rollback().await?;
    let mut tx = db.pool.begin().await?;
    match outbox.ack(&mut tx, &old[..1]).await {
        Err(Error::LeaseLost { expected: 1, matched: 0 }) => {}
        other => panic!("expected LeaseLost {{ 1, 0 }}, got {other:?}"),
    }
    tx.commit().await?;
    assert_eq!(outbox_rows(&db.pool, "s").await?.len(), 2);

    // Its retry and dead-lettering of the row match nothing either.
    assert_eq!(outbox.retry(&old[0], "too late").await?, RetryOutcome::LeaseLost);
    assert!(!outbox.dead_letter(old[0].id, old[0].fence, "too late").await?);
    let row = &outbox_rows(&db.pool, "s").await?[0];
    assert_eq!((row.fence, row.last_error.as_deref()), (new[0].fence, None));
    assert_eq!(scalar(&db.pool, "SELECT count(*) FROM outbox_dead_letters").await, 0);

    // The new claimant owns the row: its ack succeeds.
    let mut tx = db.pool.begin().await?;
    outbox.ack(&mut tx, &new).await?;
    tx.commit().await?;
    let left = outbox_rows(&db.pool, "s").await?;
    assert_eq!(left.iter().map(|r| r.id).collect::<Vec<_>>(), [old[1].id]);
    Ok(())
}
