//! `eye export` and `eye import --parquet`: the real binary against a pipeline with a store that
//! spans several days. (The independent reader and S3 are checked from Python, with pyarrow,
//! DuckDB and moto: clients/python/tests/test_export.py.)

use std::{
    collections::{BTreeMap, HashSet},
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use chrono::{DateTime, TimeDelta, Timelike, Utc};
use eye_e2e::{Pipeline, authorized, db_with_key, event};
use eye_export::{Destination, replay};
use eye_proto::v1::{EventStatus, SendEventsRequest};
use serde_json::json;
use uuid::Uuid;

use crate::eye_with_env;

/// (event id, data, occurred_at) of every stored event.
async fn stored(pool: &sqlx::PgPool) -> HashSet<(String, String, DateTime<Utc>)> {
    let rows: Vec<(String, String, DateTime<Utc>)> =
        sqlx::query_as("SELECT event_id::text, data::text, occurred_at FROM events")
            .fetch_all(pool)
            .await
            .unwrap();
    rows.into_iter().collect()
}

/// The same, read back from the export at `dir` through its manifests; panics on a duplicate.
async fn exported(dir: &Path) -> HashSet<(String, String, DateTime<Utc>)> {
    let destination = Destination::parse(dir.to_str().unwrap()).unwrap();
    let mut all = HashSet::new();
    for (hour, manifest) in replay::manifests(&destination).await.unwrap() {
        let events = replay::read_hour(&destination, &hour, &manifest).await.unwrap();
        assert_eq!(events.len() as u64, manifest.rows);
        for e in events {
            assert!(
                all.insert((e.event_id.clone(), e.data, e.occurred_at)),
                "{} twice",
                e.event_id
            );
        }
    }
    all
}

/// Every file under `dir`, relative, with its bytes.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.insert(
                    path.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&path).unwrap(),
                );
            }
        }
    }
    files
}

async fn send(pipeline: &Pipeline, key: &str, events: Vec<eye_proto::v1::Event>) {
    let mut client = pipeline.client().await;
    for batch in events.chunks(1000) {
        let request = SendEventsRequest { events: batch.to_vec(), sent_at: None };
        let results = client.send_events(authorized(request, key)).await.unwrap().into_inner();
        assert!(results.results.iter().all(|r| r.status() == EventStatus::Accepted));
    }
}

