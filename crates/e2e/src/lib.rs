//! Harness for end-to-end tests: starts ingest, validators, writers and (optionally) the query
//! server in-process on free ports against a fresh database, and talks to them over real gRPC.
//!
//! # Layout
//! - [`Pipeline`]: the running services and a client factory.
//! - [`create_key`], [`register_example_schemas`]: fixtures made through `eye_admin`, as the CLI
//!   makes them.
//! - [`scrape_metrics`], [`metric_value`]: read a service's `/metrics` like Prometheus does.
//! - [`transport`]: one request over gRPC or HTTP/JSON, for tests that run over both.
//! - The tests themselves live in `tests/pipeline/`.

pub mod transport;

use std::time::Duration;

use eye_proto::v1::{
    Event, ingest_service_client::IngestServiceClient, query_service_client::QueryServiceClient,
};
use eye_service::auth::Role;
use eye_test_support::TestDb;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::{Request, metadata::MetadataValue, transport::Channel};
use uuid::Uuid;

/// Services running against one test database.
#[derive(Debug)]
pub struct Pipeline {
    pub ingest_port: u16,
    /// HTTP ingest's port (`POST /v1/events`).
    pub http_port: u16,
    /// The query server's port, when started ([`Pipeline::start_with_query`]).
    pub query_port: Option<u16>,
    /// Each service's `/metrics` port, by service (`ingest`, `validator`, `writer`, `query`),
    /// in start order.
    pub metrics_ports: Vec<(&'static str, u16)>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Pipeline {
    /// Ingest plus `validators` validators and `writers` writers (each a separate service
    /// instance with its own pool and claim loops, as separate processes would be).
    pub async fn start(db: &TestDb, validators: usize, writers: usize) -> Self {
        Self::start_services(db, validators, writers, false).await
    }

    /// [`start`](Self::start) plus the query server.
    pub async fn start_with_query(db: &TestDb, validators: usize, writers: usize) -> Self {
        Self::start_services(db, validators, writers, true).await
    }

    async fn start_services(db: &TestDb, validators: usize, writers: usize, query: bool) -> Self {
        Self::start_with(Self::settings(db), validators, writers, query).await
    }

    /// The settings the pipeline runs with in tests: `db`, free ports, fast polling and retries.
    pub fn settings(db: &TestDb) -> eye_service::Settings {
        let mut settings = db.settings();
        for consumer in [&mut settings.validator.consumer, &mut settings.writer.consumer] {
            consumer.poll_interval_ms = 200;
            consumer.backoff_base_ms = 50;
        }
        settings.database.max_connections = 6;
        settings
    }

    /// Starts the services with `settings` (see [`settings`](Self::settings)).
    pub async fn start_with(
        settings: eye_service::Settings,
        validators: usize,
        writers: usize,
        query: bool,
    ) -> Self {
        Self::start_each(|_| settings.clone(), validators, writers, query).await
    }

    /// [`start_with`](Self::start_with), each service with the settings `settings_of` gives for
    /// its name (`ingest`, `validator`, `writer`, `query`): a database role of its own, say.
    pub async fn start_each(
        settings_of: impl Fn(&str) -> eye_service::Settings,
        validators: usize,
        writers: usize,
        query: bool,
    ) -> Self {
        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();
        let ingest =
            eye_ingest::Application::build(settings_of("ingest")).await.expect("build ingest");
        let ingest_port = ingest.port();
        let http_port = ingest.http_port();
        let mut metrics_ports = vec![("ingest", ingest.metrics_port().expect("own metrics"))];
        let token = shutdown.clone();
        tasks.push(tokio::spawn(
            async move { ingest.run_until_stopped(token).await.expect("ingest") },
        ));
        for _ in 0..validators {
            let app = eye_validator::Application::build(settings_of("validator"))
                .await
                .expect("validator");
            metrics_ports.push(("validator", app.metrics_port().expect("own metrics")));
            let token = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                app.run_until_stopped(token).await.expect("validator")
            }));
        }
        for _ in 0..writers {
            let app = eye_writer::Application::build(settings_of("writer")).await.expect("writer");
            metrics_ports.push(("writer", app.metrics_port().expect("own metrics")));
            let token = shutdown.clone();
            tasks.push(tokio::spawn(
                async move { app.run_until_stopped(token).await.expect("writer") },
            ));
        }
        let mut query_port = None;
        if query {
            let app =
                eye_query::Application::build(settings_of("query")).await.expect("build query");
            query_port = Some(app.port());
            metrics_ports.push(("query", app.metrics_port().expect("own metrics")));
            let token = shutdown.clone();
            tasks.push(tokio::spawn(
                async move { app.run_until_stopped(token).await.expect("query") },
            ));
        }
        Self { ingest_port, http_port, query_port, metrics_ports, shutdown, tasks }
    }

    /// The `/metrics` port of the first instance of `service`.
    pub fn metrics_port(&self, service: &str) -> u16 {
        self.metrics_ports
            .iter()
            .find(|(name, _)| *name == service)
            .map(|(_, port)| *port)
            .unwrap_or_else(|| panic!("no {service} in this pipeline"))
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ingest_port)
    }

    /// A channel to the ingest server (for health, reflection, raw calls).
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.endpoint())
            .expect("an endpoint")
            .connect()
            .await
            .expect("connect")
    }

    /// A channel to the query server.
    pub async fn query_channel(&self) -> Channel {
        Channel::from_shared(self.query_endpoint())
            .expect("an endpoint")
            .connect()
            .await
            .expect("connect")
    }

    /// A gRPC client of the ingest service.
    pub async fn client(&self) -> IngestServiceClient<Channel> {
        IngestServiceClient::connect(self.endpoint()).await.expect("connect to ingest")
    }

    pub fn query_endpoint(&self) -> String {
        let port = self.query_port.expect("the pipeline was started with the query server");
        format!("http://127.0.0.1:{port}")
    }

    /// A gRPC client of the query service (started with [`start_with_query`](Self::start_with_query)).
    pub async fn query_client(&self) -> QueryServiceClient<Channel> {
        QueryServiceClient::connect(self.query_endpoint()).await.expect("connect to query")
    }

    /// Stops every service and waits for them to drain.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("service drains in time")
                .expect("service task");
        }
    }
}

