//! Export for warehouses: the event store (and, on request, the quarantine) as hive-partitioned,
//! zstd-compressed Parquet, to a folder or to S3 (any S3-compatible server), and back.
//!
//! # Layout
//!
//! ```text
//! DEST/dt=2026-12-01/hour=12/_manifest.json
//! DEST/dt=2026-12-01/hour=12/events-2026120112-00000-<sha>.parquet
//! DEST/errors/dt=2026-12-01/hour=12/...          (--errors: quarantined events)
//! ```
//!
//! One directory per *occurrence* hour (UTC). Its rows are sorted by (occurred_at,
//! application_id, event_id) and cut into files at a size bound; a file is named after its hour,
//! its part number and the first 16 hex digits of its SHA-256, so the same content always has
//! the same name and the same bytes. The hour's `_manifest.json` (files, row counts, bytes,
//! checksums, min/max `stored_at`) is written last: a reader that goes by the manifest sees
//! complete files of one export. Files of the hour not in the manifest (an older export's, or a
//! crashed one's) are deleted after it.
//!
//! # Idempotence and late events
//!
//! `exports` records, per destination and hour, the state it was exported from (row count and
//! latest change). A rerun exports only hours that are new or changed since; exporting an
//! unchanged hour again writes the same bytes. An event stored after its hour was exported (an
//! offline client, an import) changes the hour's state: [`Exporter::follow`] notices it among the
//! events stored since its last look and exports the hour again; a new hour is exported once it
//! is older than the lateness allowance.
//!
//! - [`schema`]: the Parquet columns of each kind.
//! - [`destination`]: a folder or `s3://bucket/prefix`, behind `object_store`.
//! - [`replay`]: reading an export back (for `eye import --parquet`).

pub mod destination;
pub mod replay;
pub mod schema;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use arrow_array::RecordBatch;
use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Timelike, Utc};
use futures::TryStreamExt;
use object_store::{ObjectStore, path::Path};
use parquet::{
    arrow::ArrowWriter,
    basic::{Compression, ZstdLevel},
    file::properties::WriterProperties,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub use destination::Destination;
pub use schema::Kind;

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("destination: {0}")]
    Store(#[from] object_store::Error),
    #[error("writing Parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("building columns: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("{0}")]
    Invalid(String),
}

/// How an export runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Only hours from this time on (the hour holding it included).
    pub from: Option<DateTime<Utc>>,
    /// Only hours before this time.
    pub to: Option<DateTime<Utc>>,
    /// A file is closed once its rows' estimated size passes this many bytes.
    pub max_file_bytes: usize,
    /// `follow`: an hour is exported the first time once it ended this long ago.
    pub lateness: Duration,
    /// `follow`: how often the store is looked at.
    pub interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            from: None,
            to: None,
            max_file_bytes: 128 * 1024 * 1024,
            lateness: Duration::from_secs(300),
            interval: Duration::from_secs(10),
        }
    }
}

/// One file of an hour, in its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Relative to the hour's directory.
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// An hour's `_manifest.json`. Deterministic: the same hour exported again gives the same bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub kind: String,
    /// The hour's start, RFC 3339 UTC.
    pub hour: String,
    pub rows: u64,
    pub files: Vec<ManifestFile>,
    /// The earliest and latest time a row of the hour was stored (events) or failed (errors).
    pub min_stored_at: Option<String>,
    pub max_stored_at: Option<String>,
}

pub const MANIFEST: &str = "_manifest.json";

/// What one export did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub hours: u64,
    /// Hours left as they were: unchanged since their last export.
    pub unchanged: u64,
    pub files: u64,
    pub rows: u64,
    pub bytes: u64,
    pub seconds: f64,
}

impl Summary {
    /// Adds `other`'s counts (and seconds) to these.
    pub fn add(&mut self, other: &Summary) {
        self.hours += other.hours;
        self.unchanged += other.unchanged;
        self.files += other.files;
        self.rows += other.rows;
        self.bytes += other.bytes;
        self.seconds += other.seconds;
    }
}

/// One hour as the store holds it now.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
struct HourState {
    hour: DateTime<Utc>,
    state: String,
}

/// Exports one store to one destination.
#[derive(Debug, Clone)]
pub struct Exporter {
    pool: PgPool,
    destination: Arc<Destination>,
    options: Options,
}

