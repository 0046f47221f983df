//! A Postgres-backed transactional outbox, built from what the best Postgres queues (pgmq, River,
//! graphile-worker, Que, sqlxmq) teach.
//!
//! A producer writes its own rows and [`flush_event`]s a protobuf message into a *stage* in the
//! same transaction, so the two commit or fail together: the dual-write problem disappears. A
//! consumer [`Outbox::claim`]s a batch under a lease, does its work, and acks by *handing off*:
//! in one transaction it writes its results (often: [`flush_events`] into the next stage) and
//! deletes the rows it claimed, fenced by the claim's token. A crash at any point loses nothing
//! and duplicates nothing; a consumer whose lease was taken over acks nothing.
//!
//! # Layout
//! - [`enqueue`]: [`flush_event`] / [`flush_events`], inside the caller's transaction
//!   ([`flush_events_in`] for the outbox installed in a schema of a producer's own database).
//! - [`install`]: [`install()`](install::install) the tables into a schema of any database,
//!   with the outbox's own [`MIGRATOR`](install::MIGRATOR).
//! - [`outbox`]: [`Outbox`]: claim, ack (hand-off), retry with backoff and jitter, dead-letter.
//! - [`worker`]: [`run_worker`], the claim -> handle -> ack loop, with poison isolation.
//! - [`wake`]: [`Waker`], LISTEN/NOTIFY wake-ups with a polling fallback (never a busy loop).
//! - [`admin`]: dead-letter listing and replay, per-stage depth and lag.
//! - [`failure`]: [`DbFailure`], the one classification of database errors (unreachable,
//!   retryable, timeout, the statement's own) that the outbox, health checks and error mappings
//!   share.
//!
//! The tables (`outbox`, `outbox_dead_letters`) are created by the workspace's `migrations/` in
//! The Eye's database, and by [`install()`](install::install) in a producer's (the same file).
//!
//! # Semantics in one paragraph
//! `visible_at` is at once the run-at time, the retry time and the lease expiry. A claim bumps
//! `attempts` and `fence` and pushes `visible_at` forward by the lease; the row comes back by
//! itself if its consumer dies. A failed batch is split so that one poison row cannot sink its
//! batch-mates; a row that fails is retried at `now() + backoff(attempts)` and, after
//! `max_attempts` claims, moved to `outbox_dead_letters` with its last error.

pub mod admin;
pub mod enqueue;
pub mod failure;
pub mod install;
pub mod outbox;
pub mod wake;
pub mod worker;

use std::collections::BTreeMap;

pub use enqueue::{flush_event, flush_events, flush_events_in, flush_events_unannounced};
pub use failure::{DbFailure, is_transient};
pub use outbox::{
    Claimed, Outbox, OutboxConfig, RetryOutcome, dead_letter_in_hand_off,
    dead_letter_new_in_hand_off, record_progress,
};
pub use wake::{Waker, notify, notify_later, wake};
pub use worker::{BatchReport, Handler, run_worker, run_workers};

/// Propagation headers carried by each row, e.g. the W3C `traceparent` of the call that made it.
pub type Headers = BTreeMap<String, String>;

/// The NOTIFY channel; the payload is the stage that received rows.
pub const CHANNEL: &str = "flush_event";

/// What can go wrong acking claimed rows. (Enqueueing and administration can only fail in the
/// database, and return `sqlx::Error`.)
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("outbox database error")]
    Database(#[from] sqlx::Error),
    /// Some claimed rows were re-claimed by another consumer after this one's lease expired. The
    /// hand-off must roll back: the other consumer owns them now.
    #[error("lease lost: {matched} of {expected} claimed rows still held")]
    LeaseLost { expected: usize, matched: u64 },
}
