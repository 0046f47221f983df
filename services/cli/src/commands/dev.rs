//! `eye dev`: the whole pipeline in one process, on a laptop, with nothing to set up.
//!
//! 1. The database: `DATABASE_URL` if set, else a private PostgreSQL under `./.eye/pg` (started,
//!    or reused if already running; it keeps running after `eye dev` exits, so the next start is
//!    instant and `eye apps` / `eye schemas` in another terminal find it).
//! 2. Migrations, then the example schemas of `schemas/` (unchanged ones are no-ops).
//! 3. Ingest and query (binding their ports first, so a busy port fails before anything is
//!    issued), the validator and the writer, built from the same settings.
//! 4. A fresh API key for the application `dev` (ingest + read): keys are shown once, so every
//!    run issues one. It is printed last, alone on its line.
//! 5. Everything runs until SIGINT/SIGTERM, then drains; a service failing stops the others.

use anyhow::Context;
use eye_service::http::{self, HttpListener};
use eye_service::{Settings, auth::Role};
use eye_telemetry::metrics::Metrics;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use eye_admin::{apps, schemas};

use super::migrate;
use crate::database::{self, Source};

/// The application `eye dev` issues keys for.
pub const DEV_APPLICATION: &str = "dev";

/// Runs `eye dev` until a signal, then drains.
pub async fn run(mut settings: Settings) -> anyhow::Result<()> {
    let shutdown = eye_service::shutdown::on_signal();
    let source = database::resolve(&mut settings).await?;
    let pool = database::connect(&settings.database).await?;
    migrate::migrate(&pool).await?;
    let registered = schemas::register_examples(&pool).await.map_err(database::admin)?;

    // One process, one `/metrics` for all the services.
    let metrics = Metrics::new();
    let metrics_server = HttpListener::bind(&settings.metrics.host, settings.metrics.port)
        .await
        .with_context(|| {
            format!(
                "cannot serve metrics on {}:{} (EYE__METRICS__PORT=0 picks a free port)",
                settings.metrics.host, settings.metrics.port
            )
        })?;
    let metrics_port = metrics_server.port();
    let ingest = eye_ingest::Application::build_with_metrics(settings.clone(), metrics.clone())
        .await
        .with_context(|| {
            format!(
                "cannot start ingest on {}:{} (another `eye dev` or eye-ingest running? \
                 EYE__INGEST__PORT=0 picks a free port)",
                settings.ingest.host, settings.ingest.port
            )
        })?;
    let port = ingest.port();
    let query = eye_query::Application::build_with_metrics(settings.clone(), metrics.clone())
        .await
        .with_context(|| {
            format!(
                "cannot start the query server on {}:{} (another `eye dev` or eye-query running? \
                 EYE__QUERY__PORT=0 picks a free port)",
                settings.query.host, settings.query.port
            )
        })?;
    let query_port = query.port();
    let validator =
        eye_validator::Application::build_with_metrics(settings.clone(), metrics.clone()).await?;
    let writer =
        eye_writer::Application::build_with_metrics(settings.clone(), metrics.clone()).await?;
    let metrics_registry = metrics;
    if shutdown.is_cancelled() {
        // Stopped while starting: issue no key nobody will see.
        return Ok(());
    }

    let issued = apps::ensure_and_issue_key(&pool, DEV_APPLICATION, &[Role::Ingest, Role::Read])
        .await
        .map_err(database::admin)?;
    pool.close().await;

    let endpoint = format!("http://127.0.0.1:{port}");
    let query_endpoint = format!("http://127.0.0.1:{query_port}");
    let database_url = match &source {
        Source::DevServer { url } => url.as_str(),
        Source::Configured => "(as configured: DATABASE_URL)",
    };
    let mut banner = String::from(
        "eye dev: ingest, validator, writer and query are running; Ctrl-C stops them\n",
    );
    for (category, name, registration) in registered {
        banner
            .push_str(&format!("  schema: {}\n", schemas::describe(category, name, registration)));
    }
    banner.push_str(&format!(
        "  ingest endpoint: {endpoint}\n\
         \x20 query endpoint:  {query_endpoint}\n\
         \x20 metrics:         http://127.0.0.1:{metrics_port}/metrics\n\
         \x20 DATABASE_URL:    {database_url}   (psql \"$DATABASE_URL\" -c 'SELECT count(*) FROM events')\n\
         \x20 send an event:   export EYE_API_KEY=<the key below>\n\
         \x20                  eye send --endpoint {endpoint} --category 'page interaction' \
         --name pageview --data '{{\"host\": \"example.com\", \"path\": \"/\"}}'\n\
         \x20 read it back:    eye events --query-endpoint {query_endpoint} --from 15m\n\
         \x20                  eye errors --query-endpoint {query_endpoint}; \
         eye stats --query-endpoint {query_endpoint}\n\
         \x20 api key of application `{DEV_APPLICATION}` (roles {}), shown only this once:\n\
         {}",
        issued.roles.join(", "),
        issued.key,
    ));
    println!("{banner}");

    let mut services = JoinSet::new();
    services.spawn(named("ingest", ingest.run_until_stopped(shutdown.clone())));
    let token = shutdown.clone();
    services
        .spawn(named("validator", async move { Ok(validator.run_until_stopped(token).await?) }));
    let token = shutdown.clone();
    services.spawn(named("writer", async move { Ok(writer.run_until_stopped(token).await?) }));
    services.spawn(named("query", query.run_until_stopped(shutdown.clone())));
    let stop_metrics = shutdown.clone();
    let routes = http::metrics_routes(metrics_registry);
    services.spawn(named("metrics", async move {
        Ok(metrics_server.serve(routes, stop_metrics, http::GRACE_PERIOD).await?)
    }));
    let first_error = supervise(&mut services, &shutdown).await;
    match first_error {
        Some(error) => Err(error),
        None => {
            tracing::info!("eye dev stopped");
            Ok(())
        }
    }
}

async fn named(
    name: &'static str,
    service: impl Future<Output = anyhow::Result<()>>,
) -> (&'static str, anyhow::Result<()>) {
    (name, service.await)
}

/// Waits for every service. The first to stop on its own (an error, or returning before
/// shutdown) stops the others. Returns the first error.
async fn supervise(
    services: &mut JoinSet<(&'static str, anyhow::Result<()>)>,
    shutdown: &CancellationToken,
) -> Option<anyhow::Error> {
    let mut first_error = None;
    while let Some(joined) = services.join_next().await {
        let error = match joined {
            Ok((_, Ok(()))) if shutdown.is_cancelled() => None,
            Ok((name, Ok(()))) => Some(anyhow::anyhow!("{name} stopped unexpectedly")),
            Ok((name, Err(error))) => Some(error.context(format!("{name} failed"))),
            Err(error) => Some(anyhow::anyhow!("a service task failed: {error}")),
        };
        if let Some(error) = error {
            tracing::error!(error = format!("{error:#}"), "stopping eye dev");
            shutdown.cancel();
            first_error.get_or_insert(error);
        }
    }
    first_error
}