impl Exporter {
    pub fn new(pool: PgPool, destination: Destination, options: Options) -> Self {
        Self { pool, destination: Arc::new(destination), options }
    }

    pub fn destination(&self) -> &Destination {
        &self.destination
    }

    /// The hours of `kind` in range with their current state, oldest first.
    async fn hours(
        &self,
        kind: Kind,
        touched_since: Option<DateTime<Utc>>,
    ) -> Result<Vec<HourState>, ExportError> {
        let spec = kind.spec();
        let sql = format!(
            "WITH touched AS ( \
                 SELECT DISTINCT date_trunc('hour', occurred_at) AS hour FROM {table} \
                 WHERE $3::timestamptz IS NULL OR {changed} >= $3 \
             ) \
             SELECT t.hour, s.state FROM touched t, LATERAL ( \
                 SELECT {state} AS state FROM {table} \
                 WHERE occurred_at >= t.hour AND occurred_at < t.hour + interval '1 hour' \
             ) s \
             WHERE ($1::timestamptz IS NULL OR t.hour >= date_trunc('hour', $1::timestamptz)) \
               AND ($2::timestamptz IS NULL OR t.hour < $2) \
             ORDER BY t.hour",
            table = spec.table,
            changed = spec.changed,
            state = state_sql(spec),
        );
        Ok(sqlx::query_as(&sql)
            .bind(self.options.from)
            .bind(self.options.to)
            .bind(touched_since)
            .fetch_all(&self.pool)
            .await?)
    }

    /// The exported hours of `kind` that a deletion changed (`eye_exports_mark_deleted` set their
    /// state to `deleted`), with their current state: also those left with no rows, whose files
    /// must go.
    async fn deleted_hours(&self, kind: Kind) -> Result<Vec<HourState>, ExportError> {
        let spec = kind.spec();
        let sql = format!(
            "SELECT x.hour, s.state FROM exports x, LATERAL ( \
                 SELECT {state} AS state FROM {table} \
                 WHERE occurred_at >= x.hour AND occurred_at < x.hour + interval '1 hour' \
             ) s \
             WHERE x.destination = $1 AND x.kind = $2 AND x.state = 'deleted' ORDER BY x.hour",
            table = spec.table,
            state = state_sql(spec),
        );
        Ok(sqlx::query_as(&sql)
            .bind(self.destination.name())
            .bind(kind.name())
            .fetch_all(&self.pool)
            .await?)
    }

    /// `hours` with the [deleted hours](Self::deleted_hours) it lacks, oldest first.
    async fn with_deleted(
        &self,
        kind: Kind,
        mut hours: Vec<HourState>,
    ) -> Result<Vec<HourState>, ExportError> {
        for deleted in self.deleted_hours(kind).await? {
            if !hours.iter().any(|hour| hour.hour == deleted.hour) {
                hours.push(deleted);
            }
        }
        hours.sort_by_key(|hour| hour.hour);
        Ok(hours)
    }

