//! `eye maintenance`: runs the store's upkeep once, as every writer does on its own every
//! `store.maintenance_interval_ms` (`eye_admin::maintenance`): partitions ahead of need,
//! retention (`store.retention`), the dedup window (`store.dedup_window_days`).

use eye_admin::maintenance::{self, Policy};
use eye_service::Settings;
use sqlx::PgPool;

use crate::database;

pub async fn run(pool: &PgPool, settings: &Settings, json: bool) -> anyhow::Result<()> {
    let policy = Policy::from_settings(&settings.store);
    let report =
        maintenance::run(pool, &policy, chrono::Utc::now()).await.map_err(database::admin)?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    if !report.ran {
        println!("another process (a writer) is running the upkeep right now; nothing done");
        return Ok(());
    }
    match report.cutoff {
        Some(cutoff) => println!(
            "retention: events before {} are past it (store.retention = {})",
            super::format_time(cutoff),
            settings.store.retention.as_deref().unwrap_or_default()
        ),
        None => println!("retention: none (store.retention is unset): events are kept forever"),
    }
    let list =
        |names: &[String]| if names.is_empty() { "none".to_owned() } else { names.join(", ") };
    println!("dropped partitions: {}", list(&report.dropped_partitions));
    println!(
        "sessions recomputed: {} ({} removed, no events left)",
        report.sessions_recomputed, report.sessions_removed
    );
    println!(
        "deleted: {} quarantined event(s), {} dead letter(s)",
        report.errors_deleted, report.dead_letters_deleted
    );
    println!(
        "dedup window: {} days; dropped ledger slices: {}",
        policy.dedup_window_days,
        list(&report.dropped_ledger_slices)
    );
    Ok(())
}
