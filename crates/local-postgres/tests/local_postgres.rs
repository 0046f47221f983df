//! Runs against the PostgreSQL server binaries installed on this machine.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Barrier;
use std::sync::atomic::{AtomicUsize, Ordering};

use local_postgres::{Error, LocalPostgres, Options, find_bin_dir};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A path under the temp dir unique to this process and call.
fn unique(name: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("lpg-{}-{n}-{name}", std::process::id()))
}

/// A fresh base dir whose server is stopped and files removed on drop, even
/// when the test panics.
struct Instance {
    options: Options,
    last: Option<LocalPostgres>,
    cleanup: Vec<PathBuf>,
}

impl Instance {
    fn new(name: &str) -> Self {
        let base_dir = unique(name);
        Instance {
            options: Options {
                fallback_key: base_dir.display().to_string(),
                base_dir: base_dir.clone(),
                durable: false,
            },
            last: None,
            cleanup: vec![base_dir],
        }
    }

    fn ensure(&mut self) -> LocalPostgres {
        let pg = LocalPostgres::ensure(&self.options).expect("ensure");
        self.last = Some(pg.clone());
        pg
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(pg) = &self.last {
            if let Err(e) = pg.stop() {
                eprintln!("stopping test server: {e}");
            }
            self.cleanup.extend(pg.data_dir().parent().map(Path::to_owned));
        }
        for dir in &self.cleanup {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

fn psql(pg: &LocalPostgres, sql: &str) -> String {
    let out = Command::new("psql")
        .arg(pg.url())
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-tAc", sql])
        .output()
        .expect("run psql");
    assert!(out.status.success(), "psql {sql:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn postmaster_pid(pg: &LocalPostgres) -> String {
    let pid_file = fs::read_to_string(pg.data_dir().join("postmaster.pid")).unwrap();
    pid_file.lines().next().unwrap().to_owned()
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

#[test]
fn ensure_starts_a_server_that_accepts_connections() {
    let mut instance = Instance::new("start");
    let pg = instance.ensure();

    assert_eq!(pg.url(), format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port()));
    assert_eq!(pg.data_dir(), instance.options.base_dir.join("data"));
    assert_eq!(psql(&pg, "select 1"), "1");
    assert_eq!(psql(&pg, "show fsync"), "off");
    assert_eq!(psql(&pg, "show max_connections"), "400");
    let port_file = fs::read_to_string(instance.options.base_dir.join("port")).unwrap();
    assert_eq!(port_file.trim(), pg.port().to_string());
}

#[test]
fn second_ensure_reuses_the_running_server() {
    let mut instance = Instance::new("reuse");
    let first = instance.ensure();
    psql(&first, "create table marker (id int)");
    let pid = postmaster_pid(&first);

    let second = instance.ensure();

    assert_eq!(second.port(), first.port());
    assert_eq!(postmaster_pid(&second), pid, "server was restarted");
    assert_eq!(psql(&second, "select count(*) from marker"), "0");
}

#[test]
fn ensure_after_stop_restarts_on_the_recorded_port() {
    let mut instance = Instance::new("restart");
    let first = instance.ensure();
    psql(&first, "create table marker (id int)");

    first.stop().unwrap();
    assert!(first.pg_ctl(&["status"]).is_err(), "still running after stop");
    first.stop().expect("stopping a stopped server is fine");

    let second = instance.ensure();
    assert_eq!(second.port(), first.port());
    assert_eq!(psql(&second, "select count(*) from marker"), "0");
}

#[test]
fn ensure_survives_a_stale_postmaster_pid() {
    let mut instance = Instance::new("stale");
    let first = instance.ensure();
    let pid_path = first.data_dir().join("postmaster.pid");
    let pid_file = fs::read_to_string(&pid_path).unwrap();
    first.stop().unwrap();

    // As after a reboot: the recorded pid now belongs to an unrelated live
    // process of the server user, so pg_ctl alone would think it is running.
    let mut squatter = if is_root() {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=postgres", "--regid=postgres", "--clear-groups"]);
        cmd.args(["sleep", "600"]);
        cmd
    } else {
        let mut cmd = Command::new("sleep");
        cmd.arg("600");
        cmd
    }
    .spawn()
    .unwrap();
    let rest = pid_file.split_once('\n').unwrap().1;
    fs::write(&pid_path, format!("{}\n{rest}", squatter.id())).unwrap();

    let second = LocalPostgres::ensure(&instance.options);
    squatter.kill().unwrap();
    squatter.wait().unwrap();

    let second = second.expect("ensure with a stale postmaster.pid");
    assert_eq!(psql(&second, "select 1"), "1");
}

#[test]
fn pg_ctl_restart_keeps_the_server_usable() {
    let mut instance = Instance::new("pgctl");
    let pg = instance.ensure();
    let pid = postmaster_pid(&pg);

    pg.pg_ctl(&["restart", "-m", "fast"]).unwrap();

    assert_ne!(postmaster_pid(&pg), pid);
    assert_eq!(psql(&pg, "select 1"), "1");
}

#[test]
fn concurrent_ensure_on_a_fresh_dir_agrees_on_one_server() {
    let mut instance = Instance::new("concurrent");
    let barrier = Barrier::new(4);
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    LocalPostgres::ensure(&instance.options)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    // Remember any started server first, so it is stopped even if one failed.
    instance.last = results.iter().find_map(|r| r.as_ref().ok().cloned());
    let servers: Vec<LocalPostgres> = results.into_iter().map(|r| r.expect("ensure")).collect();
    assert!(servers.iter().all(|pg| pg.port() == servers[0].port()));
    assert_eq!(psql(&servers[0], "select 1"), "1");
}

#[test]
fn falls_back_to_temp_dir_when_server_user_cannot_reach_base_dir() {
    if !is_root() {
        eprintln!("skipped: only relevant when running as root");
        return;
    }
    let mut instance = Instance::new("private");
    let private = instance.options.base_dir.clone();
    fs::create_dir_all(&private).unwrap();
    fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
    instance.options.base_dir = private.join("pg");

    let pg = instance.ensure();

    let fallback = pg.data_dir().parent().unwrap();
    assert_eq!(fallback.parent().unwrap(), std::env::temp_dir());
    assert!(fallback.file_name().unwrap().to_str().unwrap().starts_with("eye-pg-"));
    assert_eq!(psql(&pg, "select 1"), "1");
}

#[test]
fn missing_binaries_error_names_the_package() {
    let nowhere = unique("no-postgres");
    let err = find_bin_dir(OsStr::new("/nonexistent/bin:"), &nowhere).unwrap_err();

    assert!(matches!(err, Error::BinariesNotFound { .. }));
    let message = err.to_string();
    assert!(message.contains("initdb, pg_ctl"), "{message}");
    assert!(message.contains("apt-get install postgresql"), "{message}");
    assert!(message.contains("DATABASE_URL"), "{message}");
}

#[test]
fn binary_lookup_prefers_path_then_highest_version() {
    let root = unique("versions");
    let fake_bin = |dir: &Path, names: &[&str]| {
        fs::create_dir_all(dir).unwrap();
        for name in names {
            fs::write(dir.join(name), "").unwrap();
            fs::set_permissions(dir.join(name), fs::Permissions::from_mode(0o755)).unwrap();
        }
    };
    for version in ["9.6", "10", "15"] {
        fake_bin(&root.join(version).join("bin"), &["initdb", "pg_ctl"]);
    }
    fake_bin(&root.join("16/bin"), &["pg_ctl"]); // incomplete: ignored
    fake_bin(&root.join("main/bin"), &["initdb", "pg_ctl"]); // not a version
    fake_bin(&root.join("path-bin"), &["initdb", "pg_ctl"]);

    let highest = find_bin_dir(OsStr::new("/nonexistent"), &root);
    let path = std::env::join_paths(["/nonexistent".into(), root.join("path-bin")]).unwrap();
    let on_path = find_bin_dir(&path, &root);
    let _ = fs::remove_dir_all(&root);

    assert_eq!(highest.unwrap(), root.join("15/bin"));
    assert_eq!(on_path.unwrap(), root.join("path-bin"));
}
