//! `eye dev` as a newcomer meets it: one per directory, its key kept and reused, `eye dev env`
//! for the other terminal, `eye dev stop` for the Postgres it leaves running, loopback binds.

use std::path::Path;

use tokio::process::Command;

use super::TempDir;

/// Runs `eye ARGS` in `home` without a configured database.
async fn eye_in(home: &Path, args: &[&str]) -> super::Run {
    let output = Command::new(env!("CARGO_BIN_EXE_eye"))
        .args(args)
        .current_dir(home)
        .env_remove("DATABASE_URL")
        .env_remove("EYE_API_KEY")
        .env_remove("RUST_LOG")
        .env("EYE__INGEST__PORT", "0")
        .env("EYE__INGEST__HTTP_PORT", "0")
        .env("EYE__QUERY__PORT", "0")
        .env("EYE__QUERY__HTTP_PORT", "0")
        .env("EYE__METRICS__PORT", "0")
        .output()
        .await
        .unwrap();
    super::Run {
        status: output.status,
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_dev_per_directory_a_kept_key_and_a_way_to_stop() {
    let home = TempDir::new();
    let (mut first, banner) = super::start_dev(&home.0, &[]).await;
    let key = banner.last().unwrap().clone();
    assert!(super::is_key(&key), "the key is the last line: {banner:?}");
    let banner = banner.join("\n");
    assert!(banner.contains("http://127.0.0.1:"), "{banner}");
    assert!(banner.contains(&format!("export EYE_API_KEY='{key}'")), "{banner}");
    assert!(banner.contains("eye dev stop"), "says how to stop its Postgres: {banner}");

    // A second one in the same directory is told at once which one runs.
    let second = eye_in(&home.0, &["dev"]).await.failure();
    assert!(
        second.stderr.contains("another `eye dev` is running in this directory"),
        "{}",
        second.stderr
    );

    // `eye dev env` gives the other terminal everything, the key included.
    let env = eye_in(&home.0, &["dev", "env"]).await.success();
    for name in ["DATABASE_URL", "EYE_ENDPOINT", "EYE_QUERY_ENDPOINT"] {
        assert!(env.stdout.contains(&format!("export {name}='")), "{}", env.stdout);
    }
    assert!(env.stdout.contains(&format!("export EYE_API_KEY='{key}'")), "{}", env.stdout);

    // Its Postgres cannot be stopped under it.
    let early = eye_in(&home.0, &["dev", "stop"]).await.failure();
    assert!(early.stderr.contains("still running"), "{}", early.stderr);

    let status = Command::new("kill").args(["-TERM", &first.id().unwrap().to_string()]).status();
    assert!(status.await.unwrap().success());
    assert!(first.wait().await.unwrap().success());

    // The next run reuses the key.
    let (mut again, banner) = super::start_dev(&home.0, &[]).await;
    assert_eq!(banner.last().unwrap(), &key, "the key is reused");
    assert!(banner.join("\n").contains("the same as last run"), "{banner:?}");
    let status = Command::new("kill").args(["-TERM", &again.id().unwrap().to_string()]).status();
    assert!(status.await.unwrap().success());
    again.wait().await.unwrap();

    let stop = eye_in(&home.0, &["dev", "stop"]).await.success();
    assert!(stop.stdout.contains("stopped the dev Postgres"), "{}", stop.stdout);
    let twice = eye_in(&home.0, &["dev", "stop"]).await.success();
    assert!(twice.stdout.contains("not running"), "{}", twice.stdout);
}

#[tokio::test]
async fn commands_without_a_key_say_where_it_comes_from() {
    let home = TempDir::new();
    let run = eye_in(&home.0, &["send", "--category", "c", "--name", "n", "--data", "{}"])
        .await
        .failure();
    assert!(
        run.stderr.contains("EYE_API_KEY") && run.stderr.contains("eye dev env"),
        "{}",
        run.stderr
    );
    let run = eye_in(&home.0, &["events"]).await.failure();
    assert!(run.stderr.contains("EYE_API_KEY"), "{}", run.stderr);
}

#[tokio::test]
async fn send_to_a_pipeline_that_is_down_says_what_to_do() {
    let home = TempDir::new();
    let port = eye_test_support::free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let args =
        ["send", "--endpoint", &endpoint, "--key", "eye_x", "--category", "c", "--name", "n"];
    let run = eye_in(&home.0, &[&args[..], &["--data", "{}"]].concat()).await.failure();
    assert!(run.stderr.contains("cannot connect to the ingest server"), "{}", run.stderr);
    assert!(run.stderr.contains("eye dev"), "{}", run.stderr);
    assert!(!run.stderr.contains("os error"), "no transport jargon: {}", run.stderr);
}
