//! `eye import DIR [--watch]`: the file inbox of services that write one JSON file per event
//! (`DIR/<type>/<uuid>.json`), sent through `eye-client`, each file archived (or deleted) only
//! after ingest answered for its event. See `eye import --help` for the mapping.
//!
//! One loop, no concurrency: scan, read what has settled, send in batches, move each answered
//! file. A crash anywhere in it leaves every file either still in the inbox (sent again next
//! time, answered DUPLICATE, then archived) or already moved: nothing lost, nothing twice.

use std::{
    io::IsTerminal,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, bail};
use chrono::{DateTime, FixedOffset, Utc};
use eye_client::{Client, ConnectOptions, Delivery, RetryPolicy};
use eye_proto::v1::{Event, EventStatus};
use notify::Watcher;
use serde::Serialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::cli::{self, ImportArgs};

/// What became of the files so far.
#[derive(Debug, Default, Clone, Copy, Serialize)]
struct Counts {
    /// Event files found (named `<uuid>.json`), each counted once while it stays in the inbox.
    seen: u64,
    /// Events answered ACCEPTED or DUPLICATE.
    sent: u64,
    /// Of those, answered DUPLICATE (sent before, e.g. by an importer that crashed).
    duplicate: u64,
    /// Files archived or deleted.
    archived: u64,
    /// Files moved to the rejected folder (not an event, or refused by ingest).
    rejected: u64,
}

/// One file of the inbox that is an event, read and mapped.
#[derive(Debug)]
struct EventFile {
    path: PathBuf,
    /// `<type>/<uuid>.json`, relative to the inbox.
    relative: PathBuf,
    event: Event,
}

/// Why a file named `<uuid>.json` is not (yet) an event.
#[derive(Debug, PartialEq)]
enum NotAnEvent {
    /// Modified too recently, or its JSON is incomplete: try again later.
    NotYet,
    /// Never will be: moved to the rejected folder with this reason.
    Bad(String),
}

/// The event of one file's text, per the documented mapping.
fn map_file(
    record_type: &str,
    file_id: Uuid,
    text: &str,
    name: &str,
    naive_offset: FixedOffset,
) -> Result<Event, String> {
    #[derive(serde::Deserialize)]
    struct File<'a> {
        metadata: Option<Metadata>,
        #[serde(borrow)]
        payload: Option<&'a RawValue>,
    }
    #[derive(serde::Deserialize)]
    struct Metadata {
        #[serde(rename = "type")]
        record_type: Option<String>,
        event_at: Option<String>,
        event_id: Option<String>,
    }
    let file: File<'_> =
        serde_json::from_str(text).map_err(|error| format!("not an event file: {error}"))?;
    let metadata = file.metadata.ok_or("no `metadata` object")?;
    let payload = file.payload.ok_or("no `payload`")?;
    let kind = metadata.record_type.filter(|t| !t.is_empty()).ok_or("no `metadata.type`")?;
    if kind != record_type {
        return Err(format!("metadata.type {kind:?} but the file is in folder {record_type:?}"));
    }
    let event_id = metadata.event_id.ok_or("no `metadata.event_id`")?;
    if event_id.parse::<Uuid>().ok() != Some(file_id) {
        return Err(format!("metadata.event_id {event_id:?} differs from the file name {file_id}"));
    }
    let event_at = metadata.event_at.ok_or("no `metadata.event_at`")?;
    let occurred_at = event_model::envelope::parse_timestamp_at(&event_at, naive_offset)
        .map_err(|error| error.to_string())?;
    let session = session_of(&kind, payload, occurred_at);
    let mut event = eye_client::event_at(&kind, name, payload.get(), session, occurred_at);
    event.event_id = file_id.to_string();
    Ok(event)
}

/// The session: the record's (`payload.id`), else the type's and the UTC day's.
fn session_of(record_type: &str, payload: &RawValue, occurred_at: DateTime<Utc>) -> Uuid {
    #[derive(serde::Deserialize)]
    struct WithId<'a> {
        #[serde(borrow)]
        id: Option<&'a RawValue>,
    }
    let id = serde_json::from_str::<WithId<'_>>(payload.get()).ok().and_then(|p| p.id);
    match id.map(|raw| serde_json::from_str::<String>(raw.get()).unwrap_or(raw.get().to_owned())) {
        Some(id) if id != "null" => eye_client::record_session_id(record_type, &id),
        _ => eye_client::record_session_id(
            record_type,
            &format!("day {}", occurred_at.format("%Y-%m-%d")),
        ),
    }
}

