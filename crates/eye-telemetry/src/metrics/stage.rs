//! The outbox consumers' families (validator, writer, and any stage to come), labelled by stage.

use flush_event::BatchReport;
use prometheus_client::{
    metrics::{counter::Counter, family::Family},
    registry::{Registry, Unit},
};

use super::{
    FailureLabels, HistogramFamily, StageLabel, events_histogram, rows_histogram, stage_histogram,
};

/// Outbox consumers (validator, writer): batch latency and size, failures; labelled by stage.
#[derive(Debug)]
pub struct StageMetrics {
    duration: HistogramFamily<StageLabel>,
    rows: HistogramFamily<StageLabel>,
    events: HistogramFamily<StageLabel>,
    row_failures: Family<FailureLabels, Counter>,
}

impl StageMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let this = Self {
            duration: Family::new_with_constructor(stage_histogram),
            rows: Family::new_with_constructor(rows_histogram),
            events: Family::new_with_constructor(events_histogram),
            row_failures: Family::default(),
        };
        registry.register_with_unit(
            "eye_stage_duration",
            "One batch of a stage, from its claim to its committed hand-off",
            Unit::Seconds,
            this.duration.clone(),
        );
        registry.register(
            "eye_stage_batch_rows",
            "Outbox rows per claimed batch (one row holds the events of one SendEvents call)",
            this.rows.clone(),
        );
        registry.register(
            "eye_stage_batch_events",
            "Events per claimed batch",
            this.events.clone(),
        );
        registry.register(
            "eye_stage_row_failures",
            "Rows whose hand-off did not commit: cause error (failed alone: split, retried or \
             dead-lettered) or lease_lost (another consumer took the row over)",
            this.row_failures.clone(),
        );
        this
    }

    /// Records a batch as the outbox worker reports it ([`flush_event::Handler::observe`]).
    pub fn observe_batch(&self, batch: &BatchReport<'_>) {
        let stage = StageLabel { stage: batch.stage.to_owned() };
        self.duration.get_or_create(&stage).observe(batch.elapsed.as_secs_f64());
        self.rows.get_or_create(&stage).observe(batch.rows as f64);
        for (cause, rows) in [("error", batch.failed), ("lease_lost", batch.lease_lost)] {
            if rows > 0 {
                let labels = FailureLabels { stage: stage.stage.clone(), cause };
                self.row_failures.get_or_create(&labels).inc_by(rows as u64);
            }
        }
    }

    /// Records how many events a batch of `stage` held.
    pub fn observe_events(&self, stage: &str, events: usize) {
        self.events.get_or_create(&StageLabel { stage: stage.to_owned() }).observe(events as f64);
    }
}
