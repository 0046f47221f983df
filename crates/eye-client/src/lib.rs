//! `eye-client`: the Rust client of The Eye. It depends on the generated client stubs
//! (`eye-proto` with feature `client`), tonic and tokio (plus small crates: uuid, chrono,
//! serde_json, secrecy, tracing, rand, crc32fast): no service crate, no database driver.
//!
//! - [`EyeClient`]: what an application embeds. `track` returns the event's id (a UUIDv7) at
//!   once; a background task batches, bounds, retries with the same ids (a retry answered
//!   DUPLICATE counts as delivered), splits batches over the server's limits, reports every
//!   outcome, and, with a spool directory, keeps tracked events on disk until answered.
//! - [`Client`]: one `SendEvents` call per `send`, no buffering, no retries (`eye send`).
//! - [`QueryClient`]: the read path (`eye.v1.QueryService`, a key with the `read` role).
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//!
//! use eye_client::{Config, EyeClient};
//! use serde_json::json;
//!
//! let client = EyeClient::start(Config::new("http://127.0.0.1:50051", "eye_..."))?;
//! let id = client.track("page interaction", "pageview", &json!({"host": "a.b", "path": "/"})).await?;
//! println!("tracked {id}");
//! client.flush().await?; // everything tracked so far is answered
//! let stats = client.shutdown(Duration::from_secs(10)).await;
//! assert_eq!(stats.tracked, stats.accepted + stats.duplicate + stats.rejected + stats.dropped + stats.failed);
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//! - `connection`: the endpoint, TLS, gzip, timeouts and the key (sensitive, never in `Debug`).
//! - `buffered`: [`EyeClient`], its [`Config`], [`Stats`] and [`Outcome`]s.
//! - `retry`: the one retry policy: what is retried, full-jitter backoff, `retry-after`.
//! - `spool`: the durable spool (group fsync, segments deleted once answered).
//! - `ingest`, `query`: the raw clients.

mod buffered;
mod connection;
mod ingest;
mod query;
mod retry;
mod spool;

pub use buffered::{
    Config, EyeClient, NewEvent, Outcome, OutcomeCallback, OutcomeKind, Overflow, StartError,
    Stats, TrackError,
};
pub use connection::{ConnectError, ConnectOptions};
pub use ingest::{
    Client, Delivery, RECORD_SESSION_NAMESPACE, describe_status, event, event_at,
    record_session_id, status_name,
};
pub use query::{Listing, MAX_PAGE_SIZE, QueryClient};
pub use retry::RetryPolicy;

/// The workspace README's Rust blocks ("Sending from your application"), compiled as doctests
/// so that the README cannot drift from this crate.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
