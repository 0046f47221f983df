//! The validator's verdicts: quarantined events by reason and type.

use prometheus_client::{
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

use super::ValidationLabels;

/// The validator's verdicts.
#[derive(Debug)]
pub struct ValidationMetrics {
    errors: Family<ValidationLabels, Counter>,
}

impl ValidationMetrics {
    /// `event_type` value for events whose type has no registered schema: clients choose types
    /// freely, and only registered ones are a bounded set.
    pub const UNREGISTERED_TYPE: &'static str = "unregistered";

    pub(super) fn register(registry: &mut Registry) -> Self {
        let this = Self { errors: Family::default() };
        registry.register(
            "eye_validation_errors",
            "Events quarantined in event_errors, by reason code and event type \
             (category/name, or unregistered); reason `suppressed`: refused by a suppression \
             (`eye delete --suppress`) and kept nowhere",
            this.errors.clone(),
        );
        this
    }

    /// Counts `events` quarantined for `reason`; `event_type` is `category/name` of a registered
    /// type, else [`UNREGISTERED_TYPE`](Self::UNREGISTERED_TYPE).
    pub fn quarantined(&self, reason: &'static str, event_type: String, events: u64) {
        self.errors.get_or_create(&ValidationLabels { reason, event_type }).inc_by(events);
    }
}
