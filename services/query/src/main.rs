//! `eye-query`: serves `eye.v1.QueryService` (default port 50052).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = eye_service::Settings::load()?;
    let _telemetry = eye_telemetry::init("eye-query", &settings.telemetry);
    let shutdown = eye_service::shutdown::on_signal();
    let app = eye_query::Application::build(settings).await?;
    tracing::info!(port = app.port(), "eye-query listening");
    app.run_until_stopped(shutdown).await
}
