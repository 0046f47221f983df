//! The real `eye` binary, run as a process against a fresh database per test.

use eye_service::pipeline::stage;
use std::{
    path::{Path, PathBuf},
    process::ExitStatus,
};

use eye_test_support::TestDb;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

mod delete;
mod dev;
mod export;
mod import;
mod load;
mod query;
mod readme;

/// What one run of `eye` did.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    fn success(self) -> Self {
        assert!(self.status.success(), "eye failed: {}\nstdout:\n{}", self.stderr, self.stdout);
        self
    }

    fn failure(self) -> Self {
        assert!(!self.status.success(), "eye succeeded unexpectedly:\n{}", self.stdout);
        assert_eq!(self.status.code(), Some(1));
        self
    }

    fn last_line(&self) -> &str {
        self.stdout.lines().last().expect("some output")
    }
}

/// Runs `eye ARGS` against `database_url` with an environment cleared of Eye settings.
async fn eye(database_url: &str, args: &[&str]) -> Run {
    eye_with_env(database_url, args, &[]).await
}

pub(crate) async fn eye_with_env(database_url: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_eye"));
    command.args(args).env("DATABASE_URL", database_url);
    for name in ["EYE_CONFIG", "EYE_API_KEY", "EYE_ENDPOINT", "EYE_QUERY_ENDPOINT", "RUST_LOG"] {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    let output = command.output().await.expect("run eye");
    Run {
        status: output.status,
        stdout: String::from_utf8(output.stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(output.stderr).expect("utf-8 stderr"),
    }
}

fn is_key(line: &str) -> bool {
    line.len() == 68 && line.starts_with("eye_") && line[4..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// `eye dev` in `home` (without a configured database, on free ports, unless `env` says
/// otherwise), once its banner is out; the banner's lines, the key last. Its stdout keeps being
/// drained so that it never blocks on a full pipe.
async fn start_dev(home: &Path, env: &[(&str, &str)]) -> (tokio::process::Child, Vec<String>) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_eye"))
        .arg("dev")
        // `eye dev` keeps its lock and state in ./.eye: one directory per instance.
        .current_dir(home)
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .env("EYE__INGEST__PORT", "0")
        .env("EYE__INGEST__HTTP_PORT", "0")
        .env("EYE__QUERY__PORT", "0")
        .env("EYE__QUERY__HTTP_PORT", "0")
        .env("EYE__METRICS__PORT", "0")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start eye dev");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let banner = tokio::time::timeout(std::time::Duration::from_secs(180), async {
        let mut banner = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            let done = is_key(&line);
            banner.push(line);
            if done {
                return banner;
            }
        }
        panic!("eye dev ended before printing its key:\n{}", banner.join("\n"));
    })
    .await
    .expect("eye dev starts");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, banner)
}

