//! The one HTTP stack of the services (axum over hyper, HTTP/1.1): bind before serving, serve a
//! router until shutdown with a bounded drain, or in the background until stopped. `/metrics`
//! and HTTP ingest are mounted on it; the console mounts its router the same way.

use std::{future::IntoFuture, net::SocketAddr, time::Duration};

use axum::Router;
use eye_telemetry::metrics::{CONTENT_TYPE, Metrics};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::settings::MetricsSettings;

/// How long a stopping server waits for open requests before dropping them.
pub const GRACE_PERIOD: Duration = Duration::from_secs(5);

/// A bound, not yet serving HTTP listener.
#[derive(Debug)]
pub struct HttpListener {
    listener: TcpListener,
}

impl HttpListener {
    /// Binds `host:port` (port 0: a free port) so the port is known before serving.
    pub async fn bind(host: &str, port: u16) -> std::io::Result<Self> {
        Ok(Self { listener: TcpListener::bind((host, port)).await? })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// Serves `router` until `shutdown`, then lets open requests finish within `grace`.
    pub async fn serve(
        self,
        router: Router,
        shutdown: CancellationToken,
        grace: Duration,
    ) -> std::io::Result<()> {
        // The peer address reaches handlers as `ConnectInfo<SocketAddr>`.
        let server =
            axum::serve(self.listener, router.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(shutdown.clone().cancelled_owned())
                .into_future();
        tokio::select! {
            served = server => served,
            () = async {
                shutdown.cancelled().await;
                tokio::time::sleep(grace).await;
            } => Ok(()),
        }
    }

    /// Serves `router` in the background until `shutdown` (or [`RunningServer::stop`], or drop,
    /// which stop only this server): a service's second listener, stopped with its first.
    pub fn spawn_until(self, router: Router, shutdown: &CancellationToken) -> RunningServer {
        let stop = shutdown.child_token();
        let task = tokio::spawn(self.serve(router, stop.clone(), GRACE_PERIOD));
        RunningServer { stop, task }
    }

    /// Serves `router` in the background until [`RunningServer::stop`] (or drop).
    pub fn spawn(self, router: Router) -> RunningServer {
        let stop = CancellationToken::new();
        let task = tokio::spawn(self.serve(router, stop.clone(), GRACE_PERIOD));
        RunningServer { stop, task }
    }
}

/// An HTTP server serving in the background, until [`stop`](Self::stop)ped or dropped.
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
            Ok(Err(error)) => tracing::warn!(%error, "http server failed"),
            Err(error) => tracing::warn!(%error, "http server task failed"),
        }
    }
}

/// `GET /metrics`: the exposition of `metrics` (OpenMetrics text), read from memory only.
pub fn metrics_routes(metrics: Metrics) -> Router {
    use axum::{extract::State, http::header, routing::get};
    async fn scrape(State(metrics): State<Metrics>) -> impl axum::response::IntoResponse {
        ([(header::CONTENT_TYPE, CONTENT_TYPE)], metrics.encode())
    }
    Router::new().route("/metrics", get(scrape)).with_state(metrics)
}

/// Where a service's metrics go: its own `/metrics` endpoint (one service per process), or a
/// registry shared with other services of the process (`eye dev`), whose owner serves it.
#[derive(Debug)]
pub struct MetricsEndpoint {
    metrics: Metrics,
    listener: Option<HttpListener>,
}

impl MetricsEndpoint {
    /// A fresh registry served on `settings.host:settings.port`, bound now.
    pub async fn bind(settings: &MetricsSettings) -> std::io::Result<Self> {
        let listener = HttpListener::bind(&settings.host, settings.port).await?;
        Ok(Self { metrics: Metrics::new(), listener: Some(listener) })
    }

    /// Records into `metrics` and serves nothing: the caller serves `metrics`.
    pub fn shared(metrics: Metrics) -> Self {
        Self { metrics, listener: None }
    }

    /// The registry to record into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The bound port of `/metrics`; `None` when [shared](Self::shared).
    pub fn port(&self) -> Option<u16> {
        self.listener.as_ref().map(HttpListener::port)
    }

    /// Starts serving `/metrics` in the background (if this endpoint has its own listener);
    /// [`RunningServer::stop`] it after the service has drained, so the drain can be watched.
    pub fn spawn(self) -> Option<RunningServer> {
        let routes = metrics_routes(self.metrics);
        self.listener.map(|listener| listener.spawn(routes))
    }
}
