//! `eye`: The Eye's command line. It runs the whole pipeline on a laptop (`eye dev`), applies the
//! migrations, manages applications, API keys and event schemas, sends test events, and reads
//! the store through the query server: events, sessions, quarantined events (and their replay)
//! and pipeline stats. Its [`client`] module holds the reusable Rust clients of
//! `eye.v1.IngestService` and `eye.v1.QueryService`.
//!
//! Admin commands (`migrate`, `apps`, `schemas`) use `DATABASE_URL` when it is set (or
//! `database.url` in the settings); otherwise the same private PostgreSQL as `eye dev` run from the
//! same directory (`./.eye/pg`), started if needed, so `eye apps create x` works in a second
//! terminal next to `eye dev` with nothing to export.
//!
//! stdout carries results only where scripts rely on it: `eye apps create` and `eye apps key`
//! print the new API key alone on the last line (`eye apps create x | tail -1`); the read
//! commands print tables, or one JSON object per line with `--json`, and put notes (such as "more
//! match: raise --limit") on stderr. Errors go to stderr and exit with status 1. API keys are
//! printed once, when issued, and never logged.
//!
//! # Layout
//! - [`cli`]: the command-line grammar (clap derive).
//! - [`commands`]: one module per command: [`apps`](commands::apps), [`schemas`](commands::schemas),
//!   [`dlq`](commands::dlq) (all three thin over `eye_admin`), [`send`](commands::send) (over
//!   `eye_client`), [`migrate`](commands::migrate), [`dev`](commands::dev), and the
//!   read commands [`events`](commands::events), [`session`](commands::session),
//!   [`errors`](commands::errors), [`replay`](commands::replay), [`stats`](commands::stats), which
//!   share [`read`](commands::read) (connecting, refusals, table rows and JSON lines).
//! - [`database`]: which database to use (configured, or the local dev server) and turning
//!   database errors into messages that say what to do.
//! - [`time`]: times on the command line (`--from 1h`, RFC 3339) and durations (`--window 2d`).
//! - `table`: plain-text tables for the `list` commands.

pub mod cli;
pub mod commands;
pub mod database;
mod table;
pub mod time;

use eye_service::{
    Settings,
    settings::{LogFormat, TelemetrySettings},
};

pub use cli::{Cli, Command};

/// Adapts logging to a command line: human-readable, and quiet (warnings only) except under
/// `eye dev`, unless `RUST_LOG` or a non-default `telemetry.log_filter` says otherwise.
pub fn adapt_telemetry(command: &Command, telemetry: &mut TelemetrySettings) {
    telemetry.log_format = LogFormat::Pretty;
    if telemetry.log_filter == TelemetrySettings::default().log_filter {
        telemetry.log_filter = match command {
            // sqlx reports every server NOTICE at info ("relation ... already exists, skipping").
            // Warnings only: the banner (and its key, on the last line) is the last thing a
            // healthy start prints. `RUST_LOG=info eye dev` shows the services' progress.
            Command::Dev(_) => "warn".into(),
            // A long-running service: its start, and what it refuses.
            Command::Relay(_) | Command::Delivery => "info,sqlx=warn".into(),
            _ => "warn".into(),
        };
    }
}

/// Runs one command to completion. A closed stdout (the reader of a pipe went away, as with
/// `eye events --json | head -1`) ends it quietly, as a success.
pub async fn run(cli: Cli, settings: Settings) -> anyhow::Result<()> {
    match run_command(cli, settings).await {
        Err(error)
            if error
                .downcast_ref::<std::io::Error>()
                .is_some_and(|error| error.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        result => result,
    }
}

async fn run_command(cli: Cli, settings: Settings) -> anyhow::Result<()> {
    match cli.command {
        Command::Dev(args) => commands::dev::run(args, settings).await,
        Command::Migrate => {
            let pool = database::admin_pool(&settings).await?;
            commands::migrate::run(&pool).await
        }
        Command::Delete(args) => {
            let pool = database::admin_pool(&settings).await?;
            commands::delete::run(&pool, args).await
        }
        Command::Deletions { limit, json } => {
            let pool = database::admin_pool(&settings).await?;
            commands::delete::list(&pool, limit, json).await
        }
        Command::Maintenance { json } => {
            let pool = database::admin_pool(&settings).await?;
            commands::maintenance::run(&pool, &settings, json).await
        }
        Command::Apps(command) => {
            let pool = database::admin_pool(&settings).await?;
            commands::apps::run(&pool, &settings, command).await
        }
        Command::Schemas(command) => {
            let pool = database::admin_pool(&settings).await?;
            commands::schemas::run(&pool, command).await
        }
        Command::Dlq(command) => {
            let mut settings = settings;
            let place = command.place();
            if let Some(url) = &place.database_url {
                settings.database.url = Some(url.clone().into());
            }
            if let Some(schema) = &place.schema {
                flush_event::install::check_schema(schema)?;
                settings.database.search_path = Some(schema.clone());
            }
            let pool = database::admin_pool(&settings).await?;
            commands::dlq::run(&pool, command).await
        }
        Command::Subscriptions(command) => {
            let pool = database::admin_pool(&settings).await?;
            commands::subscriptions::run(&pool, command).await
        }
        Command::Delivery => {
            let shutdown = eye_service::shutdown::on_signal();
            eye_delivery::Application::build(settings).await?.run_until_stopped(shutdown).await?;
            Ok(())
        }
        Command::Outbox(cli::OutboxCommand::Migrate { database_url, schema }) => {
            let applied = flush_event::install::install(&database_url, &schema).await?;
            println!(
                "the outbox is installed in schema `{schema}` ({applied} migration(s) applied now); \
                 enqueue into {schema}.outbox, stage `eye`, in your transactions, and run \
                 `eye relay --source URL --schema {schema}`"
            );
            Ok(())
        }
        Command::Import(args) if args.parquet => commands::export::import(args).await,
        Command::Import(args) => commands::import::run(args).await,
        Command::Export(args) => {
            let pool = database::admin_pool(&settings).await?;
            commands::export::run(&pool, args).await
        }
        Command::Relay(args) => {
            let shutdown = eye_service::shutdown::on_signal();
            eye_relay::run(settings, &args, shutdown).await
        }
        Command::Send(args) => commands::send::run(args).await,
        Command::Load(args) => commands::load::run(args).await,
        Command::Events(args) => commands::events::run(args).await,
        Command::Session(args) => commands::session::run(args).await,
        Command::Errors(args) => commands::errors::run(args).await,
        Command::Replay(args) => commands::replay::run(args).await,
        Command::Stats(args) => commands::stats::run(args).await,
    }
}
