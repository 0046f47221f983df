//! Typed settings, loaded in layers: built-in defaults, then a TOML file (`EYE_CONFIG`, else
//! `eye.toml` in the working directory if present), then environment variables prefixed `EYE__`
//! with `__` between levels (`EYE__INGEST__PORT=50051`), then `DATABASE_URL`.

use std::path::PathBuf;

use config::{Config, Environment, File};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

pub use eye_telemetry::{LogFormat, TelemetrySettings};

/// Settings could not be loaded or make no sense.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot load settings: {0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid setting {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// Every setting of every Eye binary. Each binary reads the sections it needs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub auth: AuthSettings,
    pub ingest: IngestSettings,
    pub query: QuerySettings,
    pub validator: ValidatorSettings,
    pub writer: WriterSettings,
    pub relay: RelaySettings,
    pub delivery: DeliverySettings,
    pub telemetry: TelemetrySettings,
    pub metrics: MetricsSettings,
    pub tls: TlsSettings,
    pub privacy: PrivacySettings,
    pub store: StoreSettings,
}

/// How the store's partitions are cut and how long what it holds is kept. Upkeep (partitions
/// ahead of need, retention, the dedup window) runs in every writer, one replica at a time.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct StoreSettings {
    /// How long events are kept, by their `occurred_at`: `"90 days"`, `"6 months"` (also `90d`,
    /// `6mo`); unset (the default): forever. Whole partitions are dropped once they end before
    /// now minus the retention; quarantined events and dead letters older than it are deleted,
    /// and sessions left without events removed.
    pub retention: Option<String>,
    /// The span of a new partition of `events`: `month` (the default) or `day` (for a retention
    /// in days). Changing it applies to partitions created from then on.
    pub partition: Granularity,
    /// How long ingest remembers an event id at least (the idempotency ledger, kept in slices of
    /// this many days, so at most twice it), in days (at least 1; default 7): a retry within it
    /// is answered DUPLICATE.
    pub dedup_window_days: u32,
    /// How often a writer runs the upkeep.
    pub maintenance_interval_ms: u64,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            retention: None,
            partition: Granularity::Month,
            dedup_window_days: 7,
            maintenance_interval_ms: 3_600_000,
        }
    }
}

/// The span of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    Day,
    #[default]
    Month,
}

impl Granularity {
    /// As `date_trunc` and `eye_ensure_partition` name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Month => "month",
        }
    }

    /// The start of the partition holding `at` (`date_trunc` in UTC, as `eye_ensure_partition`
    /// bounds new partitions).
    pub fn start_of(self, at: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
        use chrono::{Datelike, TimeZone};
        let day = at.date_naive();
        let first = match self {
            Self::Day => day,
            Self::Month => day.with_day(1).expect("every month has a first day"),
        };
        chrono::Utc.from_utc_datetime(&first.and_time(chrono::NaiveTime::MIN))
    }

    /// `at` moved on by `n` partitions' spans (`None` past the calendar's range).
    pub fn add(
        self,
        at: chrono::DateTime<chrono::Utc>,
        n: u32,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        match self {
            Self::Day => at.checked_add_days(chrono::Days::new(u64::from(n))),
            Self::Month => at.checked_add_months(chrono::Months::new(n)),
        }
    }
}

/// A retention period, as `store.retention` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    Days(u32),
    Months(u32),
}

impl Retention {
    /// `"90 days"`, `"90d"`, `"6 months"`, `"6mo"` (`day`/`month` also singular).
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: u32 = number.parse().ok().filter(|n| *n > 0)?;
        match unit.trim() {
            "d" | "day" | "days" => Some(Self::Days(number)),
            "mo" | "month" | "months" => Some(Self::Months(number)),
            _ => None,
        }
    }

    /// The oldest moment still kept at `now`.
    pub fn cutoff(self, now: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
        match self {
            Self::Days(days) => now - chrono::Duration::days(i64::from(days)),
            Self::Months(months) => now
                .checked_sub_months(chrono::Months::new(months))
                .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC),
        }
    }
}

impl StoreSettings {
    /// The retention, if one is set (checked by [`Settings::validate`]).
    pub fn retention(&self) -> Option<Retention> {
        self.retention.as_deref().and_then(Retention::parse)
    }
}

