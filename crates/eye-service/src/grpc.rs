//! gRPC scaffolding shared by the servers: bind before serving, health, reflection.

use std::{net::SocketAddr, time::Duration};

use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic_health::server::HealthReporter;

/// Binds `host:port` (port 0: a free port) so the port is known before serving.
pub async fn bind(host: &str, port: u16) -> std::io::Result<TcpListener> {
    TcpListener::bind((host, port)).await
}

/// The address a listener is bound to.
pub fn local_addr(listener: &TcpListener) -> SocketAddr {
    listener.local_addr().expect("bound listener has an address")
}

/// The `grpc.health.v1` service for `service_name`, NOT_SERVING until `pool` answers a query;
/// the probe then keeps watching the database and flips back when it stops answering.
pub async fn health(
    service_name: &'static str,
    pool: PgPool,
    shutdown: CancellationToken,
) -> tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health> {
    let (reporter, service) = tonic_health::server::health_reporter();
    // Known (and NOT_SERVING) from the first request on, not NotFound until the first probe.
    for name in [service_name, ""] {
        reporter.set_service_status(name, tonic_health::ServingStatus::NotServing).await;
    }
    tokio::spawn(watch_database(reporter, service_name, pool, shutdown));
    service
}

async fn watch_database(
    reporter: HealthReporter,
    service_name: &'static str,
    pool: PgPool,
    shutdown: CancellationToken,
) {
    let mut serving = None;
    loop {
        let up = sqlx::query("SELECT 1").execute(&pool).await.is_ok();
        if serving != Some(up) {
            let status = if up {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            reporter.set_service_status(service_name, status).await;
            reporter.set_service_status("", status).await;
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
        }
    }
}

/// gRPC server reflection for the `eye.v1` services and `grpc.health.v1`.
pub fn reflection() -> tonic_reflection::server::v1::ServerReflectionServer<
    impl tonic_reflection::server::v1::ServerReflection,
> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(eye_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("embedded descriptor sets are valid")
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
