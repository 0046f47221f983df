//! `eye session ID`: a session's summary, then its events in time order.
//!
//! With `--json`, the first line is the summary (`"kind": "session"`), then one line per event.

use std::fmt::Write as _;

use serde_json::json;

use super::read::{self, EVENT_HEADER};
use crate::{cli::SessionArgs, table};

/// Runs `eye session`.
pub async fn run(args: SessionArgs) -> anyhow::Result<()> {
    let client = read::connect(&args.query).await?;
    let (summary, listing) = client
        .session(&args.session.to_string(), args.limit as usize)
        .await
        .map_err(|status| read::refused(&args.query, &status))?;
    let first = read::time(summary.first_seen_at.as_ref());
    let last = read::time(summary.last_seen_at.as_ref());
    let mut out = String::new();
    if args.query.json {
        read::push_json(
            &mut out,
            &json!({
                "kind": "session",
                "session_id": summary.session_id,
                "first_seen_at": first.map(crate::time::format_precise),
                "last_seen_at": last.map(crate::time::format_precise),
                "event_count": summary.event_count,
                "application_ids": summary.application_ids,
            }),
        );
        for event in &listing.items {
            read::push_json(&mut out, &read::event_json(event));
        }
    } else {
        let span = match (first, last) {
            (Some(first), Some(last)) => format!(
                " from {} to {} ({})",
                crate::time::format_millis(first),
                crate::time::format_millis(last),
                crate::time::format_duration((last - first).to_std().unwrap_or_default()),
            ),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "session {}: {} event(s){span}; application(s) {}",
            summary.session_id,
            summary.event_count,
            summary.application_ids.join(", ")
        );
        let rows: Vec<_> = listing.items.iter().map(read::event_row).collect();
        out.push_str(&table::render(EVENT_HEADER, &rows));
    }
    read::emit(&out)?;
    if listing.truncated {
        eprintln!(
            "(the first {} of {} events: raise --limit to see more)",
            listing.items.len(),
            summary.event_count
        );
    }
    Ok(())
}
