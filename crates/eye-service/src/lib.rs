//! What every Eye service shares, so that each service's `main` stays thin.
//!
//! # Layout
//! - [`auth`]: API keys: generation, hashing, and the cached lookup servers authenticate with
//!   (transport-free: it takes the `authorization` value as text).
//! - [`settings`]: typed, layered configuration (defaults -> file -> `EYE__*` environment,
//!   `DATABASE_URL`), validated after loading. Every setting of every service is listed there.
//! - [`database`]: the connection pool, the embedded [`MIGRATOR`](database::MIGRATOR), and the
//!   one classification of database failures ([`DbFailure`](database::DbFailure)).
//! - [`pipeline`]: the contract between stages: stage names, row headers, NOTIFY channels.
//! - [`shutdown`]: SIGTERM/SIGINT as a cancellation token, for draining.
//! - [`grpc`]: binding, health (NOT_SERVING until the database answers), reflection, and the
//!   mapping of auth errors to `tonic::Status`.
//! - [`http`]: the one HTTP stack (axum): bind, serve with a bounded drain, `/metrics`.
//! - [`rate_limit`]: a keyed token bucket (publishable keys per client address, applications'
//!   quotas).
//! - [`schemas`]: the schema registry's read side (the schema in force per type, and whether it
//!   changed), for the validator and ingest's redaction.
//! - [`consumer`]: the shell every consumer stage (validator, writer, ...) runs in.

pub mod auth;
pub mod consumer;
pub mod database;
pub mod grpc;
pub mod http;
pub mod pipeline;
pub mod rate_limit;
pub mod schemas;
pub mod settings;
pub mod shutdown;

pub use settings::Settings;
