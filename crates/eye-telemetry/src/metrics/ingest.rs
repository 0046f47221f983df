//! Ingest's families: answers per status and reason, request latency, group-commit sizes.

use std::time::Duration;

use prometheus_client::{
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::{Registry, Unit},
};

use prometheus_client::encoding::EncodeLabelSet;

use super::{
    CodeLabel, HistogramFamily, ReasonLabel, events_histogram, request_histogram, rows_histogram,
};

/// Ingest: what requests were answered, how fast, and how well group commit batches.
#[derive(Debug)]
pub struct IngestMetrics {
    received: Counter,
    accepted: Counter,
    duplicate: Counter,
    rejected: Family<ReasonLabel, Counter>,
    request_duration: HistogramFamily<CodeLabel>,
    http_request_duration: HistogramFamily<StatusLabel>,
    refusals: Family<ReasonLabel, Counter>,
    over_quota: Family<ApplicationLabel, Counter>,
    commit_requests: Histogram,
    commit_events: Histogram,
}

impl IngestMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let this = Self {
            received: Counter::default(),
            accepted: Counter::default(),
            duplicate: Counter::default(),
            rejected: Family::default(),
            request_duration: Family::new_with_constructor(request_histogram),
            http_request_duration: Family::new_with_constructor(request_histogram),
            refusals: Family::default(),
            over_quota: Family::default(),
            commit_requests: rows_histogram(),
            commit_events: events_histogram(),
        };
        registry.register(
            "eye_events_received",
            "Events answered in successful SendEvents responses (accepted + duplicate + rejected)",
            this.received.clone(),
        );
        registry.register(
            "eye_events_accepted",
            "Events answered ACCEPTED (new and durable)",
            this.accepted.clone(),
        );
        registry.register(
            "eye_events_duplicate",
            "Events answered DUPLICATE (this application already sent this event_id)",
            this.duplicate.clone(),
        );
        registry.register(
            "eye_events_rejected",
            "Events answered REJECTED, by reason code",
            this.rejected.clone(),
        );
        registry.register_with_unit(
            "eye_ingest_request_duration",
            "SendEvents from receipt to answer, group commit included, by gRPC status code",
            Unit::Seconds,
            this.request_duration.clone(),
        );
        registry.register_with_unit(
            "eye_ingest_http_request_duration",
            "POST /v1/events from receipt to answer, by HTTP status",
            Unit::Seconds,
            this.http_request_duration.clone(),
        );
        registry.register(
            "eye_ingest_refusals",
            "Whole requests refused (any transport), by reason: missing_key, invalid_key, \
             forbidden, origin_not_allowed, secret_key_in_browser, rate_limited, quota_exceeded, \
             backlogged, ...",
            this.refusals.clone(),
        );
        registry.register(
            "eye_ingest_over_quota_events",
            "Events refused because their application was over its ingest quota, by application id",
            this.over_quota.clone(),
        );
        registry.register(
            "eye_ingest_commit_requests",
            "Requests (outbox rows) per group commit",
            this.commit_requests.clone(),
        );
        registry.register(
            "eye_ingest_commit_events",
            "Events per group commit",
            this.commit_events.clone(),
        );
        this
    }

    /// Counts the answers of one successful `SendEvents` response.
    pub fn record_response(&self, accepted: u64, duplicate: u64, rejected: &[&'static str]) {
        self.received.inc_by(accepted + duplicate + rejected.len() as u64);
        self.accepted.inc_by(accepted);
        self.duplicate.inc_by(duplicate);
        for &reason in rejected {
            self.rejected.get_or_create(&ReasonLabel { reason }).inc();
        }
    }

    /// One `SendEvents` call, answered with gRPC status `code` (`OK`, `INVALID_ARGUMENT`, ...)
    /// after `elapsed`.
    pub fn observe_request(&self, code: &'static str, elapsed: Duration) {
        self.request_duration.get_or_create(&CodeLabel { code }).observe(elapsed.as_secs_f64());
    }

    /// One `POST /v1/events`, answered with HTTP `status` after `elapsed`.
    pub fn observe_http_request(&self, status: u16, elapsed: Duration) {
        self.http_request_duration
            .get_or_create(&StatusLabel { status })
            .observe(elapsed.as_secs_f64());
    }

    /// One request refused whole, for `reason` (a stable code).
    pub fn record_refusal(&self, reason: &'static str) {
        self.refusals.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// A request of `events` events refused because `application` was over its quota.
    pub fn record_over_quota(&self, application: impl ToString, events: u32) {
        self.over_quota
            .get_or_create(&ApplicationLabel { application: application.to_string() })
            .inc_by(u64::from(events));
    }

    /// One group commit of `requests` requests holding `events` events.
    pub fn observe_commit(&self, requests: usize, events: usize) {
        self.commit_requests.observe(requests as f64);
        self.commit_events.observe(events as f64);
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApplicationLabel {
    application: String,
}
