//! Prometheus metrics: every family the services export, defined once. (`eye_service::http`
//! serves them on `/metrics`.)
//!
//! A [`Metrics`] is one registry (cheap to clone). Each group of families is registered the first
//! time a service asks for it ([`Metrics::ingest`], [`Metrics::stage`], ...), so a process exports
//! only the families of the services it runs, and several services sharing one [`Metrics`] (`eye
//! dev` runs them all in one process) register each family once. Names and labels are a contract
//! (docs/operations.md, the Grafana dashboard): change them only together.
//!
//! Labels hold bounded sets only: reason codes, gRPC codes, stage names, registered event types.
//! Never payload contents, keys or ids.
//!
//! The exposition is the OpenMetrics text format (`prometheus-client`), which Prometheus scrapes
//! natively. Encoding a scrape reads memory only: gauges that describe the database are sampled by
//! a background task ([`Metrics::sample_outbox`]), never at scrape time, so `/metrics` answers
//! even when the database does not (it is the validator's and the writer's liveness probe).

//! # Layout
//! - this module: [`Metrics`], the registry, its histogram shapes and labels, and the
//!   database-pool collector;
//! - [`ingest`], [`stage`], [`validation`], [`outbox`], [`delivery`]: one group of families each, registered
//!   the first time a service asks for it.

mod delivery;
mod ingest;
mod outbox;
mod stage;
mod validation;

use std::{
    sync::{
        Arc, Mutex, OnceLock, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::{Histogram, exponential_buckets},
    },
    registry::{Registry, Unit},
};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub use self::{
    delivery::DeliveryMetrics, ingest::IngestMetrics, outbox::OutboxMetrics, stage::StageMetrics,
    validation::ValidationMetrics,
};

/// The content type of the exposition (OpenMetrics text).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How often [`Metrics::sample_outbox`] reads the outbox's state by default.
pub const OUTBOX_SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

/// Acknowledgement latency buckets, in seconds: fine around the 25 ms p99 target.
const REQUEST_BUCKETS: [f64; 14] =
    [0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Hand-off latency buckets, in seconds.
const STAGE_BUCKETS: [f64; 13] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

pub(crate) fn request_histogram() -> Histogram {
    Histogram::new(REQUEST_BUCKETS)
}

pub(crate) fn stage_histogram() -> Histogram {
    Histogram::new(STAGE_BUCKETS)
}

/// 1, 2, 4, ... 1024: outbox rows per batch, requests per group commit.
pub(crate) fn rows_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 11))
}

/// 1, 2, 4, ... 16384: events per batch.
pub(crate) fn events_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 15))
}

pub(crate) type HistogramFamily<S> = Family<S, Histogram, fn() -> Histogram>;

/// The metrics of one process (or of the services sharing it). Cheap to clone.
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    registry: RwLock<Registry>,
    ingest: OnceLock<IngestMetrics>,
    stage: OnceLock<StageMetrics>,
    validation: OnceLock<ValidationMetrics>,
    outbox: OnceLock<OutboxMetrics>,
    delivery: OnceLock<DeliveryMetrics>,
    pools: OnceLock<Arc<Pools>>,
    outbox_sampled: AtomicBool,
    replica_lag: OnceLock<Gauge<f64, AtomicU64>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// How far the server behind `pool` is behind its primary, in seconds: `None` on a primary, 0
