//! The Parquet columns of each kind of export, and building them from rows.
//!
//! Events: every column of `events`; ids as their text form, `data` as JSON text (Postgres's
//! `jsonb` rendering, so equal payloads are equal strings), times as UTC microseconds
//! (`timestamp[us, tz=UTC]`), `schema_version` nullable. Errors: every column of `event_errors`
//! likewise.

use std::sync::Arc;

use arrow_array::{
    ArrayRef, RecordBatch,
    builder::{Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder},
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, Utc};
use sqlx::{Row, postgres::PgRow};

use crate::ExportError;

/// Rows per record batch handed to the Parquet writer.
pub const BATCH_ROWS: usize = 8192;

/// What is exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Stored events (`events`), under DEST.
    Events,
    /// Quarantined events (`event_errors`), under DEST/errors.
    Errors,
}

/// The SQL side of a kind.
pub(crate) struct Spec {
    pub(crate) table: &'static str,
    pub(crate) select: &'static str,
    /// The column that says when a row last changed (for `follow`).
    pub(crate) changed: &'static str,
    /// An expression over the hour's rows that changes whenever they do (besides their count).
    pub(crate) state: &'static str,
}

const EVENTS: Spec = Spec {
    table: "events",
    select: "application_id::text AS application_id, event_id::text AS event_id, \
             session_id::text AS session_id, category, name, data::text AS data, occurred_at, \
             received_at, stored_at, schema_version",
    changed: "stored_at",
    state: "max(stored_at)::text",
};

const ERRORS: Spec = Spec {
    table: "event_errors",
    select: "id, application_id::text AS application_id, event_id::text AS event_id, \
             session_id::text AS session_id, category, name, data::text AS data, occurred_at, received_at, \
             reason, message, schema_version, failed_at, failures, replayed_at, replay_outcome",
    changed: "greatest(failed_at, coalesce(replayed_at, failed_at))",
    state: "max(greatest(failed_at, coalesce(replayed_at, failed_at)))::text || ':' || sum(failures)::text",
};

fn timestamp(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), nullable)
}

fn text(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Events => "events",
            Self::Errors => "errors",
        }
    }

    /// The kind's directory under DEST.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Events => "",
            Self::Errors => "errors/",
        }
    }

    pub(crate) fn spec(self) -> &'static Spec {
        match self {
            Self::Events => &EVENTS,
            Self::Errors => &ERRORS,
        }
    }

    /// The Parquet (Arrow) schema of the kind's files.
    pub fn arrow_schema(self) -> SchemaRef {
        let ids =
            [text("application_id", false), text("event_id", false), text("session_id", false)];
        let fields: Vec<Field> = match self {
            Self::Events => ids
                .into_iter()
                .chain([
                    text("category", false),
                    text("name", false),
                    text("data", false),
                    timestamp("occurred_at", false),
                    timestamp("received_at", false),
                    timestamp("stored_at", false),
                    Field::new("schema_version", DataType::Int32, true),
                ])
                .collect(),
            Self::Errors => std::iter::once(Field::new("id", DataType::Int64, false))
                .chain(ids)
                .chain([
                    text("category", false),
                    text("name", false),
                    text("data", false),
                    timestamp("occurred_at", false),
                    timestamp("received_at", false),
                    text("reason", false),
                    text("message", false),
                    Field::new("schema_version", DataType::Int32, true),
                    timestamp("failed_at", false),
                    Field::new("failures", DataType::Int32, false),
                    timestamp("replayed_at", true),
                    text("replay_outcome", true),
                ])
                .collect(),
        };
        Arc::new(Schema::new(fields))
    }
}

/// Columns being built, one row at a time.
pub(crate) struct Builder {
    kind: Kind,
    id: Int64Builder,
    strings: Vec<StringBuilder>,
    times: Vec<TimestampMicrosecondBuilder>,
    ints: Vec<Int32Builder>,
    rows: usize,
    bytes: usize,
}

const EVENT_STRINGS: [&str; 6] =
    ["application_id", "event_id", "session_id", "category", "name", "data"];
