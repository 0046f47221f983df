//! Retrying with backoff, and dead-lettering after `max_attempts`.

use chrono::TimeDelta;
use eye_test_support::TestDb;
use flush_event::{Outbox, OutboxConfig, RetryOutcome};

use crate::{Job, config, db_now, dead_rows, enqueue, job, make_visible, outbox_rows, scalar};

#[tokio::test]
async fn retry_backs_off_more_each_attempt_then_dead_letters() -> anyhow::Result<()> {
    let db = TestDb::new().await;
    // Ceilings of 10 s, 20 s, 40 s: disjoint jitter ranges [5, 10], [10, 20], [20, 40] s.
    let config = OutboxConfig { max_attempts: 4, ..config() };
    let outbox = Outbox::new(db.pool.clone(), "s", config.clone());
    enqueue(&db.pool, "s", &[job(1)]).await?;

    let mut delays = Vec::new();
    for attempt in 1..config.max_attempts {
        let claimed = outbox.claim::<Job>().await?;
        assert_eq!(claimed.len(), 1, "claim {attempt}");
        assert_eq!(claimed[0].attempts, attempt);
        let error = format!("failure {attempt}");

        let before = db_now(&db.pool).await?;
        let outcome = outbox.retry(&claimed[0], &error).await?;
        let after = db_now(&db.pool).await?;

        let ceiling = config.backoff_ceiling(attempt);
        let RetryOutcome::Retried(delay) = outcome else {
            panic!("attempt {attempt}: expected a retry, got {outcome:?}");
        };
        assert!(delay >= ceiling / 2 && delay <= ceiling, "{delay:?} vs ceiling {ceiling:?}");
        // The row is visible again `delay` after the retry's `now()`, with its error recorded.
        let row = outbox_rows(&db.pool, "s").await?.remove(0);
        let retried_at = row.visible_at - TimeDelta::milliseconds(delay.as_millis() as i64);
        assert!(before <= retried_at && retried_at <= after, "{row:?}: delay {delay:?} from when?");
        assert_eq!(row.last_error.as_deref(), Some(error.as_str()));
        assert!(outbox.claim::<Job>().await?.is_empty(), "claimed during its backoff");
        delays.push(delay);

        make_visible(&db.pool, &[row.id]).await?;
    }
    assert!(delays.windows(2).all(|w| w[0] <= w[1]), "backoff did not grow: {delays:?}");

    let last = outbox.claim::<Job>().await?;
    assert_eq!(last[0].attempts, config.max_attempts);
    assert_eq!(outbox.retry(&last[0], "failure 4").await?, RetryOutcome::DeadLettered);

    assert_eq!(scalar(&db.pool, "SELECT count(*) FROM outbox").await, 0);
    let dead = dead_rows(&db.pool).await?;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!((dead[0].id, dead[0].attempts), (last[0].id, config.max_attempts));
    assert_eq!(dead[0].last_error, "failure 4");
    Ok(())
}
