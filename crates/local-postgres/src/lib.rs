//! PostgreSQL with no setup, for the dev command and the test suite.
//!
//! [`LocalPostgres::ensure`] starts — or reuses — a private PostgreSQL server
//! built from the server binaries already installed on the machine (`initdb`,
//! `pg_ctl`), so nobody has to create a cluster, a role or a `DATABASE_URL`
//! before running `eye` locally or `cargo test`. The server is deliberately
//! left running when the process exits: the next run (or the next test binary)
//! finds it and connects in milliseconds instead of paying for `initdb` again.
//!
//! # Layout
//!
//! Everything lives in [`Options::base_dir`] (for example
//! `<checkout>/target/eye-test-pg` or `<checkout>/.eye/pg`):
//!
//! - `data/` — the cluster (PGDATA). `initdb` writes into `data.tmp/`, which
//!   is renamed once fully configured, so an interrupted `initdb` is never
//!   mistaken for a usable cluster.
//! - `server.log` — server output, appended across starts.
//! - `port` — the TCP port of the last start; a restart reuses it if free.
//! - `lock` — an exclusive file lock held while checking, initialising and
//!   starting, so test binaries (or threads) starting at once do not race.
//!
//! # How it works
//!
//! Under the lock, `ensure` runs `initdb` if `data/` is missing (trust
//! authentication, superuser `postgres`, loopback-only TCP), returns at once if
//! `pg_ctl status` reports the server running, and otherwise starts it with
//! `pg_ctl start -w`, which returns once the server accepts connections.
//! Non-durable instances (tests) run with `fsync = off`: losing them on power
//! loss is fine and they are much faster.
//!
//! PostgreSQL refuses to run as root. When this process is root (containers,
//! CI), every server command runs as the `postgres` user (else `nobody`) via
//! `runuser`, and the base dir is handed to that user. If that user cannot
//! reach the base dir — a checkout under a mode-700 home such as `/root` — or
//! the path is too long for a Unix socket, a directory under the system temp
//! dir named after [`Options::fallback_key`] is used instead.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};

use fs2::FileExt;

/// Where Debian/Ubuntu install versioned server binaries (not on PATH there).
const VERSIONS_ROOT: &str = "/usr/lib/postgresql";
/// How many trailing lines of stderr / the server log go into error messages.
const TAIL_LINES: usize = 20;
/// `sun_path` holds 108 bytes including the NUL; PostgreSQL refuses to start
/// if `<socket dir>/.s.PGSQL.<port>` does not fit.
const MAX_SOCKET_PATH: usize = 107;
const SOCKET_NAME_MAX: &str = "/.s.PGSQL.65535";

/// Where and how to run the server.
#[derive(Debug, Clone)]
pub struct Options {
    /// Directory holding the cluster, log, port file and lock (see the crate docs).
    pub base_dir: PathBuf,
    /// Stable identity of this instance (e.g. checkout path + purpose), hashed
    /// to name the temp-dir fallback used when `base_dir` is out of the server
    /// user's reach.
    pub fallback_key: String,
    /// `false` for throwaway instances: `initdb --no-sync`, `fsync = off`,
    /// `full_page_writes = off`. Only applied when the cluster is created.
    pub durable: bool,
}

impl Options {
    /// The test suite's server of the checkout at `workspace`: `target/eye-test-pg`, not durable.
    /// (`eye dev stop --tests` finds it through the same function.)
    pub fn for_tests(workspace: &Path) -> Self {
        Self {
            base_dir: workspace.join("target").join("eye-test-pg"),
            fallback_key: format!("{}#tests", workspace.display()),
            durable: false,
        }
    }

    /// The server of `eye dev` run in `dir`: `dir/.eye/pg`, durable.
    pub fn for_dev(dir: &Path) -> Self {
        Self {
            base_dir: dir.join(".eye").join("pg"),
            fallback_key: format!("{}#dev", dir.display()),
            durable: true,
        }
    }
}

