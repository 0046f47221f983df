//! The outbox's state per stage (depth, lag, dead letters), as last sampled.

use std::{
    collections::BTreeSet,
    sync::{Mutex, atomic::AtomicU64},
};

use flush_event::admin::StageStats;
use prometheus_client::{
    metrics::{family::Family, gauge::Gauge},
    registry::{Registry, Unit},
};

use super::StageLabel;

/// The outbox's state per stage, as last sampled.
#[derive(Debug)]
pub struct OutboxMetrics {
    depth: Family<StageLabel, Gauge>,
    oldest_age: Family<StageLabel, Gauge<f64, AtomicU64>>,
    dead_letters: Family<StageLabel, Gauge>,
    /// Stages reported so far: a stage that empties is reported as 0, not left at its last value.
    seen: Mutex<BTreeSet<String>>,
}

impl OutboxMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let this = Self {
            depth: Family::default(),
            oldest_age: Family::default(),
            dead_letters: Family::default(),
            seen: Mutex::default(),
        };
        registry.register(
            "eye_outbox_depth",
            "Outbox rows waiting or in flight in the stage (sampled; the same in every replica)",
            this.depth.clone(),
        );
        registry.register_with_unit(
            "eye_outbox_oldest_age",
            "Age of the oldest row in the stage, its lag; 0 when empty (sampled)",
            Unit::Seconds,
            this.oldest_age.clone(),
        );
        registry.register(
            "eye_outbox_dead_letters",
            "Rows in outbox_dead_letters from the stage (sampled)",
            this.dead_letters.clone(),
        );
        this
    }

    /// Sets the gauges from one sample; `known` stages and stages seen before but absent from
    /// `stats` (drained) are set to 0.
    pub fn record(&self, stats: &[StageStats], known: &[&str]) {
        let mut seen = self.seen.lock().expect("outbox stages");
        seen.extend(known.iter().map(|stage| (*stage).to_owned()));
        seen.extend(stats.iter().map(|s| s.stage.clone()));
        for stage in seen.iter() {
            let (depth, age, dead) = stats
                .iter()
                .find(|s| &s.stage == stage)
                .map_or((0, 0.0, 0), |s| (s.depth, s.oldest_age_seconds, s.dead_letters));
            let label = StageLabel { stage: stage.clone() };
            self.depth.get_or_create(&label).set(depth);
            self.oldest_age.get_or_create(&label).set(age);
            self.dead_letters.get_or_create(&label).set(dead);
        }
    }
}
