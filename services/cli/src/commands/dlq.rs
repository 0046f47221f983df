//! `eye dlq list|replay`: the outbox's dead letters, through `flush_event::admin`.

use anyhow::bail;
use sqlx::PgPool;

use crate::{cli::DlqCommand, commands::format_time, table};

pub async fn run(pool: &PgPool, command: DlqCommand) -> anyhow::Result<()> {
    match command {
        DlqCommand::List { stage, limit } => {
            if limit < 1 {
                bail!("--limit must be at least 1");
            }
            let dead = flush_event::admin::list_dead_letters(pool, stage.as_deref(), limit).await?;
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
        DlqCommand::Replay { stage, ids, all } => {
            if ids.is_empty() && !all {
                bail!("name dead letters with --id ID (repeatable), or replay them all with --all");
            }
            let replayed =
                flush_event::admin::replay_dead_letters(pool, stage.as_deref(), &ids).await?;
            println!("{replayed} dead letter(s) replayed into their stage");
            Ok(())
        }
    }
}
