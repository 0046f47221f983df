//! `eye-writer`: stores validated events from the outbox stage `write`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = eye_service::Settings::load()?;
    let _telemetry = eye_telemetry::init("eye-writer", &settings.telemetry);
    let shutdown = eye_service::shutdown::on_signal();
    eye_writer::Application::build(settings).await?.run_until_stopped(shutdown).await?;
    Ok(())
}
