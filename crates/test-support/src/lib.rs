//! Test support: every test gets a real Postgres database of its own, with the migrations applied.
//!
//! The server is `DATABASE_URL` when set; otherwise a private server started (or reused) by
//! `local-postgres` under `target/eye-test-pg`, shared by all test binaries of the checkout. Each
//! [`TestDb`] is a new database cloned from a template that was migrated once (`CREATE DATABASE
//! ... TEMPLATE` copies files, so a fresh database costs milliseconds, not a migration run). The
//! template's name carries a hash of the migrations, so changing a migration builds a new one.
//!
//! [`wait_for`] waits on a condition without sleeping: it re-checks whenever the pipeline
//! announces progress with NOTIFY.
//!
//! [`harness`] serves the benchmark and crash-suite binaries: durable servers, whole databases.

use std::{
    path::PathBuf,
    sync::OnceLock,
    time::{Duration, Instant},
};

use sqlx::{
    Connection, PgConnection, PgPool,
    postgres::{PgListener, PgPoolOptions},
};

pub mod harness;

/// NOTIFY channels on which the pipeline announces progress: the outbox's wake-ups and the
/// store's (`eye_stored`, sent by the writer and by the validator when it quarantines).
pub const PROGRESS_CHANNELS: [&str; 2] =
    [eye_service::pipeline::channel::OUTBOX, eye_service::pipeline::channel::STORED];

/// The URL of the server tests run against, started on first use.
pub fn server_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            return url;
        }
        let options = local_postgres::Options::for_tests(&workspace_root());
        match local_postgres::LocalPostgres::ensure(&options) {
            Ok(server) => server.url().to_owned(),
            Err(error) => panic!("cannot start a test PostgreSQL: {error}"),
        }
    })
}

/// A TCP port on 127.0.0.1 that nothing listens on right now (bound, then released): for a
/// server started later, or as an endpoint that refuses connections.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("bound").port()
}

/// Sends `signal` (`-TERM`, `-KILL`, ...) to process `pid` with kill(1), as an operator would;
/// panics if it cannot be sent.
pub fn signal(pid: Option<u32>, signal: &str) {
    let pid = pid.expect("the process is running").to_string();
    let sent = std::process::Command::new("kill").args([signal, &pid]).status();
    assert!(sent.expect("run kill").success(), "kill {signal} {pid}");
}

/// The checkout's root directory.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

/// A database of its own for one test, dropped when the value is.
#[derive(Debug)]
pub struct TestDb {
    pub pool: PgPool,
    pub url: String,
    name: String,
}

impl TestDb {
    /// Creates a fresh, migrated database.
    pub async fn new() -> Self {
        let server = server_url();
        let template = ensure_template(server).await;
        let name = format!("eye_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(server).await.expect("connect to test server");
        sqlx::query(&format!(r#"CREATE DATABASE "{name}" TEMPLATE "{template}""#))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let url = database_url(server, &name);
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .connect(&url)
            .await
            .expect("connect to test database");
        Self { pool, url, name }
    }

    /// Settings for services under test: this database, free ports, fast polling.
    pub fn settings(&self) -> eye_service::Settings {
        let mut settings = eye_service::Settings::default();
        settings.database.url = Some(self.url.clone().into());
        settings.ingest.host = "127.0.0.1".into();
        settings.ingest.port = 0;
        settings.ingest.http_port = 0;
        settings.query.host = "127.0.0.1".into();
        settings.query.port = 0;
        settings.query.http_port = 0;
        settings.metrics.host = "127.0.0.1".into();
        settings.metrics.port = 0;
        settings
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = std::mem::take(&mut self.name);
        let server = server_url().to_owned();
        // Drop runs inside the test's runtime: use a thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                if let Ok(mut admin) = PgConnection::connect(&server).await {
                    let _ =
                        sqlx::query(&format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#))
                            .execute(&mut admin)
                            .await;
                }
            });
        })
        .join();
    }
}

/// Waits until `check` returns `Some`, re-checking whenever the pipeline sends a progress
/// notification (and at least every 500 ms, in case the condition changed silently). Panics with
/// `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(pool: &PgPool, timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let mut listener = PgListener::connect_with(pool).await.expect("listen");
    listener.listen_all(PROGRESS_CHANNELS).await.expect("listen");
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        assert!(!remaining.is_zero(), "timed out after {timeout:?} waiting for {what}");
        let _ =
            tokio::time::timeout(remaining.min(Duration::from_millis(500)), listener.recv()).await;
    }
}

/// `server` with its database replaced by `database` (query parameters kept; a server URL without
/// a database path gets one).
pub fn database_url(server: &str, database: &str) -> String {
    let (base, query) = match server.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (server, String::new()),
    };
    let authority_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[authority_end..].find('/') {
        Some(slash) => &base[..authority_end + slash],
        None => base,
    };
    format!("{base}/{database}{query}")
}

/// `url` with `application_name` set to `name`, which tells a process's backends apart in
/// `pg_stat_activity`.
pub fn with_application_name(url: &str, name: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}application_name={name}")
}

/// Creates the migrated template database once per migration set; returns its name.
async fn ensure_template(server: &str) -> String {
    static TEMPLATE: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    TEMPLATE
        .get_or_init(|| async {
            let name = format!("eye_template_{:016x}", migrations_hash());
            let mut admin = PgConnection::connect(server).await.expect("connect to test server");
            // Serialise template builders across test binaries.
            sqlx::query("SELECT pg_advisory_lock(2026112101)").execute(&mut admin).await.unwrap();
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                    .bind(&name)
                    .fetch_one(&mut admin)
                    .await
                    .unwrap();
            if !exists {
                let building = format!("{name}_build");
                for sql in [
                    format!(r#"DROP DATABASE IF EXISTS "{building}" WITH (FORCE)"#),
                    format!(r#"CREATE DATABASE "{building}""#),
                ] {
                    sqlx::query(&sql).execute(&mut admin).await.unwrap();
                }
                let mut conn =
                    PgConnection::connect(&database_url(server, &building)).await.unwrap();
                eye_service::database::MIGRATOR.run(&mut conn).await.expect("migrate template");
                conn.close().await.unwrap();
                // Renamed only once complete, so a half-built template is never used.
                sqlx::query(&format!(r#"ALTER DATABASE "{building}" RENAME TO "{name}""#))
                    .execute(&mut admin)
                    .await
                    .unwrap();
            }
            sqlx::query("SELECT pg_advisory_unlock(2026112101)").execute(&mut admin).await.unwrap();
            name
        })
        .await
        .clone()
}

/// FNV-1a over the migrations' versions and checksums: stable across runs and Rust versions.
fn migrations_hash() -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for migration in eye_service::database::MIGRATOR.iter() {
        let bytes = migration.version.to_le_bytes();
        for byte in bytes.iter().chain(migration.checksum.iter()) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::database_url;

    #[test]
    fn database_url_replaces_the_database() {
        assert_eq!(
            database_url("postgres://u@127.0.0.1:5/postgres", "x"),
            "postgres://u@127.0.0.1:5/x"
        );
        assert_eq!(database_url("postgres://u@h:5", "x"), "postgres://u@h:5/x");
        assert_eq!(
            database_url("postgres://u:p@h:5/db?sslmode=disable", "x"),
            "postgres://u:p@h:5/x?sslmode=disable"
        );
    }
}