/// The event files of the inbox, oldest names first; files that are not events are skipped
/// (and never touched).
fn scan(dir: &Path) -> std::io::Result<Vec<(String, Uuid, PathBuf)>> {
    let mut found = Vec::new();
    for kind in std::fs::read_dir(dir)? {
        let kind = kind?;
        let record_type = kind.file_name().to_string_lossy().into_owned();
        if record_type.starts_with('.') || !kind.file_type()?.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(kind.path())? {
            let file = file?;
            let name = file.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".json").and_then(|stem| stem.parse::<Uuid>().ok())
            else {
                continue; // `__id_counter`, `.x.json.tmp`, ...: not ours
            };
            if file.file_type()?.is_file() {
                found.push((record_type.clone(), id, file.path()));
            }
        }
    }
    found.sort_by(|a, b| a.2.cmp(&b.2));
    Ok(found)
}

/// Reads one event file, unless it is too fresh or incomplete.
fn read(record_type: &str, id: Uuid, path: &Path, args: &ImportArgs) -> Result<Event, NotAnEvent> {
    let settle = Duration::from_millis(args.settle_ms);
    let modified =
        std::fs::metadata(path).and_then(|m| m.modified()).map_err(|_| NotAnEvent::NotYet)?;
    let age = SystemTime::now().duration_since(modified).unwrap_or_default();
    if age < settle {
        return Err(NotAnEvent::NotYet);
    }
    let text = std::fs::read_to_string(path)
        .map_err(|error| NotAnEvent::Bad(format!("cannot read it as UTF-8 text: {error}")))?;
    map_file(record_type, id, &text, &args.name, args.naive_offset).map_err(|reason| {
        // Incomplete JSON that is still fresh-ish may be a writer that paused: give it a while
        // longer (ten times the settle time) before calling it bad.
        if reason.contains("EOF while parsing") && age < settle * 10 {
            NotAnEvent::NotYet
        } else {
            NotAnEvent::Bad(reason)
        }
    })
}

/// Where files go.
struct Places {
    inbox: PathBuf,
    archive: Option<PathBuf>,
    rejected: PathBuf,
}

impl Places {
    fn of(args: &ImportArgs) -> Self {
        let parent =
            args.dir.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(".."));
        let beside = |name: &str| parent.join(name);
        Self {
            inbox: args.dir.clone(),
            archive: (!args.delete)
                .then(|| args.archive.clone().unwrap_or_else(|| beside("archive"))),
            rejected: args.rejected.clone().unwrap_or_else(|| beside("rejected")),
        }
    }

    /// Archives (or deletes) an imported file.
    fn done(&self, file: &Path, relative: &Path) -> std::io::Result<()> {
        match &self.archive {
            Some(archive) => move_file(file, &archive.join(relative)),
            None => std::fs::remove_file(file),
        }
    }

    /// Moves a refused file to the rejected folder, its reason beside it.
    fn reject(&self, file: &Path, relative: &Path, reason: &str) -> std::io::Result<()> {
        let target = self.rejected.join(relative);
        std::fs::create_dir_all(target.parent().expect("a type folder"))?;
        std::fs::write(target.with_extension("reason"), format!("{reason}\n"))?;
        move_file(file, &target)
    }
}

/// Renames `from` to `to` (creating folders); across file systems, copies, syncs, then removes.
fn move_file(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to.parent().expect("a type folder"))?;
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::CrossesDevices => {
            std::fs::copy(from, to)?;
            std::fs::File::open(to)?.sync_all()?;
            std::fs::remove_file(from)
        }
        Err(error) => Err(error),
    }
}

/// Runs `eye import`.
pub async fn run(args: ImportArgs) -> anyhow::Result<()> {
    if !args.dir.is_dir() {
        bail!("{} is not a folder (the inbox: DIR/<type>/<uuid>.json)", args.dir.display());
    }
    let key = cli::api_key(&args.key)?;
    let client = Client::lazy(&args.endpoint, key, &ConnectOptions::default())?;
    let places = Places::of(&args);
    let shutdown = eye_service::shutdown::on_signal();
    let mut report = Report::new(args.json);
    if args.json {
        // From here on SIGTERM is a clean stop: supervisors (and tests) may wait for this line.
        let started = serde_json::json!({"kind": "started", "dir": args.dir, "watch": args.watch});
        println!("{started}");
    }

    // Wake-ups from the file system; the rescan timer is the fallback.
    let (wake_tx, mut wake) = tokio::sync::mpsc::channel::<()>(1);
    let _watcher = if args.watch {
        let mut watcher = notify::recommended_watcher(move |_event| {
            let _ = wake_tx.try_send(());
        })
        .context("cannot watch the inbox")?;
        watcher.watch(&args.dir, notify::RecursiveMode::Recursive)?;
        Some(watcher)
    } else {
        None
    };

    let mut seen = std::collections::HashSet::new();
    let mut waiting;
    loop {
        waiting = import_once(&client, &args, &places, &mut seen, &mut report, &shutdown).await?;
        if !args.watch || shutdown.is_cancelled() {
            break;
        }
        report.progress(waiting, false);
        let rescan = Duration::from_millis(args.rescan_ms.min(args.settle_ms.max(100) * 2));
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = wake.recv() => {
                // Let a burst of writes land before scanning again.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            () = tokio::time::sleep(rescan) => {}
        }
    }
    report.progress(waiting, true);
    if !args.watch && waiting > 0 {
        bail!("{waiting} file(s) are not settled or could not be sent yet; run again");
    }
    Ok(())
}

