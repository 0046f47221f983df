//! `eye-relay`: ships a producer's outbox to The Eye (see the library's documentation).

use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "Ship a producer's transactional outbox (stage `eye`) to The Eye's ingest")]
struct Cli {
    #[command(flatten)]
    relay: eye_relay::RelayArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = eye_service::Settings::load()?;
    let _telemetry = eye_telemetry::init("eye-relay", &settings.telemetry);
    let shutdown = eye_service::shutdown::on_signal();
    eye_relay::run(settings, &cli.relay, shutdown).await
}