async fn wait_stored(pool: &sqlx::PgPool, n: i64) {
    eye_test_support::wait_for(pool, Duration::from_secs(120), "events stored", || async {
        let count: i64 =
            sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(pool).await.unwrap();
        (count >= n).then_some(())
    })
    .await;
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("eye-export-{name}-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Events over three days, a few hours each, with some unicode and nesting in the payloads.
fn days_of_events(now: DateTime<Utc>) -> Vec<eye_proto::v1::Event> {
    let session = Uuid::new_v4();
    let mut events = Vec::new();
    for day in 1..=3 {
        for hour in [2, 9, 17] {
            for i in 0..40 {
                let at =
                    now - TimeDelta::days(day) - TimeDelta::hours(hour) + TimeDelta::seconds(i);
                let data =
                    json!({"i": i, "day": day, "text": "café ☕", "nested": {"a": [1, 2.5, null]}});
                events.push(event(session, "page interaction", "click", data, at));
            }
        }
    }
    events
}

#[tokio::test]
async fn an_export_holds_every_event_once_reruns_byte_identically_follows_late_events_and_replays()
{
    let (db, _, key) = db_with_key("shop", &["ingest", "read"]).await;
    let pipeline = Pipeline::start(&db, 1, 1).await;
    let now = Utc::now().with_nanosecond(0).unwrap();
    let events = days_of_events(now);
    send(&pipeline, &key, events.clone()).await;
    wait_stored(&db.pool, events.len() as i64).await;

    let first = temp_dir("first");
    let run =
        eye_with_env(&db.url, &["export", first.to_str().unwrap(), "--json"], &[]).await.success();
    let summary: serde_json::Value =
        serde_json::from_str(run.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["summary"]["hours"], 9, "{}", run.stdout);
    assert_eq!(summary["summary"]["rows"], 360);
    assert_eq!(exported(&first).await, stored(&db.pool).await, "every stored event exactly once");
    // The layout: dt=YYYY-MM-DD/hour=HH/ with a manifest and content-named files.
    let files = tree(&first);
    let day = (now - TimeDelta::days(1) - TimeDelta::hours(2)).format("dt=%Y-%m-%d").to_string();
    assert!(
        files.keys().any(|p| p.starts_with(&day) && p.ends_with("_manifest.json")),
        "{:?}",
        files.keys()
    );
    assert!(files.keys().all(|p| p.to_str().unwrap().contains("/hour=")));

    // A rerun changes nothing; an export of the same store elsewhere is byte-identical.
    let again =
        eye_with_env(&db.url, &["export", first.to_str().unwrap(), "--json"], &[]).await.success();
    let summary: serde_json::Value =
        serde_json::from_str(again.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(
        (summary["summary"]["hours"].as_u64(), summary["summary"]["unchanged"].as_u64()),
        (Some(0), Some(9))
    );
    let second = temp_dir("second");
    eye_with_env(&db.url, &["export", second.to_str().unwrap()], &[]).await.success();
    assert_eq!(tree(&second), files, "byte-identical");

    // Quarantined events, on request, under errors/: one too far in the future.
    let future =
        event(Uuid::new_v4(), "page interaction", "click", json!({}), now + TimeDelta::hours(2));
    send(&pipeline, &key, vec![future.clone()]).await;
    eye_test_support::wait_for(
        &db.pool,
        Duration::from_secs(60),
        "the quarantined event",
        || async {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM event_errors")
                .fetch_one(&db.pool)
                .await
                .unwrap();
            (n == 1).then_some(())
        },
    )
    .await;
    let third = temp_dir("errors");
    let run =
        eye_with_env(&db.url, &["export", third.to_str().unwrap(), "--errors", "--json"], &[])
            .await
            .success();
    let errors: serde_json::Value =
        serde_json::from_str(run.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(
        (errors["of"].as_str(), errors["summary"]["rows"].as_u64()),
        (Some("errors"), Some(1))
    );
    let error_files = tree(&third.join("errors"));
    assert!(error_files.keys().any(|p| p.ends_with("_manifest.json")), "{:?}", error_files.keys());
    assert_eq!(tree(&third).len(), files.len() + error_files.len(), "events beside errors/");

    // A late event for an exported hour: --follow re-exports that hour.
    let mut follow = tokio::process::Command::new(env!("CARGO_BIN_EXE_eye"))
        .args([
            "export",
            first.to_str().unwrap(),
            "--follow",
            "--lateness",
            "1h",
            "--interval",
            "1s",
            "--json",
        ])
        .env("DATABASE_URL", &db.url)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let late_at = now - TimeDelta::days(2) - TimeDelta::hours(9) + TimeDelta::minutes(30);
    let late = event(Uuid::new_v4(), "page interaction", "click", json!({"late": true}), late_at);
    send(&pipeline, &key, vec![late.clone()]).await;
    wait_stored(&db.pool, events.len() as i64 + 1).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !exported(&first).await.iter().any(|(id, _, _)| *id == late.event_id) {
        assert!(tokio::time::Instant::now() < deadline, "the late event was not exported");
        // Polling the destination: the exporter writes files, and files send no notification.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eye_test_support::signal(follow.id(), "-TERM");
    assert!(follow.wait().await.unwrap().success(), "SIGTERM stops --follow cleanly");
    assert_eq!(exported(&first).await, stored(&db.pool).await);

    // Replayed into a fresh store: the same events; replayed onto this one: all duplicate.
    let (fresh, _, fresh_key) = db_with_key("shop", &["ingest", "read"]).await;
    let fresh_pipeline = Pipeline::start(&fresh, 1, 1).await;
    let endpoint = fresh_pipeline.endpoint();
    let replayed = eye_with_env(
        &fresh.url,
        &["import", "--parquet", first.to_str().unwrap(), "--json"],
        &[("EYE_ENDPOINT", &endpoint), ("EYE_API_KEY", &fresh_key)],
    )
    .await
    .success();
    assert!(replayed.stdout.contains("\"accepted\":361"), "{}", replayed.stdout);
    wait_stored(&fresh.pool, 361).await;
    assert_eq!(stored(&fresh.pool).await, stored(&db.pool).await);
    let endpoint = pipeline.endpoint();
    let onto_itself = eye_with_env(
        &db.url,
        &["import", "--parquet", first.to_str().unwrap(), "--json"],
        &[("EYE_ENDPOINT", &endpoint), ("EYE_API_KEY", &key)],
    )
    .await
    .success();
    assert!(onto_itself.stdout.contains("\"duplicate\":361"), "{}", onto_itself.stdout);
    fresh_pipeline.stop().await;
    pipeline.stop().await;
    for dir in [first, second, third] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[tokio::test]
async fn an_export_killed_mid_hour_and_rerun_is_complete_without_duplicates() {
    let (db, _, key) = db_with_key("shop", &["ingest"]).await;
    let pipeline = Pipeline::start(&db, 1, 1).await;
    // One big hour of fat events: many files of about 1 MB.
    let hour = (Utc::now() - TimeDelta::days(1)).with_minute(0).unwrap().with_second(0).unwrap();
    let session = Uuid::new_v4();
    let filler = "x".repeat(2_000);
    let events: Vec<_> = (0..6_000)
        .map(|i| {
            event(
                session,
                "bulk",
                "row",
                json!({"i": i, "filler": filler}),
                hour + TimeDelta::milliseconds(i * 500),
            )
        })
        .collect();
    send(&pipeline, &key, events).await;
    wait_stored(&db.pool, 6_000).await;

    let dir = temp_dir("killed");
    let hour_dir =
        dir.join(hour.format("dt=%Y-%m-%d").to_string()).join(format!("hour={:02}", hour.hour()));
    let mut export = tokio::process::Command::new(env!("CARGO_BIN_EXE_eye"))
        .args(["export", dir.to_str().unwrap(), "--max-file-mb", "1"])
        .env("DATABASE_URL", &db.url)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Mid-hour: a first file is there, the manifest is not.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let parquet = std::fs::read_dir(&hour_dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .any(|e| e.path().extension().is_some_and(|x| x == "parquet"))
            })
            .unwrap_or(false);
        if parquet {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no file written");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eye_test_support::signal(export.id(), "-KILL");
    let _ = export.wait().await;
    assert!(
        !hour_dir.join("_manifest.json").exists(),
        "killed before the manifest: too late to test"
    );

    eye_with_env(&db.url, &["export", dir.to_str().unwrap(), "--max-file-mb", "1"], &[])
        .await
        .success();
    assert_eq!(exported(&dir).await, stored(&db.pool).await, "complete, no duplicate");
    // Only the files the manifest lists remain: a glob reader sees each row once too.
    let destination = Destination::parse(dir.to_str().unwrap()).unwrap();
    let (_, manifest) = replay::manifests(&destination).await.unwrap().remove(0);
    assert!(manifest.files.len() > 3, "{} files", manifest.files.len());
    let on_disk: HashSet<String> = std::fs::read_dir(&hour_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".parquet"))
        .collect();
    assert_eq!(on_disk, manifest.files.iter().map(|f| f.path.clone()).collect());
    pipeline.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}
