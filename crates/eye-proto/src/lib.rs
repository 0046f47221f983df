//! The generated contract: messages and gRPC services of the `eye.v1` protobuf package.
//!
//! # Layout
//! - `proto/eye/v1/ingest.proto`: the public `IngestService` (fixed contract).
//! - `proto/eye/v1/outbox.proto`: `EventBatch`, the body of the outbox rows handed between stages.
//! - `proto/eye/v1/query.proto`: the public `QueryService` (read path, errors and replay, stats).
//!
//! Code is generated at build time by `build.rs` with `protox`, so no system `protoc` is needed.
//! The gRPC stubs are behind features: `client` (the `*_client` modules) and `server` (the
//! `*_server` modules); messages are always there.
//! [`FILE_DESCRIPTOR_SET`] feeds gRPC server reflection.

/// The `eye.v1` package.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("eye.v1");
}

/// Encoded `FileDescriptorSet` of every `eye.v1` file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/eye_descriptor.bin"));
