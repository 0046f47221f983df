//! eye-cli
