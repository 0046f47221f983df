//! `eye dlq list|replay`: the outbox's dead letters, through `eye_admin::dead_letters`.

use eye_admin::{
    dead_letters::{self, Selection},
    subscriptions,
};
use sqlx::PgPool;

use crate::{cli::DlqCommand, commands::format_time, database, table};

pub async fn run(pool: &PgPool, command: DlqCommand) -> anyhow::Result<()> {
    match command {
        DlqCommand::List { stage, subscription, limit, .. } => {
            let stage = stage_of(pool, stage, subscription).await?;
            let dead =
                dead_letters::list(pool, stage.as_deref(), limit).await.map_err(database::admin)?;
            if dead.is_empty() {
                println!("no dead letters");
                return Ok(());
            }
            let rows: Vec<[String; 5]> = dead
                .into_iter()
                .map(|d| {
                    [
                        d.id.to_string(),
                        d.stage,
                        d.attempts.to_string(),
                        format_time(d.dead_at),
                        d.last_error.replace('\n', " "),
                    ]
                })
                .collect();
            print!(
                "{}",
                table::render(["ID", "STAGE", "ATTEMPTS", "DEAD AT", "LAST ERROR"], &rows)
            );
            Ok(())
        }
        DlqCommand::Replay { stage, subscription, ids, all, .. } => {
            let stage = stage_of(pool, stage, subscription).await?;
            let selection =
                if all && ids.is_empty() { Selection::All } else { Selection::Ids(ids) };
            let replayed = dead_letters::replay(pool, stage.as_deref(), &selection)
                .await
                .map_err(database::admin)?;
            println!("{replayed} dead letter(s) replayed into their stage");
            Ok(())
        }
    }
}

/// The stage to look at: `--stage`, or the one of `--subscription`.
async fn stage_of(
    pool: &PgPool,
    stage: Option<String>,
    subscription: Option<String>,
) -> anyhow::Result<Option<String>> {
    Ok(match subscription {
        Some(name) => Some(subscriptions::get(pool, &name).await.map_err(database::admin)?.stage()),
        None => stage,
    })
}