/// Personal data (see `event_model::pii`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PrivacySettings {
    /// The key of the HMAC-SHA256 that replaces properties annotated `"x-eye-pii": "hash"`
    /// (`EYE__PRIVACY__PII_KEY`, at least 32 bytes; the same on every ingest and validator).
    /// Unset: such properties are stored as the `[redacted]` marker instead.
    pub pii_key: Option<SecretString>,
}

impl PrivacySettings {
    /// The HMAC key's bytes, if set.
    pub fn pii_key(&self) -> Option<Vec<u8>> {
        self.pii_key.as_ref().map(|key| key.expose_secret().as_bytes().to_vec())
    }
}

/// TLS for the gRPC servers (ingest, query): set both files to serve TLS only; leave both unset
/// for plaintext (e.g. behind a TLS-terminating proxy or service mesh).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TlsSettings {
    /// PEM certificate chain (`EYE__TLS__CERT_FILE`).
    pub cert_file: Option<PathBuf>,
    /// PEM private key (`EYE__TLS__KEY_FILE`).
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DatabaseSettings {
    /// `postgres://...`; set with `DATABASE_URL` (or `EYE__DATABASE__URL`).
    pub url: Option<SecretString>,
    /// Pool size per process. Small pools beat big ones: Postgres does best with about
    /// 2-4 busy connections per core.
    pub max_connections: u32,
    /// How long to wait for a pooled connection before failing the request.
    pub acquire_timeout_ms: u64,
    /// The `search_path` of every connection, when the tables live in a schema of their own
    /// (the relay's producer outbox, `relay.schema`); unset: the server's default.
    pub search_path: Option<String>,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self { url: None, max_connections: 8, acquire_timeout_ms: 5_000, search_path: None }
    }
}

impl DatabaseSettings {
    pub fn url(&self) -> Result<&str, SettingsError> {
        self.url.as_ref().map(|url| url.expose_secret()).ok_or(SettingsError::Invalid {
            field: "database.url",
            reason: "set DATABASE_URL (postgres://user@host:port/db)".into(),
        })
    }
}

/// How servers (ingest, query) check API keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AuthSettings {
    /// How long an authenticated key (or an unknown key) is cached: the bound on how long a
    /// revoked key keeps working (`EYE__AUTH__CACHE_TTL_MS`; default 5000).
    pub cache_ttl_ms: Option<u64>,
}