/// A running local server. Dropping it does not stop the server (see [`LocalPostgres::stop`]).
#[derive(Debug, Clone)]
pub struct LocalPostgres {
    url: String,
    port: u16,
    data_dir: PathBuf,
    base_dir: PathBuf,
    bin_dir: PathBuf,
    /// User the server commands run as, when this process is root.
    run_as: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or under {}/*/bin; install them (Debian/Ubuntu: `apt-get install postgresql`) or set DATABASE_URL",
        .versions_root.display()
    )]
    BinariesNotFound { versions_root: PathBuf },
    #[error("initdb failed: `{command}`:\n{stderr}")]
    Initdb { command: String, stderr: String },
    #[error("postgres failed to start: `{command}`; last lines of {}:\n{log_tail}", .log.display())]
    Start { command: String, log: PathBuf, log_tail: String },
    #[error("`{command}` failed ({status}):\n{stderr}")]
    Command { command: String, status: ExitStatus, stderr: String },
    #[error(
        "server user `{user}` cannot write to {} nor to the fallback {}; make one of them reachable or set DATABASE_URL",
        .dir.display(), .fallback.display()
    )]
    Unreachable { user: String, dir: PathBuf, fallback: PathBuf },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("could not lock {}: {source}", .path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl LocalPostgres {
    /// Starts the server in `options.base_dir` (initialising it first if
    /// needed), or returns the one already running there. Blocks until the
    /// server accepts connections.
    pub fn ensure(options: &Options) -> Result<LocalPostgres, Error> {
        let mut pg = Self::locate(options)?;
        tracing::info!(
            base_dir = %pg.base_dir.display(),
            bin_dir = %pg.bin_dir.display(),
            user = pg.run_as.as_deref().unwrap_or("(current)"),
            "using local postgres"
        );

        let _lock = pg.lock()?;
        if !pg.data_dir.exists() {
            pg.init(options.durable)?;
        }
        // After a reboot postmaster.pid may name a pid now used by another
        // process of the server user; `pg_ctl status` would call that running.
        pg.remove_stale_pid()?;
        pg.port = if pg.running()? { pg.running_port()? } else { pg.start()? };
        pg.url = format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port);
        Ok(pg)
    }

    /// Stops the server of `options.base_dir` if one is running there, without initialising or
    /// starting anything; `Ok(false)` when there was none. (`pg_ctl stop` alone refuses to run as
    /// root: this runs it as the server user, as `ensure` does.)
    pub fn stop_existing(options: &Options) -> Result<bool, Error> {
        let pg = Self::locate(options)?;
        if !pg.data_dir.exists() {
            return Ok(false);
        }
        let _lock = pg.lock()?;
        pg.remove_stale_pid()?;
        if !pg.running()? {
            return Ok(false);
        }
        let mut cmd = pg.pg_ctl_command();
        cmd.args(["-m", "fast", "-w", "stop"]);
        run(cmd).map(|_| true)
    }

    /// Where the server of `options` lives and how to run its commands; nothing started yet.
    fn locate(options: &Options) -> Result<LocalPostgres, Error> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let bin_dir = find_bin_dir(&path, Path::new(VERSIONS_ROOT))?;
        let run_as = server_user()?;
        let base_dir = choose_base_dir(options, run_as.as_deref())?;
        Ok(LocalPostgres {
            url: String::new(),
            port: 0,
            data_dir: base_dir.join("data"),
            base_dir,
            bin_dir,
            run_as,
        })
    }

    /// A streaming replica of this server in `options.base_dir`: made once with
    /// `pg_basebackup -R` (which writes the standby settings), then started (or found running).
    /// It accepts read-only connections once started; what it has replayed is
    /// `pg_last_wal_replay_lsn()`.
    pub fn start_replica(&self, options: &Options) -> Result<LocalPostgres, Error> {
        let mut replica = Self::locate(options)?;
        let _lock = replica.lock()?;
        if !replica.data_dir.exists() {
            if let Some(user) = &replica.run_as {
                let mut chown = Command::new("chown");
                chown.args(["-R", &format!("{user}:")]).arg(&replica.base_dir);
                run(chown)?;
            }
            let mut cmd = replica.command(&replica.tool("pg_basebackup"));
            cmd.arg("-D").arg(&replica.data_dir);
            cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres"]);
            cmd.args(["-R", "-X", "stream", "-c", "fast"]);
            run(cmd)?;
            // The copied configuration names the primary's socket directory; later lines win.
            let conf_path = replica.data_dir.join("postgresql.conf");
            let mut file = OpenOptions::new()
                .append(true)
                .open(&conf_path)
                .map_err(io_err(format!("could not open {}", conf_path.display())))?;
            let conf = format!(
                "\n# Added by local-postgres (replica).\nunix_socket_directories = '{}'\n",
                conf_quote(&replica.base_dir)
            );
            io::Write::write_all(&mut file, conf.as_bytes())
                .map_err(io_err(format!("could not write {}", conf_path.display())))?;
        }
        replica.remove_stale_pid()?;
        replica.port =
            if replica.running()? { replica.running_port()? } else { replica.start()? };
        replica.url = format!("postgres://postgres@127.0.0.1:{}/postgres", replica.port);
        Ok(replica)
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres` (trust authentication).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Runs `pg_ctl -D <data> -l <server.log> <args>` as the server user,
    /// under the lock so a concurrent `ensure` waits for it (e.g. `restart -m
    /// fast` in crash tests). `-l` is always passed: without it a (re)started
    /// server would inherit our stdout/stderr pipes and never let go of them.
    pub fn pg_ctl(&self, args: &[&str]) -> Result<(), Error> {
        let _lock = self.lock()?;
        let mut cmd = self.pg_ctl_command();
        cmd.args(args);
        run(cmd).map(drop)
    }

    /// Stops the server (fast shutdown). Stopping a stopped server is fine.
    pub fn stop(&self) -> Result<(), Error> {
        let _lock = self.lock()?;
        if !self.running()? {
            return Ok(());
        }
        let mut cmd = self.pg_ctl_command();
        cmd.args(["-m", "fast", "-w", "stop"]);
        run(cmd).map(drop)
    }

    fn lock(&self) -> Result<File, Error> {
        let path = self.base_dir.join("lock");
        let lock_err = |source| Error::Lock { path: path.clone(), source };
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(lock_err)?;
        // flock: released when the returned file is dropped, or if we die.
        file.lock_exclusive().map_err(lock_err)?;
        Ok(file)
    }

    fn init(&self, durable: bool) -> Result<(), Error> {
        let staging = self.base_dir.join("data.tmp");
        if let Some(user) = &self.run_as {
            let mut chown = Command::new("chown");
            chown.args(["-R", &format!("{user}:")]).arg(&self.base_dir);
            run(chown)?;
        }
        tracing::info!(data_dir = %self.data_dir.display(), "initialising local postgres cluster");
        // C.UTF-8 sorts like C but keeps UTF-8 character classes; older
        // systems lack it, and plain C works everywhere.
        for locale in ["C.UTF-8", "C"] {
            remove_dir_if_exists(&staging)?;
            let mut cmd = self.command("initdb");
            cmd.arg("-D").arg(&staging);
            cmd.args(["-U", "postgres", "--auth=trust", "-E", "UTF8"]);
            cmd.arg(format!("--locale={locale}"));
            if !durable {
                cmd.arg("--no-sync");
            }
            match run(cmd) {
                Ok(_) => break,
                Err(Error::Command { command, stderr, .. }) => {
                    if locale == "C" || !stderr.contains("locale") {
                        return Err(Error::Initdb { command, stderr });
                    }
                }
                Err(other) => return Err(other),
            }
        }

        let mut conf = format!(
            "\n# Added by local-postgres.\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\n\
             max_connections = 400\n\
             shared_buffers = 256MB\n",
            conf_quote(&self.base_dir)
        );
        if !durable {
            // Throwaway instance: a crash of the machine may lose it, which
            // is fine. synchronous_commit stays on so commit semantics hold.
            conf.push_str("fsync = off\nfull_page_writes = off\n");
        }
        let conf_path = staging.join("postgresql.conf");
        let mut file = OpenOptions::new()
            .append(true)
            .open(&conf_path)
            .map_err(io_err(format!("could not open {}", conf_path.display())))?;
        io::Write::write_all(&mut file, conf.as_bytes())
            .map_err(io_err(format!("could not write {}", conf_path.display())))?;
        fs::rename(&staging, &self.data_dir).map_err(io_err(format!(
            "could not rename {} to {}",
            staging.display(),
            self.data_dir.display()
        )))
    }

    fn running(&self) -> Result<bool, Error> {
        let mut cmd = self.pg_ctl_command();
        cmd.arg("status");
        let output = output(&mut cmd)?;
        // pg_ctl status: 0 = running, 3 = not running, 4 = no usable data dir.
        match output.status.code() {
            Some(0) => Ok(true),
            Some(3) => Ok(false),
            _ => Err(command_error(&cmd, &output)),
        }
    }

    /// The port of the running server. postmaster.pid (line 4) is
    /// authoritative; the port file is only a hint for the next start.
    fn running_port(&self) -> Result<u16, Error> {
        let pid_file = self.data_dir.join("postmaster.pid");
        let contents = fs::read_to_string(&pid_file)
            .map_err(io_err(format!("could not read {}", pid_file.display())))?;
        contents.lines().nth(3).and_then(|line| line.trim().parse().ok()).ok_or_else(|| Error::Io {
            context: format!("no port in {}", pid_file.display()),
            source: io::ErrorKind::InvalidData.into(),
        })
    }

    fn start(&self) -> Result<u16, Error> {
        let port_file = self.base_dir.join("port");
        let log = self.base_dir.join("server.log");
        let recorded =
            fs::read_to_string(&port_file).ok().and_then(|text| text.trim().parse::<u16>().ok());
        let mut port = match recorded {
            Some(port) if port_is_free(port) => port,
            _ => free_port()?,
        };
        let mut retried = false;
        loop {
            fs::write(&port_file, format!("{port}\n"))
                .map_err(io_err(format!("could not write {}", port_file.display())))?;
            // Only this start's part of the (appended) log explains a failure.
            let log_offset = fs::metadata(&log).map_or(0, |m| m.len() as usize);
            let mut cmd = self.pg_ctl_command();
            cmd.args(["-w", "-t", "60", "-o", &format!("-p {port}"), "start"]);
            tracing::info!(port, "starting local postgres");
            let output = output(&mut cmd)?;
            if output.status.success() {
                return Ok(port);
            }
            let new_log = fs::read(&log)
                .map(|bytes| {
                    String::from_utf8_lossy(bytes.get(log_offset..).unwrap_or(&[])).into_owned()
                })
                .unwrap_or_default();
            if !retried {
                retried = true;
                // After a reboot postmaster.pid may name a dead (or reused) pid.
                let stale = self.remove_stale_pid()?;
                // Someone grabbed the port between our probe and the bind.
                let port_taken = new_log.contains("Address already in use");
                if port_taken {
                    port = free_port()?;
                }
                if stale || port_taken {
                    continue;
                }
            }
            let log_tail = if new_log.trim().is_empty() {
                tail(&output_text(&output))
            } else {
                tail(&new_log)
            };
            return Err(Error::Start { command: describe(&cmd), log, log_tail });
        }
    }

    /// Removes `postmaster.pid` if the process it names is not a live
    /// postgres. Returns whether it did.
    fn remove_stale_pid(&self) -> Result<bool, Error> {
        let pid_file = self.data_dir.join("postmaster.pid");
        let Ok(contents) = fs::read_to_string(&pid_file) else {
            return Ok(false);
        };
        let Some(pid) = contents.lines().next().and_then(|l| l.trim().parse::<u32>().ok()) else {
            return Ok(false);
        };
        if process_may_be_postgres(pid) {
            return Ok(false);
        }
        tracing::warn!(pid, pid_file = %pid_file.display(), "removing stale postmaster.pid");
        fs::remove_file(&pid_file)
            .map_err(io_err(format!("could not remove {}", pid_file.display())))?;
        Ok(true)
    }

    fn pg_ctl_command(&self) -> Command {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D").arg(&self.data_dir);
        cmd.arg("-l").arg(self.base_dir.join("server.log"));
        cmd
    }

    /// Where `program` is: beside `initdb`, or (when `initdb` is a link, as a `/usr/local/bin`
    /// holding only the server's links) beside the file it links to.
    fn tool(&self, program: &str) -> String {
        let beside = self.bin_dir.join(program);
        if beside.exists() {
            return program.to_owned();
        }
        fs::canonicalize(self.bin_dir.join("initdb"))
            .ok()
            .and_then(|initdb| Some(initdb.parent()?.join(program)))
            .filter(|path| path.exists())
            .map_or_else(|| program.to_owned(), |path| path.display().to_string())
    }

    /// A command for one of the server binaries (a name in the binaries' directory, or a path),
    /// run as the server user.
    fn command(&self, program: &str) -> Command {
        let program = self.bin_dir.join(program);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", user, "--"]).arg(program);
                cmd
            }
            None => Command::new(program),
        };
        // The server user may not be able to enter our working directory
        // (e.g. /root/...), which initdb and postgres trip over.
        cmd.current_dir(&self.base_dir);
        cmd
    }
}

/// Finds the directory holding `initdb` and `pg_ctl`: the first absolute
/// `path_var` entry holding both, else the highest `<versions_root>/<version>/bin`.
/// [`LocalPostgres::ensure`] passes `$PATH` and `/usr/lib/postgresql`.
pub fn find_bin_dir(path_var: &OsStr, versions_root: &Path) -> Result<PathBuf, Error> {
    let has_binaries = |dir: &Path| {
        ["initdb", "pg_ctl"].iter().all(|name| {
            fs::metadata(dir.join(name))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    };
    if let Some(dir) =
        std::env::split_paths(path_var).find(|dir| dir.is_absolute() && has_binaries(dir))
    {
        return Ok(dir);
    }
    let entries = fs::read_dir(versions_root).into_iter().flatten().flatten();
    entries
        .filter_map(|entry| {
            let name = entry.file_name();
            let version: Vec<u32> =
                name.to_str()?.split('.').map(|part| part.parse().ok()).collect::<Option<_>>()?;
            let bin = entry.path().join("bin");
            has_binaries(&bin).then_some((version, bin))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, bin)| bin)
        .ok_or_else(|| Error::BinariesNotFound { versions_root: versions_root.to_owned() })
}

/// `None` when not root; otherwise the user to run the server as.
fn server_user() -> Result<Option<String>, Error> {
    let mut id = Command::new("id");
    id.arg("-u");
    let uid = run(id)?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Ok(None);
    }
    let has_postgres =
        Command::new("id").args(["-u", "postgres"]).output().is_ok_and(|o| o.status.success());
    Ok(Some(if has_postgres { "postgres" } else { "nobody" }.to_owned()))
}

fn choose_base_dir(options: &Options, run_as: Option<&str>) -> Result<PathBuf, Error> {
    let preferred = std::path::absolute(&options.base_dir)
        .map_err(io_err(format!("could not resolve {}", options.base_dir.display())))?;
    if usable(&preferred, run_as)? {
        return Ok(preferred);
    }
    // FNV-1a: unlike DefaultHasher, stable across Rust versions, so the
    // fallback dir (and the cluster in it) survives toolchain upgrades.
    let hash = options
        .fallback_key
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    let fallback = std::env::temp_dir().join(format!("eye-pg-{hash:016x}"));
    tracing::info!(
        preferred = %preferred.display(),
        fallback = %fallback.display(),
        "local postgres dir unusable by the server user or too long for a socket; using fallback"
    );
    if usable(&fallback, run_as)? {
        return Ok(fallback);
    }
    Err(Error::Unreachable {
        user: run_as.unwrap_or("(current)").to_owned(),
        dir: preferred,
        fallback,
    })
}

/// Creates `dir` and checks the server can live there: the socket path fits
/// and, when root, the server user can write to it.
fn usable(dir: &Path, run_as: Option<&str>) -> Result<bool, Error> {
    if dir.as_os_str().len() + SOCKET_NAME_MAX.len() > MAX_SOCKET_PATH {
        return Ok(false);
    }
    fs::create_dir_all(dir).map_err(io_err(format!("could not create {}", dir.display())))?;
    let Some(user) = run_as else {
        return Ok(true);
    };
    let mut chown = Command::new("chown");
    chown.arg(format!("{user}:")).arg(dir);
    run(chown)?;
    // A parent directory the user cannot search makes this fail too.
    let mut test = Command::new("runuser");
    test.args(["-u", user, "--", "test", "-w"]).arg(dir);
    Ok(output(&mut test)?.status.success())
}

/// Whether `pid` may be a live postgres; errs on the side of "yes", since
/// removing a live server's postmaster.pid risks two servers on one cluster.
fn process_may_be_postgres(pid: u32) -> bool {
    if !Path::new("/proc/self").exists() {
        return true;
    }
    match fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(status) => {
            let field = |key| status.lines().find_map(|l| l.strip_prefix(key)).map(str::trim);
            // A reused pid names another program. A zombie (killed server
            // whose parent never reaps it) still "exists" for kill(pid, 0).
            matches!(field("Name:"), Some("postgres" | "postmaster"))
                && !field("State:").is_some_and(|state| state.starts_with('Z'))
        }
        Err(e) => e.kind() != io::ErrorKind::NotFound,
    }
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// Lets the kernel pick a free port; it stays free once the listener drops,
/// barring a (rare) race that `start` retries once.
fn free_port() -> Result<u16, Error> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(io_err("could not find a free port on 127.0.0.1".to_owned()))
}

fn remove_dir_if_exists(dir: &Path) -> Result<(), Error> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(io_err(format!("could not remove {}", dir.display()))(e))
        }
        _ => Ok(()),
    }
}

/// A postgresql.conf string literal body.
fn conf_quote(path: &Path) -> String {
    path.to_string_lossy().replace('\\', "\\\\").replace('\'', "''")
}

fn output(cmd: &mut Command) -> Result<Output, Error> {
    cmd.output().map_err(io_err(format!("could not run `{}`", describe(cmd))))
}

fn run(mut cmd: Command) -> Result<Output, Error> {
    let output = output(&mut cmd)?;
    if output.status.success() { Ok(output) } else { Err(command_error(&cmd, &output)) }
}

fn command_error(cmd: &Command, output: &Output) -> Error {
    Error::Command {
        command: describe(cmd),
        status: output.status,
        stderr: tail(&output_text(output)),
    }
}

/// stderr, or stdout for tools that report errors there.
fn output_text(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.trim().is_empty() {
        String::from_utf8_lossy(&output.stdout).into_owned()
    } else {
        stderr.into_owned()
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

/// The command as a shell-like string, for error messages.
fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|arg| {
            let arg = arg.to_string_lossy();
            if arg.is_empty() || arg.contains(char::is_whitespace) {
                format!("'{arg}'")
            } else {
                arg.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn io_err(context: String) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Io { context, source }
}