/// A directory of its own for a test's files, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("eye-cli-test-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn file(&self, name: &str, contents: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path.display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn apps_create_prints_the_key_last_and_stores_only_its_hash() {
    let db = TestDb::new().await;
    let run = eye(&db.url, &["apps", "create", "shop"]).await.success();
    let key = run.last_line().to_owned();
    assert!(is_key(&key), "last line is not a key: {:?}", run.stdout);
    let before_key = &run.stdout[..run.stdout.len() - key.len() - 1];
    assert!(!before_key.contains(&key) && !run.stderr.contains(&key));
    assert!(before_key.contains("shop"), "{}", run.stdout);

    let (hash, roles): (Vec<u8>, Vec<String>) = sqlx::query_as(
        "SELECT k.key_hash, k.roles FROM api_keys k JOIN applications a ON a.id = k.application_id \
         WHERE a.name = 'shop'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(hash, eye_service::auth::hash_key(&key));
    assert_eq!(roles, ["ingest"]);
    // Neither the key nor its bytes are stored anywhere in either table.
    let raw_hex = format!("\\\\x{}", hex_of(key.as_bytes()));
    let leaks: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM api_keys k \
                 WHERE strpos(row_to_json(k)::text, $1) > 0 OR strpos(row_to_json(k)::text, $2) > 0) \
              + (SELECT count(*) FROM applications a WHERE strpos(row_to_json(a)::text, $1) > 0)",
    )
    .bind(&key)
    .bind(&raw_hex)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(leaks, 0);

    let run = eye(&db.url, &["apps", "create", "shop"]).await.failure();
    assert!(run.stderr.contains("already exists"), "{}", run.stderr);
    assert!(run.stderr.contains("eye apps key shop"), "{}", run.stderr);
    assert!(!run.stderr.contains("INSERT"), "{}", run.stderr);
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM api_keys").fetch_one(&db.pool).await.unwrap();
    assert_eq!(count, 1, "a failed create issued no key");
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn apps_key_list_and_revoke() {
    let db = TestDb::new().await;
    let first = eye(&db.url, &["apps", "create", "web shop"]).await.success();
    let second = eye(&db.url, &["apps", "key", "web shop", "--role", "read", "--role", "ingest"])
        .await
        .success();
    let (first, second) = (first.last_line().to_owned(), second.last_line().to_owned());
    assert!(is_key(&second) && second != first);
    let roles: Vec<String> = sqlx::query_scalar("SELECT roles FROM api_keys WHERE key_hash = $1")
        .bind(&eye_service::auth::hash_key(&second)[..])
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(roles, ["ingest", "read"]);

    let list = eye(&db.url, &["apps", "list"]).await.success();
    let line = list.stdout.lines().find(|line| line.starts_with("web shop")).expect("listed");
    let columns: Vec<&str> = line.split("  ").filter(|c| !c.is_empty()).map(str::trim).collect();
    assert_eq!(columns[3..], ["-", "2", "ingest,read", "default"], "{}", list.stdout);
    for (args, shown) in [
        (&["--rate", "50", "--burst", "100"][..], "50/s burst 100"),
        (&["--rate", "20"][..], "20/s burst 40"),
        (&["--rate", "0"][..], "none"),
        (&["--clear"][..], "default"),
    ] {
        let mut command = vec!["apps", "quota", "web shop"];
        command.extend(args);
        let run = eye(&db.url, &command).await.success();
        assert!(run.stdout.contains("cache_ttl_ms"), "{}", run.stdout);
        let list = eye(&db.url, &["apps", "list"]).await.success();
        let line = list.stdout.lines().find(|line| line.starts_with("web shop")).unwrap();
        assert!(line.trim_end().ends_with(shown), "{args:?}: {line}");
    }
    let run = eye(&db.url, &["apps", "quota", "web shop", "--rate=-3"]).await.failure();
    assert!(run.stderr.contains("0 or more"), "{}", run.stderr);

    let run = eye(&db.url, &["apps", "revoke", "web shop"]).await.success();
    assert!(run.stdout.contains("2 active key(s)"), "{}", run.stdout);
    let (app_revoked, keys_active): (bool, i64) = sqlx::query_as(
        "SELECT a.revoked_at IS NOT NULL, \
                (SELECT count(*) FROM api_keys k WHERE k.application_id = a.id AND k.revoked_at IS NULL) \
         FROM applications a WHERE a.name = 'web shop'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(app_revoked);
    assert_eq!(keys_active, 0);

    let run = eye(&db.url, &["apps", "key", "web shop"]).await.failure();
    assert!(run.stderr.contains("revoked"), "{}", run.stderr);
    let run = eye(&db.url, &["apps", "create", "web shop"]).await.failure();
    assert!(run.stderr.contains("revoked"), "{}", run.stderr);
    let run = eye(&db.url, &["apps", "revoke", "nobody"]).await.failure();
    assert!(run.stderr.contains("no application named `nobody`"), "{}", run.stderr);
    let run = eye(&db.url, &["apps", "key", "nobody"]).await.failure();
    assert!(run.stderr.contains("eye apps create nobody"), "{}", run.stderr);
}

#[tokio::test]
async fn apps_key_publishable_issues_a_browser_key_for_its_origins() {
    let db = TestDb::new().await;
    eye(&db.url, &["apps", "create", "web shop"]).await.success();
    let run = eye(
        &db.url,
        &[
            "apps",
            "key",
            "web shop",
            "--publishable",
            "--origin",
            "https://Shop.example/",
            "--origin",
            "http://localhost:3000",
        ],
    )
    .await
    .success();
    let key = run.last_line();
    assert!(key.starts_with("eye_pk_") && key.len() == 71, "{key}");
    assert!(run.stdout.contains("ingest only"), "{}", run.stdout);
    let (roles, publishable, origins): (Vec<String>, bool, Vec<String>) =
        sqlx::query_as("SELECT roles, publishable, origins FROM api_keys WHERE key_hash = $1")
            .bind(&eye_service::auth::hash_key(key)[..])
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!((roles, publishable), (vec!["ingest".to_owned()], true));
    assert_eq!(origins, ["http://localhost:3000", "https://shop.example"], "normalised, sorted");

    let run =
        eye(&db.url, &["apps", "key", "web shop", "--publishable", "--origin", "shop.example"])
            .await
            .failure();
    assert!(run.stderr.contains("scheme://host[:port]"), "{}", run.stderr);
    // Without an origin, or with a role, clap refuses before anything runs.
    for args in [
        &["apps", "key", "web shop", "--publishable"][..],
        &[
            "apps",
            "key",
            "web shop",
            "--publishable",
            "--origin",
            "https://a.example",
            "--role",
            "read",
        ],
    ] {
        let run = eye(&db.url, args).await;
        assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    }
}

#[tokio::test]
async fn outbox_migrate_installs_a_producers_outbox_whose_dead_letters_dlq_lists() {
    let eye_db = TestDb::new().await;
    let producer = TestDb::new().await;
    let migrate = ["outbox", "migrate", "--database-url", producer.url.as_str()];
    let run = eye(&eye_db.url, &migrate).await.success();
    // The outbox table, then its lz4 bodies (migrations shared with The Eye's own outbox).
    assert!(run.stdout.contains("schema `eye` (2 migration(s) applied now)"), "{}", run.stdout);
    let run = eye(&eye_db.url, &migrate).await.success();
    assert!(run.stdout.contains("(0 migration(s) applied now)"), "{}", run.stdout);
    let run = eye(
        &eye_db.url,
        &["outbox", "migrate", "--database-url", &producer.url, "--schema", "Eye;"],
    )
    .await
    .failure();
    assert!(run.stderr.contains("plain identifier"), "{}", run.stderr);
    sqlx::query(
        "INSERT INTO eye.outbox_dead_letters (id, stage, body, headers, attempts, created_at, last_error) \
         VALUES (7, 'eye', '\\x00', '{}', 1, now(), 'rejected by ingest: invalid_session_id: x')",
    )
    .execute(&producer.pool)
    .await
    .unwrap();
    let run =
        eye(&eye_db.url, &["dlq", "list", "--database-url", &producer.url, "--schema", "eye"])
            .await
            .success();
    assert!(run.stdout.contains("rejected by ingest: invalid_session_id"), "{}", run.stdout);
    // The Eye's own outbox has none.
    let run = eye(&eye_db.url, &["dlq", "list"]).await.success();
    assert!(run.stdout.contains("no dead letters"), "{}", run.stdout);
}

#[tokio::test]
async fn schemas_put_adds_versions_only_for_changes() {
    let db = TestDb::new().await;
    let dir = TempDir::new();
    let v1 = dir.file("v1.json", r#"{"type": "object", "required": ["path"]}"#);
    // Same schema, other formatting: jsonb equality says unchanged.
    let v1_again =
        dir.file("v1-again.json", "{\n  \"required\": [\"path\"],\n  \"type\": \"object\"\n}");
    let v2 = dir.file("v2.json", r#"{"type": "object", "required": ["path", "host"]}"#);
    let put = |file: String| {
        let url = db.url.clone();
        async move {
            eye(
                &url,
                &["schemas", "put", "--category", "page interaction", "--name", "pageview", &file],
            )
            .await
        }
    };

    let run = put(v1.clone()).await.success();
    assert!(run.stdout.contains("version 1"), "{}", run.stdout);
    let run = put(v1_again).await.success();
    assert!(run.stdout.contains("unchanged (version 1)"), "{}", run.stdout);
    let run = put(v2).await.success();
    assert!(
        run.stdout.contains("registered page interaction/pageview version 2"),
        "{}",
        run.stdout
    );
    let run = put(v1).await.success();
    assert!(run.stdout.contains("version 3"), "going back is a change: {}", run.stdout);
    let versions: Vec<i32> =
        sqlx::query_scalar("SELECT version FROM event_schemas ORDER BY version")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(versions, [1, 2, 3]);

    let invalid = dir.file("invalid.json", r#"{"type": 12}"#);
    let run = put(invalid.clone()).await.failure();
    assert!(
        run.stderr.contains(&invalid) && run.stderr.contains("not a valid JSON Schema"),
        "{}",
        run.stderr
    );
    let not_json = dir.file("not-json.json", "{type: object");
    let run = put(not_json.clone()).await.failure();
    assert!(
        run.stderr.contains(&not_json) && run.stderr.contains("not valid JSON"),
        "{}",
        run.stderr
    );
    let missing = dir.0.join("missing.json").display().to_string();
    let run = put(missing.clone()).await.failure();
    assert!(run.stderr.contains(&missing) && run.stderr.contains("cannot read"), "{}", run.stderr);
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM event_schemas").fetch_one(&db.pool).await.unwrap();
    assert_eq!(count, 3, "failed puts registered nothing");

    let list = eye(&db.url, &["schemas", "list"]).await.success();
    let line =
        list.stdout.lines().find(|line| line.starts_with("page interaction")).expect("listed");
    assert!(line.contains("pageview") && line.contains(" 3 "), "{}", list.stdout);
}

#[tokio::test]
async fn concurrent_schema_puts_get_consecutive_versions() {
    let db = TestDb::new().await;
    let dir = TempDir::new();
    let files: Vec<String> = (0..4)
        .map(|i| {
            dir.file(
                &format!("s{i}.json"),
                &format!(r#"{{"type": "object", "maxProperties": {i}}}"#),
            )
        })
        .collect();
    let runs =
        futures_join(
            files.iter().map(|file| {
                let url = db.url.clone();
                let file = file.clone();
                async move {
                    eye(&url, &["schemas", "put", "--category", "c", "--name", "n", &file]).await
                }
            }),
        )
        .await;
    for run in runs {
        run.success();
    }
    let versions: Vec<i32> =
        sqlx::query_scalar("SELECT version FROM event_schemas ORDER BY version")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(versions, [1, 2, 3, 4]);
}

/// Awaits all futures concurrently (tasks, so the processes really overlap).
async fn futures_join<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.unwrap());
    }
    outputs
}

#[tokio::test]
async fn admin_commands_ask_for_migrations_then_migrate() {
    let db = TestDb::new().await;
    let name = format!("eye_cli_empty_{}", Uuid::new_v4().simple());
    sqlx::query(&format!(r#"CREATE DATABASE "{name}""#)).execute(&db.pool).await.unwrap();
    let url = with_database(&db.url, &name);

    let run = eye(&url, &["apps", "list"]).await.failure();
    assert!(run.stderr.contains("eye migrate"), "{}", run.stderr);
    let run = eye(&url, &["schemas", "list"]).await.failure();
    assert!(run.stderr.contains("eye migrate"), "{}", run.stderr);
    let run = eye(&url, &["migrate"]).await.success();
    assert!(run.stdout.contains("applied"), "{}", run.stdout);
    let run = eye(&url, &["migrate"]).await.success();
    assert!(run.stdout.contains("nothing to apply"), "{}", run.stdout);
    let run = eye(&url, &["apps", "list"]).await.success();
    assert!(run.stdout.contains("no applications yet"), "{}", run.stdout);

    sqlx::query(&format!(r#"DROP DATABASE "{name}" WITH (FORCE)"#))
        .execute(&db.pool)
        .await
        .unwrap();
}

fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, ""), |(b, q)| (b, q));
    let (server, _) = base.rsplit_once('/').expect("url with a database");
    if query.is_empty() {
        format!("{server}/{database}")
    } else {
        format!("{server}/{database}?{query}")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_reaches_a_real_ingest_server() {
    let db = TestDb::new().await;
    let ingest = eye_ingest::Application::build(db.settings()).await.unwrap();
    let endpoint = format!("http://127.0.0.1:{}", ingest.port());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(ingest.run_until_stopped(shutdown.clone()));

    let key = eye(&db.url, &["apps", "create", "sender"]).await.success().last_line().to_owned();
    let send = |key: String, data: &'static str| {
        let (url, endpoint) = (db.url.clone(), endpoint.clone());
        async move {
            let args =
                ["send", "--endpoint", &endpoint, "--category", "c", "--name", "n", "--data", data];
            eye_with_env(&url, &args, &[("EYE_API_KEY", &key)]).await
        }
    };

    let run = send(key.clone(), r#"{"a":1}"#).await.success();
    assert!(run.stdout.contains("ACCEPTED"), "{}", run.stdout);
    assert!(!run.stdout.contains(&key) && !run.stderr.contains(&key));
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE stage = $1")
        .bind(stage::VALIDATE)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(queued, 1);

    // The key can also come from the command line.
    let args = ["send", "--endpoint", &endpoint, "--key", &key, "--category", "c", "--name", "n"];
    let run = eye(&db.url, &[&args[..], &["--data", r#"{"b":2}"#]].concat()).await.success();
    assert!(run.stdout.contains("ACCEPTED"), "{}", run.stdout);

    // A payload that is not a JSON object is refused before anything is sent, naming the flag.
    let run = send(key.clone(), "[1]").await.failure();
    assert!(run.stderr.contains("--data must be a JSON object"), "{}", run.stderr);
    let run = send(key.clone(), "{oops").await.failure();
    assert!(run.stderr.contains("--data is not valid JSON"), "{}", run.stderr);
    // One the server refuses is printed REJECTED with its reason.
    let run = send(key.clone(), r#"{"a":"\u0000"}"#).await.failure();
    assert!(
        run.stdout.contains("REJECTED") && run.stdout.contains("nul_character"),
        "{}",
        run.stdout
    );

    let wrong = format!("eye_{}", "0".repeat(64));
    let run = send(wrong, r#"{"a":1}"#).await.failure();
    assert!(run.stderr.contains("unauthenticated"), "{}", run.stderr);

    let help = eye_with_env(&db.url, &["send", "--help"], &[("EYE_API_KEY", &key)]).await.success();
    assert!(!help.stdout.contains(&key), "--help shows the key");

    shutdown.cancel();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn dlq_lists_and_replays_dead_letters() {
    let db = TestDb::new().await;
    let empty = eye(&db.url, &["dlq", "list"]).await.success();
    assert!(empty.stdout.contains("no dead letters"), "{}", empty.stdout);
    sqlx::query(
        "INSERT INTO outbox_dead_letters (id, stage, body, headers, attempts, created_at, last_error) \
         VALUES (41, 'write', '\\x00', '{}', 5, now(), 'unsupported Unicode escape sequence'), \
                (42, 'validate', '\\x00', '{}', 5, now(), 'undecodable body')",
    )
    .execute(&db.pool)
    .await
    .unwrap();

    let listed = eye(&db.url, &["dlq", "list", "--stage", stage::WRITE]).await.success();
    assert!(listed.stdout.contains("41") && listed.stdout.contains("unsupported Unicode"));
    assert!(!listed.stdout.contains("undecodable"), "filtered by stage: {}", listed.stdout);

    let refused = eye(&db.url, &["dlq", "replay"]).await.failure();
    assert!(refused.stderr.contains("--all"), "{}", refused.stderr);

    let replayed = eye(&db.url, &["dlq", "replay", "--id", "41"]).await.success();
    assert!(replayed.stdout.contains("1 dead letter(s) replayed"), "{}", replayed.stdout);
    let (stage, attempts): (String, i32) =
        sqlx::query_as("SELECT stage, attempts FROM outbox").fetch_one(&db.pool).await.unwrap();
    assert_eq!((stage.as_str(), attempts), (stage::WRITE, 0), "back in its stage, attempts reset");
    let left: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM outbox_dead_letters").fetch_all(&db.pool).await.unwrap();
    assert_eq!(left, [42]);
}

#[tokio::test]
async fn subscriptions_are_created_listed_paused_resumed_and_deleted() {
    let db = TestDb::new().await;
    eye(&db.url, &["apps", "create", "shop"]).await.success();
    let created = eye(
        &db.url,
        &[
            "subscriptions",
            "create",
            "client-a",
            "--webhook",
            "https://triage.example/hooks/a",
            "--application",
            "shop",
            "--contains",
            r#"{"client": "Client_A"}"#,
            "--ordered",
        ],
    )
    .await
    .success();
    let secret = created.stdout.lines().last().expect("a last line");
    assert!(secret.starts_with("whsec_") && secret.len() > 40, "{}", created.stdout);

    let nats = eye(
        &db.url,
        &["subscriptions", "create", "bus", "--nats", "nats://127.0.0.1:4222", "--from", "1h"],
    )
    .await
    .success();
    assert!(nats.stdout.contains("backfilling from"), "{}", nats.stdout);
    assert!(!nats.stdout.contains("whsec_"), "NATS has no secret: {}", nats.stdout);

    // Refusals name the problem.
    let twice = eye(&db.url, &["subscriptions", "create", "bus", "--nats", "nats://x:4222"])
        .await
        .failure();
    assert!(twice.stderr.contains("already exists"), "{}", twice.stderr);
    let bad =
        eye(&db.url, &["subscriptions", "create", "x", "--webhook", "ftp://x"]).await.failure();
    assert!(bad.stderr.contains("http:// or https://"), "{}", bad.stderr);
    let no_app = eye(
        &db.url,
        &["subscriptions", "create", "y", "--webhook", "http://x", "--application", "nope"],
    )
    .await
    .failure();
    assert!(no_app.stderr.contains("no application named `nope`"), "{}", no_app.stderr);
    // A usage error: clap's exit status 2.
    let both = eye(
        &db.url,
        &["subscriptions", "create", "z", "--webhook", "http://x", "--nats", "nats://x"],
    )
    .await;
    assert_eq!(both.status.code(), Some(2));
    assert!(both.stderr.contains("cannot be used with"), "{}", both.stderr);

    let listed = eye(&db.url, &["subscriptions", "list"]).await.success();
    assert!(listed.stdout.contains("client-a") && listed.stdout.contains("application=shop"));
    assert!(listed.stdout.contains("(ordered)") && listed.stdout.contains("backfilling"));
    assert!(!listed.stdout.contains(secret), "the secret is shown once");

    let paused = eye(&db.url, &["subscriptions", "pause", "client-a"]).await.success();
    assert!(paused.stdout.contains("paused"), "{}", paused.stdout);
    let json = eye(&db.url, &["subscriptions", "list", "--json"]).await.success();
    let first: serde_json::Value =
        serde_json::from_str(json.stdout.lines().find(|l| l.contains("client-a")).unwrap())
            .unwrap();
    assert_eq!(first["paused"], true);
    assert_eq!(first["pending"], 0);
    eye(&db.url, &["subscriptions", "resume", "client-a"]).await.success();

    let empty = eye(&db.url, &["dlq", "list", "--subscription", "client-a"]).await.success();
    assert!(empty.stdout.contains("no dead letters"), "{}", empty.stdout);
    let deleted = eye(&db.url, &["subscriptions", "delete", "bus"]).await.success();
    assert!(deleted.stdout.contains("deleted"), "{}", deleted.stdout);
    let gone = eye(&db.url, &["subscriptions", "delete", "bus"]).await.failure();
    assert!(gone.stderr.contains("no subscription named `bus`"), "{}", gone.stderr);
}