const EVENT_TIMES: [&str; 3] = ["occurred_at", "received_at", "stored_at"];
const ERROR_STRINGS: [&str; 8] =
    ["application_id", "event_id", "session_id", "category", "name", "data", "reason", "message"];
const ERROR_TIMES: [&str; 3] = ["occurred_at", "received_at", "failed_at"];

impl Builder {
    pub(crate) fn new(kind: Kind) -> Self {
        let (strings, times, ints) = match kind {
            Kind::Events => (EVENT_STRINGS.len(), EVENT_TIMES.len(), 1),
            // + replay_outcome; + replayed_at; schema_version, failures.
            Kind::Errors => (ERROR_STRINGS.len() + 1, ERROR_TIMES.len() + 1, 2),
        };
        Self {
            kind,
            id: Int64Builder::new(),
            strings: (0..strings).map(|_| StringBuilder::new()).collect(),
            times: (0..times)
                .map(|_| TimestampMicrosecondBuilder::new().with_timezone("UTC"))
                .collect(),
            ints: (0..ints).map(|_| Int32Builder::new()).collect(),
            rows: 0,
            bytes: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.rows
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The uncompressed size of what was pushed so far, roughly.
    pub(crate) fn estimated_bytes(&self) -> usize {
        self.bytes
    }

    /// Appends `row`; returns its stored time (events) or failure time (errors).
    pub(crate) fn push(&mut self, row: &PgRow) -> Result<DateTime<Utc>, ExportError> {
        let (strings, times): (&[&str], &[&str]) = match self.kind {
            Kind::Events => (&EVENT_STRINGS, &EVENT_TIMES),
            Kind::Errors => (&ERROR_STRINGS, &ERROR_TIMES),
        };
        for (builder, column) in self.strings.iter_mut().zip(strings) {
            let value: &str = row.try_get(*column)?;
            self.bytes += value.len() + 8;
            builder.append_value(value);
        }
        let mut last = DateTime::<Utc>::UNIX_EPOCH;
        for (builder, column) in self.times.iter_mut().zip(times) {
            let value: DateTime<Utc> = row.try_get(*column)?;
            builder.append_value(value.timestamp_micros());
            last = value;
            self.bytes += 8;
        }
        self.ints[0].append_option(row.try_get::<Option<i32>, _>("schema_version")?);
        if self.kind == Kind::Errors {
            self.id.append_value(row.try_get("id")?);
            self.ints[1].append_value(row.try_get("failures")?);
            let replayed: Option<DateTime<Utc>> = row.try_get("replayed_at")?;
            self.times[3].append_option(replayed.map(|at| at.timestamp_micros()));
            self.strings[8].append_option(row.try_get::<Option<&str>, _>("replay_outcome")?);
        }
        self.rows += 1;
        Ok(last)
    }

    /// The rows pushed since the last call, as a batch in the kind's column order.
    pub(crate) fn finish(&mut self) -> Result<RecordBatch, ExportError> {
        let strings: Vec<ArrayRef> =
            self.strings.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef).collect();
        let times: Vec<ArrayRef> =
            self.times.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef).collect();
        let ints: Vec<ArrayRef> =
            self.ints.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef).collect();
        let columns: Vec<ArrayRef> = match self.kind {
            Kind::Events => {
                let mut columns = strings;
                columns.extend(times);
                columns.push(ints[0].clone());
                columns
            }
            Kind::Errors => {
                let s = |i: usize| strings[i].clone();
                let t = |i: usize| times[i].clone();
                vec![
                    Arc::new(self.id.finish()) as ArrayRef,
                    s(0),
                    s(1),
                    s(2),
                    s(3),
                    s(4),
                    s(5),
                    t(0),
                    t(1),
                    s(6),
                    s(7),
                    ints[0].clone(),
                    t(2),
                    ints[1].clone(),
                    t(3),
                    s(8),
                ]
            }
        };
        self.rows = 0;
        self.bytes = 0;
        Ok(RecordBatch::try_new(self.kind.arrow_schema(), columns)?)
    }
}
