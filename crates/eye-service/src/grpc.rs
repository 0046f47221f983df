//! gRPC scaffolding shared by the servers: bind before serving, health, reflection, the bearer
//! value of a request's metadata, and the one mapping of [`AuthError`] to a status.

use std::{net::SocketAddr, time::Duration};

use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic_health::server::HealthReporter;

use crate::{auth::AuthError, database::DatabaseStatus, settings::TlsSettings};

/// The `authorization` metadata of a request, as text (what [`Authenticator::authenticate`]
/// takes).
///
/// [`Authenticator::authenticate`]: crate::auth::Authenticator::authenticate
pub fn authorization(metadata: &tonic::metadata::MetadataMap) -> Option<&str> {
    metadata.get("authorization")?.to_str().ok()
}

impl From<AuthError> for tonic::Status {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Missing | AuthError::Invalid => {
                tonic::Status::unauthenticated(error.to_string())
            }
            AuthError::Forbidden(_)
            | AuthError::OriginNotAllowed(_)
            | AuthError::SecretKeyInBrowser(_) => {
                tonic::Status::permission_denied(error.to_string())
            }
            AuthError::Unavailable(ref source) => {
                tracing::warn!(error = %source, "api key lookup failed");
                tonic::Status::unavailable(error.to_string())
            }
        }
    }
}

/// A gRPC server could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot read {path}: {source}")]
    Read { path: std::path::PathBuf, source: std::io::Error },
    #[error("invalid tls configuration: {0}")]
    Tls(#[from] tonic::transport::Error),
}

/// The server builder every Eye gRPC server starts from: keep-alives, a per-call timeout
/// (`request_timeout`: a client that sends headers and stalls is cut off instead of holding a
/// connection and a task forever), and TLS when `tls` names a certificate and key.
pub fn server(
    tls: &TlsSettings,
    request_timeout: Duration,
) -> Result<tonic::transport::Server, ServerError> {
    let builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .timeout(request_timeout);
    let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) else {
        return Ok(builder);
    };
    let read = |path: &std::path::PathBuf| {
        std::fs::read(path).map_err(|source| ServerError::Read { path: path.clone(), source })
    };
    let identity = tonic::transport::Identity::from_pem(read(cert)?, read(key)?);
    Ok(builder.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))?)
}

/// Binds `host:port` (port 0: a free port) so the port is known before serving.
pub async fn bind(host: &str, port: u16) -> std::io::Result<TcpListener> {
    TcpListener::bind((host, port)).await
}

/// The connections of a bound listener, with `TCP_NODELAY` set on each: without it, the last
/// small frame of a response waits for the client's delayed ACK (~40 ms on Linux), which would
/// dominate the latency of every small call. (tonic's `Server::tcp_nodelay` only applies to
/// listeners tonic binds itself.)
pub fn incoming(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// The address a listener is bound to.
pub fn local_addr(listener: &TcpListener) -> SocketAddr {
    listener.local_addr().expect("bound listener has an address")
}

/// The `grpc.health.v1` service for `service_name`, NOT_SERVING until `pool` answers a query;
/// the probe then keeps watching the database and flips back when it stops answering. It keeps
/// `status` up to date, and probes again at once when a request reports the database gone.
pub async fn health(
    service_name: &'static str,
    pool: PgPool,
    status: DatabaseStatus,
    shutdown: CancellationToken,
) -> tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health> {
    let (reporter, service) = tonic_health::server::health_reporter();
    // Known (and NOT_SERVING) from the first request on, not NotFound until the first probe.
    for name in [service_name, ""] {
        reporter.set_service_status(name, tonic_health::ServingStatus::NotServing).await;
    }
    // The first answer before serving, so that the first request already knows.
    status.set(probe(&pool).await);
    tokio::spawn(watch_database(reporter, service_name, pool, status, shutdown));
    service
}

async fn watch_database(
    reporter: HealthReporter,
    service_name: &'static str,
    pool: PgPool,
    status: DatabaseStatus,
    shutdown: CancellationToken,
) {
    let mut serving = None;
    loop {
        let up = probe(&pool).await;
        status.set(up);
        if serving != Some(up) {
            let serving_status = if up {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            reporter.set_service_status(service_name, serving_status).await;
            reporter.set_service_status("", serving_status).await;
            tracing::info!(service = service_name, serving = up, "health changed");
            serving = Some(up);
        }
        let pause = if up { Duration::from_secs(5) } else { Duration::from_millis(250) };
        tokio::select! {
            () = shutdown.cancelled() => {
                reporter.set_service_status(service_name, tonic_health::ServingStatus::NotServing).await;
                reporter.set_service_status("", tonic_health::ServingStatus::NotServing).await;
                return;
            }
            () = tokio::time::sleep(pause) => {}
            () = status.failure_reported() => serving = None,
        }
    }
}

/// Whether the database answers within a second (a pool waiting out its acquire timeout on a
/// dead server must not delay the verdict).
pub async fn probe(pool: &PgPool) -> bool {
    let query = sqlx::query("SELECT 1").execute(pool);
    matches!(tokio::time::timeout(Duration::from_secs(1), query).await, Ok(Ok(_)))
}

/// The gRPC services that server reflection advertises besides a server's own: health and
/// reflection itself (both protocol versions).
const COMMON_SERVICES: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// gRPC server reflection, in both protocol versions (`grpc.reflection.v1` and the `v1alpha`
/// that many tools still speak), advertising exactly the services this server serves: `service`
/// (e.g. `eye.v1.IngestService`), health and reflection. Add both to the server.
pub fn reflection(
    service: &str,
) -> (
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
) {
    let builder = || {
        let mut builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(eye_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name(service);
        for name in COMMON_SERVICES {
            builder = builder.with_service_name(name);
        }
        builder
    };
    (
        builder().build_v1().expect("embedded descriptor sets are valid"),
        builder().build_v1alpha().expect("embedded descriptor sets are valid"),
    )
}

/// Runs a server future that stops accepting when `shutdown` is cancelled and then drains
/// in-flight calls; if draining takes longer than `grace` (a long-lived stream such as a health
/// `Watch` never ends by itself), the remaining connections are dropped.
pub async fn drain_within<E>(
    server: impl Future<Output = Result<(), E>>,
    shutdown: &CancellationToken,
    grace: Duration,
) -> Result<(), E> {
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        served = server => served,
        () = deadline => {
            tracing::warn!(grace_ms = grace.as_millis() as u64, "grace period over; dropping open calls");
            Ok(())
        }
    }
}

/// The canonical name of a gRPC status code (`OK`, `INVALID_ARGUMENT`, ...), as metrics label it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
