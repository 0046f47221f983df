//! `eye stats`: queue depth and lag per outbox stage, dead letters, and events stored and
//! quarantined over a window ending now.
//!
//! With `--json`, one line (`"kind": "stats"`) holding the totals, the counts per reason and the
//! stages.

use std::time::Duration;

use serde_json::json;

use super::read;
use crate::{
    cli::StatsArgs,
    table,
    time::{format_duration, format_precise},
};

/// Runs `eye stats`.
pub async fn run(args: StatsArgs) -> anyhow::Result<()> {
    let client = read::connect(&args.query).await?;
    let stats = client
        .stats(Some(args.window))
        .await
        .map_err(|status| read::refused(&args.query, &status))?;
    let lag = |lag: Option<&prost_types::Duration>| {
        lag.and_then(|lag| Duration::try_from(*lag).ok()).unwrap_or_default()
    };
    let since = read::time(stats.since.as_ref());
    if args.query.json {
        let by_reason: serde_json::Map<String, serde_json::Value> =
            stats.errors_by_reason.iter().map(|c| (c.reason.clone(), c.count.into())).collect();
        let stages: Vec<_> = stats
            .stages
            .iter()
            .map(|stage| {
                json!({
                    "stage": stage.stage,
                    "depth": stage.depth,
                    "in_flight": stage.in_flight,
                    "lag_seconds": lag(stage.lag.as_ref()).as_secs_f64(),
                    "dead_letters": stage.dead_letters,
                })
            })
            .collect();
        let mut out = String::new();
        read::push_json(
            &mut out,
            &json!({
                "kind": "stats",
                "since": since.map(format_precise),
                "window_seconds": args.window.as_secs(),
                "events_stored": stats.events_stored,
                "errors": stats.errors,
                "errors_by_reason": by_reason,
                "dead_letters": stats.dead_letters,
                "stages": stages,
            }),
        );
        read::emit(&out)?;
        return Ok(());
    }
    let reasons: Vec<String> =
        stats.errors_by_reason.iter().map(|c| format!("{} {}", c.reason, c.count)).collect();
    let mut out = format!(
        "last {} (since {}): {} events stored, {} errors{}, {} dead letters\n",
        format_duration(args.window),
        since.map_or_else(|| "-".to_owned(), crate::time::format_millis),
        stats.events_stored,
        stats.errors,
        if reasons.is_empty() { String::new() } else { format!(" ({})", reasons.join(", ")) },
        stats.dead_letters,
    );
    let rows: Vec<_> = stats
        .stages
        .iter()
        .map(|stage| {
            [
                stage.stage.clone(),
                stage.depth.to_string(),
                stage.in_flight.to_string(),
                format_duration(lag(stage.lag.as_ref())),
                stage.dead_letters.to_string(),
            ]
        })
        .collect();
    out.push_str(&table::render(["STAGE", "DEPTH", "IN FLIGHT", "LAG", "DEAD LETTERS"], &rows));
    read::emit(&out)?;
    Ok(())
}
