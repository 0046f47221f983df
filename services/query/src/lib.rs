//! `eye-query`: the read path. Analysts read stored events and sessions; operators read
//! quarantined events, replay them after a schema fix, and watch the pipeline's queues, all over
//! gRPC (`eye.v1.QueryService`, default port 50052) with keys holding the `read` role.
//!
//! # Layout
//! - [`core`]: the transport-free core, one method per RPC: check the request ([`request`]),
//!   run the SQL ([`queries`]), build the answer ([`response`]).
//! - [`grpc`]: the gRPC adapter: authenticate, call the core.
//! - [`console`]: the web console on the HTTP port (8081): HTML pages and the live tail over
//!   the same core, and `eye_admin` for its admin actions.
//! - [`request`]: request checking (page sizes, filters, time ranges, containment); every
//!   refusal names its field.
//! - [`response`]: rows to messages, pages cut by count and encoded size, stats.
//! - [`queries`]: the SQL. Filters become statements holding only the predicates a request sets,
//!   so every plan can use its index; replay is one transaction (mark pending + enqueue).
//! - [`token`]: page tokens: keyset positions bound to the RPC and the filter that issued them.
//! - [`error`]: the service's errors and their one mapping to `tonic::Status` (no SQL text ever
//!   reaches a client).
//!
//! The service only reads, except `ReplayErrors`, which writes `event_errors` and the outbox
//! stage `validate` the way ingest does, so replayed events take the same path as new ones.

pub mod console;
pub mod core;
pub mod error;
pub mod grpc;
pub mod queries;
pub mod request;
pub mod response;
pub mod token;

use std::{str::FromStr, sync::Arc, time::Duration};

use eye_proto::v1::query_service_server::QueryServiceServer;
use eye_service::{
    Settings,
    auth::Authenticator,
    grpc as grpc_server,
    http::{HttpListener, MetricsEndpoint},
    settings::DatabaseSettings,
};
use eye_telemetry::metrics::Metrics;
use secrecy::ExposeSecret;
use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;

/// How long shutdown waits for in-flight requests.
const GRACE_PERIOD: Duration = Duration::from_secs(20);
/// How long one statement may run: an unselective filter over a large store fails with
/// DEADLINE_EXCEEDED instead of holding a connection (and an old snapshot) for minutes.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// A built, bound, not yet serving query server.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    http: HttpListener,
    console: console::Console,
    server: tonic::transport::Server,
    service: grpc::GrpcQuery,
    pool: PgPool,
    /// The replica's pool, when reads go to one.
    reads: Option<PgPool>,
    metrics: MetricsEndpoint,
}

impl Application {
    /// Connects (lazily) to the database and binds the gRPC and metrics ports.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let endpoint = MetricsEndpoint::bind(&settings.metrics).await?;
        Self::build_on(settings, endpoint).await
    }

    /// [`build`](Self::build), recording into `metrics` and serving no `/metrics` of its own:
    /// for several services in one process, whose caller serves `metrics`.
    pub async fn build_with_metrics(settings: Settings, metrics: Metrics) -> anyhow::Result<Self> {
        Self::build_on(settings, MetricsEndpoint::shared(metrics)).await
    }

    async fn build_on(settings: Settings, metrics: MetricsEndpoint) -> anyhow::Result<Self> {
        let pool = pool(&settings.database)?;
        metrics.metrics().watch_pool(&pool);
        // Reads from a replica when one is configured; writes and key lookups stay on the primary.
        let reads = match &settings.query.database_url {
            Some(url) => {
                let replica =
                    DatabaseSettings { url: Some(url.clone()), ..settings.database.clone() };
                Some(self::pool(&replica)?)
            }
            None => None,
        };
        let listener = grpc_server::bind(&settings.query.host, settings.query.port).await?;
        // The same cache bound as ingest's: one bound on how long a revoked key works.
        let auth = Authenticator::new(pool.clone(), settings.auth_cache_ttl());
        let http = HttpListener::bind(&settings.query.host, settings.query.http_port).await?;
        let query = Arc::new(match &reads {
            Some(reads) => core::Query::with_replica(reads.clone(), pool.clone()),
            None => core::Query::new(pool.clone()),
        });

        let console = console::Console::new(
            query.clone(),
            auth.clone(),
            settings.query.console_secret.as_ref().map(|secret| secret.expose_secret()),
            Duration::from_secs(settings.query.console_session_minutes * 60),
        );
        let service = grpc::GrpcQuery::new(query, auth);
        let timeout = Duration::from_millis(settings.query.request_timeout_ms);
        let server = grpc_server::server(&settings.tls, timeout)?;
        Ok(Self { listener, http, console, server, service, pool, reads, metrics })
    }

    /// The bound port (useful with port 0).
    pub fn port(&self) -> u16 {
        grpc_server::local_addr(&self.listener).port()
    }

    /// The bound port of the console (HTTP).
    pub fn http_port(&self) -> u16 {
        self.http.port()
    }

    /// The bound port of `/metrics`; `None` when built [with shared metrics](Self::build_with_metrics).
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics.port()
    }

    /// Serves until `shutdown` is cancelled, then stops accepting and lets in-flight requests
    /// finish, within a grace period.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self { listener, http, console, mut server, service, pool, reads, metrics } = self;
        if let Some(reads) = reads {
            let every = eye_telemetry::metrics::OUTBOX_SAMPLE_INTERVAL;
            metrics.metrics().sample_replica_lag(reads, every, shutdown.clone());
        }
        let metrics_server = metrics.spawn();
        let console_server = http.spawn_until(console.router(), &shutdown);
        let health =
            grpc_server::health("eye.v1.QueryService", pool, Default::default(), shutdown.clone())
                .await;
        let reflection = grpc_server::reflection("eye.v1.QueryService");
        let server = server
            .add_service(health)
            .add_service(reflection.0)
            .add_service(reflection.1)
            .add_service(
                QueryServiceServer::new(service)
                    .accept_compressed(CompressionEncoding::Gzip)
                    .send_compressed(CompressionEncoding::Gzip),
            )
            .serve_with_incoming_shutdown(
                grpc_server::incoming(listener),
                shutdown.clone().cancelled_owned(),
            );
        let served = grpc_server::drain_within(server, &shutdown, GRACE_PERIOD).await;
        console_server.stop().await;
        tracing::info!("eye-query drained");
        if let Some(server) = metrics_server {
            server.stop().await;
        }
        served?;
        Ok(())
    }
}

/// A lazily connecting pool whose sessions carry [`STATEMENT_TIMEOUT`] and plan every statement
/// for its actual parameters (`plan_cache_mode = force_custom_plan`).
///
/// Statements stay prepared (parsed once per connection), but Postgres would otherwise switch a
/// prepared statement to a generic plan after five runs, and a generic plan cannot tell a rare
/// category or a selective `data @> ...` from a common one: measured on 600k events, it walks
/// `events_time` and filters every row where the custom plan reads `events_type_time` or the GIN
/// index (see `queries`). Planning costs well under a millisecond; analysts' queries are few.
fn pool(settings: &DatabaseSettings) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(settings.url()?)?.options([
        ("statement_timeout", STATEMENT_TIMEOUT.as_millis().to_string()),
        ("plan_cache_mode", "force_custom_plan".to_owned()),
    ]);
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        .connect_lazy_with(options))
}
