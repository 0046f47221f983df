//! `eye export DEST`: the store as hive-partitioned Parquet (see `eye_export`), and
//! `eye import --parquet SRC`: an export sent back through ingest.

use std::io::IsTerminal;

use anyhow::bail;
use eye_client::{Client, ConnectOptions, Delivery, RetryPolicy};
use eye_export::{Destination, Exporter, Kind, Options, Summary, replay};
use eye_proto::v1::{Event, EventStatus};
use indicatif::{ProgressBar, ProgressStyle};
use sqlx::PgPool;

use crate::cli::{self, ExportArgs, ImportArgs};

pub async fn run(pool: &PgPool, args: ExportArgs) -> anyhow::Result<()> {
    let destination = Destination::parse(&args.destination)?;
    let options = Options {
        from: args.from,
        to: args.to,
        max_file_bytes: (args.max_file_mb.max(1) as usize) * 1024 * 1024,
        lateness: args.lateness,
        interval: args.interval,
    };
    let exporter = Exporter::new(pool.clone(), destination, options);
    let kinds: &[Kind] = if args.errors { &[Kind::Events, Kind::Errors] } else { &[Kind::Events] };
    let terminal = !args.json && std::io::stderr().is_terminal();
    let mut total = Summary::default();
    for &kind in kinds {
        let bar = terminal.then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} hours {eta}")
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            bar.set_prefix(kind.name());
            bar
        });
        let progress = |done: u64, total: u64| {
            if let Some(bar) = &bar {
                bar.set_length(total);
                bar.set_position(done);
            }
        };
        let summary = exporter.export(kind, &progress).await?;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        report(&args, kind, &summary);
        total.add(&summary);
    }
    if args.follow {
        if args.json {
            println!("{}", serde_json::json!({"kind": "following"}));
        } else {
            eprintln!(
                "following: hours are exported as they fill up and when events arrive late (Ctrl-C stops)"
            );
        }
        let shutdown = eye_service::shutdown::on_signal();
        let mut tasks = tokio::task::JoinSet::new();
        for &kind in kinds {
            let (exporter, stop, json) = (exporter.clone(), shutdown.clone(), args.json);
            tasks.spawn(async move {
                let each = |summary: &Summary| {
                    if json {
                        let line = serde_json::json!({"kind": "exported", "of": kind.name(), "summary": summary});
                        println!("{line}");
                    } else {
                        eprintln!("{}: {} rows re-exported in {} file(s)", kind.name(), summary.rows, summary.files);
                    }
                };
                exporter.follow(kind, &stop, &each).await
            });
        }
        while let Some(done) = tasks.join_next().await {
            total.add(&done??);
        }
    }
    Ok(())
}

fn report(args: &ExportArgs, kind: Kind, summary: &Summary) {
    if args.json {
        let line = serde_json::json!({"kind": "summary", "of": kind.name(), "summary": summary});
        println!("{line}");
        return;
    }
    let rate = summary.rows as f64 / summary.seconds.max(1e-9);
    println!(
        "{}: {} hour(s) exported ({} unchanged), {} file(s), {} rows, {:.1} MB in {:.1} s ({:.0} rows/s) to {}",
        kind.name(),
        summary.hours,
        summary.unchanged,
        summary.files,
        summary.rows,
        summary.bytes as f64 / 1e6,
        summary.seconds,
        rate,
        args.destination
    );
}

/// `eye import --parquet SRC`: every hour's manifest, then its files, through ingest. Event ids
/// are kept, so replaying onto a store that has the events answers DUPLICATE.
pub async fn import(args: ImportArgs) -> anyhow::Result<()> {
    let source = args.dir.to_string_lossy().into_owned();
    let destination = Destination::parse(&source)?;
    let key = cli::api_key(&args.key)?;
    let client = Client::lazy(&args.endpoint, key, &ConnectOptions::default())?;
    let manifests = replay::manifests(&destination).await?;
    if manifests.is_empty() {
        bail!("{source} holds no export (no dt=*/hour=*/_manifest.json)");
    }
    let (mut accepted, mut duplicate, mut rejected) = (0u64, 0u64, 0u64);
    let started = std::time::Instant::now();
    for (dir, manifest) in &manifests {
        let events = replay::read_hour(&destination, dir, manifest).await?;
        let events: Vec<Event> = events
            .into_iter()
            .map(|e| Event {
                event_id: e.event_id,
                session_id: e.session_id,
                category: e.category,
                name: e.name,
                data_json: e.data,
                timestamp: Some(prost_types::Timestamp {
                    seconds: e.occurred_at.timestamp(),
                    nanos: e.occurred_at.timestamp_subsec_nanos() as i32,
                }),
            })
            .collect();
        for batch in events.chunks(args.batch as usize) {
            match client.send_retrying(batch, &RetryPolicy::default()).await {
                Delivery::Answered(results) => {
                    for result in results {
                        match result.status() {
                            EventStatus::Accepted => accepted += 1,
                            EventStatus::Duplicate => duplicate += 1,
                            _ => rejected += 1,
                        }
                    }
                }
                Delivery::TooLarge(status)
                | Delivery::Refused(status)
                | Delivery::GaveUp(status) => {
                    bail!(
                        "ingest did not take the import: {}",
                        eye_client::describe_status(&status)
                    )
                }
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    if args.json {
        let line = serde_json::json!({"kind": "summary", "hours": manifests.len(), "accepted": accepted,
            "duplicate": duplicate, "rejected": rejected, "seconds": seconds});
        println!("{line}");
    } else {
        println!(
            "{} hour(s) replayed: {accepted} accepted, {duplicate} duplicate, {rejected} rejected in {seconds:.1} s",
            manifests.len()
        );
    }
    if rejected > 0 {
        bail!("{rejected} event(s) rejected by ingest");
    }
    Ok(())
}
