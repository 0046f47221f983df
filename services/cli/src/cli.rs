//! The command-line grammar. Command names are part of the contract (see the design brief).

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};
use eye_service::auth::Role;
use uuid::Uuid;

/// The Eye: collect events from trusted applications, validate them, store them.
#[derive(Debug, Parser)]
#[command(name = "eye", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole pipeline (ingest, validator, writer) locally in one process, with a private
    /// PostgreSQL under ./.eye/pg unless DATABASE_URL is set. Prints a fresh API key.
    Dev,
    /// Apply the database migrations.
    Migrate,
    /// Manage applications and their API keys.
    #[command(subcommand)]
    Apps(AppsCommand),
    /// Register and list the JSON Schemas of event types.
    #[command(subcommand)]
    Schemas(SchemasCommand),
    /// Send one event to an ingest server and print its result.
    Send(SendArgs),
}

#[derive(Debug, Subcommand)]
pub enum AppsCommand {
    /// Create an application and print its first API key alone on the last line.
    Create {
        /// Unique name of the application.
        name: String,
        #[command(flatten)]
        roles: RoleArgs,
    },
    /// Issue another API key for an existing application; prints it alone on the last line.
    Key {
        /// Name of the application.
        name: String,
        #[command(flatten)]
        roles: RoleArgs,
    },
    /// List applications with their active keys and roles.
    List,
    /// Revoke an application and all its API keys.
    Revoke {
        /// Name of the application.
        name: String,
    },
}

#[derive(Debug, Clone, Args)]
pub struct RoleArgs {
    /// What the key may do; repeat for several [default: ingest].
    #[arg(long = "role", value_enum)]
    pub roles: Vec<RoleArg>,
}

impl RoleArgs {
    /// The roles asked for, deduplicated, `ingest` when none.
    pub fn roles(&self) -> Vec<Role> {
        let mut roles: Vec<Role> = self.roles.iter().map(|role| role.role()).collect();
        if roles.is_empty() {
            roles.push(Role::Ingest);
        }
        roles.sort_by_key(|role| role.as_str());
        roles.dedup();
        roles
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// Send events (IngestService).
    Ingest,
    /// Read events, errors and stats (QueryService).
    Read,
}

impl RoleArg {
    pub fn role(self) -> Role {
        match self {
            Self::Ingest => Role::Ingest,
            Self::Read => Role::Read,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum SchemasCommand {
    /// Register FILE as the JSON Schema of an event type: a new version, unless it equals the
    /// latest one.
    Put {
        /// Category of the event type, e.g. "page interaction".
        #[arg(long)]
        category: String,
        /// Name of the event type, e.g. "pageview".
        #[arg(long)]
        name: String,
        /// The JSON Schema, as a JSON file.
        file: PathBuf,
    },
    /// List event types with their latest schema version.
    List,
}

#[derive(Args)]
pub struct SendArgs {
    /// Category of the event, e.g. "page interaction".
    #[arg(long)]
    pub category: String,
    /// Name of the event, e.g. "pageview".
    #[arg(long)]
    pub name: String,
    /// The payload: a JSON object, e.g. '{"host": "example.com", "path": "/"}'.
    #[arg(long)]
    pub data: String,
    /// Session of the event [default: a new random UUID].
    #[arg(long)]
    pub session: Option<Uuid>,
    /// Idempotency key of the event [default: assigned by the server].
    #[arg(long = "event-id")]
    pub event_id: Option<Uuid>,
    /// When the event happened, RFC 3339 [default: now].
    #[arg(long, value_parser = parse_timestamp)]
    pub timestamp: Option<DateTime<Utc>>,
    /// The ingest server.
    #[arg(long, env = "EYE_ENDPOINT", default_value = "http://127.0.0.1:50051")]
    pub endpoint: String,
    /// API key with the `ingest` role (prefer the environment variable: arguments are visible to
    /// other users of the machine).
    #[arg(long, env = "EYE_API_KEY", hide_env_values = true)]
    pub key: String,
}

/// Never shows the key.
impl std::fmt::Debug for SendArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendArgs")
            .field("category", &self.category)
            .field("name", &self.name)
            .field("session", &self.session)
            .field("event_id", &self.event_id)
            .field("timestamp", &self.timestamp)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

fn parse_timestamp(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|error| format!("{error}; expected RFC 3339, e.g. 2026-01-31T12:00:00Z"))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn grammar_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn roles_default_to_ingest_and_are_deduplicated() {
        let parse = |args: &[&str]| match Cli::parse_from(args).command {
            Command::Apps(AppsCommand::Create { roles, .. }) => roles.roles(),
            other => panic!("{other:?}"),
        };
        assert_eq!(parse(&["eye", "apps", "create", "x"]), [Role::Ingest]);
        assert_eq!(
            parse(&[
                "eye", "apps", "create", "x", "--role", "read", "--role", "ingest", "--role",
                "read"
            ]),
            [Role::Ingest, Role::Read]
        );
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let at = parse_timestamp("2026-01-31T13:00:00+01:00").unwrap();
        assert_eq!(at.to_rfc3339(), "2026-01-31T12:00:00+00:00");
        assert!(parse_timestamp("yesterday").unwrap_err().contains("RFC 3339"));
    }
}
