//! The command-line grammar. Command names are part of the contract (see the design brief).

use std::{path::PathBuf, time::Duration};

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};
use eye_service::auth::Role;
use uuid::Uuid;

use crate::time::{parse_duration, parse_instant};

/// The Eye: collect events from trusted applications, validate them, store them.
#[derive(Debug, Parser)]
#[command(name = "eye", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole pipeline (ingest, validator, writer, query) locally in one process, with a
    /// private PostgreSQL under ./.eye/pg unless DATABASE_URL is set; `eye dev env` and
    /// `eye dev stop` go with it.
    #[command(long_about = DEV_HELP)]
    Dev(DevArgs),
    /// Apply the database migrations.
    Migrate,
    /// Manage applications and their API keys.
    #[command(subcommand)]
    Apps(AppsCommand),
    /// Register and list the JSON Schemas of event types.
    #[command(subcommand)]
    Schemas(SchemasCommand),
    /// List and replay the outbox's dead letters (rows that failed max_attempts times), of The
    /// Eye's outbox or (with --database-url and --schema) of a producer's.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Subscriptions: deliver stored events that match a filter to a webhook or to NATS
    /// JetStream (`eye-delivery` delivers them; `eye dev` runs it).
    #[command(subcommand)]
    Subscriptions(SubscriptionsCommand),
    /// Run the delivery service (as the `eye-delivery` binary does) until SIGTERM.
    Delivery,
    /// A producer's own outbox: `eye outbox migrate` installs its tables in your database.
    #[command(subcommand)]
    Outbox(OutboxCommand),
    /// Ship a producer's outbox (stage `eye` in its database) to ingest; runs until SIGTERM.
    Relay(eye_relay::RelayArgs),
    /// Load the file inbox of services that write one JSON file per event
    /// (DIR/<type>/<uuid>.json); with --watch, keep loading new files as they appear.
    #[command(long_about = IMPORT_HELP)]
    Import(ImportArgs),
    /// Export the store as hive-partitioned Parquet (dt=YYYY-MM-DD/hour=HH/, a _manifest.json
    /// per hour) to a folder or s3://BUCKET/PREFIX; with --follow, keep it up to date.
    Export(ExportArgs),
    /// Send one event to an ingest server and print its result.
    Send(SendArgs),
    /// Send a load of generated events through the eye client (batched, retried, optionally
    /// spooled); prints one JSON line of counts on exit, also after SIGTERM.
    Load(LoadArgs),
    /// List stored events matching a filter, oldest first.
    Events(EventsArgs),
    /// Show a session: its summary, then its events in time order.
    Session(SessionArgs),
    /// List quarantined events (newest first) with counts per reason.
    Errors(ErrorsArgs),
    /// Send quarantined events back through validation, e.g. after a schema fix.
    Replay(ReplayArgs),
    /// Pipeline health: queue depth and lag per stage, events stored and errors in a window.
    Stats(StatsArgs),
    /// Delete a data subject's events everywhere they are kept (in flight, stored, quarantined;
    /// exported hours are marked for rewriting), with a receipt; every given filter must match.
    Delete(DeleteArgs),
    /// List deletion receipts, newest first.
    Deletions {
        /// Most receipts shown.
        #[arg(long, default_value_t = 20)]
        limit: i64,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Run the store's upkeep once (every writer also runs it on its own): create partitions
    /// ahead of need, drop what is past `store.retention`, prune the dedup ledger.
    Maintenance {
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

const IMPORT_HELP: &str = "\
Load the file inbox of services that write one JSON file per event: DIR/<type>/<uuid>.json, each
{\"metadata\": {\"type\", \"event_at\", \"event_id\"}, \"payload\": {...}}.

Mapping: category = metadata.type; name = --name (default `change`); timestamp =
metadata.event_at (RFC 3339, or without a zone, read at --naive-offset, UTC by default); event
id = metadata.event_id (it must equal the file name); data = payload; session = a UUIDv5 of
(type, payload.id) when the payload has an id, so one record's history is one session, else of
(type, the UTC day of event_at).

Only files named <uuid>.json are touched; others (__id_counter, temporary files, dotfiles) are
left where they are. A file modified within --settle-ms is left for later (it may still be being
written). A file is archived (--archive, default DIR/../archive, same layout) or deleted
(--delete) only once ingest answered ACCEPTED or DUPLICATE; a file that is not a valid event, or
that ingest REJECTED, goes to --rejected (default DIR/../rejected) with <uuid>.reason beside it.
A crash at any moment loses nothing and stores nothing twice: a file sent again is answered
DUPLICATE and archived then.";

const DEV_HELP: &str = "\
Run the whole pipeline locally, in one process: ingest, validator, writer, delivery and query.

What it starts and where:
  - Postgres: DATABASE_URL if set, else a private server with its data in ./.eye/pg (started, or
    reused if already running). It KEEPS RUNNING after `eye dev` exits, so the next start is
    instant and `eye apps`/`eye schemas` in another terminal find it; stop it with `eye dev stop`.
  - ingest gRPC on 127.0.0.1:50051 (EYE__INGEST__PORT), HTTP ingest on 127.0.0.1:8080
    (EYE__INGEST__HTTP_PORT), query gRPC on 127.0.0.1:50052 (EYE__QUERY__PORT), the console on
    http://127.0.0.1:8081/ (EYE__QUERY__HTTP_PORT), /metrics on 127.0.0.1:9000
    (EYE__METRICS__PORT); 0 picks a free port.
    Only loopback unless --host says otherwise.
  - the application `dev` with a key holding ingest and read; the key is kept in ./.eye/dev.env
    (mode 600) and reused by the next `eye dev` while it is valid.

It prints the endpoints, an `export ...` block, and the key alone on the last line of stdout.
In another terminal of the same directory, `eval \"$(eye dev env)\"` sets DATABASE_URL,
EYE_ENDPOINT, EYE_HTTP_ENDPOINT, EYE_QUERY_ENDPOINT and EYE_API_KEY. Ctrl-C (or SIGTERM) drains and stops the
services; `eye dev stop` then stops the Postgres (`eye dev stop --tests`: the test suite's, in
target/eye-test-pg).";

#[derive(Debug, Args)]
pub struct DevArgs {
    #[command(subcommand)]
    pub action: Option<DevAction>,
    /// The address every server listens on (0.0.0.0 exposes them to the network).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
}

#[derive(Debug, Subcommand)]
pub enum DevAction {
    /// Print `export` lines for DATABASE_URL, EYE_ENDPOINT, EYE_QUERY_ENDPOINT and EYE_API_KEY of
    /// the last `eye dev` in this directory: `eval "$(eye dev env)"`.
    Env,
    /// Stop the private Postgres that `eye dev` (or, with --tests, the test suite) left running.
    Stop {
        /// Stop the test suite's server (target/eye-test-pg of this checkout) instead.
        #[arg(long)]
        tests: bool,
    },
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
        /// A publishable key, for web pages: it may only ingest, only from the --origin sites,
        /// rate-limited per visitor (ingest.publishable_rate / ingest.publishable_burst).
        #[arg(long, requires = "origins", conflicts_with = "roles")]
        publishable: bool,
        /// A site the publishable key may be used from (scheme://host[:port]); repeat for several.
        #[arg(long = "origin", value_name = "ORIGIN", requires = "publishable")]
        origins: Vec<String>,
    },
    /// List applications with their active keys, roles and quotas.
    List,
    /// Set an application's ingest quota (events a second, per ingest instance), or clear it so
    /// that `ingest.quota_rate` applies. Over it, ingest answers RESOURCE_EXHAUSTED / 429 with
    /// `retry-after`.
    Quota {
        /// Name of the application.
        name: String,
        /// Events a second; 0 exempts the application from the default quota.
        #[arg(long, required_unless_present = "clear")]
        rate: Option<f64>,
        /// Events it may send at once before the rate applies [default: twice the rate].
        #[arg(long, requires = "rate")]
        burst: Option<f64>,
        /// Remove the application's own quota.
        #[arg(long, conflicts_with_all = ["rate", "burst"])]
        clear: bool,
    },
    /// Revoke an application and all its API keys.
    Revoke {
        /// Name of the application.
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The events of this session (UUID).
    #[arg(long)]
    pub session: Option<uuid::Uuid>,
    /// The events of this application (by name).
    #[arg(long)]
    pub application: Option<String>,
    /// The events whose payload contains this JSON object, e.g. '{"user_id": "u1"}'.
    #[arg(long, value_name = "JSON")]
    pub contains: Option<String>,
    /// Also refuse later events that match, at validation (reason `suppressed`).
    #[arg(long)]
    pub suppress: bool,
    /// Confirm deleting a whole application's events (--application without another filter).
    #[arg(long)]
    pub yes: bool,
    /// Print the receipt as one JSON object.
    #[arg(long)]
    pub json: bool,
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
    /// Read events, errors and stats (QueryService, the console).
    Read,
    /// Replay errors and manage keys in the console (give it with `read`).
    Admin,
}

impl RoleArg {
    pub fn role(self) -> Role {
        match self {
            Self::Ingest => Role::Ingest,
            Self::Read => Role::Read,
            Self::Admin => Role::Admin,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// Install (or upgrade) the outbox tables in a schema of your service's database, so that
    /// it can enqueue events in its own transactions and `eye relay` can ship them.
    Migrate {
        /// Your service's database.
        #[arg(long, value_name = "URL")]
        database_url: String,
        /// The schema for the outbox tables (created if missing), apart from your own tables.
        #[arg(long, default_value = "eye")]
        schema: String,
    },
}

/// Whose outbox: The Eye's (DATABASE_URL), or a producer's.
#[derive(Debug, Clone, Args)]
pub struct OutboxPlace {
    /// A producer's database instead of DATABASE_URL.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// The schema of that outbox (`eye outbox migrate --schema`); default: the search path.
    #[arg(long)]
    pub schema: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Dead letters, newest first: id, stage, attempts, when, and the last error.
    List {
        /// Only this outbox stage (`validate`, `write`; `eye` in a producer's outbox).
        #[arg(long)]
        stage: Option<String>,
        /// Only the dead letters of this subscription (events its destination refused, or that
        /// ran out of attempts).
        #[arg(long, conflicts_with = "stage")]
        subscription: Option<String>,
        /// Most rows to show.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[command(flatten)]
        place: OutboxPlace,
    },
    /// Move dead letters back into their stage with a fresh attempt count (after fixing what
    /// made them fail). Replaying is safe: the store keeps one row per event.
    Replay {
        /// Only dead letters of this stage.
        #[arg(long)]
        stage: Option<String>,
        /// Only dead letters of this subscription.
        #[arg(long, conflicts_with = "stage")]
        subscription: Option<String>,
        /// These dead letters (repeatable); without ids, every dead letter (of `--stage`).
        #[arg(long = "id")]
        ids: Vec<i64>,
        /// Required to replay every dead letter (when no `--id` is given).
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        place: OutboxPlace,
    },
}

const CREATE_HELP: &str = "\
Create a subscription: the events stored from now on (or, with --from, since then) that match
the filter are delivered to the destination, at least once.

--webhook URL: POSTs of {\"subscription\": NAME, \"events\": [...]}, signed per Standard Webhooks
(webhook-id, webhook-timestamp, webhook-signature); the signing secret (whsec_...) is printed
alone on the last line of stdout, once. A retried batch keeps its webhook-id: dedupe on it.

--nats URL: one JetStream message per event on eye.<application>.<category>.<name> with
Nats-Msg-Id = the event id. The stream must exist (subjects eye.>, see docs/delivery.md), or
pass --create-stream.

--ordered: one batch at a time, in storage order; each event carries `sequence` (1, 2, 3, ...).

Filters work as for `eye events`; --contains takes a JSON object the payload must contain, e.g.
--contains '{\"client\": \"Client_A\"}' for one client's queue.";

#[derive(Debug, Subcommand)]
pub enum SubscriptionsCommand {
    /// Create a subscription (prints a webhook's signing secret alone on the last line).
    #[command(long_about = CREATE_HELP)]
    Create(CreateSubscriptionArgs),
    /// Every subscription with its state: delivered, pending, retrying, lag, dead letters.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Stop delivering (events keep being queued for it; `resume` delivers them).
    Pause { name: String },
    /// Deliver again, starting with what was queued meanwhile.
    Resume { name: String },
    /// Delete a subscription with its queued batches and dead letters.
    Delete { name: String },
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("destination").required(true).args(["webhook", "nats"])))]
pub struct CreateSubscriptionArgs {
    /// Its name: letters, digits, '.', '_', '-' (it labels metrics and webhook bodies).
    pub name: String,
    /// Deliver to this webhook (http:// or https://).
    #[arg(long)]
    pub webhook: Option<String>,
    /// Deliver to NATS JetStream on this server (nats://host:4222).
    #[arg(long)]
    pub nats: Option<String>,
    /// Only events of this application (its name).
    #[arg(long)]
    pub application: Option<String>,
    /// Only events of this category.
    #[arg(long)]
    pub category: Option<String>,
    /// Only events of this name (with or without --category).
    #[arg(long = "name", value_name = "NAME")]
    pub name_filter: Option<String>,
    /// Only events whose payload contains this JSON object.
    #[arg(long)]
    pub contains: Option<String>,
    /// Backfill the events stored since then (RFC 3339, or an age like 2h, 7d) before going live.
    #[arg(long, value_parser = parse_instant)]
    pub from: Option<DateTime<Utc>>,
    /// Deliver one batch at a time, in storage order, with sequence numbers.
    #[arg(long)]
    pub ordered: bool,
    /// With --nats: create the stream EYE on subjects `eye.>` if it does not exist.
    #[arg(long, requires = "nats")]
    pub create_stream: bool,
    /// With --create-stream: the stream's replicas (3 on a 3-node cluster).
    #[arg(long, default_value_t = 1, requires = "create_stream")]
    pub replicas: usize,
}

impl DlqCommand {
    pub fn place(&self) -> &OutboxPlace {
        match self {
            Self::List { place, .. } | Self::Replay { place, .. } => place,
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

#[derive(Debug, Args)]
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
    pub key: Option<ApiKey>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The inbox: DIR/<type>/<uuid>.json (with --parquet: an export, a folder or s3://...).
    pub dir: std::path::PathBuf,
    /// DIR is an `eye export` (a folder or s3://BUCKET/PREFIX): send its events back through
    /// ingest, event ids kept (a store that has them answers DUPLICATE). Every event goes to the
    /// key's application.
    #[arg(long, conflicts_with_all = ["watch", "archive", "delete"])]
    pub parquet: bool,
    /// Keep running and load new files as they appear (file-system notifications, and a rescan
    /// every --rescan-ms as a fallback) until SIGTERM or Ctrl-C.
    #[arg(long)]
    pub watch: bool,
    /// Where imported files go, in the inbox's layout [default: DIR/../archive].
    #[arg(long, conflicts_with = "delete")]
    pub archive: Option<std::path::PathBuf>,
    /// Delete imported files instead of archiving them.
    #[arg(long)]
    pub delete: bool,
    /// Where refused files go, each with a .reason file [default: DIR/../rejected].
    #[arg(long)]
    pub rejected: Option<std::path::PathBuf>,
    /// The event name of every imported event (the category is the file's type).
    #[arg(long, default_value = "change")]
    pub name: String,
    /// The UTC offset of timestamps written without a zone, e.g. +02:00.
    #[arg(long, default_value = "+00:00", value_parser = parse_offset, allow_hyphen_values = true)]
    pub naive_offset: chrono::FixedOffset,
    /// Files modified more recently than this are left for later.
    #[arg(long, default_value_t = 1_000)]
    pub settle_ms: u64,
    /// With --watch: the fallback rescan interval.
    #[arg(long, default_value_t = 2_000)]
    pub rescan_ms: u64,
    /// Events per SendEvents call.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub batch: u32,
    /// Print JSON lines (progress and a summary) instead of text.
    #[arg(long)]
    pub json: bool,
    /// The ingest server.
    #[arg(long, env = "EYE_ENDPOINT", default_value = "http://127.0.0.1:50051")]
    pub endpoint: String,
    /// API key with the `ingest` role.
    #[arg(long, env = "EYE_API_KEY", hide_env_values = true)]
    pub key: Option<ApiKey>,
}

fn parse_offset(text: &str) -> Result<chrono::FixedOffset, String> {
    text.parse().map_err(|_| format!("{text:?} is not a UTC offset like +02:00"))
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A folder, or s3://BUCKET/PREFIX (credentials and endpoint from AWS_* variables:
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL).
    pub destination: String,
    /// Only hours from this time on (RFC 3339, or an age like 7d).
    #[arg(long, value_parser = parse_instant)]
    pub from: Option<DateTime<Utc>>,
    /// Only hours before this time.
    #[arg(long, value_parser = parse_instant)]
    pub to: Option<DateTime<Utc>>,
    /// After exporting, keep running: export each hour once it is --lateness old, and again
    /// whenever events arrive late for it, until SIGTERM or Ctrl-C.
    #[arg(long)]
    pub follow: bool,
    /// Export quarantined events too, under DEST/errors/.
    #[arg(long)]
    pub errors: bool,
    /// With --follow: how long after its end an hour is exported the first time.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub lateness: Duration,
    /// With --follow: how often the store is looked at.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Files are split once they reach about this size (uncompressed), in MB.
    #[arg(long, default_value_t = 128)]
    pub max_file_mb: u64,
    /// Print JSON lines (a summary per kind) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Events to track.
    #[arg(long)]
    pub events: u64,
    /// Offered load in events/s (open loop) [default: as fast as the client takes them].
    #[arg(long)]
    pub rate: Option<f64>,
    /// Derive event and session ids from this seed (event i: a version-8 UUID of
    /// splitmix64(seed) and i), so that which events arrived can be checked in SQL
    /// [default: UUIDv7 ids assigned by the client].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Events per SendEvents call (the client's batch size; at most 1000).
    #[arg(long, default_value_t = 500, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1000))]
    pub batch: usize,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 4, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=64))]
    pub concurrency: usize,
    /// Tasks tracking at once (task j tracks events j, j + P, ...).
    #[arg(long, default_value_t = 1, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=256))]
    pub producers: usize,
    /// Approximate payload size in bytes.
    #[arg(long, default_value_t = 200)]
    pub payload_bytes: usize,
    /// Spool tracked events to this directory (fsynced before they count as tracked): a run
    /// killed with kill -9 sends them when started again on the same directory.
    #[arg(long)]
    pub spool: Option<PathBuf>,
    /// Drop (and count) events when the client's queue is full instead of waiting.
    #[arg(long)]
    pub drop_when_full: bool,
    /// Print `{"progress": N}` on stderr after every N tracked events (0: never).
    #[arg(long, default_value_t = 0)]
    pub progress_every: u64,
    /// How long the final flush may take, in seconds.
    #[arg(long, default_value_t = 30)]
    pub grace_secs: u64,
    /// The ingest server.
    #[arg(long, env = "EYE_ENDPOINT", default_value = "http://127.0.0.1:50051")]
    pub endpoint: String,
    /// API key with the `ingest` role (EYE_API_KEY).
    #[arg(long, env = "EYE_API_KEY", hide_env_values = true)]
    pub key: Option<ApiKey>,
}

/// An API key given on the command line or in `EYE_API_KEY`: never shown by `Debug`.
#[derive(Clone)]
pub struct ApiKey(String);

impl std::str::FromStr for ApiKey {
    type Err = std::convert::Infallible;

    fn from_str(key: &str) -> Result<Self, Self::Err> {
        Ok(Self(key.trim().to_owned()))
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(..)")
    }
}

/// The API key of a command that talks to a server: `--key`, else `EYE_API_KEY`; a clear
/// message naming both when neither is set.
pub fn api_key(key: &Option<ApiKey>) -> anyhow::Result<&str> {
    match key {
        Some(ApiKey(key)) if !key.is_empty() => Ok(key),
        _ => anyhow::bail!(
            "no API key: set EYE_API_KEY (with `eye dev` running: eval \"$(eye dev env)\") or \
             pass --key"
        ),
    }
}

/// How the query commands reach the query server, and how they print.
#[derive(Debug, Clone, Args)]
pub struct QueryArgs {
    /// The query server.
    #[arg(
        long = "query-endpoint",
        env = "EYE_QUERY_ENDPOINT",
        default_value = "http://127.0.0.1:50052"
    )]
    pub endpoint: String,
    /// API key with the `read` role (prefer the environment variable: arguments are visible to
    /// other users of the machine).
    #[arg(long, env = "EYE_API_KEY", hide_env_values = true)]
    pub key: Option<ApiKey>,
    /// Print one JSON object per line (each with a "kind") instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only this session's events.
    #[arg(long)]
    pub session: Option<Uuid>,
    /// Only this category, e.g. "page interaction".
    #[arg(long)]
    pub category: Option<String>,
    /// Only this name, e.g. "pageview" (fastest with --category).
    #[arg(long)]
    pub name: Option<String>,
    /// Only events sent by this application (its name or id).
    #[arg(long)]
    pub application: Option<String>,
    /// Events that occurred at or after this time: RFC 3339, a date, or how long ago (1h, 15m,
    /// 2d).
    #[arg(long, value_parser = parse_instant)]
    pub from: Option<DateTime<Utc>>,
    /// Events that occurred before this time (same forms as --from).
    #[arg(long, value_parser = parse_instant)]
    pub to: Option<DateTime<Utc>>,
    /// Events whose payload contains this JSON object, e.g. '{"path": "/checkout"}'.
    #[arg(long)]
    pub contains: Option<String>,
    /// Most events to print (pages are followed until then).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,
    #[command(flatten)]
    pub query: QueryArgs,
}

#[derive(Debug, Args)]
pub struct SessionArgs {
    /// The session's UUID.
    pub session: Uuid,
    /// Most events to print (pages are followed until then).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,
    #[command(flatten)]
    pub query: QueryArgs,
}

/// Which quarantined events a command selects.
#[derive(Debug, Clone, Default, Args)]
pub struct ErrorSelection {
    /// Only this reason: schema_violation, timestamp_in_future, timestamp_too_old,
    /// unknown_event_type, invalid_payload.
    #[arg(long)]
    pub reason: Option<String>,
    /// Only this category.
    #[arg(long)]
    pub category: Option<String>,
    /// Only this name.
    #[arg(long)]
    pub name: Option<String>,
    /// Only events sent by this application (its name or id).
    #[arg(long)]
    pub application: Option<String>,
}

#[derive(Debug, Args)]
pub struct ErrorsArgs {
    #[command(flatten)]
    pub selection: ErrorSelection,
    /// Only errors that (last) failed validation at or after this time: RFC 3339, a date, or how
    /// long ago (1h, 15m, 2d).
    #[arg(long, value_parser = parse_instant)]
    pub since: Option<DateTime<Utc>>,
    /// Only errors in this replay state; repeat for several.
    #[arg(long = "outcome", value_enum)]
    pub outcomes: Vec<OutcomeArg>,
    /// Most errors to print (pages are followed until then); the counts cover every match.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,
    #[command(flatten)]
    pub query: QueryArgs,
}

/// The replay state of a quarantined event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutcomeArg {
    /// Never replayed.
    NotReplayed,
    /// Replayed, not validated yet.
    Pending,
    /// Replayed and stored.
    Stored,
    /// Replayed and refused again.
    StillInvalid,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub selection: ErrorSelection,
    /// Replay these errors (ids from `eye errors`); repeat or list several.
    #[arg(long = "id", num_args = 1.., value_parser = clap::value_parser!(i64).range(1..))]
    pub ids: Vec<i64>,
    /// Replay every quarantined event not yet stored (needed when nothing else selects).
    #[arg(long, conflicts_with = "ids")]
    pub all: bool,
    /// Most errors to replay [default: every match].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    #[command(flatten)]
    pub query: QueryArgs,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// The window the counts cover, ending now: 30s, 15m, 1h, 2d (at most 7 days).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub window: Duration,
    #[command(flatten)]
    pub query: QueryArgs,
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