/// One pass over the inbox; returns how many event files were left for later.
async fn import_once(
    client: &Client,
    args: &ImportArgs,
    places: &Places,
    seen: &mut std::collections::HashSet<Uuid>,
    report: &mut Report,
    shutdown: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<usize> {
    let files =
        scan(&places.inbox).with_context(|| format!("cannot read {}", places.inbox.display()))?;
    // Files new since the last pass count as seen; only the inbox's present files are
    // remembered, so a long `--watch` keeps no record of what has left.
    let present: std::collections::HashSet<Uuid> = files.iter().map(|(_, id, _)| *id).collect();
    report.counts.seen += present.difference(seen).count() as u64;
    *seen = present;
    let mut waiting = 0;
    let mut batch: Vec<EventFile> = Vec::new();
    for (record_type, id, path) in files {
        let relative = PathBuf::from(&record_type).join(format!("{id}.json"));
        match read(&record_type, id, &path, args) {
            Ok(event) => batch.push(EventFile { path, relative, event }),
            Err(NotAnEvent::NotYet) => waiting += 1,
            Err(NotAnEvent::Bad(reason)) => {
                places.reject(&path, &relative, &reason)?;
                report.counts.rejected += 1;
            }
        }
        if batch.len() >= args.batch as usize {
            waiting += send(client, std::mem::take(&mut batch), places, report).await?;
            report.progress(waiting, false);
            if shutdown.is_cancelled() {
                return Ok(waiting);
            }
        }
    }
    if !batch.is_empty() {
        waiting += send(client, batch, places, report).await?;
    }
    Ok(waiting)
}

/// Sends one batch and moves its answered files; returns how many were left for later (ingest
/// unreachable). A refused key is an error: nothing can be sent with it.
async fn send(
    client: &Client,
    batch: Vec<EventFile>,
    places: &Places,
    report: &mut Report,
) -> anyhow::Result<usize> {
    let mut pending = vec![batch];
    let mut left = 0;
    while let Some(batch) = pending.pop() {
        let events: Vec<Event> = batch.iter().map(|file| file.event.clone()).collect();
        match client.send_retrying(&events, &RetryPolicy::default()).await {
            Delivery::Answered(results) => {
                for (file, result) in batch.iter().zip(results) {
                    match result.status() {
                        EventStatus::Accepted | EventStatus::Duplicate => {
                            report.counts.sent += 1;
                            if result.status() == EventStatus::Duplicate {
                                report.counts.duplicate += 1;
                            }
                            places.done(&file.path, &file.relative)?;
                            report.counts.archived += 1;
                        }
                        _ => {
                            let reason = format!("rejected by ingest: {}", result.reason);
                            places.reject(&file.path, &file.relative, &reason)?;
                            report.counts.rejected += 1;
                        }
                    }
                }
            }
            Delivery::TooLarge(_) if batch.len() > 1 => {
                let mut batch = batch;
                let second = batch.split_off(batch.len() / 2);
                pending.extend([second, batch]);
            }
            Delivery::TooLarge(status) | Delivery::Refused(status) => {
                bail!("ingest refused the import: {}", eye_client::describe_status(&status))
            }
            Delivery::GaveUp(status) => {
                tracing::warn!(files = batch.len(), error = %eye_client::describe_status(&status), "ingest unreachable; the files stay for the next pass");
                left += batch.len();
            }
        }
    }
    Ok(left)
}

/// Progress on a terminal (or JSON lines), and the summary line.
struct Report {
    json: bool,
    terminal: bool,
    started: Instant,
    last: Instant,
    counts: Counts,
}

impl Report {
    fn new(json: bool) -> Self {
        let now = Instant::now();
        Self {
            json,
            terminal: std::io::stderr().is_terminal(),
            started: now,
            last: now,
            counts: Counts::default(),
        }
    }

    /// At most once a second (and at the end, `last`).
    fn progress(&mut self, waiting: usize, last: bool) {
        if !last && self.last.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last = Instant::now();
        let rate = self.counts.sent as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
        let c = self.counts;
        if self.json {
            #[derive(Serialize)]
            struct Line {
                kind: &'static str,
                #[serde(flatten)]
                counts: Counts,
                waiting: usize,
                per_second: f64,
            }
            let kind = if last { "summary" } else { "progress" };
            let line = Line { kind, counts: c, waiting, per_second: (rate * 10.0).round() / 10.0 };
            println!("{}", serde_json::to_string(&line).expect("plain data"));
        } else if last {
            println!(
                "imported: {} files seen, {} sent ({} duplicate), {} archived, {} rejected, {waiting} waiting; {rate:.0} events/s",
                c.seen, c.sent, c.duplicate, c.archived, c.rejected
            );
        } else if self.terminal {
            eprint!(
                "\r{} seen, {} sent, {} archived, {} rejected, {waiting} waiting, {rate:.0}/s   ",
                c.seen, c.sent, c.archived, c.rejected
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0191b3a8-7c5e-7a1b-9c3d-1e2f3a4b5c6d";

    fn file(body: &str) -> Result<Event, String> {
        map_file("card", ID.parse().unwrap(), body, "change", FixedOffset::east_opt(0).unwrap())
    }

    #[test]
    fn the_requirements_file_maps_to_an_event() {
        let event = file(&format!(
            r#"{{"metadata": {{"type": "card", "event_at": "2020-08-26 11:17:05", "event_id": "{ID}"}},
                "payload": {{"id": 42, "status": "active"}}}}"#
        ))
        .unwrap();
        assert_eq!((event.category.as_str(), event.name.as_str()), ("card", "change"));
        assert_eq!(event.event_id, ID);
        assert_eq!(event.data_json, r#"{"id": 42, "status": "active"}"#);
        assert_eq!(event.session_id, eye_client::record_session_id("card", "42").to_string());
        let at = event_model::envelope::to_datetime(event.timestamp.as_ref().unwrap()).unwrap();
        assert_eq!(at.to_rfc3339(), "2020-08-26T11:17:05+00:00");
    }

    #[test]
    fn naive_times_are_read_at_the_offset_and_ids_without_a_record_share_a_day() {
        let body = format!(
            r#"{{"metadata": {{"type": "card", "event_at": "2020-08-26 11:17:05", "event_id": "{ID}"}}, "payload": {{}}}}"#
        );
        let event =
            map_file("card", ID.parse().unwrap(), &body, "change", "+02:00".parse().unwrap())
                .unwrap();
        let at = event_model::envelope::to_datetime(event.timestamp.as_ref().unwrap()).unwrap();
        assert_eq!(at.to_rfc3339(), "2020-08-26T09:17:05+00:00");
        assert_eq!(
            event.session_id,
            eye_client::record_session_id("card", "day 2020-08-26").to_string()
        );
    }

    #[test]
    fn bad_files_say_why() {
        let other = "0191b3a8-7c5e-7a1b-9c3d-000000000000";
        for (body, says) in [
            ("{\"metadata\": ".to_owned(), "EOF while parsing"),
            ("[]".to_owned(), "not an event file"),
            (r#"{"payload": {}}"#.to_owned(), "no `metadata`"),
            (
                format!(
                    r#"{{"metadata": {{"type": "card", "event_at": "2020-08-26 11:17:05", "event_id": "{ID}"}}}}"#
                ),
                "no `payload`",
            ),
            (
                format!(
                    r#"{{"metadata": {{"type": "user", "event_at": "2020-08-26 11:17:05", "event_id": "{ID}"}}, "payload": {{}}}}"#
                ),
                "folder",
            ),
            (
                format!(
                    r#"{{"metadata": {{"type": "card", "event_at": "2020-08-26 11:17:05", "event_id": "{other}"}}, "payload": {{}}}}"#
                ),
                "differs from the file name",
            ),
            (
                format!(
                    r#"{{"metadata": {{"type": "card", "event_at": "soon", "event_id": "{ID}"}}, "payload": {{}}}}"#
                ),
                "timestamp",
            ),
        ] {
            let reason = file(&body).unwrap_err();
            assert!(reason.contains(says), "{body}: {reason}");
        }
    }
}
