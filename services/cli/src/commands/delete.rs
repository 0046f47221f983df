//! `eye delete`: a data subject's events removed everywhere, with a receipt
//! (`eye_admin::deletion`, which QueryService's `DeleteEvents` calls too); `eye deletions`
//! lists the receipts.

use anyhow::{Context, bail};
use eye_admin::deletion::{self, Receipt, Subject};
use sqlx::PgPool;

use crate::{cli::DeleteArgs, database, table};

/// Who asks, as the receipt records it: the operating-system user of the CLI.
fn requester() -> String {
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME"));
    format!("cli:{}", user.as_deref().unwrap_or("unknown"))
}

pub async fn run(pool: &PgPool, args: DeleteArgs) -> anyhow::Result<()> {
    let contains = args
        .contains
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .context("--contains: not JSON")?;
    if args.application.is_some() && args.session.is_none() && contains.is_none() && !args.yes {
        bail!(
            "this deletes every event of application `{}`; add --yes to confirm",
            args.application.as_deref().unwrap_or_default()
        );
    }
    let subject = Subject { session: args.session, application: args.application, contains };
    let receipt = deletion::delete(pool, &subject, &requester(), args.suppress)
        .await
        .map_err(database::admin)?;
    if args.json {
        println!("{}", serde_json::to_string(&receipt)?);
        return Ok(());
    }
    let c = &receipt.counts;
    println!(
        "deleted {} stored event(s), {} quarantined, {} waiting in the outbox, {} in dead letters",
        c.events, c.event_errors, c.outbox_events, c.dead_letter_events
    );
    println!(
        "sessions: {} recomputed, {} removed; exported hours to rewrite: {}{}",
        c.sessions_recomputed,
        c.sessions_removed,
        c.export_hours,
        if c.export_hours > 0 { " (run `eye export` to the same destination)" } else { "" }
    );
    if receipt.suppressed {
        println!("later events that match are refused at validation (reason `suppressed`)");
    }
    println!("receipt {} (filter digest {})", receipt.id, receipt.filter_digest);
    Ok(())
}

pub async fn list(pool: &PgPool, limit: i64, json: bool) -> anyhow::Result<()> {
    let receipts = deletion::receipts(pool, limit).await.map_err(database::admin)?;
    if json {
        for receipt in &receipts {
            println!("{}", serde_json::to_string(receipt)?);
        }
        return Ok(());
    }
    if receipts.is_empty() {
        println!("no deletions yet");
        return Ok(());
    }
    let rows: Vec<[String; 6]> = receipts.iter().map(row).collect();
    print!(
        "{}",
        table::render(["ID", "REQUESTED_AT", "BY", "FILTER", "EVENTS", "FINISHED_AT"], &rows)
    );
    Ok(())
}

fn row(receipt: &Receipt) -> [String; 6] {
    [
        receipt.id.to_string(),
        super::format_time(receipt.requested_at),
        receipt.requested_by.clone(),
        receipt.filter_kinds.join("+") + if receipt.suppressed { " (suppressed)" } else { "" },
        (receipt.counts.events + receipt.counts.event_errors).to_string(),
        receipt.finished_at.map(super::format_time).unwrap_or_else(|| "unfinished".into()),
    ]
}
