//! `eye`: The Eye's command line (see the `eye_cli` crate docs).

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = eye_cli::Cli::parse();
    let mut settings = match eye_service::Settings::load() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    eye_cli::adapt_telemetry(&cli.command, &mut settings.telemetry);
    let _telemetry = eye_telemetry::init("eye", &settings.telemetry);
    match eye_cli::run(cli, settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
