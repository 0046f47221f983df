//! eye-writer
