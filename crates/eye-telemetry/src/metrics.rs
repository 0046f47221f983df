//! Prometheus metrics: every family the services export, defined once, and the `/metrics`
//! endpoint that serves them.
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

use std::{
    collections::BTreeSet,
    future::IntoFuture,
    sync::{
        Arc, Mutex, OnceLock, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use eye_service::settings::MetricsSettings;
use flush_event::{BatchReport, admin::StageStats};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::{Histogram, exponential_buckets},
    },
    registry::{Registry, Unit},
};
use sqlx::PgPool;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

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

fn request_histogram() -> Histogram {
    Histogram::new(REQUEST_BUCKETS)
}

fn stage_histogram() -> Histogram {
    Histogram::new(STAGE_BUCKETS)
}

/// 1, 2, 4, ... 1024: outbox rows per batch, requests per group commit.
fn rows_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 11))
}

/// 1, 2, 4, ... 16384: events per batch.
fn events_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 15))
}

type HistogramFamily<S> = Family<S, Histogram, fn() -> Histogram>;

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
    pools: OnceLock<Arc<Pools>>,
    outbox_sampled: AtomicBool,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
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
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    stage: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    stage: String,
    /// `error` (the row failed alone: split, retried or dead-lettered) or `lease_lost`.
    cause: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ValidationLabels {
    reason: &'static str,
    event_type: String,
}

/// Ingest: what requests were answered, how fast, and how well group commit batches.
#[derive(Debug)]
pub struct IngestMetrics {
    received: Counter,
    accepted: Counter,
    duplicate: Counter,
    rejected: Family<ReasonLabel, Counter>,
    request_duration: HistogramFamily<CodeLabel>,
    commit_requests: Histogram,
    commit_events: Histogram,
}

impl IngestMetrics {
    fn register(registry: &mut Registry) -> Self {
        let this = Self {
            received: Counter::default(),
            accepted: Counter::default(),
            duplicate: Counter::default(),
            rejected: Family::default(),
            request_duration: Family::new_with_constructor(request_histogram),
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

    /// One group commit of `requests` requests holding `events` events.
    pub fn observe_commit(&self, requests: usize, events: usize) {
        self.commit_requests.observe(requests as f64);
        self.commit_events.observe(events as f64);
    }
}

/// Outbox consumers (validator, writer): batch latency and size, failures; labelled by stage.
#[derive(Debug)]
pub struct StageMetrics {
    duration: HistogramFamily<StageLabel>,
    rows: HistogramFamily<StageLabel>,
    events: HistogramFamily<StageLabel>,
    row_failures: Family<FailureLabels, Counter>,
}

impl StageMetrics {
    fn register(registry: &mut Registry) -> Self {
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

/// The validator's verdicts.
#[derive(Debug)]
pub struct ValidationMetrics {
    errors: Family<ValidationLabels, Counter>,
}

impl ValidationMetrics {
    /// `event_type` value for events whose type has no registered schema: clients choose types
    /// freely, and only registered ones are a bounded set.
    pub const UNREGISTERED_TYPE: &'static str = "unregistered";

    fn register(registry: &mut Registry) -> Self {
        let this = Self { errors: Family::default() };
        registry.register(
            "eye_validation_errors",
            "Events quarantined in event_errors, by reason code and event type \
             (category/name, or unregistered)",
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
    fn register(registry: &mut Registry) -> Self {
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

/// The pools whose connections `eye_db_connections_*` report, read at scrape time.
#[derive(Debug, Default)]
struct Pools(Mutex<Vec<PgPool>>);

impl Collector for Pools {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
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

/// A bound, not yet serving `/metrics` endpoint.
#[derive(Debug)]
pub struct MetricsServer {
    listener: TcpListener,
    metrics: Metrics,
}

/// How long a stopping server waits for open scrapes.
const SERVER_GRACE: Duration = Duration::from_secs(5);

impl MetricsServer {
    /// Binds `settings.host:settings.port` (0: a free port) for `metrics`.
    pub async fn bind(settings: &MetricsSettings, metrics: Metrics) -> std::io::Result<Self> {
        let listener = TcpListener::bind((settings.host.as_str(), settings.port)).await?;
        Ok(Self { listener, metrics })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|addr| addr.port()).unwrap_or_default()
    }

    /// Serves `GET /metrics` until `shutdown`, then lets open scrapes finish (briefly).
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        use axum::{extract::State, http::header, routing::get};
        async fn scrape(State(metrics): State<Metrics>) -> impl axum::response::IntoResponse {
            ([(header::CONTENT_TYPE, CONTENT_TYPE)], metrics.encode())
        }
        let router = axum::Router::new().route("/metrics", get(scrape)).with_state(self.metrics);
        let server = axum::serve(self.listener, router)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .into_future();
        tokio::select! {
            served = server => served,
            () = async {
                shutdown.cancelled().await;
                tokio::time::sleep(SERVER_GRACE).await;
            } => Ok(()),
        }
    }

    /// Serves in the background until [`RunningServer::stop`].
    pub fn spawn(self) -> RunningServer {
        let stop = CancellationToken::new();
        let task = tokio::spawn(self.run_until_stopped(stop.clone()));
        RunningServer { stop, task }
    }
}

/// A `/metrics` server serving in the background, until [`stop`](Self::stop)ped or dropped.
#[derive(Debug)]
pub struct RunningServer {
    stop: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl RunningServer {
    /// Stops serving and waits for the server to finish.
    pub async fn stop(mut self) {
        self.stop.cancel();
        match (&mut self.task).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "metrics server failed"),
            Err(error) => tracing::warn!(%error, "metrics server task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
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
        metrics.outbox().record(&[], &["validate", "write"]);
        let text = metrics.encode();
        for line in [
            "eye_events_received_total 5",
            "eye_events_accepted_total 3",
            "eye_events_duplicate_total 1",
            "eye_events_rejected_total{reason=\"invalid_session_id\"} 1",
            "eye_ingest_request_duration_seconds_bucket{le=\"0.005\",code=\"OK\"} 1",
            "eye_validation_errors_total{reason=\"schema_violation\",event_type=\"page interaction/pageview\"} 2",
            "eye_outbox_depth{stage=\"write\"} 0",
            "eye_outbox_oldest_age_seconds{stage=\"validate\"} 0.0",
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
