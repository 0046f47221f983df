//! One module per `eye` command. Each exposes the operation as a function usable from Rust (tests,
//! `eye dev`) and a `run` that prints for humans.

pub mod apps;
pub mod delete;
pub mod dev;
pub mod dlq;
pub mod errors;
pub mod events;
pub mod export;
pub mod import;
pub mod load;
pub mod maintenance;
pub mod migrate;
pub mod read;
pub mod replay;
pub mod schemas;
pub mod send;
pub mod session;
pub mod stats;
pub mod subscriptions;

use chrono::{DateTime, SecondsFormat, Utc};

/// A timestamp for humans and scripts alike: RFC 3339, whole seconds, UTC.
pub(crate) fn format_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}