/// [`AuthSettings::cache_ttl_ms`] when neither it nor the deprecated
/// `ingest.auth_cache_ttl_ms` is set.
pub const DEFAULT_AUTH_CACHE_TTL_MS: u64 = 5_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct IngestSettings {
    pub host: String,
    /// gRPC port; 0 picks a free one.
    pub port: u16,
    /// Most events in one `SendEvents` call.
    pub max_batch_events: usize,
    /// Largest `SendEvents` request, in bytes.
    pub max_batch_bytes: usize,
    /// Largest single event (encoded), in bytes.
    pub max_event_bytes: usize,
    /// Deepest nesting of a payload (at most 120).
    pub max_payload_depth: usize,
    /// Most events committed in one group commit.
    pub commit_max_events: usize,
    /// Group commits in flight at once.
    pub commit_concurrency: usize,
    /// Deprecated: use `auth.cache_ttl_ms`, which wins when both are set. Still honoured (by
    /// ingest and query alike) so that existing deployments keep their setting.
    pub auth_cache_ttl_ms: Option<u64>,
    /// Back-pressure: past this many outbox rows waiting for validation (one row per accepted
    /// request), ingest answers RESOURCE_EXHAUSTED with a retry hint until the backlog shrinks.
    pub max_backlog_rows: i64,
    /// How often the backlog is measured.
    pub backlog_check_ms: u64,
    /// Longest a single call may take, reading its request included: a client that sends headers
    /// and then stalls is cut off.
    pub request_timeout_ms: u64,
    /// HTTP/JSON ingest port (`POST /v1/events`); 0 picks a free one.
    pub http_port: u16,
    /// Largest HTTP request body, in bytes, both as sent and once inflated (gzip, deflate):
    /// past it, 413.
    pub http_max_body_bytes: usize,
    /// Publishable (browser) keys: events a second each client address may send per key.
    pub publishable_rate: f64,
    /// Publishable keys: events a client address may send at once before the rate applies.
    pub publishable_burst: f64,
    /// Each application's ingest quota, in events a second per ingest instance, for the
    /// applications without one of their own (`eye apps quota`); 0 (the default): none.
    pub quota_rate: f64,
    /// Events an application may send at once before its quota's rate applies; 0: twice the
    /// rate (two seconds' worth).
    pub quota_burst: f64,
    /// Take the client address from the first `X-Forwarded-For` entry (behind a trusted proxy
    /// or load balancer) instead of the connection's peer.
    pub trust_forwarded_for: bool,
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            port: 50051,
            max_batch_events: 1_000,
            max_batch_bytes: 4 * 1024 * 1024,
            max_event_bytes: 64 * 1024,
            max_payload_depth: 64,
            commit_max_events: 5_000,
            commit_concurrency: 3,
            auth_cache_ttl_ms: None,
            max_backlog_rows: 100_000,
            backlog_check_ms: 1_000,
            request_timeout_ms: 30_000,
            http_port: 8080,
            http_max_body_bytes: 8 * 1024 * 1024,
            publishable_rate: 20.0,
            publishable_burst: 200.0,
            quota_rate: 0.0,
            quota_burst: 0.0,
            trust_forwarded_for: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct QuerySettings {
    pub host: String,
    /// gRPC port; 0 picks a free one.
    pub port: u16,
    /// Longest a single call may take (see `ingest.request_timeout_ms`).
    pub request_timeout_ms: u64,
    /// The console's HTTP port (`GET /`); 0 picks a free one.
    pub http_port: u16,
    /// The key that signs console session cookies (at least 32 bytes). Unset: a random one per
    /// process, so sessions end when it restarts and are not shared between replicas; set the
    /// same value on every replica behind one address.
    pub console_secret: Option<SecretString>,
    /// How long a console sign-in lasts.
    pub console_session_minutes: u64,
    /// Where reads go (`EYE__QUERY__DATABASE_URL`): a streaming replica of the primary. Unset:
    /// the primary (`database.url`), which always takes the writes (replays, deletions, keys)
    /// and the key lookups.
    pub database_url: Option<SecretString>,
}

impl Default for QuerySettings {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            port: 50052,
            request_timeout_ms: 30_000,
            http_port: 8081,
            console_secret: None,
            console_session_minutes: 480,
            database_url: None,
        }
    }
}

/// What to do with events whose type has no registered schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum UnknownTypePolicy {
    /// Store them, marked unvalidated (`schema_version` NULL).
    #[default]
    Accept,
    /// Quarantine them in `event_errors` with reason `unknown_event_type`.
    Reject,
}

