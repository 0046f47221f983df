//! The README's quickstart, run command by command against a fresh `eye dev` (its own private
//! Postgres, as a newcomer's would be), each output checked against the `#` lines the README
//! shows under the command: ids, times and spacing aside, each must appear in the output.

use std::{collections::BTreeMap, path::Path, time::Duration};

use sqlx::PgPool;
use tokio::process::{Child, Command};

use super::TempDir;

const TIMEOUT: Duration = Duration::from_secs(180);

/// One command of the README and the output lines it shows.
#[derive(Debug)]
struct Step {
    command: String,
    expected: Vec<String>,
}

/// The shell blocks of the "Quickstart" section, as steps.
fn quickstart() -> Vec<Step> {
    let readme =
        std::fs::read_to_string(eye_test_support::workspace_root().join("README.md")).unwrap();
    let start = readme.find("## Quickstart").expect("a Quickstart section");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let mut steps: Vec<Step> = Vec::new();
    let mut in_block = false;
    for line in section.lines() {
        if line.starts_with("```") {
            in_block = line == "```sh";
            continue;
        }
        if !in_block || line.trim().is_empty() {
            continue;
        }
        match line.strip_prefix('#') {
            Some(expected) => {
                steps.last_mut().expect("output after a command").expected.push(expected.to_owned())
            }
            None => steps.push(Step { command: line.to_owned(), expected: Vec::new() }),
        }
    }
    steps
}

/// Ids, times and runs of spaces made comparable.
fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        let is_uuid = word.len() >= 36
            && word.char_indices().filter(|(_, c)| *c == '-').count() >= 4
            && word.chars().filter(|c| c.is_ascii_hexdigit()).count() >= 32;
        let is_time = word.len() >= 20 && word.as_bytes()[4] == b'-' && word.contains('T');
        if !out.is_empty() {
            out.push(' ');
        }
        if is_uuid {
            let (prefix, rest) =
                word.split_at(word.find(|c: char| c.is_ascii_hexdigit()).unwrap_or(0));
            let suffix: String =
                rest.chars().skip_while(|c| c.is_ascii_hexdigit() || *c == '-').collect();
            out.push_str(&format!("{prefix}<id>{suffix}"));
        } else if is_time {
            out.push_str("<time>");
        } else {
            out.push_str(word);
        }
    }
    out
}

/// Runs `command` with bash in `home`, the test's `eye` first on PATH, and `env`.
async fn shell(home: &Path, env: &BTreeMap<String, String>, command: &str) -> (bool, String) {
    let bin = Path::new(env!("CARGO_BIN_EXE_eye")).parent().unwrap().display().to_string();
    let path = format!("{bin}:{}", std::env::var("PATH").unwrap_or_default());
    let output = Command::new("bash")
        .args(["-c", command])
        .current_dir(home)
        .env("PATH", path)
        .env_remove("DATABASE_URL")
        .env_remove("EYE_API_KEY")
        .envs(env)
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// The `export NAME='value'` lines of `eye dev env`.
fn exports(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("export "))
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.trim_matches('\'').to_owned()))
        .collect()
}

/// Waits until the pipeline has nothing in flight, so that what a command reads was written.
async fn settled(database_url: &str) {
    let pool = PgPool::connect(database_url).await.unwrap();
    eye_test_support::wait_for(&pool, TIMEOUT, "the outbox to drain", || async {
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM outbox").fetch_one(&pool).await.unwrap();
        (left == 0).then_some(())
    })
    .await;
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_runs_as_written() {
    let steps = quickstart();
    assert!(steps.len() >= 8, "the quickstart has its commands: {steps:?}");
    let home = TempDir::new();
    let mut dev: Option<Child> = None;
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for step in &steps {
        let command = step
            .command
            .replace("cargo run --release --bin eye --", "eye")
            .replace("target/release/eye", "eye");
        let first = command.split_whitespace().next().unwrap_or_default();
        if command.starts_with("eye dev ") && !command.starts_with("eye dev stop")
            || command == "eye dev"
        {
            dev = Some(super::start_dev(&home.0, &[]).await.0);
            continue;
        }
        if first == "cargo" || command.starts_with("export PATH=") {
            continue; // the tests themselves; this test's `eye` is already first on PATH
        }
        if command.starts_with("eye dev stop") {
            // The README's reader pressed Ctrl-C in the other terminal first.
            let mut child = dev.take().expect("eye dev was started");
            let status =
                Command::new("kill").args(["-INT", &child.id().unwrap().to_string()]).status();
            assert!(status.await.unwrap().success());
            child.wait().await.unwrap();
        } else if let Some(url) = env.get("DATABASE_URL") {
            settled(url).await;
        }
        let output = if let Some(inner) =
            command.strip_prefix("eval \"$(").and_then(|c| c.split_once(")\""))
        {
            let (ok, text) = shell(&home.0, &env, inner.0).await;
            assert!(ok, "{command}: {text}");
            env.extend(exports(&text));
            text
        } else {
            let (ok, text) = shell(&home.0, &env, &command).await;
            assert!(ok, "`{command}` failed:\n{text}");
            text
        };
        let actual = normalize(&output);
        for expected in &step.expected {
            let expected = normalize(expected);
            assert!(
                actual.contains(&expected),
                "`{}` printed\n{output}\nwhich lacks the README's\n{expected}",
                step.command
            );
        }
    }
    assert!(dev.is_none(), "the quickstart ends by stopping eye dev and its Postgres");
    assert!(env.contains_key("EYE_API_KEY"), "the quickstart loads the key from `eye dev env`");
}

/// The whole `sh` blocks of the README section `title`.
fn blocks(title: &str) -> Vec<String> {
    let readme =
        std::fs::read_to_string(eye_test_support::workspace_root().join("README.md")).unwrap();
    let start = readme.find(&format!("## {title}\n")).expect("the section");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    section
        .split("```sh\n")
        .skip(1)
        .map(|block| block.split("\n```").next().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_website_section_runs_as_written() {
    let scripts = blocks("Sending from a website");
    assert_eq!(scripts.len(), 2, "a key and a curl: {scripts:?}");
    let home = TempDir::new();
    let (mut dev, _) = super::start_dev(&home.0, &[]).await;
    let (ok, text) = shell(&home.0, &BTreeMap::new(), "eye dev env").await;
    assert!(ok, "{text}");
    let env = exports(&text);

    let (ok, issued) = shell(&home.0, &env, &scripts[0]).await;
    assert!(ok, "{}: {issued}", scripts[0]);
    assert!(issued.lines().last().unwrap().starts_with("eye_pk_"), "{issued}");
    let (ok, answer) = shell(&home.0, &env, &scripts[1]).await;
    assert!(ok, "{}: {answer}", scripts[1]);
    let answer: serde_json::Value = serde_json::from_str(answer.trim()).expect("a JSON answer");
    assert_eq!(answer["results"][0]["status"], "ACCEPTED", "{answer}");

    let status = Command::new("kill").args(["-TERM", &dev.id().unwrap().to_string()]).status();
    assert!(status.await.unwrap().success());
    dev.wait().await.unwrap();
    let (ok, text) = shell(&home.0, &BTreeMap::new(), "eye dev stop").await;
    assert!(ok, "{text}");
}
