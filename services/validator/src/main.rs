//! `eye-validator`: validates events from the outbox stage `validate`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = eye_service::Settings::load()?;
    let _telemetry = eye_telemetry::init("eye-validator", &settings.telemetry);
    let shutdown = eye_service::shutdown::on_signal();
    eye_validator::Application::build(settings).await?.run_until_stopped(shutdown).await?;
    Ok(())
}
