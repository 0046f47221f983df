//! The outbox's dead letters: rows that failed `max_attempts` times, kept with their last error
//! until an operator replays them (after fixing the cause) into their stage.

use flush_event::admin::DeadLetter;
use sqlx::PgPool;

use crate::AdminError;

/// Dead letters, newest first, optionally of one stage; `limit` at least 1.
pub async fn list(
    pool: &PgPool,
    stage: Option<&str>,
    limit: i64,
) -> Result<Vec<DeadLetter>, AdminError> {
    if limit < 1 {
        return Err(AdminError::Invalid("--limit must be at least 1".into()));
    }
    Ok(flush_event::admin::list_dead_letters(pool, stage, limit).await?)
}

/// What to replay: the dead letters named by id, or all of them (of `stage`, if given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    Ids(Vec<i64>),
    All,
}

/// Moves the selected dead letters back into their stage with fresh attempts; returns how many.
pub async fn replay(
    pool: &PgPool,
    stage: Option<&str>,
    selection: &Selection,
) -> Result<u64, AdminError> {
    let ids: &[i64] = match selection {
        Selection::Ids(ids) if ids.is_empty() => {
            return Err(AdminError::Invalid(
                "name dead letters with --id ID (repeatable), or replay them all with --all".into(),
            ));
        }
        Selection::Ids(ids) => ids,
        Selection::All => &[],
    };
    Ok(flush_event::admin::replay_dead_letters(pool, stage, ids).await?)
}
