//! The read commands (`events`, `session`, `errors`, `replay`, `stats`) and `eye dev`'s query
//! server: the real `eye` binary against real ingest, validator, writer and query servers on free
//! ports, over a fresh database.

use eye_service::pipeline::stage;
use std::{process::Stdio, time::Duration};

use chrono::{DateTime, SubsecRound, Utc};
use eye_client::{Client, event_at};
use eye_e2e::{Pipeline, count, register_example_schemas};
use eye_test_support::{TestDb, wait_for};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use uuid::Uuid;

use super::{Run, TempDir, eye, eye_with_env, is_key};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Runs read commands with a key and the query endpoint from the environment.
struct Reader {
    url: String,
    endpoint: String,
    key: String,
}

impl Reader {
    async fn run(&self, args: &[&str]) -> Run {
        self.run_with_key(&self.key, args).await
    }

    async fn run_with_key(&self, key: &str, args: &[&str]) -> Run {
        let env = [("EYE_API_KEY", key), ("EYE_QUERY_ENDPOINT", self.endpoint.as_str())];
        eye_with_env(&self.url, args, &env).await
    }

    /// Runs with `--json` and parses every line of stdout.
    async fn json(&self, args: &[&str]) -> Vec<Value> {
        let run = self.run(&[args, &["--json"]].concat()).await.success();
        json_lines(&run)
    }
}

fn json_lines(run: &Run) -> Vec<Value> {
    run.stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}")))
        .collect()
}

fn kinds(lines: &[Value]) -> Vec<&str> {
    lines.iter().map(|line| line["kind"].as_str().expect("every line has a kind")).collect()
}

fn paths(lines: &[Value]) -> Vec<&str> {
    lines
        .iter()
        .filter(|line| line["kind"] == "event")
        .map(|line| line["data"]["path"].as_str().expect("a path"))
        .collect()
}

fn instant(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value.as_str().expect("a time")).unwrap().with_timezone(&Utc)
}

async fn stored(db: &TestDb, events: i64, errors: i64) {
    wait_for(&db.pool, TIMEOUT, &format!("{events} events and {errors} errors"), || async {
        let stored = count(&db.pool, "SELECT count(*) FROM events").await;
        let quarantined = count(&db.pool, "SELECT count(*) FROM event_errors").await;
        (stored == events && quarantined == errors).then_some(())
    })
    .await;
}

