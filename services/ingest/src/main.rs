//! `eye-ingest`: serves `eye.v1.IngestService` (default port 50051).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = eye_service::Settings::load()?;
    let _telemetry = eye_telemetry::init("eye-ingest", &settings.telemetry);
    let shutdown = eye_service::shutdown::on_signal();
    let app = eye_ingest::Application::build(settings).await?;
    tracing::info!(port = app.port(), "eye-ingest listening");
    app.run_until_stopped(shutdown).await
}