/// How a stage's consumers claim and retry (see `flush_event::OutboxConfig`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ConsumerSettings {
    /// Concurrent claim loops in this process.
    pub concurrency: usize,
    /// Outbox rows per claim (each row holds one ingest request's events).
    pub batch_size: i64,
    pub lease_ms: u64,
    pub max_attempts: i32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub poll_interval_ms: u64,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        Self {
            concurrency: 2,
            batch_size: 16,
            lease_ms: 30_000,
            max_attempts: 5,
            backoff_base_ms: 1_000,
            backoff_max_ms: 300_000,
            poll_interval_ms: 1_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ValidatorSettings {
    pub consumer: ConsumerSettings,
    /// How far after its receipt an event may claim to have happened (clock skew allowance).
    pub future_tolerance_ms: u64,
    /// Oldest acceptable event, relative to its receipt; `None` (default): no limit besides
    /// 2000-01-01, since historical imports are normal.
    pub max_age_ms: Option<u64>,
    pub unknown_type_policy: UnknownTypePolicy,
}

impl Default for ValidatorSettings {
    fn default() -> Self {
        Self {
            consumer: ConsumerSettings::default(),
            future_tolerance_ms: 60_000,
            max_age_ms: None,
            unknown_type_policy: UnknownTypePolicy::Accept,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct WriterSettings {
    pub consumer: ConsumerSettings,
    /// The GIN pending list of `events.data` in the writer's transactions, kB (Postgres'
    /// `gin_pending_list_limit`; 0, the default, keeps the server's, 4 MB unless configured).
    /// New entries wait in the list until it is full, then the inserting transaction merges them
    /// into the index: a larger list merges less often, which the writer gains from on large
    /// partitions, and every `data_contains` query reads the whole list, which it loses from
    /// under heavy ingest (both measured in docs/benchmarks.md, "A growing store").
    pub gin_pending_list_kb: u32,
}

/// `eye-relay`: ships a producer's outbox (stage `eye` in `schema` of the database at
/// `database.url`) to The Eye's ingest.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RelaySettings {
    /// Claims: `batch_size` rows (one event each) become one `SendEvents` call.
    pub consumer: ConsumerSettings,
    /// The Eye's ingest (gRPC), e.g. `http://eye-ingest:50051`.
    pub endpoint: String,
    /// The application's API key (role `ingest`); set with `EYE_API_KEY` or `--key`.
    pub api_key: Option<SecretString>,
    /// The schema of the producer's outbox tables (`eye outbox migrate --schema`).
    pub schema: String,
    /// How long one batch is retried while ingest is unreachable before its rows are released
    /// (to be claimed again after `consumer.backoff_base_ms`); keep it below `consumer.lease_ms`.
    pub retry_budget_ms: u64,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            consumer: ConsumerSettings { batch_size: 500, max_attempts: 10, ..Default::default() },
            endpoint: "http://127.0.0.1:50051".into(),
            api_key: None,
            schema: "eye".into(),
            retry_budget_ms: 10_000,
        }
    }
}

/// `eye-delivery`: delivers the events that match each subscription (see `eye_admin::subscriptions`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DeliverySettings {
    /// Claims of each subscription's stage: `concurrency` loops per unordered subscription (an
    /// ordered one has one), each claiming one outbox row at a time (a row holds the matching
    /// events of one writer hand-off; `batch_size` is not used). Retries back off from
    /// `backoff_base_ms` to `backoff_max_ms`; a batch still failing after `max_attempts` claims
    /// is dead-lettered.
    pub consumer: ConsumerSettings,
    /// How often subscriptions are reread when no change notification arrives.
    pub refresh_ms: u64,
    /// Most events in one webhook POST.
    pub webhook_max_events: usize,
    /// How long a webhook may take to answer before the attempt counts as failed.
    pub webhook_timeout_ms: u64,
    /// How long JetStream may take to acknowledge a batch of publishes.
    pub nats_timeout_ms: u64,
    /// Most events a backfill enqueues per transaction.
    pub backfill_page: i64,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            consumer: ConsumerSettings {
                concurrency: 4,
                batch_size: 1,
                max_attempts: 20,
                backoff_max_ms: 600_000,
                ..Default::default()
            },
            refresh_ms: 2_000,
            webhook_max_events: 100,
            webhook_timeout_ms: 10_000,
            nats_timeout_ms: 10_000,
            backfill_page: 1_000,
        }
    }
}

/// Where a service serves its Prometheus metrics (`GET /metrics`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct MetricsSettings {
    pub host: String,
    /// HTTP port of `/metrics`; 0 picks a free one (tests, several services on one host).
    pub port: u16,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self { host: "0.0.0.0".into(), port: 9000 }
    }
}

impl Settings {
    /// How long API key lookups are cached: `auth.cache_ttl_ms`, else the deprecated
    /// `ingest.auth_cache_ttl_ms`, else 5 s.
    pub fn auth_cache_ttl(&self) -> std::time::Duration {
        let ms = self
            .auth
            .cache_ttl_ms
            .or(self.ingest.auth_cache_ttl_ms)
            .unwrap_or(DEFAULT_AUTH_CACHE_TTL_MS);
        std::time::Duration::from_millis(ms)
    }