/// `GET /metrics` on `127.0.0.1:port`, as a scraper does (HTTP/1.1, one request per
/// connection): the response's `Content-Type` and body. Panics unless the answer is 200.
pub async fn scrape_metrics(port: u16) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read response");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let content_type = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-type").then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    (content_type, body.to_owned())
}

/// The value of the sample `series` (`name` or `name{labels}`, exactly as exposed) in an
/// exposition, if present.
pub fn metric_value(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A request carrying `key` as its bearer token.
pub fn authorized<T>(message: T, key: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value: MetadataValue<_> = format!("Bearer {key}").parse().expect("ascii key");
    request.metadata_mut().insert("authorization", value);
    request
}

/// Creates an application with one key holding `roles` (role names), through `eye_admin` as the
/// CLI does; returns (application id, key).
pub async fn create_key(pool: &PgPool, name: &str, roles: &[&str]) -> (Uuid, String) {
    let roles: Vec<Role> =
        roles.iter().map(|role| Role::from_name(role).expect("a known role")).collect();
    let issued = eye_admin::apps::create(pool, name, &roles).await.expect("create application");
    (issued.application_id, issued.key)
}

/// A fresh database with an application `name` holding one key with `roles`: (the database,
/// the application's id, the key). The opening of most pipeline tests.
pub async fn db_with_key(name: &str, roles: &[&str]) -> (TestDb, Uuid, String) {
    let db = TestDb::new().await;
    let (application_id, key) = create_key(&db.pool, name, roles).await;
    (db, application_id, key)
}

/// [`db_with_key`] for the application `shop` (role `ingest`), with the example schemas
/// registered: where the pipeline tests that send events start.
pub async fn shop_db() -> (TestDb, Uuid, String) {
    let found = db_with_key("shop", &["ingest"]).await;
    register_example_schemas(&found.0.pool).await;
    found
}

/// Registers the JSON Schemas shipped in `schemas/` (version 1 of their types in a fresh
/// database), as `eye dev` does.
pub async fn register_example_schemas(pool: &PgPool) {
    eye_admin::schemas::register_examples(pool).await.expect("register the example schemas");
}

/// Registers `schema` for `category`/`name` through the registry and checks that it became
/// `version`.
pub async fn register_schema(
    pool: &PgPool,
    category: &str,
    name: &str,
    version: i32,
    schema: &serde_json::Value,
) {
    let registration =
        eye_admin::schemas::put(pool, category, name, schema).await.expect("register a schema");
    assert_eq!(
        registration,
        eye_admin::schemas::Registration::Registered { version },
        "{category}/{name}"
    );
}

/// An event of `category`/`name` in `session`, happening `offset` after `base`.
pub fn event(
    session: Uuid,
    category: &str,
    name: &str,
    data: serde_json::Value,
    at: chrono::DateTime<chrono::Utc>,
) -> Event {
    Event {
        event_id: Uuid::now_v7().to_string(),
        session_id: session.to_string(),
        category: category.into(),
        name: name.into(),
        data_json: data.to_string(),
        timestamp: Some(prost_types::Timestamp {
            seconds: at.timestamp(),
            nanos: at.timestamp_subsec_nanos() as i32,
        }),
    }
}

/// Creates a login role in the group role `group` (`eye_ingest`, ...) and returns `db`'s URL
/// connecting as it: a service run with least privilege.
pub async fn login_as(db: &TestDb, group: &str) -> String {
    let user = format!("{group}_{}", &Uuid::new_v4().simple().to_string()[..8]);
    sqlx::query(&format!("CREATE ROLE {user} LOGIN IN ROLE {group}"))
        .execute(&db.pool)
        .await
        .expect("create a login role");
    let (scheme, rest) = db.url.split_once("://").expect("a URL");
    let host = rest.split_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{user}@{host}")
}

/// The tables (`schema.table`, every ordinary table and partition outside the catalogs) with a
/// row whose text holds `needle`, or whose `bytea` columns hold its UTF-8 bytes (outbox bodies):
/// how tests check that something left no trace.
pub async fn tables_containing(pool: &PgPool, needle: &str) -> Vec<String> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
           AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .expect("list tables");
    let mut holding = Vec::new();
    for table in tables {
        let found: bool = sqlx::query_scalar(&format!(
            "SELECT EXISTS (SELECT FROM {table} t WHERE strpos(t::text, $1) > 0 \
                 OR strpos(t::text, encode(convert_to($1, 'UTF8'), 'hex')) > 0)"
        ))
        .bind(needle)
        .fetch_one(pool)
        .await
        .expect("scan a table");
        if found {
            holding.push(table);
        }
    }
    holding
}

