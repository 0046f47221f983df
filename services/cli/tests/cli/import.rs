//! `eye import --watch` beside a generator that imitates the file-writing services (card and user
//! events, an `__id_counter` rewritten now and then, files written in two steps, a few bad
//! files), while the importer is killed with `kill -9` and restarted: every good file stored
//! once and archived, every bad one in `rejected/` with its reason, `__id_counter` untouched.

use std::{
    collections::{BTreeMap, HashSet},
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::json;
use sqlx::PgPool;
use tokio::process::{Child, Command};
use uuid::Uuid;

use super::{TempDir, start_dev};

const GOOD: usize = 600;
const TIMEOUT: Duration = Duration::from_secs(120);

/// A running `eye import --watch --json` and the lines of its stdout.
struct Importer {
    child: Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Importer {
    fn start(home: &Path, env: &BTreeMap<String, String>) -> Self {
        use tokio::io::AsyncBufReadExt;
        let mut child = spawn_import(home, env);
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let _ = tx.send(line);
            }
        });
        Self { child, lines }
    }

    /// Its next line of JSON.
    async fn next(&mut self) -> serde_json::Value {
        let line = tokio::time::timeout(TIMEOUT, self.lines.recv()).await.expect("a line in time");
        serde_json::from_str(&line.expect("the importer is running")).unwrap()
    }
}

fn spawn_import(home: &Path, env: &BTreeMap<String, String>) -> Child {
    Command::new(env!("CARGO_BIN_EXE_eye"))
        .args(["import", "data/events/inbox", "--watch", "--json", "--settle-ms", "300"])
        .args(["--rescan-ms", "500"])
        .current_dir(home)
        .env_remove("RUST_LOG")
        .envs(env)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start eye import")
}

/// The `export NAME='value'` lines of `eye dev env`.
async fn dev_env(home: &Path) -> BTreeMap<String, String> {
    let output = Command::new(env!("CARGO_BIN_EXE_eye"))
        .args(["dev", "env"])
        .current_dir(home)
        .output()
        .await
        .unwrap();
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| line.strip_prefix("export ")?.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.trim_matches('\'').to_owned()))
        .collect()
}

/// One event file's text, as the services' `flush_event` helper writes it.
fn event_file(
    kind: &str,
    id: Uuid,
    at: chrono::NaiveDateTime,
    payload: serde_json::Value,
) -> String {
    json!({
        "metadata": {"type": kind, "event_at": at.format("%Y-%m-%d %H:%M:%S").to_string(), "event_id": id},
        "payload": payload,
    })
    .to_string()
}

/// The generator: `GOOD` good files (card and user changes, some written in two steps), an
/// `__id_counter` rewritten now and then, and bad files. Returns the good ids (with each card's
/// ids in order of change), the bad files' paths, and the counter's last content.
async fn generate(
    inbox: PathBuf,
    seed: u64,
) -> (Vec<Uuid>, BTreeMap<i64, Vec<Uuid>>, Vec<PathBuf>, String) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut good, mut cards, mut bad) =
        (Vec::new(), BTreeMap::<i64, Vec<Uuid>>::new(), Vec::new());
    let mut counter = String::new();
    let base =
        chrono::NaiveDate::from_ymd_opt(2020, 8, 26).unwrap().and_hms_opt(11, 17, 5).unwrap();
    for kind in ["card", "user"] {
        std::fs::create_dir_all(inbox.join(kind)).unwrap();
    }
    for i in 0..GOOD {
        let kind = if i % 2 == 0 { "card" } else { "user" };
        let record = rng.random_range(1..=20i64);
        let id = Uuid::now_v7();
        let at = base + chrono::Duration::seconds(i as i64);
        let text = event_file(kind, id, at, json!({"id": record, "status": "active", "i": i}));
        let path = inbox.join(kind).join(format!("{id}.json"));
        if rng.random_range(0..5) == 0 {
            // Written in two steps, as a slow writer does.
            let (head, tail) = text.split_at(text.len() / 2);
            std::fs::write(&path, head).unwrap();
            tokio::time::sleep(Duration::from_millis(rng.random_range(10..200))).await;
            let mut file = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
            std::io::Write::write_all(&mut file, tail.as_bytes()).unwrap();
        } else {
            std::fs::write(&path, text).unwrap();
        }
        good.push(id);
        if kind == "card" {
            cards.entry(record).or_default().push(id);
        }
        if rng.random_range(0..50) == 0 {
            counter = format!("{}\n", i + 1000);
            std::fs::write(inbox.join("card").join("__id_counter"), &counter).unwrap();
        }
        if i % 60 == 0 {
            let id = Uuid::now_v7();
            let path = inbox.join("user").join(format!("{id}.json"));
            let text = match bad.len() % 4 {
                0 => r#"{"metadata": {"type": "user"}, "garbage"#.to_owned(),
                1 => event_file("user", Uuid::now_v7(), at, json!({"id": 1})),
                2 => event_file("user", id, at, json!([1, 2, 3])),
                _ => json!({"metadata": {"type": "user", "event_id": id}}).to_string(),
            };
            std::fs::write(&path, text).unwrap();
            bad.push(path);
        }
        if i % 8 == 0 {
            tokio::time::sleep(Duration::from_millis(rng.random_range(5..40))).await;
        }
    }
    if counter.is_empty() {
        counter = "1\n".into();
        std::fs::write(inbox.join("card").join("__id_counter"), &counter).unwrap();
    }
    // Stray files that are not events: left alone.
    std::fs::write(inbox.join("card").join(".partial.json.tmp"), "{").unwrap();
    (good, cards, bad, counter)
}

