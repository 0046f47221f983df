//! `eye-ingest`: the pipeline's source. Applications send batches of events over gRPC
//! (`eye.v1.IngestService/SendEvents`, also as gRPC-Web) or HTTP/JSON (`POST /v1/events`, on
//! its own port); each event gets its own answer, and the answer comes only once the accepted
//! events are durable in Postgres.
//!
//! # Layout
//! - [`core`]: the transport-free core: authenticate (with the browser rules of publishable
//!   keys), check limits, check each envelope (`event_model::envelope`), hand the accepted
//!   events to the committer, answer per event.
//! - [`grpc`]: the gRPC adapter (span, request metrics, the mapping to `tonic::Status`).
//! - [`http`]: the HTTP adapter (body decoding, CORS, the mapping to HTTP answers,
//!   `/healthz`, `/openapi.json`, the tracker at `/v1/eye.js`).
//! - [`commit`]: group commit. Concurrent requests share one transaction that records their ids
//!   in the idempotency ledger (which answers DUPLICATE) and enqueues one outbox row per request
//!   into the `validate` stage.
//! - [`backpressure`]: refuse at once (UNAVAILABLE / RESOURCE_EXHAUSTED with a retry hint) while
//!   the database is down or the outbox backlog is over its bound.
//! - [`redaction`]: personal properties (`x-eye-pii`) replaced before anything is enqueued.
//! - [`error`]: the service's errors.
//!
//! Payloads are not checked against their schemas here: that is the validator's job, off the
//! request path, so applications are never left waiting on it.

pub mod backpressure;
pub mod commit;
pub mod core;
pub mod error;
pub mod grpc;
pub mod http;
pub mod redaction;

use std::{sync::Arc, time::Duration};

use eye_proto::v1::ingest_service_server::IngestServiceServer;
use eye_service::{
    Settings,
    auth::Authenticator,
    database::DatabaseStatus,
    grpc as grpc_server,
    http::{HttpListener, MetricsEndpoint},
};
use eye_telemetry::metrics::Metrics;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;

/// How long shutdown waits for in-flight requests and commits.
const GRACE_PERIOD: Duration = Duration::from_secs(20);

/// A built, bound, not yet serving ingest server.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    http: HttpListener,
    core: Arc<core::Ingest>,
    committer: commit::Committer,
    backpressure: backpressure::Backpressure,
    redaction: Arc<redaction::Redaction>,
    database: DatabaseStatus,
    pool: sqlx::PgPool,
    settings: Settings,
    metrics: MetricsEndpoint,
}

