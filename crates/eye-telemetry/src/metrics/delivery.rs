//! `eye-delivery`'s families, labelled by subscription name (a set the operator bounds).

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::{Registry, Unit},
};

use super::{HistogramFamily, stage_histogram};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SubscriptionLabel {
    pub(crate) subscription: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SubscriptionReasonLabels {
    pub(crate) subscription: String,
    pub(crate) reason: &'static str,
}

/// Delivery per subscription: events delivered and dead-lettered, failed attempts by reason,
/// latency from storage to delivery, and (sampled) what is pending.
#[derive(Debug)]
pub struct DeliveryMetrics {
    delivered: Family<SubscriptionLabel, Counter>,
    dead_lettered: Family<SubscriptionLabel, Counter>,
    failures: Family<SubscriptionReasonLabels, Counter>,
    latency: HistogramFamily<SubscriptionLabel>,
    pending: Family<SubscriptionLabel, Gauge>,
    lag: Family<SubscriptionLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

impl DeliveryMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let this = Self {
            delivered: Family::default(),
            dead_lettered: Family::default(),
            failures: Family::default(),
            latency: Family::new_with_constructor(stage_histogram),
            pending: Family::default(),
            lag: Family::default(),
        };
        registry.register(
            "eye_delivery_events_delivered",
            "Events the destination acknowledged (a webhook's 2xx, JetStream's publish ack)",
            this.delivered.clone(),
        );
        registry.register(
            "eye_delivery_events_dead_lettered",
            "Events dead-lettered: refused for good by the destination, or out of attempts",
            this.dead_lettered.clone(),
        );
        registry.register(
            "eye_delivery_failures",
            "Failed delivery attempts by reason: timeout, connect, http_408, http_429, http_5xx, \
             http_4xx (refused: the events are isolated and dead-lettered), gone (410: the \
             subscription is paused), nats",
            this.failures.clone(),
        );
        registry.register_with_unit(
            "eye_delivery_latency",
            "From an event's storage to its acknowledged delivery",
            Unit::Seconds,
            this.latency.clone(),
        );
        registry.register(
            "eye_delivery_pending_events",
            "Events enqueued for the subscription and not yet delivered (sampled)",
            this.pending.clone(),
        );
        registry.register_with_unit(
            "eye_delivery_lag",
            "Age of the subscription's oldest undelivered batch (sampled)",
            Unit::Seconds,
            this.lag.clone(),
        );
        this
    }

    fn label(subscription: &str) -> SubscriptionLabel {
        SubscriptionLabel { subscription: subscription.to_owned() }
    }

    /// `latencies`: seconds from storage to delivery, one per event delivered.
    pub fn delivered(&self, subscription: &str, latencies: impl IntoIterator<Item = f64>) {
        let label = Self::label(subscription);
        let histogram = self.latency.get_or_create(&label);
        let mut count = 0;
        for seconds in latencies {
            histogram.observe(seconds.max(0.0));
            count += 1;
        }
        self.delivered.get_or_create(&label).inc_by(count);
    }

    pub fn dead_lettered(&self, subscription: &str, events: u64) {
        self.dead_lettered.get_or_create(&Self::label(subscription)).inc_by(events);
    }

    pub fn failed(&self, subscription: &str, reason: &'static str) {
        let labels = SubscriptionReasonLabels { subscription: subscription.to_owned(), reason };
        self.failures.get_or_create(&labels).inc();
    }

    /// Records a sample of the subscription's backlog.
    pub fn backlog(&self, subscription: &str, pending: i64, lag_seconds: f64) {
        let label = Self::label(subscription);
        self.pending.get_or_create(&label).set(pending);
        self.lag.get_or_create(&label).set(lag_seconds);
    }
}
