//! Reading an export back: every hour's manifest, then the files it lists (files a manifest does
//! not list, left by a crashed export, are ignored), as rows of events.

use arrow_array::{Array, Int32Array, StringArray, TimestampMicrosecondArray};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::path::Path;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::{Destination, ExportError, MANIFEST, Manifest};

/// One exported event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedEvent {
    pub application_id: String,
    pub event_id: String,
    pub session_id: String,
    pub category: String,
    pub name: String,
    pub data: String,
    pub occurred_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub stored_at: DateTime<Utc>,
    pub schema_version: Option<i32>,
}

/// The manifests of the events export at `destination` (not `errors/`), oldest hour first.
pub async fn manifests(destination: &Destination) -> Result<Vec<(Path, Manifest)>, ExportError> {
    let store = destination.store();
    let mut found: Vec<Path> = store
        .list(None)
        .try_filter(|meta| {
            let path = meta.location.as_ref();
            std::future::ready(
                meta.location.filename() == Some(MANIFEST) && path.starts_with("dt="),
            )
        })
        .map_ok(|meta| meta.location)
        .try_collect()
        .await?;
    found.sort();
    let mut manifests = Vec::with_capacity(found.len());
    for location in found {
        let bytes = store.get(&location).await?.bytes().await?;
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|error| {
            ExportError::Invalid(format!("{location} is not an export manifest: {error}"))
        })?;
        let dir = Path::from_iter(location.parts().take(2));
        manifests.push((dir, manifest));
    }
    Ok(manifests)
}

/// The events of one hour's files.
pub async fn read_hour(
    destination: &Destination,
    dir: &Path,
    manifest: &Manifest,
) -> Result<Vec<ExportedEvent>, ExportError> {
    let mut events = Vec::with_capacity(manifest.rows as usize);
    for file in &manifest.files {
        let bytes = destination.store().get(&dir.child(file.path.as_str())).await?.bytes().await?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
        for batch in reader {
            let batch = batch?;
            let text = |name: &str| -> Result<&StringArray, ExportError> {
                batch
                    .column_by_name(name)
                    .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                    .ok_or_else(|| ExportError::Invalid(format!("no text column {name}")))
            };
            let time = |name: &str| -> Result<&TimestampMicrosecondArray, ExportError> {
                batch
                    .column_by_name(name)
                    .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
                    .ok_or_else(|| ExportError::Invalid(format!("no time column {name}")))
            };
            let (app, id, session) =
                (text("application_id")?, text("event_id")?, text("session_id")?);
            let (category, name, data) = (text("category")?, text("name")?, text("data")?);
            let (occurred, received, stored) =
                (time("occurred_at")?, time("received_at")?, time("stored_at")?);
            let version = batch
                .column_by_name("schema_version")
                .and_then(|c| c.as_any().downcast_ref::<Int32Array>())
                .ok_or_else(|| ExportError::Invalid("no column schema_version".into()))?;
            let at = |column: &TimestampMicrosecondArray, i: usize| {
                DateTime::from_timestamp_micros(column.value(i)).unwrap_or_default()
            };
            for i in 0..batch.num_rows() {
                events.push(ExportedEvent {
                    application_id: app.value(i).to_owned(),
                    event_id: id.value(i).to_owned(),
                    session_id: session.value(i).to_owned(),
                    category: category.value(i).to_owned(),
                    name: name.value(i).to_owned(),
                    data: data.value(i).to_owned(),
                    occurred_at: at(occurred, i),
                    received_at: at(received, i),
                    stored_at: at(stored, i),
                    schema_version: (!version.is_null(i)).then(|| version.value(i)),
                });
            }
        }
    }
    Ok(events)
}
