//! `eye replay`: sends quarantined events back through validation, typically after a schema fix
//! (`eye schemas put`), and prints how many went.
//!
//! Selecting by filter (`--reason`, `--category`, `--name`, `--application`, or `--all`) replays
//! every matching error that is not stored yet, in calls of [`PER_CALL`] (one transaction each),
//! until none is left or `--limit` is reached. Two bounds make that loop end even while the
//! validator works through the replayed events: only errors that failed before the command
//! started (by this machine's clock) are selected, and an event that fails again gets a new
//! failure time, so one run never picks it twice; errors already stored or in flight (`pending`)
//! are skipped.
//!
//! Selecting by id (`--id`) replays exactly those (any state but `pending`), restricted by the
//! filter flags if any are given.

use anyhow::bail;
use chrono::Utc;
use eye_proto::v1::{ErrorFilter, ReplayErrorsRequest, ReplayOutcome};
use serde_json::json;

use super::{errors, read};
use eye_client::QueryClient;

use crate::cli::ReplayArgs;

/// Errors replayed per call (and per transaction) when selecting by filter.
pub const PER_CALL: u64 = 1_000;
/// Most ids in one call (the server's limit).
pub const MAX_IDS_PER_CALL: usize = 10_000;

/// What a replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replayed {
    pub events: u64,
    pub batches: u64,
}

/// Replays the errors `args` select.
pub async fn replay(client: &QueryClient, args: &ReplayArgs) -> Result<Replayed, tonic::Status> {
    let limit = args.limit.unwrap_or(u64::MAX);
    let mut done = Replayed::default();
    let filter = errors::filter(&args.selection);
    if !args.ids.is_empty() {
        for ids in args.ids.chunks(MAX_IDS_PER_CALL) {
            let want = (ids.len() as u64).min(limit - done.events);
            if want == 0 {
                break;
            }
            let request = ReplayErrorsRequest {
                error_ids: ids.to_vec(),
                filter: Some(filter.clone()),
                limit: want as i32,
            };
            add(&mut done, client.replay_errors(request).await?);
        }
        return Ok(done);
    }
    let filter = ErrorFilter {
        to: Some(event_model::envelope::to_timestamp(Utc::now())),
        replay_outcomes: vec![
            ReplayOutcome::NotReplayed.into(),
            ReplayOutcome::StillInvalid.into(),
        ],
        ..filter
    };
    while done.events < limit {
        let want = PER_CALL.min(limit - done.events);
        let request = ReplayErrorsRequest {
            error_ids: Vec::new(),
            filter: Some(filter.clone()),
            limit: want as i32,
        };
        let response = client.replay_errors(request).await?;
        let replayed = response.replayed as u64;
        add(&mut done, response);
        if replayed < want {
            break;
        }
    }
    Ok(done)
}

fn add(done: &mut Replayed, response: eye_proto::v1::ReplayErrorsResponse) {
    done.events += response.replayed as u64;
    done.batches += response.batches as u64;
}

/// Runs `eye replay`.
pub async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let selection = &args.selection;
    let selects = selection.reason.is_some()
        || selection.category.is_some()
        || selection.name.is_some()
        || selection.application.is_some();
    if !selects && args.ids.is_empty() && !args.all {
        bail!(
            "say which errors to replay: --reason, --category, --name, --application, --id, or \
             --all for every quarantined event not stored yet"
        );
    }
    let client = read::connect(&args.query).await?;
    let done =
        replay(&client, &args).await.map_err(|status| read::refused(&args.query, &status))?;
    let mut out = String::new();
    if args.query.json {
        let line = json!({"kind": "replay", "replayed": done.events, "batches": done.batches});
        read::push_json(&mut out, &line);
    } else if done.events == 0 {
        out.push_str("replayed 0 errors: none matches that is not stored or already in flight\n");
    } else {
        out.push_str(&format!(
            "replayed {} error(s) in {} batch(es); the validator marks each stored or \
             still_invalid (`eye errors --outcome pending --outcome still-invalid`)\n",
            done.events, done.batches
        ));
    }
    read::emit(&out)?;
    if !args.ids.is_empty() && (done.events as usize) < args.ids.len() {
        eprintln!(
            "({} of the {} ids were not replayed: unknown, not matching the filter, already in \
             flight, or past --limit)",
            args.ids.len() - done.events as usize,
            args.ids.len()
        );
    }
    Ok(())
}
