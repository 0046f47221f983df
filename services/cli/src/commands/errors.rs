//! `eye errors`: quarantined events (newest first) and how many there are per reason.
//!
//! The counts cover every error matching the filter, not only the ones printed. With `--json`,
//! one line per error (`"kind": "error"`), then one per reason (`"kind": "reason_count"`).

use eye_proto::v1::{ErrorFilter, ReplayOutcome};
use serde_json::json;

use super::read::{self, ERROR_HEADER};
use crate::{
    cli::{ErrorSelection, ErrorsArgs, OutcomeArg},
    table,
};

/// The request filter of the selection flags.
pub fn filter(selection: &ErrorSelection) -> ErrorFilter {
    ErrorFilter {
        reason: selection.reason.clone().unwrap_or_default(),
        category: selection.category.clone().unwrap_or_default(),
        name: selection.name.clone().unwrap_or_default(),
        application: selection.application.clone().unwrap_or_default(),
        ..ErrorFilter::default()
    }
}

pub fn outcome(arg: OutcomeArg) -> ReplayOutcome {
    match arg {
        OutcomeArg::NotReplayed => ReplayOutcome::NotReplayed,
        OutcomeArg::Pending => ReplayOutcome::Pending,
        OutcomeArg::Stored => ReplayOutcome::Stored,
        OutcomeArg::StillInvalid => ReplayOutcome::StillInvalid,
    }
}

/// Runs `eye errors`.
pub async fn run(args: ErrorsArgs) -> anyhow::Result<()> {
    let client = read::connect(&args.query).await?;
    let filter = ErrorFilter {
        from: args.since.map(event_model::envelope::to_timestamp),
        replay_outcomes: args.outcomes.iter().map(|o| outcome(*o).into()).collect(),
        ..filter(&args.selection)
    };
    let (listing, counts) = client
        .list_errors(filter, args.limit as usize)
        .await
        .map_err(|status| read::refused(&args.query, &status))?;
    let mut out = String::new();
    if args.query.json {
        for error in &listing.items {
            read::push_json(&mut out, &read::error_json(error));
        }
        for count in &counts {
            let line =
                json!({"kind": "reason_count", "reason": count.reason, "count": count.count});
            read::push_json(&mut out, &line);
        }
    } else if listing.items.is_empty() {
        out.push_str("no quarantined events match\n");
    } else {
        let rows: Vec<_> = listing.items.iter().map(read::error_row).collect();
        out.push_str(&table::render(ERROR_HEADER, &rows));
        out.push('\n');
        let rows: Vec<_> =
            counts.iter().map(|count| [count.reason.clone(), count.count.to_string()]).collect();
        out.push_str(&table::render(["REASON", "COUNT"], &rows));
    }
    read::emit(&out)?;
    if listing.truncated {
        let total: i64 = counts.iter().map(|count| count.count).sum();
        eprintln!(
            "(the newest {} of {total} errors: raise --limit or narrow the filter)",
            listing.items.len()
        );
    }
    Ok(())
}