async fn no_replay_pending(db: &TestDb) {
    wait_for(&db.pool, TIMEOUT, "replays validated", || async {
        let pending = count(
            &db.pool,
            "SELECT count(*) FROM event_errors WHERE replay_outcome IS NOT DISTINCT FROM 'pending'",
        )
        .await;
        (pending == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_commands_show_what_send_stored_and_replay_fixes_errors() {
    let db = TestDb::new().await;
    register_example_schemas(&db.pool).await;
    let pipeline = Pipeline::start_with_query(&db, 1, 1).await;
    let created =
        eye(&db.url, &["apps", "create", "analyst", "--role", "ingest", "--role", "read"])
            .await
            .success();
    let reader = Reader {
        url: db.url.clone(),
        endpoint: pipeline.query_endpoint(),
        key: created.last_line().to_owned(),
    };

    // Three pageviews of one session, sent out of order, one that breaks the pageview schema (no
    // path), and a form submit in another session.
    let session = Uuid::new_v4().to_string();
    let other_session = Uuid::new_v4().to_string();
    let base = (Utc::now() - chrono::Duration::minutes(10)).trunc_subsecs(0);
    let at = |seconds: i64| (base + chrono::Duration::seconds(seconds)).to_rfc3339();
    let sends = [
        (
            &session,
            "page interaction",
            "pageview",
            r#"{"host": "shop.example", "path": "/checkout"}"#,
            at(3),
        ),
        (
            &session,
            "page interaction",
            "pageview",
            r#"{"host": "shop.example", "path": "/"}"#,
            at(1),
        ),
        (
            &session,
            "page interaction",
            "pageview",
            r#"{"host": "shop.example", "path": "/cart"}"#,
            at(2),
        ),
        (&session, "page interaction", "pageview", r#"{"host": "shop.example"}"#, at(4)),
        (
            &other_session,
            "form interaction",
            "submit",
            r#"{"host": "shop.example", "path": "/signup", "form": {"plan": "pro"}}"#,
            at(5),
        ),
    ];
    let ingest = pipeline.endpoint();
    for (session, category, name, data, timestamp) in &sends {
        let args = [
            "send",
            "--endpoint",
            &ingest,
            "--session",
            session,
            "--category",
            category,
            "--name",
            name,
            "--data",
            data,
            "--timestamp",
            timestamp,
        ];
        reader.run(&args).await.success();
    }
    stored(&db, 4, 1).await;

    // A session's events, as a table in time order.
    let run = reader.run(&["events", "--session", &session]).await.success();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "a header and 3 events:\n{}", run.stdout);
    assert!(lines[0].starts_with("TIME") && lines[0].contains("DATA"), "{}", run.stdout);
    for (line, path) in lines[1..].iter().zip(["/", "/cart", "/checkout"]) {
        assert!(line.contains(&format!(r#""path": "{path}""#)), "{path}: {}", run.stdout);
        assert!(line.contains(session.as_str()) && line.contains("pageview"), "{line}");
    }
    let first_time = (base + chrono::Duration::seconds(1)).format("%Y-%m-%dT%H:%M:%S.000Z");
    assert!(lines[1].starts_with(&first_time.to_string()), "{}", lines[1]);

    // JSON lines: one object per event, payloads as JSON, in time order.
    let events = reader.json(&["events", "--category", "page interaction"]).await;
    assert_eq!(kinds(&events), ["event"; 3]);
    assert_eq!(paths(&events), ["/", "/cart", "/checkout"]);
    assert!(events.iter().all(|e| e["session_id"] == session.as_str()));
    assert!(events.iter().all(|e| e["schema_version"] == 1 && e["category"] == "page interaction"));
    assert!(instant(&events[0]["timestamp"]) < instant(&events[1]["timestamp"]));
    assert_eq!(instant(&events[0]["timestamp"]), base + chrono::Duration::seconds(1));

    // --limit stops early and says so on stderr (stdout stays parseable).
    let run = reader
        .run(&["events", "--category", "page interaction", "--limit", "2", "--json"])
        .await
        .success();
    assert_eq!(paths(&json_lines(&run)), ["/", "/cart"]);
    assert!(run.stderr.contains("more match"), "{}", run.stderr);

    // Payload containment, application and name, relative and absolute times.
    assert_eq!(
        paths(&reader.json(&["events", "--contains", r#"{"path": "/cart"}"#]).await),
        ["/cart"]
    );
    let submit = reader.json(&["events", "--application", "analyst", "--name", "submit"]).await;
    assert_eq!(paths(&submit), ["/signup"]);
    assert_eq!(submit[0]["data"]["form"]["plan"], "pro");
    assert_eq!(reader.json(&["events", "--from", "1h", "--to", "now"]).await.len(), 4);
    assert_eq!(reader.json(&["events", "--from", "15m", "--to", &at(2)]).await.len(), 1);
    assert!(reader.json(&["events", "--from", "2099-01-01"]).await.is_empty());
    let run = reader.run(&["events", "--from", "2099-01-01"]).await.success();
    assert_eq!(run.stdout.trim(), "no events match");
    let run = reader.run(&["events", "--contains", "[1]"]).await.failure();
    assert!(
        run.stderr.contains("invalid argument") && run.stderr.contains("data_contains"),
        "{}",
        run.stderr
    );
    let run = reader.run(&["events", "--from", "yesterday"]).await;
    assert_eq!(run.status.code(), Some(2), "a usage error: {}", run.stderr);
    assert!(run.stderr.contains("RFC 3339"), "{}", run.stderr);

    // A session: its summary, then its events.
    let run = reader.run(&["session", &session]).await.success();
    let first = run.stdout.lines().next().unwrap();
    assert!(first.contains(&session) && first.contains("3 event(s)"), "{}", run.stdout);
    assert!(run.stdout.contains("/checkout"), "{}", run.stdout);
    let lines = reader.json(&["session", &session]).await;
    assert_eq!(kinds(&lines), ["session", "event", "event", "event"]);
    assert_eq!(lines[0]["event_count"], 3);
    assert_eq!(instant(&lines[0]["first_seen_at"]), base + chrono::Duration::seconds(1));
    assert_eq!(paths(&lines), ["/", "/cart", "/checkout"]);
    let run = reader.run(&["session", &Uuid::new_v4().to_string()]).await.failure();
    assert!(run.stderr.contains("not found"), "{}", run.stderr);

    // The quarantined event, with counts per reason.
    let run = reader.run(&["errors", "--reason", "schema_violation"]).await.success();
    assert!(run.stdout.starts_with("ID"), "{}", run.stdout);
    assert!(run.stdout.contains("not_replayed") && run.stdout.contains("path"), "{}", run.stdout);
    let counts = run.stdout.lines().find(|l| l.starts_with("schema_violation")).expect("a count");
    assert_eq!(counts.split_whitespace().collect::<Vec<_>>(), ["schema_violation", "1"]);
    let lines = reader.json(&["errors", "--since", "1h"]).await;
    assert_eq!(kinds(&lines), ["error", "reason_count"]);
    assert_eq!(lines[0]["reason"], "schema_violation");
    assert_eq!(lines[0]["replay_outcome"], "not_replayed");
    // The payload has the shape it has in `eye events --json`: the JSON object itself.
    assert_eq!(lines[0]["data"], serde_json::json!({"host": "shop.example"}));
    assert_eq!((&lines[1]["reason"], &lines[1]["count"]), (&"schema_violation".into(), &1.into()));
    let error_id = lines[0]["id"].as_i64().unwrap().to_string();
    assert!(reader.json(&["errors", "--reason", "timestamp_in_future"]).await.is_empty());
    let run = reader.run(&["errors", "--reason", "bogus"]).await.failure();
    assert!(run.stderr.contains("unknown reason"), "{}", run.stderr);

    // Replay after a schema fix: the event is stored, once.
    let run = reader.run(&["replay"]).await.failure();
    assert!(run.stderr.contains("--all"), "{}", run.stderr);
    let dir = TempDir::new();
    let fixed = dir.file("pageview.json", r#"{"type": "object", "required": ["host"]}"#);
    let args = ["schemas", "put", "--category", "page interaction", "--name", "pageview", &fixed];
    eye(&db.url, &args).await.success();
    let run = reader.run(&["replay", "--reason", "schema_violation"]).await.success();
    assert!(run.stdout.contains("replayed 1 error(s)"), "{}", run.stdout);
    stored(&db, 5, 1).await;
    no_replay_pending(&db).await;
    let lines = reader.json(&["errors", "--outcome", "stored"]).await;
    assert_eq!(kinds(&lines), ["error", "reason_count"]);
    assert_eq!(lines[0]["replay_outcome"], "stored");
    let events = reader.json(&["events", "--session", &session]).await;
    assert_eq!(events.len(), 4);
    assert_eq!(events[3]["schema_version"], 2);
    // Stored errors are not replayed again by a filter; by id they are (and store nothing new).
    let run = reader.run(&["replay", "--reason", "schema_violation"]).await.success();
    assert!(run.stdout.contains("replayed 0 errors"), "{}", run.stdout);
    let lines = reader.json(&["replay", "--id", &error_id]).await;
    assert_eq!((&lines[0]["kind"], &lines[0]["replayed"]), (&"replay".into(), &1.into()));
    no_replay_pending(&db).await;
    stored(&db, 5, 1).await;

    // Stats over the last hour.
    let run = reader.run(&["stats"]).await.success();
    assert!(run.stdout.contains("5 events stored, 1 errors"), "{}", run.stdout);
    assert!(stage::ALL.iter().all(|stage| run.stdout.contains(stage)), "{}", run.stdout);
    let lines = reader.json(&["stats", "--window", "2h"]).await;
    assert_eq!(kinds(&lines), ["stats"]);
    let stats = &lines[0];
    assert_eq!((stats["events_stored"].as_i64(), stats["errors"].as_i64()), (Some(5), Some(1)));
    assert_eq!(stats["errors_by_reason"]["schema_violation"], 1);
    assert_eq!(stats["window_seconds"], 7_200);
    let stages: Vec<&str> =
        stats["stages"].as_array().unwrap().iter().map(|s| s["stage"].as_str().unwrap()).collect();
    assert_eq!(stages, stage::ALL);
    let run = reader.run(&["stats", "--window", "8d"]).await.failure();
    assert!(run.stderr.contains("7 days"), "{}", run.stderr);

    // Keys without the read role, unknown keys, and no server say what to do.
    let ingest_only = eye(&db.url, &["apps", "create", "sender"]).await.success();
    let run = reader.run_with_key(ingest_only.last_line(), &["events"]).await.failure();
    assert!(run.stderr.contains("permission denied") && run.stderr.contains("--role read"));
    let run = reader.run_with_key(&format!("eye_{}", "0".repeat(64)), &["stats"]).await.failure();
    assert!(run.stderr.contains("unauthenticated"), "{}", run.stderr);
    let env = [("EYE_API_KEY", reader.key.as_str())];
    let args = ["events", "--query-endpoint", "http://127.0.0.1:1"];
    let run = eye_with_env(&db.url, &args, &env).await.failure();
    assert!(run.stderr.contains("cannot connect to the query server"), "{}", run.stderr);
    assert!(!run.stderr.contains(&reader.key));

    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_follow_pages_up_to_the_limit() {
    let db = TestDb::new().await;
    let pipeline = Pipeline::start_with_query(&db, 1, 1).await;
    let created = eye(&db.url, &["apps", "create", "loader", "--role", "ingest", "--role", "read"])
        .await
        .success();
    let reader = Reader {
        url: db.url.clone(),
        endpoint: pipeline.query_endpoint(),
        key: created.last_line().to_owned(),
    };
    // 1,200 events of one session (more than one page of 1,000), in two requests.
    let session = Uuid::new_v4();
    let base = Utc::now() - chrono::Duration::hours(1);
    let client = Client::connect(pipeline.endpoint(), &reader.key).await.unwrap();
    for chunk in (0..1_200).collect::<Vec<i64>>().chunks(600) {
        let events = chunk
            .iter()
            .map(|i| {
                let data = format!(r#"{{"i": {i}}}"#);
                event_at("c", "n", &data, session, base + chrono::Duration::milliseconds(i * 10))
            })
            .collect();
        client.send(events).await.unwrap();
    }
    stored(&db, 1_200, 0).await;

    let session = session.to_string();
    let run =
        reader.run(&["events", "--session", &session, "--limit", "1100", "--json"]).await.success();
    let numbers: Vec<i64> =
        json_lines(&run).iter().map(|e| e["data"]["i"].as_i64().unwrap()).collect();
    assert_eq!(numbers, (0..1_100).collect::<Vec<_>>(), "in time order, none twice");
    assert!(run.stderr.contains("the first 1100 events"), "{}", run.stderr);

    let run = reader.run(&["session", &session, "--limit", "5000", "--json"]).await.success();
    let lines = json_lines(&run);
    assert_eq!(lines.len(), 1 + 1_200);
    assert_eq!(lines[0]["event_count"], 1_200);
    assert!(run.stderr.is_empty(), "{}", run.stderr);
    let run = reader.run(&["session", &session]).await.success();
    assert_eq!(run.stdout.lines().count(), 2 + 1_000, "the default limit is 1,000");
    assert!(run.stderr.contains("the first 1000 of 1200 events"), "{}", run.stderr);

    // A reader that goes away (`eye events --json | head -1`) ends the command quietly.
    let (closed, stdout) = std::io::pipe().unwrap();
    drop(closed);
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_eye"))
        .args(["events", "--session", &session, "--limit", "1200", "--json"])
        .envs([("EYE_API_KEY", &reader.key), ("EYE_QUERY_ENDPOINT", &reader.endpoint)])
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
        .wait_with_output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.stdout.is_empty(), "stdout went to the closed pipe");
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("error"), "{stderr}");

    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eye_dev_serves_queries_too() {
    let db = TestDb::new().await;
    let home = super::TempDir::new();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_eye"))
        .arg("dev")
        // A directory of its own: `eye dev` keeps its lock and state in ./.eye.
        .current_dir(&home.0)
        .env("DATABASE_URL", &db.url)
        .envs([
            ("EYE__INGEST__HOST", "127.0.0.1"),
            ("EYE__INGEST__PORT", "0"),
            ("EYE__INGEST__HTTP_PORT", "0"),
            ("EYE__QUERY__HOST", "127.0.0.1"),
            ("EYE__QUERY__PORT", "0"),
            ("EYE__QUERY__HTTP_PORT", "0"),
            ("EYE__METRICS__HOST", "127.0.0.1"),
            ("EYE__METRICS__PORT", "0"),
            ("RUST_LOG", "warn"),
        ])
        .env_remove("EYE_CONFIG")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start eye dev");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = Vec::new();
    let key = tokio::time::timeout(TIMEOUT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if is_key(&line) {
                return line;
            }
            banner.push(line);
        }
        panic!("eye dev printed no key:\n{}", banner.join("\n"));
    })
    .await
    .expect("eye dev starts in time");
    let endpoint = |label: &str| {
        banner
            .iter()
            .find_map(|line| line.trim().strip_prefix(label))
            .map(|rest| rest.trim().to_owned())
            .unwrap_or_else(|| panic!("no {label} in:\n{}", banner.join("\n")))
    };
    let (ingest, query) = (endpoint("ingest endpoint:"), endpoint("query endpoint:"));
    assert_ne!(query, "http://127.0.0.1:50052", "port 0 picked a free port");

    let reader = Reader { url: db.url.clone(), endpoint: query, key };
    let data = r#"{"host": "example.com", "path": "/dev"}"#;
    let args = [
        "send",
        "--endpoint",
        &ingest,
        "--category",
        "page interaction",
        "--name",
        "pageview",
        "--data",
        data,
    ];
    reader.run(&args).await.success();
    stored(&db, 1, 0).await;
    let events = reader.json(&["events", "--application", "dev"]).await;
    assert_eq!(paths(&events), ["/dev"]);
    assert_eq!(events[0]["schema_version"], 1, "eye dev registered the example schemas");

    let pid = child.id().expect("running").to_string();
    std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = tokio::time::timeout(TIMEOUT, child.wait()).await.expect("drains").unwrap();
    assert!(status.success(), "eye dev exits cleanly on SIGTERM: {status}");
}
