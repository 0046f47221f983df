//! eye-validator