fn files_under(dir: &Path) -> HashSet<PathBuf> {
    let mut found = HashSet::new();
    for kind in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for file in std::fs::read_dir(kind.path()).into_iter().flatten().flatten() {
            found.insert(file.path().strip_prefix(dir).unwrap().to_path_buf());
        }
    }
    found
}

fn kill(child: &Child, signal: &str) {
    eye_test_support::signal(child.id(), signal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_is_imported_once_while_the_importer_is_killed_and_restarted() {
    let home = TempDir::new();
    let (mut dev, _) = start_dev(&home.0, &[]).await;
    let env = dev_env(&home.0).await;
    let pool = PgPool::connect(&env["DATABASE_URL"]).await.unwrap();
    let inbox = home.0.join("data/events/inbox");
    std::fs::create_dir_all(&inbox).unwrap();

    let seed = rand::random::<u64>();
    eprintln!("seed {seed}");
    let generating = tokio::spawn(generate(inbox.clone(), seed));
    let mut importer = Importer::start(&home.0, &env);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut kills = 0;
    while !generating.is_finished() || kills < 2 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..900))).await; // chaos timing
        kill(&importer.child, "-KILL");
        importer.child.wait().await.unwrap();
        importer = Importer::start(&home.0, &env);
        kills += 1;
    }
    let (good, cards, bad, counter) = generating.await.unwrap();

    let archive = home.0.join("data/events/archive");
    let rejected = home.0.join("data/events/rejected");
    let expected: HashSet<PathBuf> = good
        .iter()
        .enumerate()
        .map(|(i, id)| {
            PathBuf::from(if i % 2 == 0 { "card" } else { "user" }).join(format!("{id}.json"))
        })
        .collect();
    eye_test_support::wait_for(&pool, TIMEOUT, "every good file archived", || async {
        let archived = files_under(&archive);
        let refused = files_under(&rejected).len();
        (archived == expected && refused == 2 * bad.len()).then_some(())
    })
    .await;
    // Once it says it has started, SIGTERM is a clean stop with a summary.
    assert_eq!(importer.next().await["kind"], "started");
    kill(&importer.child, "-TERM");
    assert!(importer.child.wait().await.unwrap().success(), "SIGTERM is a clean exit");
    let mut last = serde_json::Value::Null;
    while let Some(line) = tokio::time::timeout(TIMEOUT, importer.lines.recv()).await.unwrap() {
        last = serde_json::from_str(&line).unwrap();
    }
    assert_eq!(last["kind"], "summary", "{last}");

    // Stored once each; the bad ones not at all (one was refused by ingest, the rest never sent).
    eye_test_support::wait_for(&pool, TIMEOUT, "the good events stored", || async {
        let stored: i64 =
            sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&pool).await.unwrap();
        (stored >= GOOD as i64).then_some(())
    })
    .await;
    let stored: Vec<Uuid> =
        sqlx::query_scalar("SELECT event_id FROM events").fetch_all(&pool).await.unwrap();
    let stored_set: HashSet<Uuid> = stored.iter().copied().collect();
    assert_eq!(stored.len(), stored_set.len(), "none stored twice");
    assert_eq!(stored_set, good.iter().copied().collect(), "exactly the good files");

    // Every bad file is in rejected/, its reason beside it; the stray files are untouched.
    for path in &bad {
        let relative = path.strip_prefix(&inbox).unwrap();
        let reason = std::fs::read_to_string(rejected.join(relative).with_extension("reason"));
        assert!(!reason.unwrap().trim().is_empty(), "{relative:?} has its reason");
        assert!(!path.exists());
    }
    let reasons: Vec<String> = bad
        .iter()
        .map(|p| {
            std::fs::read_to_string(
                rejected.join(p.strip_prefix(&inbox).unwrap()).with_extension("reason"),
            )
            .unwrap()
        })
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("rejected by ingest: data_not_object")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r.contains("differs from the file name")), "{reasons:?}");
    assert_eq!(std::fs::read_to_string(inbox.join("card/__id_counter")).unwrap(), counter);
    assert!(inbox.join("card/.partial.json.tmp").exists());

    // `eye session` of a card's session: that card's history, in order.
    let (card, changes) = cards.iter().max_by_key(|(_, ids)| ids.len()).unwrap();
    let session = eye_client::record_session_id("card", &card.to_string());
    let run = Command::new(env!("CARGO_BIN_EXE_eye"))
        .args(["session", &session.to_string(), "--json"])
        .envs(&env)
        .output()
        .await
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let history: Vec<Uuid> = String::from_utf8(run.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|line| line["kind"] == "event")
        .map(|line| line["event_id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(&history, changes, "card {card}'s changes in order");

    pool.close().await;
    kill(&dev, "-TERM");
    dev.wait().await.unwrap();
    let stop =
        Command::new(env!("CARGO_BIN_EXE_eye")).args(["dev", "stop"]).current_dir(&home.0).output();
    assert!(stop.await.unwrap().status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_shot_import_deletes_what_was_stored_and_a_second_run_is_answered_duplicate() {
    let home = TempDir::new();
    let (mut dev, _) = start_dev(&home.0, &[]).await;
    let env = dev_env(&home.0).await;
    let inbox = home.0.join("inbox");
    std::fs::create_dir_all(inbox.join("card")).unwrap();
    let at = chrono::NaiveDate::from_ymd_opt(2020, 8, 26).unwrap().and_hms_opt(11, 17, 5).unwrap();
    let files: Vec<(PathBuf, String)> = (0..3)
        .map(|i| {
            let id = Uuid::now_v7();
            let text = event_file("card", id, at, json!({"id": format!("card-{i}")}));
            (inbox.join("card").join(format!("{id}.json")), text)
        })
        .collect();
    std::fs::write(inbox.join("card/__id_counter"), "7").unwrap();
    let import = || {
        Command::new(env!("CARGO_BIN_EXE_eye"))
            .args(["import", "inbox", "--delete", "--settle-ms", "0"])
            .current_dir(&home.0)
            .envs(&env)
            .output()
    };
    for duplicates in [0, 3] {
        for (path, text) in &files {
            std::fs::write(path, text).unwrap();
        }
        let run = import().await.unwrap();
        let stdout = String::from_utf8(run.stdout).unwrap();
        assert!(run.status.success(), "{stdout}{}", String::from_utf8_lossy(&run.stderr));
        assert!(
            stdout.contains(&format!(
                "3 files seen, 3 sent ({duplicates} duplicate), 3 archived, 0 rejected, 0 waiting"
            )),
            "{stdout}"
        );
        assert!(files.iter().all(|(path, _)| !path.exists()), "deleted once stored");
    }
    assert_eq!(std::fs::read_to_string(inbox.join("card/__id_counter")).unwrap(), "7");
    kill(&dev, "-TERM");
    dev.wait().await.unwrap();
    let stop =
        Command::new(env!("CARGO_BIN_EXE_eye")).args(["dev", "stop"]).current_dir(&home.0).output();
    assert!(stop.await.unwrap().status.success());
}