    /// Loads settings from the process environment (and the config file, if any).
    pub fn load() -> Result<Self, SettingsError> {
        let file = std::env::var_os("EYE_CONFIG").map(PathBuf::from);
        let required = file.is_some();
        let file = file.unwrap_or_else(|| PathBuf::from("eye.toml"));
        let config = Config::builder()
            .add_source(File::from(file).required(required))
            .add_source(
                Environment::with_prefix("EYE")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            )
            .set_override_option("database.url", std::env::var("DATABASE_URL").ok())?
            .build()?;
        let settings: Settings = config.try_deserialize()?;
        settings.validate()?;
        if settings.ingest.auth_cache_ttl_ms.is_some() {
            tracing::warn!(
                "ingest.auth_cache_ttl_ms (EYE__INGEST__AUTH_CACHE_TTL_MS) is deprecated; \
                 use auth.cache_ttl_ms (EYE__AUTH__CACHE_TTL_MS)"
            );
        }
        Ok(settings)
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let invalid =
            |field, reason: &str| Err(SettingsError::Invalid { field, reason: reason.into() });
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return invalid("tls", "set both tls.cert_file and tls.key_file, or neither");
        }
        if self.database.max_connections == 0 {
            return invalid("database.max_connections", "must be at least 1");
        }
        if (1..64).contains(&self.writer.gin_pending_list_kb) {
            return invalid(
                "writer.gin_pending_list_kb",
                "must be 0 (the server's) or at least 64",
            );
        }
        let ingest = &self.ingest;
        if ingest.max_batch_events == 0 || ingest.commit_max_events < ingest.max_batch_events {
            return invalid(
                "ingest.commit_max_events",
                "must be at least ingest.max_batch_events, which must be at least 1",
            );
        }
        if ingest.max_event_bytes == 0 || ingest.max_event_bytes > ingest.max_batch_bytes {
            return invalid(
                "ingest.max_event_bytes",
                "must be between 1 and ingest.max_batch_bytes",
            );
        }
        if ingest.max_payload_depth == 0 || ingest.max_payload_depth > 120 {
            return invalid("ingest.max_payload_depth", "must be between 1 and 120");
        }
        if ingest.commit_concurrency == 0 {
            return invalid("ingest.commit_concurrency", "must be at least 1");
        }
        if ingest.http_max_body_bytes == 0 {
            return invalid("ingest.http_max_body_bytes", "must be at least 1");
        }
        if !(ingest.publishable_rate > 0.0 && ingest.publishable_burst >= 1.0) {
            return invalid(
                "ingest.publishable_rate",
                "must be above 0, and ingest.publishable_burst at least 1",
            );
        }
        if self.store.retention.as_deref().is_some_and(|text| Retention::parse(text).is_none()) {
            return invalid("store.retention", "must look like \"90 days\" or \"6 months\"");
        }
        if self.store.dedup_window_days == 0 || self.store.maintenance_interval_ms == 0 {
            return invalid(
                "store.dedup_window_days",
                "must be at least 1, and store.maintenance_interval_ms above 0",
            );
        }
        if self.privacy.pii_key.as_ref().is_some_and(|key| key.expose_secret().len() < 32) {
            return invalid("privacy.pii_key", "must be at least 32 bytes");
        }
        if !(ingest.quota_rate >= 0.0 && ingest.quota_burst >= 0.0) {
            return invalid("ingest.quota_rate", "must be 0 (no quota) or above, as quota_burst");
        }
        for (field, consumer) in [
            ("validator.consumer", &self.validator.consumer),
            ("writer.consumer", &self.writer.consumer),
            ("relay.consumer", &self.relay.consumer),
        ] {
            if consumer.concurrency == 0 || consumer.batch_size < 1 || consumer.max_attempts < 1 {
                return invalid(
                    field,
                    "concurrency, batch_size and max_attempts must be at least 1",
                );
            }
            if consumer.lease_ms < 1_000 {
                return invalid(field, "lease_ms must be at least 1000");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_contract() {
        let settings = Settings::default();
        settings.validate().unwrap();
        assert_eq!(settings.ingest.port, 50051);
        assert_eq!(settings.query.port, 50052);
        assert_eq!(settings.metrics.port, 9000);
        assert_eq!(settings.ingest.max_batch_events, 1_000);
        assert_eq!(settings.ingest.max_batch_bytes, 4 * 1024 * 1024);
        assert_eq!(settings.ingest.max_event_bytes, 64 * 1024);
        assert_eq!(settings.validator.consumer.max_attempts, 5);
        assert_eq!(settings.validator.future_tolerance_ms, 60_000);
        assert_eq!(settings.auth_cache_ttl(), std::time::Duration::from_secs(5));
    }

    #[test]
    fn the_deprecated_auth_setting_still_works_and_the_new_one_wins() {
        let mut settings = Settings::default();
        settings.ingest.auth_cache_ttl_ms = Some(250);
        assert_eq!(settings.auth_cache_ttl(), std::time::Duration::from_millis(250));
        settings.auth.cache_ttl_ms = Some(100);
        assert_eq!(settings.auth_cache_ttl(), std::time::Duration::from_millis(100));
    }

    #[test]
    fn environment_overrides_nested_keys() {
        let config = Config::builder()
            .add_source(
                Environment::with_prefix("EYE")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true)
                    .source(Some(
                        [
                            ("EYE__INGEST__PORT".to_string(), "0".to_string()),
                            ("EYE__VALIDATOR__UNKNOWN_TYPE_POLICY".into(), "reject".into()),
                            ("EYE__WRITER__CONSUMER__BATCH_SIZE".into(), "7".into()),
                            ("EYE__METRICS__PORT".into(), "0".into()),
                        ]
                        .into_iter()
                        .collect(),
                    )),
            )
            .build()
            .unwrap();
        let settings: Settings = config.try_deserialize().unwrap();
        assert_eq!(settings.ingest.port, 0);
        assert_eq!(settings.validator.unknown_type_policy, UnknownTypePolicy::Reject);
        assert_eq!(settings.writer.consumer.batch_size, 7);
        assert_eq!(settings.metrics.port, 0);
        assert_eq!(settings.ingest.max_batch_events, 1_000);
    }

    #[test]
    fn partitions_start_at_midnight_or_the_first_and_step_by_their_span() {
        let at = |text: &str| chrono::DateTime::parse_from_rfc3339(text).unwrap().to_utc();
        let now = at("2026-03-31T12:34:56Z");
        assert_eq!(Granularity::Day.start_of(now), at("2026-03-31T00:00:00Z"));
        assert_eq!(Granularity::Month.start_of(now), at("2026-03-01T00:00:00Z"));
        let month = Granularity::Month.start_of(now);
        assert_eq!(Granularity::Month.add(month, 1), Some(at("2026-04-01T00:00:00Z")));
        assert_eq!(Granularity::Day.add(month, 31), Some(at("2026-04-01T00:00:00Z")));
    }

    #[test]
    fn validation_names_the_field() {
        let mut settings = Settings::default();
        settings.ingest.max_payload_depth = 500;
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains("ingest.max_payload_depth"), "{error}");

        // Postgres' floor for gin_pending_list_limit is 64 kB; 0 means "the server's".
        let mut settings = Settings::default();
        settings.writer.gin_pending_list_kb = 63;
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains("writer.gin_pending_list_kb"), "{error}");
        for fine in [0, 64, 65_536] {
            settings.writer.gin_pending_list_kb = fine;
            settings.validate().unwrap();
        }
    }

    #[test]
    fn retention_reads_days_and_months_and_refuses_the_rest() {
        assert_eq!(Retention::parse("90 days"), Some(Retention::Days(90)));
        assert_eq!(Retention::parse("1 day"), Some(Retention::Days(1)));
        assert_eq!(Retention::parse("30d"), Some(Retention::Days(30)));
        assert_eq!(Retention::parse("6 months"), Some(Retention::Months(6)));
        assert_eq!(Retention::parse("6mo"), Some(Retention::Months(6)));
        for bad in ["", "0 days", "days", "6 weeks", "-1 days", "1.5 months"] {
            assert_eq!(Retention::parse(bad), None, "{bad}");
        }
        let now = chrono::DateTime::parse_from_rfc3339("2026-03-31T12:00:00Z").unwrap().to_utc();
        let cutoff = Retention::Months(1).cutoff(now);
        assert_eq!(cutoff.to_rfc3339(), "2026-02-28T12:00:00+00:00");
        let mut settings = Settings::default();
        settings.store.retention = Some("forever".into());
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains("store.retention"), "{error}");
    }
}
