"""Fixtures that run the real pipeline: `eye dev` (ingest, validator, writer, query) with its own
PostgreSQL in a fresh temporary directory, once per test session.

The `eye` binary is $EYE_BIN, else <repo root>/target/debug/eye.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

import pytest

from helpers import eye_bin, health_serving, pg_ctl_stop, psql, wait_until

KEY_LINE = re.compile(r"^eye_[0-9a-f]{64}$")
STARTUP_TIMEOUT = 120.0


@dataclasses.dataclass(frozen=True)
class EyeServer:
    endpoint: str
    query_endpoint: str
    api_key: str
    database_url: str
    workdir: Path
    data_dir: str

    def count(self, where: str) -> tuple[int, int]:
        """(rows, distinct event ids) in `events` matching the SQL condition `where`."""
        out = psql(
            self.database_url,
            f"SELECT count(*), count(DISTINCT event_id) FROM events WHERE {where}",
        )
        rows, distinct = out.split("|")
        return int(rows), int(distinct)

    def wait_stored(self, where: str, expected: int, timeout: float = 60.0) -> None:
        """Waits until exactly `expected` rows match, then checks that no more arrive shortly
        and that no event id appears twice."""
        wait_until(
            lambda: self.count(where)[0] >= expected,
            timeout,
            f"{expected} stored events where {where}",
            interval=0.2,
        )
        rows, distinct = self.count(where)
        assert rows == expected, f"{rows} rows stored where {where}, expected {expected}"
        assert distinct == rows, f"{rows - distinct} event ids stored twice where {where}"


class _EyeDev:
    """One `eye dev` process in its own directory."""

    def __init__(self, env_extra: Optional[dict] = None):
        binary = eye_bin()  # before anything is created: a missing binary leaves nothing behind
        self.workdir = Path(tempfile.mkdtemp(prefix="eye-py-"))
        # PostgreSQL runs as `postgres` when we are root: let it into the directory.
        os.chmod(self.workdir, 0o755)
        env = dict(os.environ)
        env.pop("DATABASE_URL", None)
        env.update(
            EYE__INGEST__PORT="0",
            EYE__INGEST__HTTP_PORT="0",
            EYE__QUERY__PORT="0",
            EYE__QUERY__HTTP_PORT="0",
            EYE__METRICS__PORT="0",
            EYE__TELEMETRY__LOG_FORMAT="json",
        )
        env.update(env_extra or {})
        self.stderr_path = self.workdir / "eye-dev.stderr"
        self._stderr = open(self.stderr_path, "wb")
        self.process = subprocess.Popen(
            [str(binary), "dev"],
            cwd=self.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            start_new_session=True,
        )
        self.banner: list[str] = []
        self._banner_done = threading.Event()
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()

    def _read_stdout(self) -> None:
        for line in self.process.stdout:
            line = line.rstrip("\n")
            if not self._banner_done.is_set():
                self.banner.append(line)
                if KEY_LINE.match(line):
                    self._banner_done.set()
        self._banner_done.set()

    def stderr_tail(self, lines: int = 30) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return "(no stderr)"
        return "\n".join(text.splitlines()[-lines:])

    def start(self) -> EyeServer:
        if not self._banner_done.wait(STARTUP_TIMEOUT) or not any(
            KEY_LINE.match(line) for line in self.banner
        ):
            code = self.process.poll()
            raise RuntimeError(
                f"eye dev printed no API key within {STARTUP_TIMEOUT:.0f} s "
                f"(exit code {code}); stdout:\n" + "\n".join(self.banner) + "\nstderr:\n" + self.stderr_tail()
            )

        def field(label: str) -> str:
            for line in self.banner:
                match = re.match(rf"^\s+{re.escape(label)}:\s+(\S+)", line)
                if match:
                    return match.group(1)
            raise RuntimeError(f"no `{label}:` line in the eye dev banner:\n" + "\n".join(self.banner))

        def exported(name: str) -> str:
            # The banner's `export NAME='value'` block (what `eye dev env` prints).
            for line in self.banner:
                match = re.match(rf"^export {name}='(.*)'$", line)
                if match:
                    return match.group(1).replace("'\\''", "'")
            raise RuntimeError(f"no `export {name}=` line in the eye dev banner:\n" + "\n".join(self.banner))

        endpoint = field("ingest endpoint")
        query_endpoint = field("query endpoint")
        database_url = exported("DATABASE_URL")
        api_key = next(line for line in self.banner if KEY_LINE.match(line))
        # Ask the server where its data lives, rather than guess (it may use a fallback dir).
        self.data_dir = psql(database_url, "SHOW data_directory")
        wait_until(
            lambda: health_serving(endpoint, "eye.v1.IngestService"),
            60,
            "ingest to report SERVING",
        )
        wait_until(
            lambda: health_serving(query_endpoint, "eye.v1.QueryService"),
            60,
            "query to report SERVING",
        )
        return EyeServer(endpoint, query_endpoint, api_key, database_url, self.workdir, self.data_dir)

    def stop(self) -> None:
        """SIGTERM (eye dev drains), then its PostgreSQL, then the directory."""
        errors = []
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                errors.append("eye dev did not exit within 30 s of SIGTERM; killed")
                self.process.kill()
                self.process.wait(timeout=10)
        self._stderr.close()
        data_dir = getattr(self, "data_dir", None)
        if data_dir is None:
            # It died before we asked; look where it would have put the cluster.
            candidate = self.workdir / ".eye" / "pg" / "data"
            data_dir = str(candidate) if (candidate / "postmaster.pid").exists() else None
        if data_dir is not None:
            try:
                pg_ctl_stop(data_dir)
            except Exception as error:  # keep cleaning up; report at the end
                errors.append(f"could not stop postgres: {error}")
            base = Path(data_dir).parent
            if base.name.startswith("eye-pg-"):  # the system temp-dir fallback: ours alone
                shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(self.workdir, ignore_errors=True)
        if errors:
            raise RuntimeError("; ".join(errors))


@pytest.fixture(scope="session")
def eye_server():
    """(endpoint, query_endpoint, api_key, database_url, ...) of a running `eye dev`."""
    dev = _EyeDev()
    try:
        server = dev.start()
    except BaseException:
        dev.stop()
        raise
    try:
        yield server
    finally:
        dev.stop()
        if dev.process.returncode not in (0, None):
            raise RuntimeError(
                f"eye dev exited with {dev.process.returncode} after SIGTERM; stderr:\n{dev.stderr_tail()}"
            )


@pytest.fixture
def marker(request) -> str:
    """A value unique to this test, to put in events' data and find them again."""
    return f"{request.node.name}-{os.getpid()}-{time.time_ns()}"
