//! Generates the gRPC and message code from `proto/` with `protox` (pure Rust; no system `protoc`)
//! and writes the descriptor set that server reflection serves.

use std::{env, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &["eye/v1/ingest.proto", "eye/v1/outbox.proto", "eye/v1/query.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", proto_root.display());

    let descriptors = protox::compile(PROTOS, [&proto_root])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("eye_descriptor.bin"), descriptors.encode_to_vec())?;

    // Cargo features `client` and `server`: a client library needs no server code, and the
    // messages alone need neither.
    tonic_prost_build::configure()
        .build_client(env::var_os("CARGO_FEATURE_CLIENT").is_some())
        .build_server(env::var_os("CARGO_FEATURE_SERVER").is_some())
        .compile_fds(descriptors)?;
    Ok(())
}
