//! What every Eye service shares, so that each service's `main` stays thin.
//!
//! # Layout
//! - [`auth`]: API keys: generation, hashing, and the cached lookup servers authenticate with.
//! - [`settings`]: typed, layered configuration (defaults -> file -> `EYE__*` environment,
//!   `DATABASE_URL`), validated after loading. Every setting of every service is listed there.
//! - [`database`]: the connection pool and the embedded [`MIGRATOR`](database::MIGRATOR).
//! - [`shutdown`]: SIGTERM/SIGINT as a cancellation token, for draining.
//! - [`grpc`]: binding, health (NOT_SERVING until the database answers) and reflection.

pub mod auth;
pub mod database;
pub mod grpc;
pub mod settings;
pub mod shutdown;

pub use settings::Settings;