    /// The recorded state of every exported hour of `kind` at this destination.
    async fn recorded(&self, kind: Kind) -> Result<BTreeMap<DateTime<Utc>, String>, ExportError> {
        let rows: Vec<(DateTime<Utc>, String)> =
            sqlx::query_as("SELECT hour, state FROM exports WHERE destination = $1 AND kind = $2")
                .bind(self.destination.name())
                .bind(kind.name())
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().collect())
    }

    /// Exports every hour of `kind` in range that is new or changed since its last export.
    /// `progress` is called after each hour with (hours done, hours to do).
    pub async fn export(
        &self,
        kind: Kind,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<Summary, ExportError> {
        let started = std::time::Instant::now();
        let hours = self.with_deleted(kind, self.hours(kind, None).await?).await?;
        let recorded = self.recorded(kind).await?;
        let mut summary = Summary::default();
        let total = hours.len() as u64;
        for (done, hour) in hours.into_iter().enumerate() {
            if recorded.get(&hour.hour) == Some(&hour.state)
                && self.destination.exists(&hour_dir(kind, hour.hour).child(MANIFEST)).await?
            {
                summary.unchanged += 1;
            } else {
                self.export_hour(kind, hour, &mut summary).await?;
            }
            progress(done as u64 + 1, total);
        }
        summary.seconds = started.elapsed().as_secs_f64();
        Ok(summary)
    }

    /// Exports, then keeps exporting until `stop`: hours made stale by events stored late at
    /// once, new hours once they are older than the lateness. `each` sees every hour exported.
    pub async fn follow(
        &self,
        kind: Kind,
        stop: &CancellationToken,
        each: &(dyn Fn(&Summary) + Sync),
    ) -> Result<Summary, ExportError> {
        let mut total = Summary::default();
        let mut since: Option<DateTime<Utc>> = None;
        let mut waiting: BTreeMap<DateTime<Utc>, ()> = BTreeMap::new();
        let started = std::time::Instant::now();
        while !stop.is_cancelled() {
            let look: DateTime<Utc> =
                sqlx::query_scalar("SELECT now()").fetch_one(&self.pool).await?;
            let mut candidates = self.hours(kind, since).await?;
            // Hours seen before but not old enough then: look at them again.
            for hour in std::mem::take(&mut waiting).into_keys() {
                if !candidates.iter().any(|c| c.hour == hour) {
                    candidates.extend(self.hours_at(kind, hour).await?);
                }
            }
            let candidates = self.with_deleted(kind, candidates).await?;
            let recorded = self.recorded(kind).await?;
            let lateness = TimeDelta::from_std(self.options.lateness).unwrap_or(TimeDelta::MAX);
            for hour in candidates {
                if recorded.get(&hour.hour) == Some(&hour.state) {
                    continue;
                }
                let first = !recorded.contains_key(&hour.hour);
                if first && hour.hour + TimeDelta::hours(1) + lateness > look {
                    waiting.insert(hour.hour, ());
                    continue;
                }
                let mut summary = Summary::default();
                self.export_hour(kind, hour, &mut summary).await?;
                each(&summary);
                total.add(&summary);
            }
            // Writers commit out of `stored_at` order: look back a margin each time.
            since = Some(look - TimeDelta::seconds(60));
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(self.options.interval) => {}
            }
        }
        total.seconds = started.elapsed().as_secs_f64();
        Ok(total)
    }

    async fn hours_at(
        &self,
        kind: Kind,
        hour: DateTime<Utc>,
    ) -> Result<Vec<HourState>, ExportError> {
        let spec = kind.spec();
        let sql = format!(
            "SELECT $1::timestamptz AS hour, {state} AS state \
             FROM {table} WHERE occurred_at >= $1 AND occurred_at < $1 + interval '1 hour' \
             HAVING count(*) > 0",
            table = spec.table,
            state = state_sql(spec),
        );
        Ok(sqlx::query_as(&sql).bind(hour).fetch_all(&self.pool).await?)
    }

    /// Writes one hour: its files (create-if-absent, content-named), then its manifest, then
    /// removes the hour's files that the manifest does not list; records the state exported.
    async fn export_hour(
        &self,
        kind: Kind,
        hour: HourState,
        summary: &mut Summary,
    ) -> Result<(), ExportError> {
        let dir = hour_dir(kind, hour.hour);
        let spec = kind.spec();
        let sql = format!(
            "SELECT {columns} FROM {table} \
             WHERE occurred_at >= $1 AND occurred_at < $1 + interval '1 hour' \
             ORDER BY occurred_at, application_id, event_id",
            columns = spec.select,
            table = spec.table,
        );
        let mut rows = sqlx::query(&sql).bind(hour.hour).fetch(&self.pool);
        let mut files = Vec::new();
        let mut part = schema::Builder::new(kind);
        let mut file = FileWriter::new(kind)?;
        let (mut min_stored, mut max_stored): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) =
            (None, None);
        let mut total_rows = 0u64;
        while let Some(row) = rows.try_next().await? {
            let stored = part.push(&row)?;
            min_stored = Some(min_stored.map_or(stored, |m| m.min(stored)));
            max_stored = Some(max_stored.map_or(stored, |m| m.max(stored)));
            total_rows += 1;
            if part.len() >= schema::BATCH_ROWS {
                file.write(&part.finish()?)?;
            }
            if file.estimated_bytes + part.estimated_bytes() >= self.options.max_file_bytes {
                file.write(&part.finish()?)?;
                files.push(self.put_file(kind, hour.hour, files.len(), file).await?);
                file = FileWriter::new(kind)?;
            }
        }
        drop(rows);
        if !part.is_empty() {
            file.write(&part.finish()?)?;
        }
        if file.rows > 0 {
            files.push(self.put_file(kind, hour.hour, files.len(), file).await?);
        }
        let manifest = Manifest {
            format: 1,
            kind: kind.name().into(),
            hour: hour.hour.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            rows: total_rows,
            files: files.clone(),
            min_stored_at: min_stored.map(micros_text),
            max_stored_at: max_stored.map(micros_text),
        };
        let text = serde_json::to_vec_pretty(&manifest).expect("a manifest serializes");
        self.destination.store().put(&dir.child(MANIFEST), text.into()).await?;
        // Older exports' files (and a crashed export's) are no longer listed: remove them.
        let listed: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        let existing: Vec<_> = self.destination.store().list(Some(&dir)).try_collect().await?;
        for object in existing {
            let name = object.location.filename().unwrap_or_default();
            if name != MANIFEST && !listed.contains(&name) {
                self.destination.store().delete(&object.location).await?;
            }
        }
        let bytes: u64 = files.iter().map(|f| f.bytes).sum();
        sqlx::query(
            "INSERT INTO exports (destination, kind, hour, state, rows, files, bytes) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (destination, kind, hour) DO UPDATE SET state = excluded.state, \
                 rows = excluded.rows, files = excluded.files, bytes = excluded.bytes, \
                 exported_at = now()",
        )
        .bind(self.destination.name())
        .bind(kind.name())
        .bind(hour.hour)
        .bind(&hour.state)
        .bind(total_rows as i64)
        .bind(files.len() as i32)
        .bind(bytes as i64)
        .execute(&self.pool)
        .await?;
        summary.hours += 1;
        summary.files += files.len() as u64;
        summary.rows += total_rows;
        summary.bytes += bytes;
        tracing::debug!(hour = %hour.hour, rows = total_rows, files = files.len(), "hour exported");
        Ok(())
    }

    async fn put_file(
        &self,
        kind: Kind,
        hour: DateTime<Utc>,
        part: usize,
        file: FileWriter,
    ) -> Result<ManifestFile, ExportError> {
        let rows = file.rows;
        let bytes = Bytes::from(file.finish()?);
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let name = format!(
            "{}-{}-{part:05}-{}.parquet",
            kind.name(),
            hour.format("%Y%m%d%H"),
            &sha256[..16]
        );
        let location = hour_dir(kind, hour).child(name.as_str());
        let size = bytes.len() as u64;
        // Content-named: an object of this name already has these very bytes, so writing it
        // again is harmless; each put is atomic (a temporary file renamed, an S3 PUT).
        self.destination.store().put(&location, bytes.into()).await?;
        Ok(ManifestFile { path: name, rows, bytes: size, sha256 })
    }
}

