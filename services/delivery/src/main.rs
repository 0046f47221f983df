//! `eye-delivery`: delivers stored events to the subscriptions' destinations.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = eye_service::Settings::load()?;
    let _telemetry = eye_telemetry::init("eye-delivery", &settings.telemetry);
    let shutdown = eye_service::shutdown::on_signal();
    eye_delivery::Application::build(settings).await?.run_until_stopped(shutdown).await?;
    Ok(())
}
