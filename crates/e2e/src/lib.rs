//! eye-e2e