/// when it has replayed everything it received, else the time since the last transaction it
/// replayed was committed. The one reading of replica lag (the metrics, `GetStats`).
pub async fn replica_lag(pool: &PgPool) -> Result<Option<f64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT CASE WHEN NOT pg_is_in_recovery() THEN NULL \
                     WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() \
                     THEN 0::float8 \
                     ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 END",
    )
    .fetch_one(pool)
    .await
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    fn group<'a, T>(&'a self, cell: &'a OnceLock<T>, register: fn(&mut Registry) -> T) -> &'a T {
        cell.get_or_init(|| register(&mut self.inner.registry.write().expect("metrics registry")))
    }

    /// Ingest's families (registered on first use).
    pub fn ingest(&self) -> &IngestMetrics {
        self.group(&self.inner.ingest, IngestMetrics::register)
    }

    /// The outbox consumers' families, labelled by stage (registered on first use).
    pub fn stage(&self) -> &StageMetrics {
        self.group(&self.inner.stage, StageMetrics::register)
    }

    /// The validator's families (registered on first use).
    pub fn validation(&self) -> &ValidationMetrics {
        self.group(&self.inner.validation, ValidationMetrics::register)
    }

    /// The outbox's state per stage (registered on first use; see [`sample_outbox`](Self::sample_outbox)).
    pub fn outbox(&self) -> &OutboxMetrics {
        self.group(&self.inner.outbox, OutboxMetrics::register)
    }

    /// `eye-delivery`'s families, labelled by subscription (registered on first use).
    pub fn delivery(&self) -> &DeliveryMetrics {
        self.group(&self.inner.delivery, DeliveryMetrics::register)
    }

    /// Reports `pool`'s connections (in use, idle, maximum) in `eye_db_connections_*`, read at
    /// scrape time from the pool's counters (never from the database). Several pools add up.
    pub fn watch_pool(&self, pool: &PgPool) {
        let pools = self.inner.pools.get_or_init(|| {
            let pools = Arc::new(Pools::default());
            let mut registry = self.inner.registry.write().expect("metrics registry");
            registry.register_collector(Box::new(pools.clone()));
            pools
        });
        pools.0.lock().expect("pools").push(pool.clone());
    }

    /// Samples the outbox's depth, lag and dead letters per stage every `every` until `shutdown`,
    /// in the background; `stages` are reported (0) even when empty. Only the first call per
    /// [`Metrics`] starts a sampler: services sharing one do not sample twice.
    pub fn sample_outbox(
        &self,
        pool: PgPool,
        stages: &'static [&'static str],
        every: Duration,
        shutdown: CancellationToken,
    ) {
        if self.inner.outbox_sampled.swap(true, Ordering::AcqRel) {
            return;
        }
        let metrics = self.clone();
        tokio::spawn(async move {
            let outbox = metrics.outbox();
            let mut failing = false;
            loop {
                match flush_event::admin::stage_stats(&pool).await {
                    Ok(stats) => {
                        outbox.record(&stats, stages);
                        failing = false;
                    }
                    // The last values stay; one warning per outage is enough.
                    Err(error) if !failing => {
                        tracing::warn!(%error, "cannot sample the outbox for metrics");
                        failing = true;
                    }
                    Err(_) => {}
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(every) => {}
                }
            }
        });
    }

    /// Samples how far the streaming replica behind `pool` is behind its primary every `every`
    /// until `shutdown`, as `eye_query_replica_lag_seconds` (see [`replica_lag`]).
    pub fn sample_replica_lag(&self, pool: PgPool, every: Duration, shutdown: CancellationToken) {
        let gauge = self
            .inner
            .replica_lag
            .get_or_init(|| {
                let gauge = Gauge::<f64, AtomicU64>::default();
                self.inner.registry.write().expect("metrics registry").register_with_unit(
                    "eye_query_replica_lag",
                    "How far the replica the query service reads from is behind its primary \
                     (0 when it has replayed all it received)",
                    Unit::Seconds,
                    gauge.clone(),
                );
                gauge
            })
            .clone();
        tokio::spawn(async move {
            loop {
                match replica_lag(&pool).await {
                    Ok(Some(lag)) => {
                        gauge.set(lag);
                    }
                    Ok(None) => tracing::warn!("the query's read database is not a replica"),
                    Err(error) => tracing::debug!(%error, "cannot sample the replica's lag"),
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(every) => {}
                }
            }
        });
    }

    /// The exposition of every registered family.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        let registry = self.inner.registry.read().expect("metrics registry");
        prometheus_client::encoding::text::encode(&mut text, &registry)
            .expect("writing to a String cannot fail");
        text
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    pub(crate) reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CodeLabel {
    pub(crate) code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StageLabel {
    pub(crate) stage: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FailureLabels {
    pub(crate) stage: String,
    /// `error` (the row failed alone: split, retried or dead-lettered) or `lease_lost`.
    pub(crate) cause: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ValidationLabels {
    pub(crate) reason: &'static str,
    pub(crate) event_type: String,
}

/// The pools whose connections `eye_db_connections_*` report, read at scrape time.
#[derive(Debug, Default)]
struct Pools(Mutex<Vec<PgPool>>);

impl Collector for Pools {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let (mut in_use, mut idle, mut max) = (0i64, 0i64, 0i64);
        for pool in self.0.lock().expect("pools").iter().filter(|pool| !pool.is_closed()) {
            let size = i64::from(pool.size());
            let free = pool.num_idle() as i64;
            in_use += (size - free).max(0);
            idle += free;
            max += i64::from(pool.options().get_max_connections());
        }
        for (name, help, value) in [
            ("eye_db_connections_in_use", "Database connections of the pool in use.", in_use),
            ("eye_db_connections_idle", "Database connections of the pool open and idle.", idle),
            ("eye_db_connections_max", "Most connections the pool may open.", max),
        ] {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use flush_event::admin::StageStats;

    use super::*;

    #[test]
    fn families_appear_once_registered_with_contract_names() {
        let metrics = Metrics::new();
        assert!(!metrics.encode().contains("eye_events_accepted"));
        let ingest = metrics.ingest();
        ingest.record_response(2, 1, &["invalid_session_id"]);
        ingest.observe_request("OK", Duration::from_millis(3));
        metrics.clone().ingest().record_response(1, 0, &[]);
        metrics.validation().quarantined("schema_violation", "page interaction/pageview".into(), 2);
        metrics.outbox().record(&[], &["first", "second"]);
        let text = metrics.encode();
        for line in [
            "eye_events_received_total 5",
            "eye_events_accepted_total 3",
            "eye_events_duplicate_total 1",
            "eye_events_rejected_total{reason=\"invalid_session_id\"} 1",
            "eye_ingest_request_duration_seconds_bucket{le=\"0.005\",code=\"OK\"} 1",
            "eye_validation_errors_total{reason=\"schema_violation\",event_type=\"page interaction/pageview\"} 2",
            "eye_outbox_depth{stage=\"second\"} 0",
            "eye_outbox_oldest_age_seconds{stage=\"first\"} 0.0",
            "# TYPE eye_ingest_request_duration_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert_eq!(text.matches("# TYPE eye_events_accepted counter").count(), 1, "{text}");
        assert!(!text.contains("eye_stage_duration"), "stage families not used: {text}");
    }

    #[test]
    fn a_drained_stage_reports_zero() {
        let metrics = Metrics::new();
        let stats = |depth| StageStats {
            stage: "custom".into(),
            depth,
            in_flight: 0,
            oldest_age_seconds: 3.5,
            dead_letters: 1,
        };
        metrics.outbox().record(&[stats(7)], &[]);
        assert!(metrics.encode().contains("eye_outbox_depth{stage=\"custom\"} 7"));
        metrics.outbox().record(&[], &[]);
        let text = metrics.encode();
        assert!(text.contains("eye_outbox_depth{stage=\"custom\"} 0"), "{text}");
        assert!(text.contains("eye_outbox_dead_letters{stage=\"custom\"} 0"), "{text}");
    }
}
