//! The read-path benchmark's parts, shared with `eye-bench`: [`load`] fills a store with
//! millions of realistic events by `COPY`, [`mix`] asks it the benchmark's questions.

pub mod load;
pub mod mix;
