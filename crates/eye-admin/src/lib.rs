//! The Eye's administration domain, one function per operation, with one error type.
//!
//! Everything that writes the tables of applications, keys and schemas lives here, so that the
//! CLI (`eye apps`, `eye schemas`, `eye dlq`), the console to come and every test harness apply
//! the same rules: a key is issued only to a live application, a schema only for a type that
//! ingest would accept, and registering never rewrites a version.
//!
//! # Layout
//! - [`apps`]: applications and their API keys: create, issue, list, revoke.
//! - [`schemas`]: the schema registry's write side: check, put (versioned, a no-op when
//!   unchanged), list, and the example schemas `eye dev` registers.
//! - [`dead_letters`]: the outbox's dead letters: list and replay into their stage.
//! - [`deletion`]: a data subject's events removed everywhere (in flight, stored, quarantined,
//!   exported), with a receipt and an optional suppression of later ones.
//! - [`maintenance`]: the store's upkeep: partitions ahead of need, retention, the dedup window.
//! - [`subscriptions`]: the ways out: create (live, or backfilling from a time), list with their
//!   delivery state, pause, resume, delete; the writers' fence.
//!
//! Functions take anything that can [`Acquire`](sqlx::Acquire) a Postgres connection (a pool, a
//! connection, a transaction), and return [`AdminError`], whose messages say what to do next.

pub mod apps;
pub mod dead_letters;
pub mod deletion;
pub mod maintenance;
pub mod schemas;
pub mod subscriptions;

use chrono::{DateTime, SecondsFormat, Utc};

/// Why an administrative operation did not happen. Messages are meant for people: they name the
/// thing and the next step; database errors keep their source for the caller to classify.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// An argument breaks a rule; the message says which and why.
    #[error("{0}")]
    Invalid(String),
    #[error("application `{name}` already exists; issue another key with `eye apps key {name}`")]
    ApplicationExists { name: String },
    #[error(
        "application `{name}` already exists and was revoked at {}; choose another name",
        format_time(*at)
    )]
    ApplicationExistsRevoked { name: String, at: DateTime<Utc> },
    #[error("no application named `{name}`; create it with `eye apps create {name}`")]
    NoSuchApplication { name: String },
    #[error(
        "application `{name}` was revoked at {}; revoked applications get no new keys",
        format_time(*at)
    )]
    ApplicationRevoked { name: String, at: DateTime<Utc> },
    #[error("another registration of {category}/{name} version {version} won the race; retry")]
    SchemaRace { category: String, name: String, version: i32 },
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

/// A timestamp in messages: RFC 3339, whole seconds, UTC (as the CLI prints times).
pub fn format_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}
