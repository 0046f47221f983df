//! `eye load`: a load generator that sends through `eye-client`, as an application would.
//!
//! With `--seed S`, event `i`'s id and session are derived from `S` and `i` (see [`seeded_id`]),
//! so anyone can check in SQL exactly which events arrived; without it the client assigns
//! UUIDv7 ids. `--producers P` tracks from P tasks at once (task j: events j, j + P, ...), as a
//! busy service would; with one producer (the default) the tracked events are always a prefix
//! `0..tracked`. On exit, also after SIGTERM or SIGINT (which stop tracking and flush), one JSON
//! line on stdout: `{"tracked", "accepted", "duplicate", "rejected", "dropped", "failed", ...}`,
//! where `tracked = accepted + duplicate + rejected + dropped + failed`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use eye_client::{Config, EyeClient, NewEvent, Overflow, TrackError};
use serde_json::json;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::cli::LoadArgs;

/// Events per session.
const SESSION_EVENTS: u64 = 20;
/// Distinguishes session ids from event ids of the same seed.
const SESSION_SALT: u64 = 0x5e55_1015;

/// The id of item `i` under `seed`: a UUID (version 8, RFC 9562's custom version) whose first
/// 64 bits are `splitmix64(seed)` and last 64 bits `i`, with the version and variant bits set:
/// `uuid_send(event_id)` in SQL shows `i` in its last 8 bytes (for `i` < 2^62).
pub fn seeded_id(seed: u64, i: u64) -> Uuid {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&splitmix64(seed).to_be_bytes());
    bytes[8..].copy_from_slice(&i.to_be_bytes());
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Event `i` of the run: a schema-valid pageview of about `payload_bytes` (`pad` is plain ASCII,
/// so the payload is formatted directly: a load generator should not spend the cores it shares
/// with the pipeline on building JSON trees).
fn event(args: &LoadArgs, i: u64, pad: &str, session: Uuid) -> NewEvent {
    NewEvent {
        category: "page interaction".into(),
        name: "pageview".into(),
        data_json: format!(r#"{{"host":"load.example","path":"/load/{i}","pad":"{pad}"}}"#),
        session_id: Some(session),
        timestamp: None,
        event_id: args.seed.map(|seed| seeded_id(seed, i)),
    }
}

/// Runs `eye load`.
pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    let shutdown = eye_service::shutdown::on_signal();
    let mut config = Config::new(args.endpoint.clone(), crate::cli::api_key(&args.key)?);
    config.batch_events = args.batch;
    config.max_in_flight = args.concurrency;
    config.spool_dir = args.spool.clone();
    if args.drop_when_full {
        config.overflow = Overflow::Drop;
    }
    let client = Arc::new(EyeClient::start(config).context("cannot start the eye client")?);
    let args = Arc::new(args);
    let pad: Arc<str> = "x".repeat(args.payload_bytes.saturating_sub(60)).into();
    let started = Instant::now();
    let tracked = Arc::new(AtomicU64::new(0));
    // Without --seed, sessions are still 20 events each, under a seed of this run's.
    let session_seed = args.seed.unwrap_or_else(|| Uuid::new_v4().as_u64_pair().0);
    let mut producers = JoinSet::new();
    for first in 0..args.producers as u64 {
        let (client, args, pad) = (client.clone(), args.clone(), pad.clone());
        let (tracked, shutdown) = (tracked.clone(), shutdown.clone());
        producers.spawn(async move {
            // Producer `first` tracks events first, first + P, first + 2P, ... in order.
            let mut i = first;
            while i < args.events && !shutdown.is_cancelled() {
                if let Some(rate) = args.rate.filter(|rate| *rate > 0.0) {
                    // Open loop: event i is due at i / rate, however long earlier ones took.
                    let due = started + Duration::from_secs_f64(i as f64 / rate);
                    tokio::select! {
                        () = tokio::time::sleep_until(due.into()) => {}
                        () = shutdown.cancelled() => break,
                    }
                }
                let session = seeded_id(session_seed ^ SESSION_SALT, i / SESSION_EVENTS);
                let result = tokio::select! {
                    result = client.track_event(event(&args, i, &pad, session)) => result,
                    () = shutdown.cancelled() => break,
                };
                match result {
                    Ok(_) | Err(TrackError::QueueFull | TrackError::SpoolFull) => {}
                    Err(error) => return Err(anyhow::Error::from(error)),
                }
                let n = tracked.fetch_add(1, Ordering::Relaxed) + 1;
                if args.progress_every > 0 && n.is_multiple_of(args.progress_every) {
                    eprintln!("{}", json!({"progress": n}));
                }
                i += args.producers as u64;
            }
            Ok(())
        });
    }
    while let Some(done) = producers.join_next().await {
        done.context("a producer task failed")??;
    }
    let client = Arc::into_inner(client).expect("the producers are done");
    let stats = client.shutdown(Duration::from_secs(args.grace_secs)).await;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({
            "tracked": stats.tracked,
            "accepted": stats.accepted,
            "duplicate": stats.duplicate,
            "rejected": stats.rejected,
            "dropped": stats.dropped,
            "failed": stats.failed,
            "recovered": stats.recovered,
            "retries": stats.retries,
            "seconds": seconds,
            "acknowledged_per_second": (stats.accepted + stats.duplicate) as f64 / seconds.max(1e-9),
        })
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_ids_are_stable_distinct_and_carry_the_index() {
        assert_eq!(seeded_id(7, 3), seeded_id(7, 3));
        assert_ne!(seeded_id(7, 3), seeded_id(7, 4));
        assert_ne!(seeded_id(7, 3), seeded_id(8, 3));
        let id = seeded_id(7, 3);
        assert_eq!(id.get_version_num(), 8);
        assert_eq!(u64::from_be_bytes(id.as_bytes()[8..].try_into().unwrap()) & !(3 << 62), 3);
    }
}