impl Application {
    /// Connects (lazily) to the database and binds the gRPC and metrics ports.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let endpoint = MetricsEndpoint::bind(&settings.metrics).await?;
        Self::build_on(settings, endpoint).await
    }

    /// [`build`](Self::build), recording into `metrics` and serving no `/metrics` of its own:
    /// for several services in one process (`eye dev`), whose caller serves `metrics`.
    pub async fn build_with_metrics(settings: Settings, metrics: Metrics) -> anyhow::Result<Self> {
        Self::build_on(settings, MetricsEndpoint::shared(metrics)).await
    }

    async fn build_on(settings: Settings, endpoint: MetricsEndpoint) -> anyhow::Result<Self> {
        let metrics = endpoint.metrics().clone();
        let pool = eye_service::database::pool(&settings.database)?;
        metrics.watch_pool(&pool);
        let listener = grpc_server::bind(&settings.ingest.host, settings.ingest.port).await?;
        let http = HttpListener::bind(&settings.ingest.host, settings.ingest.http_port).await?;
        let committer = commit::Committer::start(
            pool.clone(),
            &settings.ingest,
            settings.store.dedup_window_days,
            metrics.clone(),
        );
        let auth = Authenticator::new(pool.clone(), settings.auth_cache_ttl());
        let database = DatabaseStatus::default();
        let backpressure =
            backpressure::Backpressure::new(database.clone(), settings.ingest.max_backlog_rows);
        let redaction =
            Arc::new(redaction::Redaction::new(pool.clone(), settings.privacy.pii_key()));
        let core = Arc::new(core::Ingest::new(
            auth,
            backpressure.clone(),
            committer.clone(),
            redaction.clone(),
            &settings.ingest,
            metrics,
        ));
        Ok(Self {
            listener,
            http,
            core,
            committer,
            backpressure,
            redaction,
            database,
            pool,
            settings,
            metrics: endpoint,
        })
    }

    /// The bound port (useful with port 0).
    pub fn port(&self) -> u16 {
        grpc_server::local_addr(&self.listener).port()
    }

    /// The bound port of HTTP ingest (`POST /v1/events`).
    pub fn http_port(&self) -> u16 {
        self.http.port()
    }

    /// The bound port of `/metrics`; `None` when built [with shared metrics](Self::build_with_metrics).
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics.port()
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, lets in-flight requests finish
    /// and their commits land, within a grace period.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            listener,
            http,
            core,
            committer,
            backpressure,
            redaction,
            database,
            pool,
            settings,
            metrics,
        } = self;
        let service = grpc::GrpcIngest::new(core.clone(), metrics.metrics().clone());
        let routes = http::HttpIngest::new(
            core,
            metrics.metrics().clone(),
            database.clone(),
            shutdown.clone(),
            &settings.ingest,
        )
        .router();
        let http_server = http.spawn_until(routes, &shutdown);
        // Serves until the end of the drain, so the drain itself can be watched.
        let metrics_server = metrics.spawn();
        let check = Duration::from_millis(settings.ingest.backlog_check_ms);
        tokio::spawn(backpressure.watch_backlog(pool.clone(), check, shutdown.clone()));
        tokio::spawn(redaction.watch(check, shutdown.clone()));
        let max_message = settings.ingest.max_batch_bytes.saturating_mul(4);
        let health =
            grpc_server::health("eye.v1.IngestService", pool, database, shutdown.clone()).await;
        let reflection = grpc_server::reflection("eye.v1.IngestService");
        let timeout = Duration::from_millis(settings.ingest.request_timeout_ms);
        let server = grpc_server::server(&settings.tls, timeout)?
            // gRPC-Web (HTTP/1.1 or 2) beside native gRPC, with CORS for pages.
            .accept_http1(true)
            .layer(grpc_web_cors())
            .layer(tonic_web::GrpcWebLayer::new())
            .add_service(health)
            .add_service(reflection.0)
            .add_service(reflection.1)
            .add_service(
                IngestServiceServer::new(service)
                    // Clients may compress (gzip); the limit applies to the inflated message.
                    .accept_compressed(CompressionEncoding::Gzip)
                    .max_decoding_message_size(max_message)
                    .max_encoding_message_size(max_message),
            )
            .serve_with_incoming_shutdown(
                grpc_server::incoming(listener),
                shutdown.clone().cancelled_owned(),
            );
        let served = grpc_server::drain_within(server, &shutdown, GRACE_PERIOD).await;
        http_server.stop().await;
        // The server has drained; now let the committer finish what it holds.
        match tokio::time::timeout(GRACE_PERIOD, committer.close()).await {
            Ok(()) => tracing::info!("ingest drained"),
            Err(_) => tracing::warn!("ingest commits did not drain within the grace period"),
        }
        if let Some(server) = metrics_server {
            server.stop().await;
        }
        served?;
        Ok(())
    }
}

/// CORS for gRPC-Web calls from pages: any origin may ask (the core decides whether the key may
/// be used from it), and the gRPC status trailers are readable.
fn grpc_web_cors() -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, Any, CorsLayer};
    let expose = ["grpc-status", "grpc-message", "grpc-status-details-bin", "retry-after"];
    CorsLayer::new()
        .allow_origin(AllowOrigin::mirror_request())
        .allow_methods([axum::http::Method::POST])
        .allow_headers(Any)
        .expose_headers(expose.map(axum::http::HeaderName::from_static))
        .max_age(Duration::from_secs(24 * 60 * 60))
}