/// The state of an hour's rows, as `exports.state` records it: their count and what the kind says
/// changes with them. One expression for the scan of all hours and the look at one.
fn state_sql(spec: &schema::Spec) -> String {
    format!("count(*)::text || ':' || coalesce({}, '')", spec.state)
}

/// `dt=YYYY-MM-DD/hour=HH` of `hour` (under `errors/` for quarantined events).
pub fn hour_dir(kind: Kind, hour: DateTime<Utc>) -> Path {
    let relative =
        format!("{}dt={}/hour={:02}", kind.prefix(), hour.format("%Y-%m-%d"), hour.hour());
    Path::from(relative)
}

fn micros_text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// One Parquet file being written, in memory.
struct FileWriter {
    writer: ArrowWriter<Vec<u8>>,
    rows: u64,
    estimated_bytes: usize,
}

impl FileWriter {
    fn new(kind: Kind) -> Result<Self, ExportError> {
        let properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
            .set_max_row_group_row_count(Some(128 * 1024))
            .build();
        let writer = ArrowWriter::try_new(Vec::new(), kind.arrow_schema(), Some(properties))?;
        Ok(Self { writer, rows: 0, estimated_bytes: 0 })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<(), ExportError> {
        self.rows += batch.num_rows() as u64;
        self.estimated_bytes += batch.get_array_memory_size();
        self.writer.write(batch)?;
        Ok(())
    }

    fn finish(self) -> Result<Vec<u8>, ExportError> {
        Ok(self.writer.into_inner()?)
    }
}