/// Counts rows with a scalar query.
pub async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.expect("count query")
}

/// Waits (at most 60 s) until the server behind `channel` reports `service` SERVING through a
/// health `Watch`, which is closed again before returning (an open Watch would hold up a draining
/// server).
pub async fn wait_until_serving(channel: Channel, service: &str) {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let request = HealthCheckRequest { service: service.into() };
    let mut watch = HealthClient::new(channel).watch(request).await.unwrap().into_inner();
    loop {
        let status = tokio::time::timeout(Duration::from_secs(60), watch.message())
            .await
            .expect("SERVING within 60 s")
            .unwrap()
            .expect("the health stream stays open");
        if status.status() == ServingStatus::Serving {
            return;
        }
    }
}

/// `ListServices` over one version of the reflection protocol (`v1` and `v1alpha` have the same
/// messages in two packages).
macro_rules! list_services {
    ($version:ident, $channel:expr) => {{
        use tonic_reflection::pb::$version::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut client = ServerReflectionClient::new($channel);
        let mut answers =
            client.server_reflection_info(tokio_stream::once(request)).await.unwrap().into_inner();
        match answers.message().await.unwrap().unwrap().message_response {
            Some(MessageResponse::ListServicesResponse(list)) => {
                list.service.into_iter().map(|s| s.name).collect::<Vec<String>>()
            }
            other => panic!("unexpected reflection answer: {other:?}"),
        }
    }};
}

/// The services a server lists through gRPC reflection, sorted: over `grpc.reflection.v1`, or
/// over the older `v1alpha` that many tools (grpcurl's older builds, Python's
/// `grpcio-reflection`) still speak.
pub async fn reflected_services(channel: Channel, v1alpha: bool) -> Vec<String> {
    let mut names =
        if v1alpha { list_services!(v1alpha, channel) } else { list_services!(v1, channel) };
    names.sort();
    names
}

/// What reflection must list on the port of `service`: it, health, and reflection (both
/// versions), and nothing the port does not serve.
pub fn expected_services(service: &str) -> Vec<String> {
    let mut names: Vec<String> = [
        service,
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ]
    .map(str::to_owned)
    .into();
    names.sort();
    names
}
