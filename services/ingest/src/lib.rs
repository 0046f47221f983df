//! eye-ingest
