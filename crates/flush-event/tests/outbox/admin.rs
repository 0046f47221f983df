//! Operating the outbox: stage statistics, dead-letter listing and replay.

use eye_test_support::TestDb;
use flush_event::{
    Outbox, OutboxConfig, RetryOutcome,
    admin::{list_dead_letters, replay_dead_letters, stage_stats},
};

use crate::{Job, config, dead_rows, enqueue, jobs, outbox_rows};

/// Claims every row of `stage` and fails it for good (one attempt allowed): "boom <n>".
async fn dead_letter_all(outbox: &Outbox) -> anyhow::Result<Vec<i64>> {
    let mut ids = Vec::new();
    for row in outbox.claim::<Job>().await? {
        let outcome = outbox.retry(&row, &format!("boom {}", row.body.n)).await?;
        assert_eq!(outcome, RetryOutcome::DeadLettered);
        ids.push(row.id);
    }
    Ok(ids)
}

#[tokio::test]
async fn stats_list_and_replay_of_dead_letters() -> anyhow::Result<()> {
    let db = TestDb::new().await;
    let pool = &db.pool;
    let fatal = OutboxConfig { max_attempts: 1, ..config() };
    enqueue(pool, "beta", &jobs(1..=2)).await?;
    enqueue(pool, "gamma", &jobs([3])).await?;
    let beta = Outbox::new(pool.clone(), "beta", fatal.clone());
    let gamma = Outbox::new(pool.clone(), "gamma", fatal.clone());
    let beta_dead = dead_letter_all(&beta).await?;
    let gamma_dead = dead_letter_all(&gamma).await?;
    assert_eq!((beta_dead.len(), gamma_dead.len()), (2, 1));

    // "alpha": three rows, one in flight, the oldest a minute old.
    enqueue(pool, "alpha", &jobs(10..=12)).await?;
    sqlx::query(
        "UPDATE outbox SET created_at = now() - interval '60 seconds' \
         WHERE id = (SELECT min(id) FROM outbox WHERE stage = 'alpha')",
    )
    .execute(pool)
    .await?;
    let alpha = Outbox::new(pool.clone(), "alpha", OutboxConfig { batch_size: 1, ..config() });
    assert_eq!(alpha.claim::<Job>().await?.len(), 1);

    let stats = stage_stats(pool).await?;
    let summary: Vec<(&str, i64, i64, i64)> =
        stats.iter().map(|s| (s.stage.as_str(), s.depth, s.in_flight, s.dead_letters)).collect();
    assert_eq!(summary, [("alpha", 3, 1, 0), ("beta", 0, 0, 2), ("gamma", 0, 0, 1)]);
    assert!((60.0..120.0).contains(&stats[0].oldest_age_seconds), "{stats:?}");
    assert_eq!((stats[1].oldest_age_seconds, stats[2].oldest_age_seconds), (0.0, 0.0));

    // Newest first, filtered by stage, limited.
    let all = list_dead_letters(pool, None, 10).await?;
    let listed: Vec<(i64, &str, i32, &str)> =
        all.iter().map(|d| (d.id, d.stage.as_str(), d.attempts, d.last_error.as_str())).collect();
    assert_eq!(
        listed,
        [
            (gamma_dead[0], "gamma", 1, "boom 3"),
            (beta_dead[1], "beta", 1, "boom 2"),
            (beta_dead[0], "beta", 1, "boom 1"),
        ]
    );
    let of_beta = list_dead_letters(pool, Some("beta"), 10).await?;
    assert_eq!(of_beta.iter().map(|d| d.id).collect::<Vec<_>>(), [beta_dead[1], beta_dead[0]]);
    assert_eq!(list_dead_letters(pool, None, 1).await?, all[..1]);

    // Replay one by id, then the rest of the stage; another stage's dead letters stay put.
    assert_eq!(replay_dead_letters(pool, Some("beta"), &[beta_dead[0]]).await?, 1);
    assert_eq!(replay_dead_letters(pool, Some("beta"), &[beta_dead[0]]).await?, 0);
    assert_eq!(replay_dead_letters(pool, Some("beta"), &[]).await?, 1);
    let dead = dead_rows(pool).await?;
    assert_eq!(dead.iter().map(|d| d.id).collect::<Vec<_>>(), gamma_dead);

    let replayed = outbox_rows(pool, "beta").await?;
    assert_eq!(replayed.len(), 2);
    for row in &replayed {
        assert_eq!(row.attempts, 0, "{row:?}");
        assert!(row.last_error.as_deref().is_some_and(|e| e.starts_with("boom")), "{row:?}");
    }

    // With a fresh attempt count they are processed, even where one attempt is all there is.
    let claimed = beta.claim::<Job>().await?;
    assert_eq!(
        claimed.iter().map(|c| (c.body.n, c.attempts)).collect::<Vec<_>>(),
        [(1, 1), (2, 1)]
    );
    let mut tx = pool.begin().await?;
    beta.ack(&mut tx, &claimed).await?;
    tx.commit().await?;
    assert!(outbox_rows(pool, "beta").await?.is_empty());
    assert_eq!(replay_dead_letters(pool, None, &[]).await?, 1);
    assert_eq!(outbox_rows(pool, "gamma").await?.len(), 1);
    Ok(())
}
